"""TensorRT: op-support check (no TensorRT needed), trtexec command and log parser, engine build
(skipped where TensorRT is not installed)."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from prunet.export import BackendUnavailableError, TensorRTError  # noqa: E402
from prunet.export.tensorrt import (  # noqa: E402
    build_engine,
    decode_version,
    parse_trtexec_output,
    trtexec_command,
)
from prunet.export.trt_support import check_tensorrt_support, support_table  # noqa: E402

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
needs_trt = pytest.mark.skipif(not HAVE_TRT, reason="tensorrt not installed")

# Performance summary as TensorRT 10 trtexec prints it (samples/common/sampleReporting.cpp:
# "min = .. ms, max = .., mean = .., median = .., percentile(90%) = .. ms, ..." for the default
# percentiles 90/95/99; log prefix "[date-time] [I] "). Numbers are sample values.
TRT10_LOG = """\
&&&& RUNNING TensorRT.trtexec [TensorRT v100100] # trtexec --onnx=p0.onnx --fp16 --shapes=input:1x3x224x224
[06/17/2024-10:01:02] [I] === Model Options ===
[06/17/2024-10:01:30] [I] Warmup completed 1127 queries over 200 ms
[06/17/2024-10:01:30] [I] Timing trace has 16894 queries over 3.00043 s
[06/17/2024-10:01:30] [I]
[06/17/2024-10:01:30] [I] === Performance summary ===
[06/17/2024-10:01:30] [I] Throughput: 5630.49 qps
[06/17/2024-10:01:30] [I] Latency: min = 0.220215 ms, max = 0.531738 ms, mean = 0.229041 ms, median = 0.227539 ms, percentile(90%) = 0.232422 ms, percentile(95%) = 0.235352 ms, percentile(99%) = 0.248047 ms
[06/17/2024-10:01:30] [I] Enqueue Time: min = 0.0742188 ms, max = 0.28125 ms, mean = 0.0806538 ms, median = 0.0793457 ms, percentile(90%) = 0.0844727 ms, percentile(95%) = 0.0869141 ms, percentile(99%) = 0.0986328 ms
[06/17/2024-10:01:30] [I] H2D Latency: min = 0.0136719 ms, max = 0.0473633 ms, mean = 0.0147398 ms, median = 0.0146484 ms, percentile(90%) = 0.0151367 ms, percentile(95%) = 0.0153809 ms, percentile(99%) = 0.0175781 ms
[06/17/2024-10:01:30] [I] GPU Compute Time: min = 0.174072 ms, max = 0.478271 ms, mean = 0.17815 ms, median = 0.177124 ms, percentile(90%) = 0.180176 ms, percentile(95%) = 0.182312 ms, percentile(99%) = 0.192383 ms
[06/17/2024-10:01:30] [I] D2H Latency: min = 0.0300293 ms, max = 0.0461426 ms, mean = 0.0361409 ms, median = 0.0361328 ms, percentile(90%) = 0.0375977 ms, percentile(95%) = 0.0380859 ms, percentile(99%) = 0.0400391 ms
[06/17/2024-10:01:30] [I] Total Host Walltime: 3.00043 s
[06/17/2024-10:01:30] [I] Total GPU Compute Time: 3.00967 s
[06/17/2024-10:01:30] [W] * GPU compute time is unstable, with coefficient of variance = 2.15%.
[06/17/2024-10:01:30] [W]   If not already in use, locking GPU clock frequency or adding --useSpinWait may improve the stability.
[06/17/2024-10:01:30] [I] Explanations of the performance metrics are printed in the verbose logs.
[06/17/2024-10:01:30] [I]
&&&& PASSED TensorRT.trtexec [TensorRT v100100] # trtexec --onnx=p0.onnx --fp16 --shapes=input:1x3x224x224
"""

# TensorRT 8.x layout: one percentile (99%), an End-to-End Host Latency line, numbers in C++'s
# default float formatting (scientific for large values).
TRT8_LOG = """\
&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec --onnx=m.onnx --fp16
[05/09/2022-06:27:25] [I] === Performance summary ===
[05/09/2022-06:27:25] [I] Throughput: 2.54521e+06 qps
[05/09/2022-06:27:25] [I] Latency: min = 2.05615 ms, max = 2.59482 ms, mean = 2.09467 ms, median = 2.08276 ms, percentile(99%) = 2.58971 ms
[05/09/2022-06:27:25] [I] End-to-End Host Latency: min = 2.05615 ms, max = 2.59482 ms, mean = 2.09467 ms, median = 2.08276 ms, percentile(99%) = 2.58971 ms
[05/09/2022-06:27:25] [I] Enqueue Time: min = 0.00244141 ms, max = 0.0256348 ms, mean = 0.00720864 ms, median = 0.00634766 ms, percentile(99%) = 0.0192261 ms
[05/09/2022-06:27:25] [I] H2D Latency: min = 0 ms, max = 0 ms, mean = 0 ms, median = 0 ms, percentile(99%) = 0 ms
[05/09/2022-06:27:25] [I] GPU Compute Time: min = 2.05615 ms, max = 2.59482 ms, mean = 2.09467 ms, median = 2.08276 ms, percentile(99%) = 2.58971 ms
[05/09/2022-06:27:25] [I] D2H Latency: min = 0 ms, max = 0 ms, mean = 0 ms, median = 0 ms, percentile(99%) = 0 ms
[05/09/2022-06:27:25] [I] Total Host Walltime: 3.00424 s
[05/09/2022-06:27:25] [I] Total GPU Compute Time: 2.99956 s
&&&& PASSED TensorRT.trtexec [TensorRT v8601] # trtexec --onnx=m.onnx --fp16
"""


def test_parse_trtexec_10_summary():
    s = parse_trtexec_output(TRT10_LOG)
    assert s.gpu_compute_median_ms == pytest.approx(0.177124)
    gpu = s.metrics["GPU Compute Time"]
    assert gpu["min"] == pytest.approx(0.174072) and gpu["max"] == pytest.approx(0.478271)
    assert gpu["percentiles"] == {90.0: pytest.approx(0.180176), 95.0: pytest.approx(0.182312),
                                  99.0: pytest.approx(0.192383)}
    assert s.metrics["Latency"]["mean"] == pytest.approx(0.229041)
    assert "End-to-End Host Latency" not in s.metrics
    assert s.throughput_qps == pytest.approx(5630.49)
    assert s.total_host_walltime_s == pytest.approx(3.00043)
    assert s.total_gpu_compute_time_s == pytest.approx(3.00967)
    assert s.tensorrt_version == "10.1.0" and s.passed is True
    assert any("unstable" in w for w in s.warnings)
    d = s.to_dict()
    assert d["headline"] == {"metric": "GPU Compute Time", "statistic": "median",
                             "value_ms": pytest.approx(0.177124)}


def test_parse_trtexec_8_summary():
    s = parse_trtexec_output(TRT8_LOG)
    assert s.tensorrt_version == "8.6.1"
    assert s.throughput_qps == pytest.approx(2.54521e6)
    assert s.gpu_compute_median_ms == pytest.approx(2.08276)
    assert s.metrics["End-to-End Host Latency"]["percentiles"] == {99.0: pytest.approx(2.58971)}
    assert s.metrics["H2D Latency"]["median"] == 0.0


def test_parse_failed_run_is_an_error():
    log = ("&&&& RUNNING TensorRT.trtexec [TensorRT v100100] # trtexec --onnx=x.onnx\n"
           "[E] [TRT] ModelImporter.cpp:949: ERROR: onnxOpImporters.cpp: No importer for Foo\n"
           "&&&& FAILED TensorRT.trtexec [TensorRT v100100] # trtexec --onnx=x.onnx\n")
    with pytest.raises(TensorRTError, match="GPU Compute Time"):
        parse_trtexec_output(log)


def test_version_codes():
    assert decode_version(100100) == (10, 1, 0)
    assert decode_version(110100) == (11, 1, 0)
    assert decode_version(8601) == (8, 6, 1)
    assert decode_version(8503) == (8, 5, 3)


def test_paper_protocol_command():
    cmd = trtexec_command("p0.onnx", (1, 3, 224, 224))
    assert cmd == ["trtexec", "--onnx=p0.onnx", "--fp16", "--shapes=input:1x3x224x224"]
    cmd = trtexec_command("p0.fp16.onnx", (1, 3, 224, 224), tensorrt_major=11,
                          save_engine="p0.plan", timing_cache="t.cache")
    assert "--fp16" not in cmd  # TensorRT 11: precision comes from the FP16 graph
    assert cmd[-2:] == ["--saveEngine=p0.plan", "--timingCacheFile=t.cache"]
    assert "--noTF32" in trtexec_command("m.onnx", (8, 3, 32, 32), precision="fp32")
    with pytest.raises(Exception, match="positive"):
        trtexec_command("m.onnx", (0, 3, 224, 224))


def test_support_table_has_provenance():
    t = support_table()
    assert t["source"]["repository"] == "https://github.com/onnx/onnx-tensorrt"
    assert len(t["source"]["commit"]) == 40 and t["tensorrt_version"]
    ops = t["operators"]
    assert ops["Conv"]["supported"] and not ops["Unique"]["supported"]
    assert t["opset"]["max"] >= 17


def _model(nodes, inits=(), opset=17, in_dims=(1, 3, 8, 8)):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(in_dims))],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_supported_graph_passes():
    m = _model([helper.make_node("Relu", ["input"], ["out"])])
    rep = check_tensorrt_support(m)
    assert rep.ok and rep.ops == {"Relu": 1} and not rep.unsupported


def test_unsupported_and_custom_ops_are_reported():
    m = _model([helper.make_node("Relu", ["input"], ["r"]),
                helper.make_node("DFT", ["r"], ["d"]),
                helper.make_node("MyPlugin", ["d"], ["out"], domain="com.example")])
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    rep = check_tensorrt_support(m)
    assert not rep.ok
    assert rep.unsupported == ["DFT", "com.example::MyPlugin"]
    assert "DFT" in rep.summary()


def test_computed_axes_and_opset_violations():
    shape = helper.make_node("Shape", ["input"], ["s"])
    mean = helper.make_node("ReduceMean", ["input", "s"], ["out"])
    rep = check_tensorrt_support(_model([shape, mean], opset=18))
    assert not rep.ok and any("axes" in v for v in rep.violations)
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
    rep = check_tensorrt_support(_model([helper.make_node("ReduceMean", ["input", "axes"],
                                                          ["out"])], [axes], opset=18))
    assert rep.ok and "ReduceMean" in rep.restricted
    rep = check_tensorrt_support(_model([helper.make_node("Relu", ["input"], ["out"])],
                                        opset=99))
    assert not rep.ok and any("opset 99" in v for v in rep.violations)


def test_dynamic_batch_note():
    rep = check_tensorrt_support(_model([helper.make_node("Relu", ["input"], ["out"])],
                                        in_dims=("batch", 3, 8, 8)))
    assert rep.ok and any("optimization profile" in n for n in rep.notes)


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here")
def test_build_without_tensorrt_is_a_clear_error(tmp_path):
    with pytest.raises(BackendUnavailableError, match="tensorrt not installed"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.plan")


@needs_trt
def test_build_and_time_engine(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from torch import nn

    from prunet.export import to_onnx
    from prunet.latency import measure

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4)).eval()
    src = tmp_path / "m.onnx"
    to_onnx(model, src, batch=None, input_size=(3, 32, 32), images=False)
    for precision in ("fp32", "fp16"):
        plan = tmp_path / f"m.{precision}.plan"
        rep = build_engine(src, plan, precision=precision, batch=(1, 2, 4),
                           timing_cache=tmp_path / "cache.bin")
        assert plan.stat().st_size > 0 and (tmp_path / "cache.bin").is_file()
        assert rep.inputs["input"]["profile"][2][0] == 4
        stats = measure(plan, (2, 3, 32, 32), backend="tensorrt", warmup=2, iters=5)
        assert stats.n == 5 and stats.min > 0


@pytest.mark.skipif(shutil.which("trtexec") is None, reason="trtexec not on PATH")
def test_run_trtexec(tmp_path):
    from torch import nn

    from prunet.export import to_onnx
    from prunet.export.tensorrt import run_trtexec

    src = tmp_path / "m.onnx"
    to_onnx(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval(), src, input_size=(3, 16, 16),
            images=False)
    cmd, summary = run_trtexec(src, (1, 3, 16, 16), save_engine=tmp_path / "m.plan")
    assert summary.gpu_compute_median_ms > 0 and (tmp_path / "m.plan").is_file()


def _stand_in_trtexec(tmp_path, version_code: int):
    """A stand-in trtexec (no TensorRT here): prints the banner and TRT10_LOG's summary, records
    its arguments and writes --saveEngine. Tests prunet's side of the protocol only."""
    import sys

    body = "\n".join(line for line in TRT10_LOG.splitlines() if "&&&&" not in line)
    script = tmp_path / "bin" / "trtexec"
    script.parent.mkdir()
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, pathlib, sys\n"
        "args = sys.argv[1:]\n"
        f"print('&&&& RUNNING TensorRT.trtexec [TensorRT v{version_code}] # trtexec ' + ' '.join(args))\n"
        "if '--help' in args:\n"
        "    sys.exit(0)\n"
        f"pathlib.Path({str(tmp_path / 'args.json')!r}).write_text(json.dumps(args))\n"
        "for a in args:\n"
        "    if a.startswith('--saveEngine='):\n"
        "        pathlib.Path(a.split('=', 1)[1]).write_bytes(b'stand-in engine')\n"
        f"print({body!r})\n"
        f"print('&&&& PASSED TensorRT.trtexec [TensorRT v{version_code}] # trtexec')\n"
    )
    script.chmod(0o755)
    return script


