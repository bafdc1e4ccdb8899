"""PNG plots of a search from its JSONL log: gate and width trajectories, expected latency."""

from __future__ import annotations

import json
import os
from pathlib import Path


def plot_run(log: str | os.PathLike, out: str | os.PathLike, target_ms: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(ln) for ln in Path(log).read_text(encoding="utf-8").splitlines() if ln.strip()]
    keys = sorted({k for r in recs for k in r["widths"]}, key=lambda k: (int(k.split(".")[0]), k))
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    for k in keys:
        xs = [r["step"] for r in recs if r["p_small"].get(k) is not None]
        ys = [r["p_small"][k] for r in recs if r["p_small"].get(k) is not None]
        if xs:
            axes[0].plot(xs, ys, lw=0.7)
        xs = [r["step"] for r in recs if k in r["widths"]]
        axes[1].plot(xs, [r["widths"][k] for r in recs if k in r["widths"]], lw=0.9, label=k)
    axes[0].set_ylabel("Prunode p(small)")
    axes[1].set_ylabel("hidden width")
    if len(keys) <= 16:
        axes[1].legend(fontsize=6, ncol=2)
    xs = [r["step"] for r in recs if r.get("expected_ms") is not None]
    axes[2].plot(xs, [r["expected_ms"] for r in recs if r.get("expected_ms") is not None], label="expected (a·E[Σ]+c)")
    if target_ms:
        axes[2].axhline(target_ms, color="k", ls="--", lw=0.8, label="target")
    axes[2].set_ylabel("latency (ms)")
    axes[2].set_xlabel("step")
    axes[2].legend(fontsize=7)
    for e in (e for r in recs for e in r.get("events", [])):
        axes[1].axvline(e["step"], color="0.85", lw=0.5, zorder=0)
    fig.tight_layout()
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out)
    return out
