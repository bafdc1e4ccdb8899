"""ONNX export: files, parity figures, bad input, atomic writes. Small models, CPU only."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from prunet.export import (  # noqa: E402
    InputShapeError,
    InvalidOnnxError,
    ParityError,
    PrunetExportError,
    UnknownModelError,
    load_onnx,
    to_fp16_onnx,
    to_onnx,
)
from prunet.export.images import ImagesUnavailableError, image_label, imagenet_images  # noqa: E402
from prunet.export.parity import calibrate_batchnorm  # noqa: E402

ZOO = ["prunet_p0", "prunet_p1", "gpunet_0", "gpunet_1", "gpunet_2", "gpunet_d1", "gpunet_d2"]


class Tiny(nn.Module):
    """Conv-BN-act stem, a depthwise-separable block with SE-like gating, pooled linear head."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.BatchNorm2d(8), nn.ReLU())
        self.pw = nn.Conv2d(8, 16, 1)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 16, 1), nn.Sigmoid())
        self.head = nn.Linear(16, classes)
        self.pretrained_cfg = {"architecture": "tiny", "input_size": (3, 32, 32),
                               "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
                               "crop_pct": 0.875, "interpolation": "bilinear"}

    def forward(self, x):
        x = self.pw(self.dw(self.stem(x)))
        x = x * self.gate(x)
        return self.head(x.mean((2, 3)))


