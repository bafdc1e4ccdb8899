"""Detection: the small real COCO set, PruNetBackbone, the three detector families, train + eval.

Tests marked ``detection`` need mmdet/mmcv (``make setup-detection``) and skip with that reason
when they are missing. The dataset tests need pycocotools and the deepforest wheel (pip download,
cached under ~/.cache/prunet/data).
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "detection" / "configs"
# mmengine 0.10.7 needs pkg_resources to resolve `mmdet::` configs; install_mmcv.sh pins setuptools.
HAVE_MMDET = all(importlib.util.find_spec(m) is not None for m in ("mmdet", "mmengine", "mmcv", "pkg_resources"))
needs_mmdet = pytest.mark.skipif(
    not HAVE_MMDET, reason="mmdet/mmengine/mmcv (or setuptools' pkg_resources, which mmengine needs) not "
                           "installed; run `make setup-detection` (bash detection/install_mmcv.sh <venv python>)")
needs_pycocotools = pytest.mark.skipif(importlib.util.find_spec("pycocotools") is None,
                                       reason="pycocotools not installed (make setup-detection)")


# ----------------------------------------------------------------------------- dataset


@pytest.fixture(scope="session")
def trees():
    """The tree-crown set, built once into the shared data cache (pip downloads the wheel once)."""
    from prunet.data.coco_sources import build_deepforest_trees

    try:
        return build_deepforest_trees(quiet=True)
    except RuntimeError as e:  # pip could not reach the package index
        pytest.skip(f"deepforest wheel unavailable: {e}")


def test_tile_edges_cover_the_image_without_overlap():
    from prunet.data.coco_sources import _tile_edges

    assert _tile_edges(400, 400) == [(0, 400)]
    assert _tile_edges(1035, 400) == [(0, 400), (400, 800), (800, 1035)]  # 235 px remainder kept
    assert _tile_edges(2472, 400)[-1] == (2000, 2472)  # 72 px remainder merged into the last tile


def test_wheel_with_wrong_hash_is_rejected(tmp_path):
    from prunet.data.coco_sources import DEEPFOREST_WHEEL, fetch_wheel

    fake = tmp_path / DEEPFOREST_WHEEL.filename
    fake.write_bytes(b"not the release")
    with pytest.raises(ValueError, match="sha256"):
        fetch_wheel(DEEPFOREST_WHEEL, tmp_path / "cache", wheel_path=fake)
    with pytest.raises(FileNotFoundError, match="wheel_path"):
        fetch_wheel(DEEPFOREST_WHEEL, tmp_path / "cache", wheel_path=tmp_path / "missing.whl")


def test_tile_size_is_checked(tmp_path):
    from prunet.data.coco_sources import build_deepforest_trees

    with pytest.raises(ValueError, match="tile"):
        build_deepforest_trees(tmp_path, tile=8)


@needs_pycocotools
def test_trees_set_is_valid_coco_with_all_source_boxes(trees):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    manifest = json.loads((trees.root / "MANIFEST.json").read_text())
    counts = manifest["splits"]
    # The wheel's four VOC files hold 951 boxes. Tiling keeps a box whole or its larger part; only
    # a box cut so that no part keeps half its area is left as ignored (iscrowd) parts.
    assert manifest["source_boxes"] == 951
    kept = counts["train"]["boxes"] + counts["val"]["boxes"]
    assert kept == sum(manifest["kept_boxes_by_source_label"].values())
    assert 0.95 * 951 <= kept <= 951
    assert set(manifest["kept_boxes_by_source_label"]) == {"Tree", "Alive", "Dead"}
    assert counts["val"]["images"] >= 5 and counts["train"]["images"] > counts["val"]["images"]

    train_files = set()
    for split, path in (("train", trees.train_json), ("val", trees.val_json)):
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(path))
        imgs = gt.dataset["images"]
        files = {im["file_name"] for im in imgs}
        if split == "train":
            train_files = files
        else:
            assert not files & train_files, "a tile is in both splits"
        for im in imgs:
            assert (trees.img_dir / im["file_name"]).is_file()
            for a in gt.loadAnns(gt.getAnnIds(imgIds=im["id"])):
                x, y, w, h = a["bbox"]
                assert w >= 1 and h >= 1 and x >= 0 and y >= 0
                assert x + w <= im["width"] and y + h <= im["height"]
        # Ground truth scored as detections must give AP 1.0: the json is what COCOeval expects.
        dets = [dict(image_id=a["image_id"], category_id=a["category_id"], bbox=a["bbox"], score=1.0)
                for a in gt.dataset["annotations"] if not a["iscrowd"]]
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(gt, gt.loadRes(dets), "bbox")
            ev.evaluate(), ev.accumulate(), ev.summarize()
        assert ev.stats[0] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- backbone

def _backbone(**kw):
    from prunet.detection import PruNetBackbone

    return PruNetBackbone(**kw)


@pytest.mark.detection
@needs_mmdet
def test_backbone_registered_and_outputs_match_feature_info():
    import prunet.detection  # noqa: F401
    from mmdet.registry import MODELS

    bb = MODELS.build(dict(type="PruNetBackbone", arch="prunet_p0", out_indices=(1, 2, 3, 4)))
    bb.eval()
    with torch.no_grad():
        outs = bb(torch.randn(1, 3, 128, 96))
    assert isinstance(outs, tuple) and len(outs) == 4
    assert bb.strides == [4, 8, 16, 32]
    for o, c, s in zip(outs, bb.out_channels, bb.strides):
        assert o.shape == (1, c, 128 // s, 96 // s)


@pytest.mark.detection
@needs_mmdet
def test_arch_json_path_and_default_out_indices():
    bb = _backbone(arch=str(REPO / "zoo" / "gpunet_0.json"))
    assert bb.out_indices == (2, 3, 4) and bb.strides == [8, 16, 32]
    from prunet.detection import backbone_channels

    assert bb.out_channels == backbone_channels("gpunet_0", (2, 3, 4))


@pytest.mark.detection
@needs_mmdet
@pytest.mark.parametrize("kw, err, match", [
    (dict(out_indices=(1, 9)), ValueError, r"out_indices.*level 9.*feature levels"),
    (dict(out_indices=(3, 1)), ValueError, r"out_indices.*increasing"),
    (dict(out_indices=2), TypeError, r"out_indices"),
    (dict(out_indices=()), TypeError, r"out_indices"),
    (dict(arch="prunet_p9"), ValueError, r"arch.*prunet_p9.*prunet_p0"),
    (dict(arch="no/such/arch.json"), FileNotFoundError, r"arch.*no/such/arch.json"),
    (dict(frozen_stages=7), ValueError, r"frozen_stages"),
    (dict(pretrained=3), TypeError, r"pretrained"),
    (dict(pretrained="x.pth", init_cfg=dict(type="Pretrained", checkpoint="x.pth")), ValueError,
     r"pretrained and init_cfg"),
])
def test_bad_arguments_fail_at_build_with_the_field_named(kw, err, match):
    with pytest.raises(err, match=match):
        _backbone(**kw)


@pytest.mark.detection
@needs_mmdet
def test_frozen_stages_and_norm_eval():
    from torch.nn.modules.batchnorm import _BatchNorm

    bb = _backbone(out_indices=(1, 2, 3, 4), frozen_stages=1)
    params = dict(bb.model.named_parameters())
    for name, p in params.items():
        frozen = name.startswith(("model.stem.", "model.stages.0.", "model.stages.1."))
        assert p.requires_grad is not frozen, name
    bb.train()
    for name, m in bb.model.named_modules():
        if isinstance(m, _BatchNorm):
            assert m.training is not name.startswith(("model.stem.", "model.stages.0.", "model.stages.1.")), name
    running = bb.model.model.stem[0].bn1.running_mean.clone()
    bb(torch.randn(2, 3, 64, 64))
    assert torch.equal(running, bb.model.model.stem[0].bn1.running_mean)  # frozen stats unchanged

    # A timm model through the zoo's create_model: level 0 (act1) has no parameters of its own.
    bb = _backbone(arch="resnet18", out_indices=(1, 2, 3, 4), frozen_stages=0)
    assert [n for n, p in bb.model.named_parameters() if not p.requires_grad] == [
        "conv1.weight", "bn1.weight", "bn1.bias"]

    bb = _backbone(out_indices=(1, 2), norm_eval=True).train()
    assert all(not m.training for m in bb.modules() if isinstance(m, _BatchNorm))
    assert all(p.requires_grad for p in bb.parameters())


@pytest.mark.detection
@needs_mmdet
def test_frozen_stages_are_whole_named_modules(tmp_path):
    """Frozen levels are the ``stem``/``stages.<i>`` modules in eval mode as a whole, so drop-path
    in a frozen stage stops dropping too (issue 12, item 3: not by parameter order)."""
    import dataclasses

    import prunet

    spec = dataclasses.replace(prunet.zoo.get_arch("prunet_p0"), drop_path_rate=0.5)
    arch = prunet.arch.save(spec, tmp_path / "p0_droppath.json")
    bb = _backbone(arch=str(arch), out_indices=(1, 2, 3), frozen_stages=2).train()
    net = bb.model.model
    frozen = [("stem", net.stem)] + [(f"stages.{i}", net.stages[i]) for i in range(3)]
    for name, module in frozen:
        assert not any(m.training for m in module.modules()), name
        assert not any(p.requires_grad for p in module.parameters()), name
    assert net.stages[3].training and all(p.requires_grad for p in net.stages[3].parameters())
    assert any(type(m).__name__ == "DropPath" for m in net.stages[2].modules())
    x = torch.randn(1, net.stages[2][0].spec.in_chs, 16, 16)
    with torch.no_grad():
        assert torch.equal(net.stages[2](x), net.stages[2](x))  # no drop-path in a frozen stage


@pytest.mark.detection
@needs_mmdet
def test_checkpoint_loading_strict_and_prefixed(tmp_path):
    import prunet

    full = prunet.create_model("prunet_p0")
    ckpt = tmp_path / "p0.pth"
    torch.save({"state_dict": full.state_dict()}, ckpt)
    bb = _backbone(out_indices=(1, 2, 3), pretrained=str(ckpt))
    for k, v in bb.model.state_dict().items():
        assert torch.equal(v, full.state_dict()[k[len("model."):]]), k

    # A detector checkpoint: the backbone's tensors under 'backbone.', selected with init_cfg prefix.
    det = tmp_path / "det.pth"
    torch.save({"meta": {"note": "detector"}, "state_dict": {f"backbone.model.{k}": v for k, v in
                                                              full.state_dict().items()}}, det)
    bb2 = _backbone(out_indices=(1, 2, 3), init_cfg=dict(type="Pretrained", checkpoint=str(det),
                                                         prefix="backbone."))
    for k, v in bb2.model.state_dict().items():
        assert torch.equal(v, bb.model.state_dict()[k]), k

    other = tmp_path / "gpunet1.pth"
    torch.save(prunet.create_model("gpunet_1").state_dict(), other)
    with pytest.raises(ValueError, match=r"does not match backbone arch 'prunet_p0'"):
        _backbone(pretrained=str(other))
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        _backbone(pretrained=str(tmp_path / "missing.pth"))


_HF_SCRIPT = r"""
import sys, torch
import prunet.detection
from prunet.detection import PruNetBackbone
from mmengine.runner import CheckpointLoader
expected = torch.load(sys.argv[1], weights_only=True)
bb = PruNetBackbone(arch="prunet_p0", out_indices=(1, 2, 3), pretrained="hf-hub:someone/prunet-p0")
for k, v in bb.model.state_dict().items():
    assert torch.equal(v, expected[k[len("model."):]]), k
