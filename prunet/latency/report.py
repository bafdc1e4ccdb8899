"""Results files for latency runs: JSON with provenance, and a bar chart.

Shared by `prunet bench` and benchmarks/latency_zoo.py so both write the same format.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from prunet._io import atomic_write_bytes, default_file_mode

from .provenance import machine, now, versions
from .stats import LatencyStats


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def results_document(results: list[LatencyStats], **extra) -> dict:
    headlines = sorted({r.headline for r in results})
    return {
        "date": now(),
        "machine": machine(),
        "versions": versions(),
        "headline_statistic": headlines[0] if len(headlines) == 1 else headlines,
        "unit": "ms",
        **extra,
        "results": [r.to_dict() for r in results],
    }


def write_json(path: str | os.PathLike, results: list[LatencyStats], **extra) -> Path:
    p = Path(path)
    doc = results_document(results, **extra)
    _atomic_write(p, (json.dumps(doc, indent=2) + "\n").encode())
    return p


def plot(path: str | os.PathLike, results: list[LatencyStats], *, title: str = "") -> Path:
    """Grouped bars: one group per target, one bar per backend, whiskers p10..p90."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    targets = list(dict.fromkeys(r.target for r in results))
    backends = list(dict.fromkeys(r.backend for r in results))
    by_key = {(r.target, r.backend): r for r in results}
    width = 0.8 / max(len(backends), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(targets) + 2), 4.2))
    x = np.arange(len(targets))
    for i, b in enumerate(backends):
        vals, lo, hi = [], [], []
        for t in targets:
            r = by_key.get((t, b))
            vals.append(r.value if r else np.nan)
            lo.append(r.value - r.p10 if r and r.p10 < r.value else 0.0)
            hi.append(max(r.p90 - r.value, 0.0) if r else 0.0)
        pos = x + (i - (len(backends) - 1) / 2) * width
        ax.bar(pos, vals, width, label=b)
        ax.errorbar(pos, vals, yerr=[lo, hi], fmt="none", ecolor="black", capsize=2, lw=0.8)
    headline = results[0].headline if results else "min"
    ax.set_xticks(x)
    ax.set_xticklabels(targets, rotation=20, ha="right")
    ax.set_ylabel(f"latency, ms ({headline}; whisker to p90)")
    ax.set_title(title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.stem}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, p)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p
