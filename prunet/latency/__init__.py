"""Latency measurement on torch eager, onnxruntime and TensorRT behind one interface.

`measure(target, input_shape, backend=...) -> LatencyStats` is what the search's latency tables
and the `prunet bench` command build on. Statistics follow the measured rules for these machines
(shared/notes/latency-measurement.md): the headline is the minimum of a few hundred runs after
warm-up, recorded with thread count, versions, device and date.
"""

from __future__ import annotations

from .timing import Candidate, input_shape_for, measure, measure_interleaved
from .backends import LatencyBackend, backend_names, get_backend, register_backend
from .runners import make_runner
from .stats import LatencyStats, ratio

__all__ = ["measure", "measure_interleaved", "Candidate", "LatencyStats", "ratio", "make_runner",
           "input_shape_for", "LatencyBackend", "backend_names", "get_backend", "register_backend"]
