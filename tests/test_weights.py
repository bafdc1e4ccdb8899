"""Weights: NVIDIA NGC checkpoints (converted on the fly), Hub repos, and wrong checkpoints.

No real network: an NGC-format zip built from the fixtures' manifest (NVIDIA's key names and
shapes, deterministic recipe weights) and a converted Hub repo are served from 127.0.0.1.
"""

import argparse
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import timm
import torch

import prunet
from prunet.zoo import CheckpointError, WeightsUnavailableError
from hub_standin import StandIn
from nvidia_reference import manifest, recipe_input, recipe_weights, reference_logits


def _ngc_zip(path, member, sd, fmt="raw"):
    # fmt="timm": what timm's CheckpointSaver (NVIDIA's train.py) writes, argparse.Namespace included
    obj = sd if fmt == "raw" else {"epoch": 3, "arch": "gpunet", "args": argparse.Namespace(model="gpunet", lr=0.08),
                                   "state_dict": {k: torch.zeros_like(v) for k, v in sd.items()},
                                   "state_dict_ema": sd, "version": 2}
    buf = io.BytesIO()
    torch.save(obj, buf)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, buf.getvalue())
    return path


def _rel_err(model, name):
    man = manifest(name)
    with torch.no_grad():
        ours = model.eval()(recipe_input(man)).numpy()
    ref = reference_logits(name)
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    (root / "ngc").mkdir()
    _ngc_zip(root / "ngc" / "p0.zip", "0.5ms-D.pth.tar", recipe_weights(manifest("0.5ms-D")))
    _ngc_zip(root / "ngc" / "g0.zip", "0.65ms.pth.tar", recipe_weights(manifest("0.65ms")), fmt="timm")
    with StandIn(root) as server:
        yield root, server


def test_pretrained_from_ngc_url_is_converted_on_the_fly(served, tmp_path, monkeypatch):
    root, server = served
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    model = timm.create_model("prunet_p0", pretrained=True,
                              pretrained_cfg_overlay=dict(url=f"{server.url}/ngc/p0.zip", custom_load=True))
    assert _rel_err(model, "0.5ms-D") < 3e-4
    assert ("GET", "/ngc/p0.zip") in server.requests


def test_timm_style_ngc_checkpoint_prefers_ema(served, tmp_path, monkeypatch):
    root, server = served
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    model = timm.create_model("gpunet_0", pretrained=True,
                              pretrained_cfg_overlay=dict(url=f"{server.url}/ngc/g0.zip", custom_load=True))
    assert _rel_err(model, "0.65ms") < 3e-4


def test_local_ngc_file_via_pretrained_cfg_file(served):
    root, _ = served
    model = timm.create_model("prunet_p0", pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(root / "ngc" / "p0.zip"), custom_load=True))
    assert _rel_err(model, "0.5ms-D") < 3e-4


def test_two_zoo_models_in_a_row_share_one_cache(tmp_path, monkeypatch):
    """Every NGC URL ends in ``/zip``; each zoo model must still get its own cached file (issue 12,
    item 4). NGC's host is redirected to a loopback stand-in serving NGC's URL paths; the zoo's
    own default cfgs (not an overlay) decide the URLs and cache names."""
    from urllib.parse import urlparse

    import timm.models._hub as timm_hub

    root = tmp_path / "ngc"
    for zoo_name, config, fmt in (("prunet_p0", "0.5ms-D", "raw"), ("gpunet_0", "0.65ms", "timm")):
        url = prunet.zoo.entry(zoo_name).ngc_checkpoint_url
        target = root / urlparse(url).path.lstrip("/")
        target.parent.mkdir(parents=True)
        _ngc_zip(target, f"{config}.pth.tar", recipe_weights(manifest(config)), fmt=fmt)
    real_download = timm_hub.download_url_to_file
    with StandIn(root) as server:
        def via_standin(url, dst, *args, **kwargs):
            assert url.startswith("https://api.ngc.nvidia.com/"), url
            return real_download(server.url + urlparse(url).path, dst, *args, **kwargs)

        monkeypatch.setattr(timm_hub, "download_url_to_file", via_standin)
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        p0 = timm.create_model("prunet_p0", pretrained=True)
        g0 = timm.create_model("gpunet_0", pretrained=True)
        p0_again = timm.create_model("prunet_p0", pretrained=True)  # from the cache
    assert _rel_err(p0, "0.5ms-D") < 3e-4 and _rel_err(g0, "0.65ms") < 3e-4 and _rel_err(p0_again, "0.5ms-D") < 3e-4
    assert len([r for r in server.requests if r[0] == "GET"]) == 2
    cached = sorted(p.name for p in (tmp_path / "torch" / "hub" / "checkpoints").iterdir())
    assert cached == ["gpunet_0_pyt_ckpt_21.12.0_amp.zip", "gpunet_p0_pyt_ckpt_21.12.0_amp.zip"]


