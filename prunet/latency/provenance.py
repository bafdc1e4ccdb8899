"""Where and with what a latency was measured.

A latency without its machine, library versions, thread count and date cannot be compared with
another one; every LatencyStats and results file carries this block.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from importlib import metadata


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions(*extra: str) -> dict[str, str]:
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
    return found


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
