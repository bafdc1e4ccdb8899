"""`prunet search run` end to end on a tiny space, and its refusals of bad input."""

from __future__ import annotations

import json

import pytest

from test_search_fixtures import (PY, TINY_SPACE, finished, mid_target, needs_fashion, run, search_cmd,  # noqa: F401
                                  tiny_config, tiny_lut, tiny_space)

pytestmark = needs_fashion


def test_run_writes_a_buildable_arch_under_target(finished, tiny_lut):
    import prunet.arch as arch
    from prunet.latency.lut import load_table

    out, target = finished
    spec = arch.load(out / "arch.json")
    d = spec.provenance.details
    assert spec.provenance.source == "prunet.search"
    assert d["target_ms"] == pytest.approx(target, abs=1e-6) and d["steps"] == 40 and d["seed"] == 3
    assert d["space"] == "tiny" and d["lut_id"] == load_table(tiny_lut).id
    pred = load_table(tiny_lut).predict(spec)
    assert pred == pytest.approx(d["predicted_ms"], rel=1e-5) and pred <= d["target_ms"]
    s = json.loads((out / "summary.json").read_text())
    assert s["within_target"] and s["predicted_ms"] <= d["target_ms"] and s["steps"] == 40
    assert s["measured"]["ms"] > 0 and s["measured"]["backend"] == "torch"
    assert s["peak_rss_mb"] > 0 and s["wall_s"] > 0 and 0 <= s["val_accuracy_inherited"] <= 1
    assert 0 <= s["val_accuracy_inherited_running_bn"] <= 1 and s["bn_recalibration_images"] > 0
    act = s["activation_mb"]  # every tier acts in this run, so a step at the end saves less than the first
    assert act["first"] > act["last"] > 0 and act["first"] >= act["mean"]
    assert (out / "trajectories.png").stat().st_size > 1000
    lines = (out / "log.jsonl").read_text().splitlines()
    assert len(lines) == 40 and all("expected_ms" in json.loads(ln) for ln in lines)
    lrs = [json.loads(ln)["lr"] for ln in lines]  # the cosine schedule, also at steps that rebuilt the optimiser
    assert all(b <= a for a, b in zip(lrs, lrs[1:])) and lrs[-1] < lrs[0], lrs


def test_the_supernet_runs_in_channels_last_and_older_run_folders_read_as_contiguous(finished, tmp_path):
    import torch

    from prunet.search.loop import read_run

    out, _ = finished
    assert read_run(out).loop.channels_last  # the default, recorded in run.json
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    convs = [v for v in ckpt["model"].values() if v.dim() == 4 and v.shape[1] > 1 and v.shape[2] * v.shape[3] > 1]
    assert convs and all(v.is_contiguous(memory_format=torch.channels_last) and not v.is_contiguous() for v in convs)
    # a run.json written before the setting existed: that search ran in the default memory format
    old = json.loads((out / "run.json").read_text())
    del old["loop"]["channels_last"]
    (tmp_path / "run.json").write_text(json.dumps(old))
    assert read_run(tmp_path).loop.channels_last is False
    # ... and its checkpoint resumes (its recorded run is not taken for an edited run.json)
    from prunet.search.loop import resume_search

    del ckpt["run"]["loop"]["channels_last"]
    torch.save(ckpt, tmp_path / "ckpt.pt")
    (tmp_path / "log.jsonl").write_text((out / "log.jsonl").read_text())
    summary = resume_search(tmp_path, quiet=True)
    assert summary["steps"] == old["loop"]["steps"] and (tmp_path / "arch.json").is_file()


def test_arch_builds_with_create_model_and_weights_load(finished):
    import torch
    from safetensors.torch import load_file

    import prunet

    out, _ = finished
    model = prunet.create_model(str(out / "arch.json"))
    model.load_state_dict(load_file(out / "model.safetensors"))
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)


def test_arch_exports_to_onnx(finished, tmp_path):
    pytest.importorskip("onnxruntime")
    out, _ = finished
    r = run([PY, "-m", "prunet.cli", "export", "onnx", str(out / "arch.json"), "--out", str(tmp_path / "m.onnx"),
             "--no-images", "--exporter", "torchscript"])
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m.onnx").stat().st_size > 0


def test_refusals_leave_files_alone(finished, tiny_space, tiny_lut, tiny_config, tmp_path):
    out, target = finished
    before = (out / "arch.json").read_bytes()
    r = run(search_cmd(tiny_space, tiny_lut, tiny_config, out, target))  # folder already holds a run
    assert r.returncode == 2 and "already holds a search" in r.stderr
    assert (out / "arch.json").read_bytes() == before
    r = run([PY, "-m", "prunet.cli", "search", "resume", str(out)])
    assert r.returncode == 2 and "already finished" in r.stderr

    fresh = tmp_path / "low"
    r = run(search_cmd(tiny_space, tiny_lut, tiny_config, fresh, 1e-6))
    assert r.returncode == 2 and "below the smallest net" in r.stderr and not fresh.exists()  # nothing left behind

    other = tmp_path / "other.json"
    other.write_text(json.dumps({**TINY_SPACE, "head": {"conv_chs": 72}}))
    r = run(search_cmd(other, tiny_lut, tiny_config, tmp_path / "o", target))
    assert r.returncode == 2 and "built for space 'tiny'" in r.stderr

    r = run(search_cmd(tiny_space, tiny_lut, tiny_config, tmp_path / "b", target, "--backend", "onnxruntime"))
    assert r.returncode == 2 and "backend 'torch', not 'onnxruntime'" in r.stderr

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**TINY_SPACE, "stages": [{"out_chs": 16, "stride": 3, "depth": 1}]}))
    r = run(search_cmd(bad, tiny_lut, tiny_config, tmp_path / "c", target))
    assert r.returncode == 2 and "stages[0].stride" in r.stderr


