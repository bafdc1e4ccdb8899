"""Latency statistics with the provenance needed to compare them later.

On shared CPU machines other tenants move the upper tail and even the middle of the timing
distribution, while the low end stays put (measured: /work/shared/notes/latency-measurement.md,
where the minimum of a few hundred runs agreed within 1-1.3 % back to back and the median did not).
So the headline statistic defaults to the minimum and is always recorded next to the figure;
median and percentiles are kept for GPUs and quiet machines, where the median is the convention
(trtexec reports the median GPU compute time).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

HEADLINES = ("min", "p10", "median", "mean")


@dataclass
class LatencyStats:
    """Per-inference latency in milliseconds over `n` timed runs after warm-up."""

    median: float
    p10: float
    p90: float
    min: float
    mean: float
    std: float
    n: int
    headline: str = "min"  # which statistic `value` reports
    backend: str = ""
    device: str = ""
    threads: int | None = None
    batch: int | None = None
    input_shape: list[int] = field(default_factory=list)
    warmup: int = 0
    target: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    date: str = ""
    settings: dict = field(default_factory=dict)  # backend options (spinning, providers, ...)
    samples: list[float] = field(default_factory=list, repr=False)

    @property
    def value(self) -> float:
        """The headline figure in milliseconds."""
        return float(getattr(self, self.headline))

    @property
    def unit(self) -> str:
        return "ms"

    @classmethod
    def from_samples(cls, samples_ms, *, headline: str = "min", keep_samples: bool = False,
                     **provenance) -> "LatencyStats":
        if headline not in HEADLINES:
            raise ValueError(f"headline: expected one of {HEADLINES}, got {headline!r}")
        a = np.asarray(samples_ms, dtype=np.float64)
        if a.size == 0 or not np.all(np.isfinite(a)):
            raise ValueError("latency samples must be a non-empty list of finite numbers")
        return cls(
            median=float(np.median(a)), p10=float(np.percentile(a, 10)),
            p90=float(np.percentile(a, 90)), min=float(a.min()), mean=float(a.mean()),
            std=float(a.std(ddof=1)) if a.size > 1 else 0.0, n=int(a.size), headline=headline,
            samples=[float(x) for x in a] if keep_samples else [], **provenance,
        )

    def to_dict(self, *, samples: bool = False) -> dict:
        d = asdict(self)
        if not samples:
            d.pop("samples")
        d["value"] = self.value
        d["unit"] = self.unit
        return d

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(**kw), indent=2)

    def __str__(self) -> str:
        return (f"{self.target or 'model'} [{self.backend}, {self.device}, "
                f"threads={self.threads}, batch={self.batch}]: {self.headline} {self.value:.3f} ms "
                f"(median {self.median:.3f}, p10 {self.p10:.3f}, p90 {self.p90:.3f}, n={self.n})")


def ratio(a: LatencyStats, b: LatencyStats) -> float:
    """a / b on the headline statistic (both must use the same one)."""
    if a.headline != b.headline:
        raise ValueError(f"cannot compare {a.headline} with {b.headline}")
    return a.value / b.value if b.value > 0 else math.inf
