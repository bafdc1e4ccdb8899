"""Deployment: ONNX export with onnxruntime parity, TensorRT readiness and engines, Triton repos.

`to_onnx` is the entry point others build on; TensorRT and Triton helpers are imported lazily so
that `import prunet.export` works without onnx, onnxruntime or TensorRT installed.
"""

from __future__ import annotations

from .errors import (
    BackendUnavailableError,
    InputShapeError,
    InvalidOnnxError,
    ParityError,
    PrunetExportError,
    TensorRTError,
    UnknownModelError,
)

__all__ = [
    "to_onnx", "to_fp16_onnx", "load_onnx", "ExportReport", "check_tensorrt_support",
    "build_engine", "trtexec_command", "parse_trtexec_output", "run_trtexec", "export_triton",
    "PrunetExportError", "UnknownModelError", "InvalidOnnxError", "BackendUnavailableError",
    "InputShapeError", "ParityError", "TensorRTError",
]

_LAZY = {
    "to_onnx": "onnx", "to_fp16_onnx": "onnx", "load_onnx": "onnx", "ExportReport": "onnx",
    "check_tensorrt_support": "trt_support", "build_engine": "tensorrt",
    "trtexec_command": "tensorrt", "parse_trtexec_output": "tensorrt", "run_trtexec": "tensorrt",
    "export_triton": "triton",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