class Noisy(nn.Module):
    """Exports fine but cannot agree with torch: random numbers differ between runtimes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return y + torch.rand_like(y)


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    return calibrate_batchnorm(Tiny().eval(), (4, 3, 32, 32))


def _ort_run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def test_static_batch_export_is_checked_and_matches_torch(tiny, tmp_path):
    out = tmp_path / "tiny.onnx"
    report = to_onnx(tiny, out, images=False)
    assert out.is_file() and report.path == str(out)
    load_onnx(out)  # passes the full checker
    assert report.input_name == "input" and report.input_shape == [1, 3, 32, 32]
    assert report.batch == 1 and report.exporter == "dynamo" and report.opset >= 18
    assert report.parity and all(p.inputs == "random" for p in report.parity)
    assert report.max_rel <= 1e-4 and report.max_abs < 1e-3
    assert report.ops.get("Conv", 0) >= 4
    # single file, no external data
    assert not [f for f in os.listdir(tmp_path) if f != "tiny.onnx"]
    x = torch.randn(1, 3, 32, 32)
    np.testing.assert_allclose(_ort_run(out, x), tiny(x).detach().numpy(), rtol=1e-4, atol=1e-5)
    assert os.stat(out).st_mode & 0o044  # readable by others, not mkstemp's 0600


def test_dynamic_batch_runs_any_batch(tiny, tmp_path):
    out = tmp_path / "dyn.onnx"
    report = to_onnx(tiny, out, batch=None, images=False)
    assert report.batch is None and not isinstance(report.input_shape[0], int)
    for b in (1, 5):
        x = torch.randn(b, 3, 32, 32)
        np.testing.assert_allclose(_ort_run(out, x), tiny(x).detach().numpy(), rtol=1e-4,
                                   atol=1e-5)


def test_torchscript_exporter_gives_old_opset(tiny, tmp_path):
    report = to_onnx(tiny, tmp_path / "ts.onnx", exporter="torchscript", opset=13, images=False)
    assert report.opset == 13 and report.max_rel <= 1e-4


def test_dynamo_refuses_silent_opset_change(tiny, tmp_path):
    with pytest.raises(PrunetExportError, match="torchscript"):
        to_onnx(tiny, tmp_path / "o13.onnx", opset=13, images=False)
    assert not (tmp_path / "o13.onnx").exists()


def test_parity_failure_writes_nothing(tmp_path):
    out = tmp_path / "noisy.onnx"
    with pytest.raises(ParityError, match="disagrees") as info:
        to_onnx(Noisy(), out, input_size=(3, 16, 16), images=False)
    assert info.value.report.max_rel > 1e-4
    assert list(tmp_path.iterdir()) == []


def test_interrupted_export_leaves_no_file(tiny, tmp_path, monkeypatch):
    import prunet.export.onnx as mod

    out = tmp_path / "cut.onnx"
    out.write_bytes(b"previous good export")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(mod, "_clean", boom)
    with pytest.raises(KeyboardInterrupt):
        to_onnx(tiny, out, images=False)
    assert out.read_bytes() == b"previous good export"  # old file untouched, no half file
    assert [p.name for p in tmp_path.iterdir()] == ["cut.onnx"]


def test_unknown_model_name_is_one_clear_error(tmp_path):
    with pytest.raises(UnknownModelError, match="prunet_p0"):
        to_onnx("prunet_p00", tmp_path / "x.onnx")
    with pytest.raises(UnknownModelError, match="not found"):
        to_onnx(str(tmp_path / "missing.json"), tmp_path / "x.onnx")
    with pytest.raises(UnknownModelError, match="not an ONNX file"):
        (tmp_path / "a.onnx").write_bytes(b"x")
        to_onnx(str(tmp_path / "a.onnx"), tmp_path / "x.onnx")


def test_corrupt_onnx_is_invalid(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf model" * 10)
    with pytest.raises(InvalidOnnxError, match="bad.onnx"):
        load_onnx(bad)
    with pytest.raises(InvalidOnnxError, match="not found"):
        load_onnx(tmp_path / "nope.onnx")


def test_wrong_input_shape(tiny, tmp_path):
    with pytest.raises(InputShapeError, match="does not fit"):
        to_onnx(tiny, tmp_path / "x.onnx", input_size=(1, 32, 32), images=False)
    with pytest.raises(InputShapeError):
        to_onnx(tiny, tmp_path / "x.onnx", input_size=(3, 32), images=False)
    with pytest.raises(InputShapeError, match="batch"):
        to_onnx(tiny, tmp_path / "x.onnx", batch=0, images=False)


def test_fp16_copy_runs_close_to_fp32(tiny, tmp_path):
    src = tmp_path / "t.onnx"
    to_onnx(tiny, src, images=False)
    half = to_fp16_onnx(src, tmp_path / "t.fp16.onnx")
    model = onnx.load(str(half))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    x = torch.randn(1, 3, 32, 32)
    ref = tiny(x).detach().numpy()
    got = _ort_run(half, x)
    assert np.max(np.abs(got - ref)) / np.max(np.abs(ref)) < 1e-2


@pytest.fixture(scope="module")
def photos():
    try:
        return imagenet_images()
    except ImagesUnavailableError as exc:
        pytest.skip(f"foolbox wheel not reachable on PyPI: {exc}")


def test_imagenet_photos_from_foolbox_wheel(photos):
    assert len(photos) == 20
    assert all(p.suffix == ".jpg" and 0 <= image_label(p) < 1000 for p in photos)


def test_export_checks_real_images(tiny, tmp_path, photos):
    report = to_onnx(tiny, tmp_path / "img.onnx", batch=3)
    kinds = {p.inputs: p for p in report.parity}
    assert set(kinds) == {"random", "imagenet"}
    assert kinds["imagenet"].n == 18  # 20 photos trimmed to a multiple of the fixed batch
    assert kinds["imagenet"].max_rel <= 1e-4 and kinds["imagenet"].top1_agree == 1.0


def test_untrained_model_gets_weak_parity_note(tmp_path):
    class Dead(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)) * 0.0)

    report = to_onnx(Dead(), tmp_path / "d.onnx", input_size=(3, 8, 8), images=False)
    assert any("barely depends" in n for n in report.notes)


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_zoo_parity(name, tmp_path, photos):
    import prunet

    model = prunet.create_model(name)
    size = model.pretrained_cfg["input_size"]
    calibrate_batchnorm(model, (2, *size))  # untrained BN statistics would mute the graph
    report = to_onnx(model, tmp_path / f"{name}.onnx", images=4, check_tensorrt=True)
    assert report.max_rel <= 1e-4, report.summary()
    assert {p.inputs for p in report.parity} == {"random", "imagenet"}
    assert not any("barely depends" in n for n in report.notes), report.summary()
    assert report.tensorrt["ok"], report.tensorrt


def test_foolbox_wheel_with_another_checksum_is_refused(tmp_path, monkeypatch):
    """The images come out of a wheel only after its SHA-256 matched the pin; a mismatch names
    the file and leaves no images behind."""
    import dataclasses

    import prunet.export.images as images

    monkeypatch.setenv("PRUNET_CACHE", str(tmp_path))
    monkeypatch.setattr(images, "FOOLBOX", dataclasses.replace(images.FOOLBOX, sha256="0" * 64))
    try:
        images.imagenet_images()
    except ImagesUnavailableError as exc:
        if "sha256" not in str(exc):
            pytest.skip(f"PyPI unreachable: {exc}")
        assert images.FOOLBOX.filename in str(exc)
    else:
        pytest.fail("a wheel with another checksum was accepted")
    assert not images.images_dir().exists()


def test_stalled_pip_download_gives_a_clear_error(tmp_path, monkeypatch):
    import subprocess

    import prunet._pypi as pypi

    def stalled(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, kw.get("timeout"))

    monkeypatch.setattr(pypi.subprocess, "run", stalled)
    from prunet.export.images import FOOLBOX

    with pytest.raises(RuntimeError, match=f"no answer within {pypi.PIP_TIMEOUT_S} s; pass wheel_path="):
        pypi.fetch_wheel(FOOLBOX, tmp_path, quiet=True)
    assert not any(tmp_path.iterdir())  # nothing half-written
