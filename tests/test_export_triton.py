"""Triton model-repository export from the template in export/triton/."""

from __future__ import annotations

import re

import numpy as np
import pytest
from torch import nn

ort = pytest.importorskip("onnxruntime")

from prunet.export import InputShapeError, PrunetExportError, export_triton, to_onnx  # noqa: E402
from prunet.export.triton import render_config  # noqa: E402


def _model():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 5)).eval()


def _field(text, key):
    m = re.search(rf"^\s*{key}:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else None


def test_dynamic_batch_repository(tmp_path):
    src = tmp_path / "m.onnx"
    to_onnx(_model(), src, batch=None, input_size=(3, 16, 16), images=False)
    rep = export_triton(str(src), tmp_path / "repo", name="tiny", max_batch_size=4)
    model_dir = tmp_path / "repo" / "tiny"
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")) == \
        ["1", "1/model.onnx", "config.pbtxt"]
    cfg = (model_dir / "config.pbtxt").read_text()
    assert _field(cfg, "name") == '"tiny"'
    assert _field(cfg, "platform") == '"onnxruntime_onnx"'
    assert _field(cfg, "max_batch_size") == "4"
    assert "dims: [ 3, 16, 16 ]" in cfg and "dims: [ 5 ]" in cfg  # no batch dim in dims
    assert 'name: "input"' in cfg and 'name: "logits"' in cfg and "TYPE_FP32" in cfg
    assert "dynamic_batching" in cfg and "${" not in cfg
    assert rep.input_dims == [3, 16, 16] and rep.output_dims == [5]
    sess = ort.InferenceSession(rep.model_file, providers=["CPUExecutionProvider"])
    assert sess.run(None, {"input": np.zeros((3, 3, 16, 16), np.float32)})[0].shape == (3, 5)
    assert not [p for p in (tmp_path / "repo").iterdir() if p.name.startswith(".")]


def test_fixed_batch_and_overwrite(tmp_path):
    rep = export_triton(_model(), tmp_path / "repo", name="fixed", max_batch_size=0,
                        input_size=(3, 16, 16), images=False)
    cfg = open(rep.config).read()
    assert _field(cfg, "max_batch_size") == "0" and "dims: [ 1, 3, 16, 16 ]" in cfg
    assert "dynamic_batching" not in cfg
    with pytest.raises(PrunetExportError, match="already exists"):
        export_triton(_model(), tmp_path / "repo", name="fixed", max_batch_size=0,
                      input_size=(3, 16, 16), images=False)
    export_triton(_model(), tmp_path / "repo", name="fixed", max_batch_size=0,
                  input_size=(3, 16, 16), images=False, overwrite=True)


def test_batch_mismatch_is_reported(tmp_path):
    src = tmp_path / "static.onnx"
    to_onnx(_model(), src, batch=1, input_size=(3, 16, 16), images=False)
    with pytest.raises(InputShapeError, match="fixed batch"):
        export_triton(str(src), tmp_path / "repo", max_batch_size=8)
    assert not (tmp_path / "repo" / "static").exists()


def test_tensorrt_config():
    cfg = render_config(name="p0", backend="tensorrt",
                        input_io=("input", "TYPE_FP32", [-1, 3, 224, 224]),
                        output_io=("logits", "TYPE_FP32", [-1, 1000]), max_batch_size=8)
    assert _field(cfg, "platform") == '"tensorrt_plan"'
    assert "dims: [ 3, 224, 224 ]" in cfg and "dims: [ 1000 ]" in cfg
    assert "kind: KIND_GPU" in cfg
