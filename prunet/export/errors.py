"""Error types for export and latency measurement.

One class per kind of user mistake, so the CLI can print a single clear line and callers can catch
exactly what they expect (e.g. a benchmark skipping a backend that is not installed) without
swallowing real bugs.
"""

from __future__ import annotations


class PrunetExportError(Exception):
    """Base class of every error raised on purpose by prunet.export and prunet.latency."""


class UnknownModelError(PrunetExportError, ValueError):
    """The name is neither a zoo/timm model, an architecture JSON nor an ONNX file."""


class InvalidOnnxError(PrunetExportError, ValueError):
    """An ONNX file is unreadable, corrupt or fails the ONNX checker."""


class BackendUnavailableError(PrunetExportError, RuntimeError):
    """A backend (onnxruntime, tensorrt, trtexec, CUDA) is not installed or not usable here."""


class InputShapeError(PrunetExportError, ValueError):
    """An input shape does not match what the model or ONNX graph accepts."""


class ParityError(PrunetExportError, AssertionError):
    """The exported graph disagrees with the torch model beyond tolerance."""

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class TensorRTError(PrunetExportError, RuntimeError):
    """TensorRT failed to parse the graph or build an engine, or trtexec output was unreadable."""
