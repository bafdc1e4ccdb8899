"""TensorRT engines and the paper's trtexec latency protocol.

PruNet's latencies are TensorRT FP16, batch-1 figures: ONNX -> `trtexec --fp16`, reporting the
median GPU compute time. Two ways in:

* `build_engine` uses the TensorRT Python API (FP16/FP32, optimisation profiles for dynamic batch,
  a persistent timing cache) and saves a `.plan`;
* `trtexec_command` / `run_trtexec` build the exact trtexec command line and `parse_trtexec_output`
  reads its "Performance summary".

TensorRT 11 dropped weakly typed networks (no FP16 builder flag, no `trtexec --fp16`): FP16 there
means an FP16 ONNX graph, which both paths create with `to_fp16_onnx` when asked for FP16.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prunet._io import atomic_write_bytes

from .errors import BackendUnavailableError, InputShapeError, TensorRTError

PRECISIONS = ("fp16", "fp32")
MIN_TENSORRT = (8, 5)  # name-based I/O API (set_tensor_address, execute_async_v3)


# --------------------------------------------------------------------------- versions


def decode_version(code: int) -> tuple[int, int, int]:
    """NV_TENSORRT_VERSION as printed by trtexec ("[TensorRT v100100]") -> (major, minor, patch).

    TensorRT 10+ encodes major*10000 + minor*100 + patch; TensorRT 8 used major*1000 + minor*100
    + patch.
    """
    if code >= 100000:
        return code // 10000, (code // 100) % 100, code % 100
    return code // 1000, (code // 100) % 10, code % 100


def import_tensorrt():
    """The tensorrt module, or BackendUnavailableError saying how to get it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailableError(
            "tensorrt not installed: TensorRT needs an NVIDIA GPU; pip install 'prunet[gpu]' "
            "on a CUDA machine"
        ) from exc
    if tensorrt_version(trt)[:2] < MIN_TENSORRT:
        raise BackendUnavailableError(
            f"tensorrt {trt.__version__} is too old: prunet needs >= "
            f"{'.'.join(map(str, MIN_TENSORRT))}"
        )
    return trt


def tensorrt_version(trt=None) -> tuple[int, int, int]:
    trt = trt or import_tensorrt()
    parts = [int(p) for p in re.findall(r"\d+", trt.__version__)[:3]]
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


def strongly_typed_only(version: tuple[int, ...]) -> bool:
    """TensorRT >= 11 builds strongly typed networks only: precision comes from the graph."""
    return version[0] >= 11


# --------------------------------------------------------------------------- engine builder


@dataclass
class EngineReport:
    plan: str
    onnx: str  # the graph actually parsed (an FP16 copy on TensorRT >= 11)
    precision: str
    tensorrt_version: str
    build_seconds: float
    plan_bytes: int
    inputs: dict[str, dict]  # name -> {"dtype", "shape", "profile": [min, opt, max] | None}
    outputs: dict[str, dict]
    timing_cache: str | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)  # normal permissions, not mkstemp's 0600


def _fp16_copy(onnx_path: Path, notes: list[str]) -> Path:
    from .onnx import to_fp16_onnx

    dst = onnx_path.with_name(onnx_path.stem + ".fp16.onnx")
    if not dst.exists() or dst.stat().st_mtime < onnx_path.stat().st_mtime:
        to_fp16_onnx(onnx_path, dst)
    notes.append(f"TensorRT >= 11 is strongly typed: FP16 engine built from FP16 graph {dst.name}")
    return dst