@pytest.fixture()
def small_onnx(tmp_path):
    from torch import nn

    from prunet.export import to_onnx

    src = tmp_path / "m.onnx"
    to_onnx(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval(), src, input_size=(3, 16, 16),
            images=False)
    return src


@pytest.mark.parametrize("code,fp16_flag", [(100100, True), (110100, False)])
def test_run_trtexec_protocol_with_stand_in(tmp_path, small_onnx, code, fp16_flag):
    import json

    from prunet.export.tensorrt import run_trtexec

    exe = _stand_in_trtexec(tmp_path, code)
    cmd, summary = run_trtexec(small_onnx, (1, 3, 16, 16), trtexec=str(exe),
                               save_engine=tmp_path / "m.plan", log_path=tmp_path / "m.log")
    args = json.loads((tmp_path / "args.json").read_text())
    assert args == cmd[1:]
    assert ("--fp16" in args) is fp16_flag
    assert "--shapes=input:1x3x16x16" in args and "--saveEngine=" + str(tmp_path / "m.plan") in args
    onnx_arg = next(a for a in args if a.startswith("--onnx="))[len("--onnx="):]
    if fp16_flag:
        assert onnx_arg == str(small_onnx)
    else:  # TensorRT 11: the FP16 precision has to come from the graph
        assert onnx_arg.endswith("m.fp16.onnx")
        half = onnx.load(onnx_arg)
        assert any(i.data_type == TensorProto.FLOAT16 for i in half.graph.initializer)
    assert summary.gpu_compute_median_ms == pytest.approx(0.177124)
    assert "GPU Compute Time" in (tmp_path / "m.log").read_text()