raw = CheckpointLoader.load_checkpoint("hf-hub:someone/prunet-p0/pytorch_model.bin")
assert any(k.startswith("network.") for k in raw), list(raw)[:3]
print("HF-OK")
"""


@pytest.mark.detection
@needs_mmdet
def test_hf_hub_reference_with_nvidia_weights_through_a_hub_standin(tmp_path):
    """``hf-hub:`` downloads with huggingface_hub (from a loopback Hub stand-in) and NVIDIA-keyed
    weights (NGC naming) are converted by the zoo's converter before the strict match."""
    from hub_standin import StandIn
    from nvidia_reference import FIXTURES, manifest, recipe_weights

    if not (FIXTURES / "reference" / "0.5ms-D.manifest.json").is_file():
        pytest.skip(f"fixture {FIXTURES}/reference/0.5ms-D.manifest.json missing")
    from prunet.zoo import convert_nvidia_state_dict, get_arch

    nvidia_sd = recipe_weights(manifest("0.5ms-D"))  # PruNet-P0 weights under NVIDIA's key names
    repo = tmp_path / "srv" / "someone" / "prunet-p0"
    repo.mkdir(parents=True)
    torch.save(nvidia_sd, repo / "pytorch_model.bin")  # no model.safetensors: the fallback is used
    torch.save(convert_nvidia_state_dict(nvidia_sd, get_arch("prunet_p0")), tmp_path / "expected.pth")
    with StandIn(tmp_path / "srv") as server:
        env = dict(os.environ, HF_ENDPOINT=server.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1")
        run = subprocess.run([sys.executable, "-c", _HF_SCRIPT, str(tmp_path / "expected.pth")],
                             capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0 and "HF-OK" in run.stdout, run.stdout[-2000:] + run.stderr[-3000:]
    assert any("model.safetensors" in path for _, path in server.requests)  # tried first
    assert any("pytorch_model.bin" in path for _, path in server.requests)


@pytest.mark.detection
@needs_mmdet
def test_zoo_weights_unavailable_error_says_how_to_load_a_file(monkeypatch):
    from prunet.detection import backbone as bbmod
    from prunet.zoo import WeightsUnavailableError

    real = bbmod._create_model

    def offline(arch, **kw):
        if kw.get("pretrained"):
            raise WeightsUnavailableError(f"could not download pretrained weights for {arch!r}")
        return real(arch, **kw)

    monkeypatch.setattr(bbmod, "_create_model", offline)
    with pytest.raises(WeightsUnavailableError, match=r"model.backbone.pretrained='/path/to/checkpoint'"):
        _backbone(pretrained=True)


# ----------------------------------------------------------------------------- detector families

FAMILY_CONFIGS = ["retinanet_prunet-p0_fpn_1x_coco.py", "fcos_prunet-p1_fpn_gn-head_1x_coco.py",
                  "faster-rcnn_prunet-p0_fpn_1x_coco.py"]


@pytest.mark.detection
@needs_mmdet
@pytest.mark.parametrize("config", FAMILY_CONFIGS)
@pytest.mark.parametrize("arch", ["config", "gpunet_d1.json"])
def test_each_family_builds_and_computes_losses(config, arch):
    """Each shipped config (zoo backbone) and an arch-JSON backbone give finite training losses."""
    import prunet.detection  # noqa: F401
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    from prunet.detection.tools import sync_neck_channels

    register_all_modules()
    cfg = Config.fromfile(str(CONFIGS / config))
    cfg.model.backbone.pretrained = None  # no network here; weights are not what is tested
    if arch != "config":
        cfg.model.backbone.arch = str(REPO / "zoo" / arch)
    channels = sync_neck_channels(cfg, quiet=True)
    assert cfg.model.neck.in_channels == channels
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    packed = demo_mm_inputs(2, [[3, 128, 128], [3, 128, 128]], num_classes=80, num_items=[3, 2])
    data = model.data_preprocessor(packed, True)
    losses = model(**data, mode="loss")
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v) for v in losses.values())
    assert torch.isfinite(total)
    total.backward()
    stages = model.backbone.model.model.stages
    assert next(stages[2].parameters()).grad is not None  # trained
    assert next(stages[1].parameters()).grad is None  # frozen_stages=1 in the shipped configs


