"""Where and with what a latency was measured.

A latency without its machine, library versions, thread count and date cannot be compared with
another one; every LatencyStats and results file carries this block.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
from importlib import metadata


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions(*extra: str) -> dict[str, str]:
    """Versions of Python and the libraries a latency depends on (a fresh dict each call).

    Looked up once per process: every timed entry records them, and reading the installed
    packages' metadata took ~10 ms, a tenth of a latency-table block's cost."""
    return dict(_versions(tuple(extra)))


@functools.lru_cache(maxsize=None)
def _versions(extra: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    names = ["prunet", "torch", "numpy", "timm", "onnx", "onnxruntime", *extra]
    found = {"python": platform.python_version()}
    for n in names:
        v = _version(n)
        if v:
            found[n] = v
    try:
        import tensorrt  # noqa: F401

        found["tensorrt"] = tensorrt.__version__
    except ImportError:
        pass
    return tuple(found.items())


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            idx = torch.device(device).index or 0
            return f"{torch.cuda.get_device_name(idx)} (CUDA {torch.version.cuda})"
        return "cuda (unavailable)"
    return f"{cpu_name()} ({available_cpus()} CPUs available)"


def device_name(device: str) -> str:
    """The model of the processor that runs the measurement, without counts or driver versions:
    what must match for a latency measured elsewhere to hold here (CPU model, or GPU model)."""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(torch.device(device).index or 0)
        return "no CUDA GPU"
    return cpu_name()


# Software whose version changes a measured latency, per backend: the runtime itself, and torch,
# which exports (ONNX) or is (eager) the graph that gets timed. CUDA for the GPU backends.
LATENCY_SOFTWARE: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "onnxruntime": ("onnxruntime", "torch"),
    "tensorrt": ("tensorrt", "torch", "cuda"),
}
# Backends that only run on a GPU (the others time on the CPU unless told otherwise).
GPU_BACKENDS = ("tensorrt",)


def latency_fingerprint(backend: str, device: str = "cpu") -> dict[str, str | None]:
    """Device model and the versions of :data:`LATENCY_SOFTWARE` on this machine, for ``backend``.

    Why: a latency table is only valid where it was measured; comparing these few facts (not the
    whole provenance: the date, load average or CPU count may differ harmlessly) tells whether it
    was."""
    device = "cuda" if backend in GPU_BACKENDS else device
    found = versions()
    if device.startswith("cuda"):
        import torch

        found["cuda"] = torch.version.cuda or ""
    out: dict[str, str | None] = {"device_kind": "cuda" if device.startswith("cuda") else "cpu",
                                  "device_name": device_name(device)}
    for pkg in LATENCY_SOFTWARE.get(backend, ("torch", backend)):
        out[pkg] = found.get(pkg)
    return out


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def machine() -> dict:
    """Host facts for results files (no host name: results get committed)."""
    info = {"platform": platform.platform(), "cpu": cpu_name(), "cpus_available": available_cpus()}
    try:
        info["loadavg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        pass
    return info