def build_engine(onnx_path: str | os.PathLike, plan_path: str | os.PathLike, *,
                 precision: str = "fp16", batch: int | tuple[int, int, int] = 1,
                 workspace_gib: float = 4.0, timing_cache: str | os.PathLike | None = None,
                 tf32: bool = False, verbose: bool = False) -> EngineReport:
    """Parse an ONNX file with TensorRT's ONNX parser, build an engine and save it as `.plan`.

    batch: the batch size, or (min, opt, max) for an optimisation profile over a dynamic batch
    dimension (ignored for inputs whose batch is static). timing_cache: file read before and
    written after the build, so rebuilding the same layers on the same GPU skips kernel timing.
    precision 'fp32' disables TF32 unless tf32=True, so FP32 means IEEE FP32.
    """
    if precision not in PRECISIONS:
        raise TensorRTError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    bmin, bopt, bmax = (batch, batch, batch) if isinstance(batch, int) else tuple(batch)
    if not 1 <= bmin <= bopt <= bmax:
        raise InputShapeError(f"batch: need 1 <= min <= opt <= max, got {(bmin, bopt, bmax)}")
    trt = import_tensorrt()
    version = tensorrt_version(trt)
    src = Path(onnx_path)
    if not src.is_file():
        raise TensorRTError(f"{src}: ONNX file not found")
    notes: list[str] = []
    if precision == "fp16" and strongly_typed_only(version):
        src = _fp16_copy(src, notes)

    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if version[0] < 10:  # explicit batch is implicit (and the flag deprecated) from TensorRT 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(src)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise TensorRTError(f"{src}: TensorRT's ONNX parser rejected the graph:\n  "
                            + "\n  ".join(errors or ["(no error detail)"]))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision == "fp16" and not strongly_typed_only(version):
        if not builder.platform_has_fast_fp16:
            notes.append("this GPU has no fast FP16: TensorRT may pick FP32 kernels")
        config.set_flag(trt.BuilderFlag.FP16)
    if not tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)

    inputs: dict[str, dict] = {}
    profile = builder.create_optimization_profile()
    needs_profile = False
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        entry = {"dtype": str(tensor.dtype), "shape": shape, "profile": None}
        if any(d < 0 for d in shape[1:]):
            raise InputShapeError(
                f"input '{tensor.name}' has dynamic non-batch dimensions {shape}: export with a "
                "fixed input size"
            )
        if shape and shape[0] < 0:
            lo, opt, hi = ([b, *shape[1:]] for b in (bmin, bopt, bmax))
            profile.set_shape(tensor.name, lo, opt, hi)
            entry["profile"] = [lo, opt, hi]
            needs_profile = True
        elif shape and isinstance(batch, tuple):
            notes.append(f"input '{tensor.name}' has static batch {shape[0]}: profile ignored")
        inputs[tensor.name] = entry
    if needs_profile:
        config.add_optimization_profile(profile)

    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        notes.append(f"timing cache {cache_path} does not match this GPU/TensorRT: started afresh")
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=True)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - t0
    if serialized is None:
        raise TensorRTError(f"{src}: TensorRT engine build failed (see TensorRT log above)")
    plan = Path(plan_path)
    _atomic_write_bytes(plan, bytes(serialized))
    if cache_path is not None:
        _atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))

    outputs = {}
    for i in range(network.num_outputs):
        t = network.get_output(i)
        outputs[t.name] = {"dtype": str(t.dtype), "shape": list(t.shape)}
    return EngineReport(
        plan=str(plan), onnx=str(src), precision=precision, tensorrt_version=trt.__version__,
        build_seconds=round(build_seconds, 2), plan_bytes=plan.stat().st_size, inputs=inputs,
        outputs=outputs, timing_cache=str(cache_path) if cache_path else None, notes=notes,
    )


def load_engine(plan_path: str | os.PathLike):
    """Deserialize a `.plan` (built by the same TensorRT version on the same GPU model)."""
    trt = import_tensorrt()
    plan = Path(plan_path)
    if not plan.is_file():
        raise TensorRTError(f"{plan}: engine file not found")
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    if engine is None:
        raise TensorRTError(f"{plan}: cannot deserialize (built by another TensorRT version or GPU?)")
    return engine


# --------------------------------------------------------------------------- trtexec


def trtexec_command(onnx_path: str | os.PathLike, input_shape: tuple[int, ...], *,
                    input_name: str = "input", precision: str = "fp16",
                    trtexec: str = "trtexec", tensorrt_major: int = 10,
                    save_engine: str | os.PathLike | None = None,
                    timing_cache: str | os.PathLike | None = None,
                    extra: tuple[str, ...] = ()) -> list[str]:
    """The paper's protocol as a trtexec argument list.

    `trtexec --onnx=M.onnx --fp16 --shapes=input:1x3xHxW` times the engine with trtexec's
    defaults (warm-up 200 ms, at least 10 inferences over at least 3 s) and prints the median GPU
    compute time. On TensorRT >= 11 there is no --fp16: pass an FP16 ONNX graph instead
    (run_trtexec does that for you).
    """
    if precision not in PRECISIONS:
        raise TensorRTError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if not input_shape or any(int(d) < 1 for d in input_shape):
        raise InputShapeError(f"input_shape: expected positive dimensions, got {input_shape!r}")
    shape = "x".join(str(int(d)) for d in input_shape)
    cmd = [trtexec, f"--onnx={os.fspath(onnx_path)}"]
    if precision == "fp16" and tensorrt_major < 11:
        cmd.append("--fp16")
    elif precision == "fp32":
        cmd.append("--noTF32")  # FP32 means IEEE FP32, not TF32 tensor-core math
    cmd.append(f"--shapes={input_name}:{shape}")
    if save_engine:
        cmd.append(f"--saveEngine={os.fspath(save_engine)}")
    if timing_cache:
        cmd.append(f"--timingCacheFile={os.fspath(timing_cache)}")
    cmd.extend(extra)
    return cmd


_PREFIX = re.compile(r"^\s*(\[\d\d/\d\d/\d{4}-\d\d:\d\d:\d\d\]\s*)?(\[[A-Z]\]\s*)?")
_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf|nan)"
_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=\s*" + _NUM + r"\s*ms")
_METRICS = ("Latency", "End-to-End Host Latency", "Enqueue Time", "H2D Latency",
            "GPU Compute Time", "D2H Latency")