@pytest.mark.detection
@needs_mmdet
def test_configs_neck_channels_match_their_backbones():
    from mmengine.config import Config

    from prunet.detection import backbone_channels

    for path in sorted(CONFIGS.glob("*prunet*.py")):
        cfg = Config.fromfile(str(path))
        bb = cfg.model.backbone
        assert cfg.model.neck.in_channels == backbone_channels(bb.arch, bb.out_indices), path.name


# ----------------------------------------------------------------------------- train + evaluate


def _scalars(work_dir: Path) -> list[dict]:
    files = sorted(work_dir.glob("*/vis_data/scalars.json"))
    assert files, f"no scalars.json under {work_dir}"
    return [json.loads(line) for line in files[-1].read_text().splitlines() if line.strip()]


@pytest.mark.detection
@needs_mmdet
@needs_pycocotools
def test_train_retinanet_p0_on_trees_then_evaluate(trees, tmp_path):
    """A few CPU iterations on the real tree set: the loss falls and COCO bbox mAP is computed."""
    work = tmp_path / "work"
    config = CONFIGS / "trees" / "retinanet_prunet-p0_fpn_trees.py"
    iters, scale = 16, "(224,224)"
    opts = [f"train_cfg.max_iters={iters}", f"train_cfg.val_interval={iters}",
            "default_hooks.logger.interval=1", "log_processor.window_size=1",
            f"default_hooks.checkpoint.interval={iters}", "param_scheduler.0.end=3",
            "param_scheduler.1.begin=3", f"param_scheduler.1.end={iters}",
            f"train_dataloader.dataset.pipeline.2.scale={scale}", f"val_dataloader.dataset.pipeline.1.scale={scale}",
            f"test_dataloader.dataset.pipeline.1.scale={scale}", "randomness.seed=0"]
    env = dict(os.environ, PYTHONHASHSEED="0")
    run = subprocess.run([sys.executable, str(REPO / "detection" / "train.py"), str(config), "--quiet",
                          "--work-dir", str(work), "--cfg-options", *opts],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = _scalars(work)
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == iters and all(v == v for v in losses)  # one per iteration, no NaN
    first, last = sum(losses[:4]) / 4, sum(losses[-8:]) / 8
    assert last < 0.9 * first, losses
    val = [r for r in rows if "coco/bbox_mAP" in r]
    assert val and 0.0 <= val[-1]["coco/bbox_mAP"] <= 1.0

    ckpt = work / f"iter_{iters}.pth"
    out = tmp_path / "metrics.json"
    run = subprocess.run([sys.executable, str(REPO / "detection" / "test.py"), str(config), str(ckpt), "--quiet",
                          "--work-dir", str(work), "--out-json", str(out), "--cfg-options",
                          f"test_dataloader.dataset.pipeline.1.scale={scale}"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    metrics = json.loads(out.read_text())["metrics"]
    assert {"coco/bbox_mAP", "coco/bbox_mAP_50", "coco/bbox_mAP_75"} <= set(metrics)
    assert metrics["coco/bbox_mAP"] == pytest.approx(val[-1]["coco/bbox_mAP"], abs=1e-3)
    assert "coco/bbox_mAP" in run.stdout

    # The trained detector's checkpoint (an mmengine Runner file) seeds a new backbone.
    import prunet.detection  # noqa: F401
    from mmengine.runner import CheckpointLoader

    trained = CheckpointLoader.load_checkpoint(str(ckpt))["state_dict"]
    bb = _backbone(out_indices=(1, 2, 3, 4), init_cfg=dict(type="Pretrained", checkpoint=str(ckpt),
                                                           prefix="backbone."))
    for k, v in bb.state_dict().items():
        assert torch.equal(v, trained[f"backbone.{k}"]), k


@pytest.mark.detection
@needs_mmdet
def test_mmengine_keeps_its_loader_and_reads_its_own_checkpoints(tmp_path):
    """Importing prunet.detection replaces nothing of mmengine's (issue 12, item 3): its own
    local-file loader reads a Runner checkpoint (message hub with HistoryBuffer and numpy logs)
    through torch's weights-only unpickler, with mmengine's types allow-listed."""
    import numpy as np
    from mmengine.logging import MessageHub
    from mmengine.runner import CheckpointLoader

    import prunet.detection  # noqa: F401
    from prunet.detection.checkpoint import read_checkpoint

    assert CheckpointLoader._schemes[""].__module__.startswith("mmengine."), CheckpointLoader._schemes[""]
    # A backbone read first (what building a detector with init_cfg does) must not undo the
    # process-wide allowance: torch's scoped allow-list removes its entries on exit (CI, stop 17).
    torch.save({"state_dict": {"backbone.w": torch.zeros(1)}}, tmp_path / "bb.pth")
    assert list(read_checkpoint(tmp_path / "bb.pth", prefix="backbone.")) == ["w"]
    hub = MessageHub.get_instance("prunet-test-ckpt")
    for v in (0.5, np.float64(0.25), np.float32(0.125)):
        hub.update_scalar("train/loss", v)
    path = tmp_path / "iter_2.pth"
    torch.save({"meta": {"iter": 2, "seed": np.int64(0)}, "state_dict": {"w": torch.ones(2)},
                "message_hub": hub.state_dict()}, path)
    ckpt = CheckpointLoader.load_checkpoint(str(path))
    assert torch.equal(ckpt["state_dict"]["w"], torch.ones(2))
    assert ckpt["message_hub"]["log_scalars"]["train/loss"].mean() == pytest.approx((0.5 + 0.25 + 0.125) / 3)


@pytest.mark.detection
@needs_mmdet
def test_checkpoint_loader_refuses_code_in_pickles(tmp_path):
    """The allow-list admits mmengine's log types, not arbitrary getattr chains or callables."""
    import pickle

    from mmengine.runner import CheckpointLoader

    import prunet.detection  # noqa: F401

    class Sneaky:
        def __reduce__(self):
            return getattr, (torch._utils._rebuild_tensor_v2, "__globals__")

    class Opens:
        def __reduce__(self):
            return open, (str(tmp_path / "code-ran"), "w")

    path = tmp_path / "sneaky.pth"
    torch.save({"state_dict": {}, "x": Sneaky()}, path)
    with pytest.raises(pickle.UnpicklingError, match="refusing getattr"):
        CheckpointLoader.load_checkpoint(str(path))
    torch.save({"state_dict": {}, "x": Opens()}, path)
    with pytest.raises(pickle.UnpicklingError):
        CheckpointLoader.load_checkpoint(str(path))
    assert not (tmp_path / "code-ran").exists()