def test_unreachable_download_says_how_to_load_a_local_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with StandIn(tmp_path) as server:
        url = f"{server.url}/missing.zip"
    with pytest.raises(WeightsUnavailableError, match="custom_load=True"):
        timm.create_model("prunet_p0", pretrained=True, pretrained_cfg_overlay=dict(url=url, custom_load=True))


def test_wrong_checkpoint_lists_keys_and_leaves_model_untouched(served):
    root, _ = served
    model = prunet.create_model("prunet_p0")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="NVIDIA layers"):
        prunet.zoo.load_checkpoint(model, root / "ngc" / "g0.zip")
    ours = prunet.create_model("gpunet_0").state_dict()
    with pytest.raises(CheckpointError) as err:
        prunet.zoo.factory.load_into(model, ours)
    assert "missing keys" in str(err.value) and "unexpected keys" in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_checkpoint_reading_is_timms(tmp_path):
    """Files other than NGC zips go through timm's load_state_dict/clean_state_dict (issue 12, item
    13): torch.compile's ``_orig_mod.`` prefix (alone or around DDP's ``module.``) is stripped,
    the EMA weights preferred, and a pickle naming code refused."""
    model = prunet.create_model("prunet_p0")
    sd = model.state_dict()
    path = tmp_path / "compiled.pth"
    torch.save({"args": argparse.Namespace(model="prunet_p0"), "state_dict": {f"x{k}": v for k, v in sd.items()},
                "state_dict_ema": {f"_orig_mod.module.{k}": v for k, v in sd.items()}}, path)
    got = prunet.zoo.read_checkpoint(path)
    assert list(got) == list(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    prunet.zoo.load_checkpoint(prunet.create_model("prunet_p0"), path)
    assert list(prunet.zoo.read_checkpoint(path, prefer_ema=False))[0].startswith("x")

    class RunsCode:
        def __reduce__(self):
            return (open, (str(tmp_path / "code-ran"), "w"))

    torch.save({"state_dict": sd, "x": RunsCode()}, path)
    with pytest.raises(CheckpointError, match="refused by the weights-only loader: it names"):
        prunet.zoo.read_checkpoint(path)
    assert not (tmp_path / "code-ran").exists()


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pth.tar"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        prunet.zoo.read_checkpoint(bad)


HUB_CHILD = r"""
import json, sys
import numpy as np, torch, timm
import prunet
model = timm.create_model(sys.argv[1], pretrained=True)
torch.save(model.state_dict(), sys.argv[2])
print(json.dumps(model.pretrained_cfg.get("hf_hub_id")))
"""


def test_convert_ngc_repo_loads_from_hub_standin(served, tmp_path):
    root, _ = served
    repo = tmp_path / "hub" / "prunet-test" / "prunet-p0"
    from prunet.cli import main

    assert main(["zoo", "convert-ngc", str(root / "ngc" / "p0.zip"), "--out", str(repo)]) == 0
    assert sorted(p.name for p in repo.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((repo / "config.json").read_text())
    assert cfg["architecture"] == "prunet_p0" and cfg["pretrained_cfg"]["crop_pct"] == 0.875
    with StandIn(tmp_path / "hub") as server:
        env = dict(os.environ, HF_ENDPOINT=server.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1")
        env.pop("HF_HUB_OFFLINE", None)
        out = subprocess.run([sys.executable, "-c", HUB_CHILD, "hf-hub:prunet-test/prunet-p0", str(tmp_path / "sd.pt")],
                             env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        assert any("/resolve/" in path for _, path in server.requests)
    loaded = torch.load(tmp_path / "sd.pt", weights_only=True)
    model = prunet.create_model("prunet_p0")
    prunet.zoo.load_checkpoint(model, repo / "model.safetensors")
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    model.load_state_dict(loaded)
    assert _rel_err(model, "0.5ms-D") < 3e-4


def test_searched_arch_repo_loads_through_generic_entrypoint(tmp_path):
    """A Hub repo of a non-zoo architecture carries its arch in config.json."""
    from prunet.zoo.hub import save_hub_repo

    spec = prunet.arch.load(prunet.zoo.entry("gpunet_0") and
                            __import__("nvidia_reference").FIXTURES / "configs" / "0.85ms.json")
    model = prunet.zoo.build(spec)
    repo = save_hub_repo(model, tmp_path / "hub" / "me" / "searched", zoo_name=None)
    cfg = json.loads((repo / "config.json").read_text())
    assert cfg["architecture"] == "prunet_arch" and cfg["model_args"]["arch"]["format"] == "prunet.arch/1"
    with StandIn(tmp_path / "hub") as server:
        env = dict(os.environ, HF_ENDPOINT=server.url, HF_HOME=str(tmp_path / "hf"))
        out = subprocess.run([sys.executable, "-c", HUB_CHILD, "hf-hub:me/searched", str(tmp_path / "sd.pt")],
                             env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
    loaded = torch.load(tmp_path / "sd.pt", weights_only=True)
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


HUB_NAMES_CHILD = r"""
import json, sys
import prunet
from prunet.export.resolve import model_name, resolve
from prunet.train import native_input_size
name = sys.argv[1]
model = prunet.create_model(name, pretrained=True)
exported = resolve(name, pretrained=True)  # as `prunet export --pretrained` calls it
print(json.dumps({"arch": model.pretrained_cfg["architecture"], "input": list(native_input_size(name)),
                  "resolved": type(exported).__name__, "file_name": model_name(name),
                  "same": all((a == b).all().item() for a, b in zip(model.state_dict().values(),
                                                                    exported.state_dict().values()))}))
"""


def test_hf_hub_names_work_in_create_model_train_and_export(tmp_path):
    """``hf-hub:owner/repo`` contains '/', but is a Hub repo, not an architecture file (issue 12, item 5)."""
    from prunet.zoo.hub import save_hub_repo

    spec = prunet.arch.load(__import__("nvidia_reference").FIXTURES / "configs" / "0.85ms.json")
    model = prunet.zoo.build(spec)
    save_hub_repo(model, tmp_path / "hub" / "me" / "searched", zoo_name=None)
    with StandIn(tmp_path / "hub") as server:
        env = dict(os.environ, HF_ENDPOINT=server.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1")
        env.pop("HF_HUB_OFFLINE", None)
        out = subprocess.run([sys.executable, "-c", HUB_NAMES_CHILD, "hf-hub:me/searched"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"arch": "prunet_arch", "input": [3, 288, 288], "resolved": "PruNetZooModel",
                   "file_name": "searched", "same": True}


FINETUNED_CHILD = r"""
import sys, torch, timm
import prunet
model = timm.create_model(sys.argv[1], pretrained=True)
torch.save(model.state_dict(), sys.argv[2])
print(model.num_classes, model.in_chans, model.pretrained_cfg["crop_pct"])
"""


def test_hub_repo_is_timms_save_for_hf_and_carries_a_new_head(tmp_path):
    """Repos are written by timm's save_for_hf (issue 12, item 13), so the model's current head
    and input channels travel: a 10-class, 1-channel fine-tune of a zoo model reloads as one."""
    from prunet.zoo.hub import save_hub_repo

    torch.manual_seed(0)
    model = prunet.create_model("prunet_p0", in_chans=1)
    model.reset_classifier(10)
    repo = save_hub_repo(model, tmp_path / "hub" / "me" / "p0-tuned", zoo_name="prunet_p0")
    cfg = json.loads((repo / "config.json").read_text())
    assert cfg["architecture"] == "prunet_p0" and cfg["model_args"]["num_classes"] == 10
    assert "library_name: timm" in (repo / "README.md").read_text()
    with StandIn(tmp_path / "hub") as server:
        env = dict(os.environ, HF_ENDPOINT=server.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1")
        env.pop("HF_HUB_OFFLINE", None)
        out = subprocess.run([sys.executable, "-c", FINETUNED_CHILD, "hf-hub:me/p0-tuned", str(tmp_path / "sd.pt")],
                             env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-3:] == ["10", "1", "0.875"]
    loaded = torch.load(tmp_path / "sd.pt", weights_only=True)
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
