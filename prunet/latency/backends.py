"""The latency-backend registry: one entry per way of timing a network.

Measuring (``prunet bench``), latency tables and the search's ``--backend`` all read this one
registry, so a new backend is one :func:`register_backend` call plus its own runner module
(a :class:`prunet.latency.runners.Runner` subclass) — no if-chains elsewhere to extend.
Runner classes are named as ``"package.module:Class"`` and imported on first use, so listing the
backends (CLI choices, ``--help``) costs no onnxruntime or TensorRT import.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from prunet.export.errors import BackendUnavailableError


@dataclass(frozen=True)
class LatencyBackend:
    """How one backend times a network.

    ``takes``: ``"module"`` (the runner times an ``nn.Module``) or ``"onnx"`` (it times an ONNX
    file; a module is exported first, exactly as the search's tables export it).
    ``options``: the keyword options of ``make_runner`` its runner accepts (others are dropped).
    ``file_suffixes``: other files it takes as they are (TensorRT engines).
    """

    name: str
    summary: str
    runner: str
    takes: str = "onnx"
    options: tuple[str, ...] = ()
    file_suffixes: tuple[str, ...] = ()

    def runner_class(self) -> type:
        module_name, _, class_name = self.runner.partition(":")
        return getattr(importlib.import_module(module_name), class_name)

    def make(self, target: Any, shape: tuple[int, ...], **options: Any) -> Any:
        kwargs = {k: v for k, v in options.items() if k in self.options}
        return self.runner_class()(target, shape, **kwargs)


_REGISTRY: dict[str, LatencyBackend] = {}


def register_backend(entry: LatencyBackend) -> LatencyBackend:
    if entry.name in _REGISTRY:
        raise ValueError(f"latency backend {entry.name!r} is registered already")
    if entry.takes not in ("module", "onnx"):
        raise ValueError(f"latency backend {entry.name!r}: takes must be 'module' or 'onnx', got {entry.takes!r}")
    _REGISTRY[entry.name] = entry
    return entry


def backend_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_backend(name: str) -> LatencyBackend:
    entry = _REGISTRY.get(name)
    if entry is None:
        raise BackendUnavailableError(f"backend: expected one of {backend_names()}, got {name!r}")
    return entry


register_backend(LatencyBackend(
    name="torch", summary="PyTorch eager (CPU: perf_counter; CUDA: CUDA events)",
    runner="prunet.latency.runners:TorchRunner", takes="module", options=("device", "threads"),
))
register_backend(LatencyBackend(
    name="onnxruntime", summary="ONNX Runtime session (CPU EP; CUDA EP with --device cuda)",
    runner="prunet.latency.runners:OrtRunner", options=("device", "threads", "spinning", "providers"),
))
register_backend(LatencyBackend(
    name="tensorrt", summary="TensorRT engine, CUDA events around execute_async_v3 (needs TensorRT + a GPU)",
    runner="prunet.latency.runners:TensorRTRunner", options=("precision",), file_suffixes=(".plan", ".engine"),
))