def test_export_tensorrt_cli(tmp_path, small_onnx, capsys):
    import argparse
    import json

    from prunet._cli_export import add_export_commands

    parser = argparse.ArgumentParser()
    add_export_commands(parser.add_subparsers(dest="command", required=True))

    def run(argv):
        args = parser.parse_args(argv)
        return args.func(args)

    plan = str(tmp_path / "m.plan")
    assert run(["export", "tensorrt", str(small_onnx), "--out", plan, "--check-only"]) == 0
    assert "OK" in capsys.readouterr().out
    assert run(["export", "tensorrt", str(small_onnx), "--out", plan, "--print-command"]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert out == f"trtexec --onnx={small_onnx} --fp16 --shapes=input:1x3x16x16 --saveEngine={plan}"
    exe = _stand_in_trtexec(tmp_path, 100100)
    assert run(["export", "tensorrt", str(small_onnx), "--out", plan, "--trtexec",
                "--trtexec-path", str(exe), "--json", str(tmp_path / "t.json")]) == 0
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["summary"]["headline"]["value_ms"] == pytest.approx(0.177124)
    if not HAVE_TRT:
        assert run(["export", "tensorrt", str(small_onnx), "--out", plan, "--overwrite"]) == 2  # the stand-in wrote one
        assert "tensorrt not installed" in capsys.readouterr().err