def _resumable_run(out, tiny_space, tiny_lut, tiny_config, steps: int):
    """A short finished search with its result files removed: `resume` would continue it."""
    target = mid_target(tiny_lut, tiny_space)
    r = run(search_cmd(tiny_space, tiny_lut, tiny_config, out, target, "--steps", str(steps), "--warmup-steps", "2",
                       "--checkpoint-every", str(steps // 2)))
    assert r.returncode == 0, r.stderr
    (out / "arch.json").unlink()  # the test's own run folder
    (out / "summary.json").unlink()


def test_corrupt_checkpoint_is_refused_untouched(tiny_space, tiny_lut, tiny_config, tmp_path):
    out = tmp_path / "c"
    _resumable_run(out, tiny_space, tiny_lut, tiny_config, 6)
    ck = out / "ckpt.pt"
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 2])
    r = run([PY, "-m", "prunet.cli", "search", "resume", str(out), "--quiet"])
    assert r.returncode == 2 and "corrupt or unreadable checkpoint" in r.stderr
    assert ck.read_bytes() == data[: len(data) // 2] and not (out / "arch.json").exists()


def test_resume_refuses_an_edited_run_json(tiny_space, tiny_lut, tiny_config, tmp_path):
    out = tmp_path / "e"
    _resumable_run(out, tiny_space, tiny_lut, tiny_config, 4)
    spec = json.loads((out / "run.json").read_text())
    spec["target_ms"] *= 2
    spec["loop"]["batch_size"] = 8
    (out / "run.json").write_text(json.dumps(spec))
    r = run([PY, "-m", "prunet.cli", "search", "resume", str(out), "--quiet"])
    assert r.returncode == 2 and "edited since the search started" in r.stderr
    assert "target_ms" in r.stderr and "loop.batch_size" in r.stderr and not (out / "arch.json").exists()
    r = run([PY, "-m", "prunet.cli", "search", "resume", str(out / "run.json"), "--quiet"])  # a file, not a folder
    assert r.returncode == 2 and "not a search run folder" in r.stderr and "Traceback" not in r.stderr


def test_an_existing_folder_needs_overwrite_and_keeps_foreign_files(tiny_space, tiny_lut, tiny_config, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    target = mid_target(tiny_lut, tiny_space)
    r = run(search_cmd(tiny_space, tiny_lut, tiny_config, out, target, "--steps", "2", "--warmup-steps", "1"))
    assert r.returncode == 2 and "--overwrite" in r.stderr and not (out / "run.json").exists()
    r = run(search_cmd(tiny_space, tiny_lut, tiny_config, out, target, "--steps", "2", "--warmup-steps", "1",
                       "--overwrite"))
    assert r.returncode == 0, r.stderr
    assert (out / "notes.txt").read_text() == "mine" and (out / "arch.json").exists()


def test_batchnorm_statistics_are_re_estimated_on_the_first_training_images():
    """The derived net is scored with BatchNorm statistics of its own path, not the supernet's
    average over every sampled path: each running mean becomes the mean of its input over the
    images (equal batches: the cumulative average is exact), the momentum is restored."""
    from types import SimpleNamespace

    import torch

    from prunet.search.config import LoopConfig
    from prunet.search.loop import SearchLoop

    torch.manual_seed(0)
    images = torch.randn(40, 1, 6, 6) * 3 + 2
    conv = torch.nn.Conv2d(1, 4, 3)
    model = torch.nn.Sequential(conv, torch.nn.BatchNorm2d(4, momentum=0.3))
    bn = model[1]
    bn.running_mean.fill_(9.0)
    data = SimpleNamespace(batch=lambda idx: (images[list(idx)], torch.zeros(len(idx), dtype=torch.long)))
    loop = SimpleNamespace(loop_cfg=LoopConfig(batch_size=8, bn_recalibration_images=32), train_indices=list(range(40)),
                           data=data, device=torch.device("cpu"), _memory_format=torch.contiguous_format,
                           _images=lambda x: x)
    assert SearchLoop._recalibrate_bn(loop, model) == 32
    with torch.no_grad():
        expected = conv(images[:32]).mean(dim=(0, 2, 3))
    assert torch.allclose(bn.running_mean, expected, atol=1e-5)
    assert bn.momentum == 0.3 and not model.training
    loop.loop_cfg = LoopConfig(bn_recalibration_images=0)
    bn.running_mean.fill_(9.0)
    assert SearchLoop._recalibrate_bn(loop, model) == 0 and bool((bn.running_mean == 9.0).all())