@dataclass
class TrtexecSummary:
    """The "=== Performance summary ===" block of a trtexec run; times in milliseconds."""

    throughput_qps: float | None
    metrics: dict[str, dict]  # metric -> {"min","max","mean","median","percentiles": {p: ms}}
    total_host_walltime_s: float | None
    total_gpu_compute_time_s: float | None
    tensorrt_version: str | None
    passed: bool | None  # from the "&&&& PASSED/FAILED" line, None when absent
    warnings: list[str] = field(default_factory=list)

    @property
    def gpu_compute_median_ms(self) -> float:
        """The paper's headline statistic."""
        return self.metrics["GPU Compute Time"]["median"]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["headline"] = {"metric": "GPU Compute Time", "statistic": "median",
                         "value_ms": self.gpu_compute_median_ms}
        return d


def parse_trtexec_output(text: str) -> TrtexecSummary:
    """Read trtexec's performance summary (format of samples/common/sampleReporting.cpp).

    Handles every TensorRT 8-11 variant: with or without log prefixes, one or several
    percentiles, with or without the End-to-End Host Latency line. Raises TensorRTError when the
    log has no GPU Compute Time line (the run failed before timing).
    """
    metrics: dict[str, dict] = {}
    throughput = walltime = gpu_total = None
    version = None
    passed = None
    warnings: list[str] = []
    for raw in text.splitlines():
        level = re.search(r"\[([A-Z])\]", raw[:40])
        line = _PREFIX.sub("", raw).strip()
        m = re.search(r"TensorRT\.trtexec \[TensorRT v(\d+)\]", line)
        if m:
            version = ".".join(map(str, decode_version(int(m.group(1)))))
            if line.startswith("&&&& PASSED"):
                passed = True
            elif line.startswith("&&&& FAILED"):
                passed = False
            continue
        if level and level.group(1) == "W" and line.startswith("*"):
            warnings.append(line.lstrip("* ").strip())
        if line.startswith("Throughput:"):
            throughput = float(re.search(_NUM, line.split(":", 1)[1]).group(1))
        elif line.startswith("Total Host Walltime:"):
            walltime = float(re.search(_NUM, line.split(":", 1)[1]).group(1))
        elif line.startswith("Total GPU Compute Time:"):
            gpu_total = float(re.search(_NUM, line.split(":", 1)[1]).group(1))
        else:
            name, _, rest = line.partition(":")
            if name in _METRICS and "=" in rest:
                stats: dict = {"percentiles": {}}
                for key, pct, value in _STAT.findall(rest):
                    if pct:
                        stats["percentiles"][float(pct)] = float(value)
                    else:
                        stats[key] = float(value)
                metrics[name] = stats
    if "GPU Compute Time" not in metrics or "median" not in metrics["GPU Compute Time"]:
        tail = "\n".join(text.strip().splitlines()[-8:])
        raise TensorRTError("trtexec output has no 'GPU Compute Time' summary line (did the run "
                            f"fail?). Last lines:\n{tail}")
    return TrtexecSummary(throughput_qps=throughput, metrics=metrics,
                          total_host_walltime_s=walltime, total_gpu_compute_time_s=gpu_total,
                          tensorrt_version=version, passed=passed, warnings=warnings)


def trtexec_version(trtexec: str = "trtexec") -> tuple[int, int, int]:
    """Version of a trtexec binary, read from the banner it prints with --help."""
    exe = shutil.which(trtexec)
    if exe is None:
        raise BackendUnavailableError(
            f"{trtexec}: not found on PATH (trtexec ships with TensorRT; it is in the TensorRT "
            "tarball's bin/ and in NVIDIA's TensorRT containers)"
        )
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    m = re.search(r"TensorRT v(\d+)", proc.stdout + proc.stderr)
    if not m:
        raise TensorRTError(f"{exe}: cannot read the TensorRT version from `trtexec --help`")
    return decode_version(int(m.group(1)))


def run_trtexec(onnx_path: str | os.PathLike, input_shape: tuple[int, ...], *,
                input_name: str = "input", precision: str = "fp16", trtexec: str = "trtexec",
                save_engine: str | os.PathLike | None = None,
                timing_cache: str | os.PathLike | None = None, extra: tuple[str, ...] = (),
                log_path: str | os.PathLike | None = None,
                timeout: float = 3600) -> tuple[list[str], TrtexecSummary]:
    """Run the paper's trtexec protocol on an ONNX file; returns (command, parsed summary)."""
    version = trtexec_version(trtexec)
    src = Path(onnx_path)
    if not src.is_file():
        raise TensorRTError(f"{src}: ONNX file not found")
    if precision == "fp16" and strongly_typed_only(version):
        src = _fp16_copy(src, [])
    cmd = trtexec_command(src, input_shape, input_name=input_name, precision=precision,
                          trtexec=shutil.which(trtexec) or trtexec, tensorrt_major=version[0],
                          save_engine=save_engine, timing_cache=timing_cache, extra=extra)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    if log_path:
        _atomic_write_bytes(Path(log_path), log.encode())
    if proc.returncode != 0:
        tail = "\n".join(log.strip().splitlines()[-10:])
        raise TensorRTError(f"trtexec failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return cmd, parse_trtexec_output(log)
