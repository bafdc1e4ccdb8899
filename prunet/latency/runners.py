"""One timed inference per call, for each backend.

A runner owns everything that must not be timed (session/engine creation, input allocation,
device transfers) and returns the time of one inference in milliseconds. Keeping runners separate
from the measuring loop lets several of them be interleaved round by round, which is the only fair
way to compare two backends on a shared machine (whoever runs first pays for the cache and the
noisy neighbour).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prunet.export.errors import BackendUnavailableError, InputShapeError, UnknownModelError
from prunet.export.resolve import OnnxFile, resolve

from .backends import get_backend
from .provenance import available_cpus



def _check_shape(input_shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise InputShapeError(f"input_shape: expected a tuple of integers, got {input_shape!r}") \
            from None
    if len(shape) < 2 or min(shape) < 1:
        raise InputShapeError(f"input_shape: expected (batch, ...) positive sizes, got {shape}")
    return shape


def _seeded_input(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


class Runner:
    backend = ""
    device = "cpu"
    threads: int | None = None

    def __init__(self) -> None:
        self.settings: dict = {}
        self._tmpdir: str | None = None

    def __call__(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _workdir(self) -> Path:
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="prunet-latency-")
        return Path(self._tmpdir)

    def close(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


class TorchRunner(Runner):
    """Eager PyTorch. CPU: perf_counter around forward; CUDA: CUDA events on the stream."""

    backend = "torch"

    def __init__(self, model: nn.Module, shape: tuple[int, ...], *, device: str = "cpu",
                 threads: int | None = None) -> None:
        super().__init__()
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError("device 'cuda': torch sees no CUDA GPU here")
        self.device = device
        self.model = model.eval().to(device)
        self.x = _seeded_input(shape).to(device)
        with torch.inference_mode():
            try:  # shape mismatches surface here, not in the middle of the timing loop
                self.model(self.x)
            except RuntimeError as exc:
                raise InputShapeError(
                    f"input shape {shape} does not fit {type(model).__name__}: {exc}") from exc
        self._prev_threads = torch.get_num_threads()
        if device == "cpu":
            self.threads = threads or available_cpus()
            torch.set_num_threads(self.threads)
        self.settings = {"mode": "eager", "inference_mode": True}

    def __call__(self) -> float:
        if self.device == "cpu":
            torch.set_num_threads(self.threads)
            with torch.inference_mode():
                t0 = time.perf_counter_ns()
                self.model(self.x)
                return (time.perf_counter_ns() - t0) / 1e6
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.inference_mode():
            start.record()
            self.model(self.x)
            end.record()
        end.synchronize()
        return float(start.elapsed_time(end))

    def close(self) -> None:
        torch.set_num_threads(self._prev_threads)
        super().close()


class OrtRunner(Runner):
    """onnxruntime. CPU EP by default; CUDA/TensorRT EPs through `providers` when installed."""

    backend = "onnxruntime"

    def __init__(self, onnx_path: str | os.PathLike, shape: tuple[int, ...], *,
                 threads: int | None = None, spinning: bool = True,
                 providers: list[str] | None = None, device: str = "cpu") -> None:
        super().__init__()
        if device.startswith("cuda") and providers is None:
            providers = ["CUDAExecutionProvider"]
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailableError(
                "onnxruntime not installed: pip install 'prunet[export]'") from exc
        from prunet.export.onnx import onnx_input_shape, ort_session

        providers = providers or ["CPUExecutionProvider"]
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise BackendUnavailableError(
                f"onnxruntime execution provider(s) {missing} not available here (available: "
                f"{ort.get_available_providers()})"
            )
        name, dims = onnx_input_shape(onnx_path)
        if len(dims) != len(shape) or any(isinstance(d, int) and d > 0 and d != s
                                          for d, s in zip(dims, shape)):
            raise InputShapeError(f"{onnx_path}: input '{name}' is {dims}, cannot feed {list(shape)}")
        self.threads = threads or available_cpus()
        self.session = ort_session(onnx_path, threads=self.threads, spinning=spinning,
                                   providers=providers)
        self.device = "cuda" if providers[0] != "CPUExecutionProvider" else "cpu"
        self.name = name
        self.x = _seeded_input(shape).numpy()
        self.binding = None
        if self.device == "cuda":
            self.binding = self.session.io_binding()
            xv = ort.OrtValue.ortvalue_from_numpy(self.x, "cuda", 0)
            self.binding.bind_ortvalue_input(name, xv)
            for o in self.session.get_outputs():
                self.binding.bind_output(o.name, "cuda")
            self._keep = xv
        self.settings = {"providers": providers, "intra_op_num_threads": self.threads,
                         "inter_op_num_threads": 1, "allow_spinning": spinning,
                         "graph_optimization_level": "ORT_ENABLE_ALL"}
        try:  # first run surfaces shape errors the declared dims did not reveal
            self()
        except InputShapeError:
            raise
        except Exception as exc:
            raise InputShapeError(f"{onnx_path}: onnxruntime rejected input {list(shape)}: {exc}") \
                from exc

    def __call__(self) -> float:
        if self.binding is not None:
            t0 = time.perf_counter_ns()
            self.session.run_with_iobinding(self.binding)
            return (time.perf_counter_ns() - t0) / 1e6
        feed = {self.name: self.x}
        t0 = time.perf_counter_ns()
        self.session.run(None, feed)
        return (time.perf_counter_ns() - t0) / 1e6


class TensorRTRunner(Runner):
    """A TensorRT engine timed with CUDA events around execute_async_v3 (GPU time per query)."""

    backend = "tensorrt"
    device = "cuda"

    def __init__(self, engine_or_onnx: str | os.PathLike, shape: tuple[int, ...], *,
                 precision: str = "fp16", timing_cache: str | os.PathLike | None = None) -> None:
        super().__init__()
        from prunet.export.tensorrt import build_engine, import_tensorrt, load_engine

        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise BackendUnavailableError("tensorrt timing needs a CUDA GPU; torch sees none")
        path = Path(engine_or_onnx)
        if path.suffix.lower() == ".onnx":
            plan = self._workdir() / (path.stem + ".plan")
            build_engine(path, plan, precision=precision, batch=shape[0],
                         timing_cache=timing_cache)
            path = plan
        self.engine = load_engine(path)
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.buffers: dict[str, torch.Tensor] = {}
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise InputShapeError(f"{path}: engine has {len(inputs)} inputs; timing supports one")
        (in_name,) = inputs
        declared = tuple(self.engine.get_tensor_shape(in_name))
        if len(declared) != len(shape) or any(d > 0 and d != s for d, s in zip(declared, shape)):
            raise InputShapeError(f"{path}: input '{in_name}' is {declared}, cannot feed {shape}")
        if any(d < 0 for d in declared):
            lo, _, hi = self.engine.get_tensor_profile_shape(in_name, 0)
            if any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
                raise InputShapeError(f"{path}: {shape} is outside the engine's optimisation "
                                      f"profile {tuple(lo)}..{tuple(hi)}")
        self.context.set_input_shape(in_name, shape)
        for n in names:
            dims = tuple(self.context.get_tensor_shape(n))
            dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(self.engine.get_tensor_dtype(n)))).dtype
            buf = torch.empty(dims, dtype=dtype, device="cuda")
            if n == in_name:
                buf.copy_(_seeded_input(shape).to(dtype))
            self.buffers[n] = buf
            self.context.set_tensor_address(n, buf.data_ptr())
        self.settings = {"precision": precision, "plan": str(path),
                         "tensorrt": trt.__version__, "timing": "cuda events"}

    def __call__(self) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(self.stream)
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            from prunet.export.errors import TensorRTError

            raise TensorRTError("TensorRT execute_async_v3 failed")
        end.record(self.stream)
        end.synchronize()
        return float(start.elapsed_time(end))


def make_runner(target, input_shape, *, backend: str = "onnxruntime", threads: int | None = None,
                device: str = "cpu", spinning: bool = True, providers: list[str] | None = None,
                precision: str = "fp16", exporter: str = "dynamo") -> Runner:
    """Build the runner for `target` (nn.Module, model name/JSON, .onnx or a file the backend
    takes as is, e.g. a TensorRT .plan) on a registered backend (:mod:`prunet.latency.backends`).

    A module timed on an ONNX-taking backend is exported to a temporary ONNX file first (random-
    input parity is still checked; no real-image check, no TensorRT report).
    """
    entry = get_backend(backend)
    shape = _check_shape(input_shape)
    options = dict(device=device, threads=threads, spinning=spinning, providers=providers, precision=precision)
    if entry.file_suffixes and str(target).lower().endswith(entry.file_suffixes):
        return entry.make(target, shape, **options)
    resolved = resolve(target) if not isinstance(target, nn.Module) else target.eval()
    if entry.takes == "module":
        if isinstance(resolved, OnnxFile):
            raise UnknownModelError(f"{resolved.path}: the {backend} backend needs a model "
                                    "(name, .json or nn.Module), not an ONNX file")
        return entry.make(resolved, shape, **options)
    if isinstance(resolved, OnnxFile):
        onnx_path, tmp = resolved.path, None
    else:
        onnx_path, tmp = _export_for_timing(resolved, shape, exporter)
    try:
        runner: Runner = entry.make(onnx_path, shape, **options)
    except BaseException:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)  # our own temp export folder
        raise
    runner._tmpdir = runner._tmpdir or tmp
    if tmp and runner._tmpdir != tmp:  # the runner made its own dir; keep both cleaned
        shutil.rmtree(tmp, ignore_errors=True)
    return runner


def _export_for_timing(model: nn.Module, shape: tuple[int, ...], exporter: str):
    from prunet.export.onnx import to_onnx

    if len(shape) != 4:
        raise InputShapeError(f"timing an nn.Module on onnxruntime/TensorRT exports it with an "
                              f"NCHW input; got {len(shape)}-D shape {shape} (export it yourself)")
    tmp = tempfile.mkdtemp(prefix="prunet-latency-")
    path = Path(tmp) / "model.onnx"
    try:
        to_onnx(model, path, batch=shape[0], input_size=shape[1:], images=False,
                check_tensorrt=False, exporter=exporter)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path, tmp
