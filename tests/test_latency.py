"""prunet.latency: statistics, backends, interleaving, provenance, errors, and the bench CLI."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from torch import nn

from prunet.export import BackendUnavailableError, InputShapeError, InvalidOnnxError
from prunet.latency import Candidate, LatencyStats, measure, measure_interleaved, ratio
from prunet.latency.runners import Runner


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4)).eval()


SHAPE = (1, 3, 16, 16)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from prunet.export import to_onnx

    path = tmp_path_factory.mktemp("lat") / "net.onnx"
    to_onnx(_net(), path, input_size=SHAPE[1:], images=False)
    return path


def test_stats_from_samples():
    s = LatencyStats.from_samples([4.0, 1.0, 3.0, 2.0, 100.0], backend="x")
    assert (s.min, s.median, s.n) == (1.0, 3.0, 5)
    assert s.mean == pytest.approx(22.0) and s.p10 == pytest.approx(1.4)
    assert s.p90 == pytest.approx(61.6) and s.std == pytest.approx(43.61, rel=1e-3)
    assert s.headline == "min" and s.value == 1.0
    assert LatencyStats.from_samples([1, 3], headline="median").value == 2.0
    d = s.to_dict()
    assert d["value"] == 1.0 and d["unit"] == "ms" and "samples" not in d
    with pytest.raises(ValueError):
        LatencyStats.from_samples([])
    with pytest.raises(ValueError):
        LatencyStats.from_samples([1.0, math.nan])
    with pytest.raises(ValueError):
        LatencyStats.from_samples([1.0], headline="max")
    a, b = LatencyStats.from_samples([2.0]), LatencyStats.from_samples([4.0])
    assert ratio(a, b) == 0.5


def test_torch_backend_with_provenance():
    s = measure(_net(), SHAPE, backend="torch", warmup=2, iters=7, threads=1, keep_samples=True)
    assert s.n == 7 and len(s.samples) == 7 and s.min == min(s.samples) > 0
    assert s.min <= s.p10 <= s.median <= s.p90
    assert s.backend == "torch" and s.threads == 1 and s.batch == 1
    assert s.input_shape == list(SHAPE) and s.warmup == 2
    assert s.versions["torch"] == torch.__version__.split("+")[0]
    assert "CPU" in s.device and s.date.startswith("20")
    assert torch.get_num_threads() >= 1  # restored


def test_onnxruntime_backend(onnx_file):
    s = measure(onnx_file, SHAPE, backend="onnxruntime", warmup=2, iters=5, threads=1)
    assert s.n == 5 and s.backend == "onnxruntime" and s.min > 0
    assert s.settings["intra_op_num_threads"] == 1 and s.settings["inter_op_num_threads"] == 1
    assert s.settings["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert s.settings["allow_spinning"] is True


def test_module_on_onnxruntime_is_exported_transparently():
    pytest.importorskip("onnxruntime")
    s = measure(_net(), SHAPE, backend="onnxruntime", warmup=1, iters=3, threads=1)
    assert s.n == 3 and s.backend == "onnxruntime"


def test_interleaved_turns_the_order_and_disables_spinning(onnx_file, monkeypatch):
    import prunet.latency.timing as mod

    calls: list[str] = []

    class Rec(Runner):
        def __init__(self, label, real):
            super().__init__()
            self.label, self.real = label, real
            self.backend, self.threads, self.settings = real.backend, real.threads, real.settings

        def __call__(self):
            calls.append(self.label)
            return self.real()

        def close(self):
            self.real.close()

    real_make = mod.make_runner
    made = {}

    def fake_make(target, shape, **kw):
        r = real_make(target, shape, **kw)
        label = "ort" if r.backend == "onnxruntime" else "torch"
        made[label] = kw
        return Rec(label, r)

    monkeypatch.setattr(mod, "make_runner", fake_make)
    out = measure_interleaved([Candidate("torch", _net(), SHAPE, "torch"),
                               Candidate("ort", onnx_file, SHAPE, "onnxruntime")],
                              warmup=0, iters=4, threads=1)
    assert calls == ["torch", "ort", "ort", "torch", "torch", "ort", "ort", "torch"]
    assert made["ort"]["spinning"] is False
    assert out["ort"].settings["allow_spinning"] is False
    assert out["ort"].settings["interleaved_with"] == ["torch"]
    assert out["torch"].n == out["ort"].n == 4
    calls.clear()
    out = measure_interleaved([Candidate("torch", _net(), SHAPE, "torch"),
                               Candidate("ort", onnx_file, SHAPE, "onnxruntime")],
                              warmup=0, iters=2, threads=1, burst=3)
    assert calls == ["torch"] * 4 + ["ort"] * 4 + ["ort"] * 4 + ["torch"] * 4  # 1 unrecorded + 3 per turn
    assert out["torch"].n == out["ort"].n == 6 and out["ort"].settings["burst"] == 3


def test_errors_are_clear(onnx_file, tmp_path):
    with pytest.raises(InputShapeError, match="cannot feed"):
        measure(onnx_file, (1, 3, 32, 32), backend="onnxruntime", iters=1)
    with pytest.raises(InputShapeError):
        measure(_net(), (1, 5, 16, 16), backend="torch", iters=1)
    with pytest.raises(InputShapeError):
        measure(_net(), (0, 3, 16, 16), backend="torch", iters=1)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx at all")
    with pytest.raises(InvalidOnnxError):
        measure(bad, SHAPE, backend="onnxruntime", iters=1)
    with pytest.raises(BackendUnavailableError, match="backend"):
        measure(_net(), SHAPE, backend="tvm", iters=1)
    with pytest.raises(BackendUnavailableError, match="provider"):
        measure(onnx_file, SHAPE, backend="onnxruntime", iters=1,
                providers=["NoSuchExecutionProvider"])


def test_tensorrt_backend_missing_is_clear(onnx_file):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    with pytest.raises(BackendUnavailableError, match="tensorrt not installed"):
        measure(onnx_file, SHAPE, backend="tensorrt", iters=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_torch_cuda_events():
    s = measure(_net(), SHAPE, backend="torch", device="cuda", warmup=2, iters=5)
    assert s.n == 5 and "CUDA" in s.device


def _parser():
    from prunet._cli_export import add_bench_command, add_export_commands

    p = argparse.ArgumentParser(prog="prunet")
    sub = p.add_subparsers(dest="command", required=True)
    add_export_commands(sub)
    add_bench_command(sub)
    return p


def _run(argv):
    args = _parser().parse_args(argv)
    return args.func(args)


def test_bench_cli_writes_json_and_plot(onnx_file, tmp_path, capsys):
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    rc = _run(["bench", str(onnx_file), "--backend", "onnxruntime,torch", "--iters", "3",
               "--warmup", "1", "--threads", "1", "--json", str(out), "--plot", str(png),
               "--quiet"])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["headline_statistic"] == "min" and doc["versions"]["onnxruntime"]
    assert [r["backend"] for r in doc["results"]] == ["onnxruntime"]  # torch needs a model
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "torch backend needs a model" in capsys.readouterr().err


def test_bench_cli_errors(tmp_path, capsys):
    assert _run(["bench", "no_such_model_xyz", "--backend", "torch", "--quiet"]) == 2
    assert "no_such_model_xyz" in capsys.readouterr().err
    assert _run(["bench", "x", "--backend", "torch,magic"]) == 2
    with pytest.raises(SystemExit):
        _parser().parse_args(["bench", "x", "--batch", "0"])


def test_export_then_bench_cli_on_p0(tmp_path, capsys):
    """The issue's acceptance path: export prunet_p0, then bench the ONNX file."""
    pytest.importorskip("onnxruntime")
    onnx_path = tmp_path / "p0.onnx"
    assert _run(["export", "onnx", "prunet_p0", "--out", str(onnx_path), "--no-images",
                 "--json", str(tmp_path / "p0.json")]) == 0
    report = json.loads((tmp_path / "p0.json").read_text())
    assert report["max_rel"] <= 1e-4 and report["input_shape"] == [1, 3, 224, 224]
    assert _run(["bench", str(onnx_path), "--backend", "onnxruntime", "--iters", "3",
                 "--warmup", "1", "--quiet"]) == 0
    assert "onnxruntime" in capsys.readouterr().out
