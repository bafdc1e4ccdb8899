"""What a search run is asked to do: the loop's settings, the strategy's, and the run itself.

Split in two because the loop (data, weight optimiser, checkpoints) is shared by every strategy,
while thresholds, temperatures and budgets belong to one algorithm: a strategy's config class
lives next to the strategy. ``RunSpec`` is ``run.json`` in the run folder; ``resume`` compares it
with the checkpoint and refuses a run folder whose settings were edited.

No torch here: the CLI reads and validates these before any heavy import.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any


class SearchError(RuntimeError):
    """A search cannot start or continue; the message names the file/option and the fix."""


def dataclass_from_dict(cls: type, d: Any, where: str) -> Any:
    """``cls(**d)`` with unknown fields and wrong types named (``where``: the file/option)."""
    if not isinstance(d, dict):
        raise SearchError(f"{where}: expected a JSON object, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise SearchError(f"{where}: unknown field {unknown[0]!r} (known: {sorted(known)})")
    for k, v in d.items():
        default = known[k].default
        if v is None and "None" in str(known[k].type):
            ok = True
        elif isinstance(default, bool):
            ok = isinstance(v, bool)
        elif isinstance(default, (int, float)) and default is not None:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (
                isinstance(default, float) or float(v).is_integer()) and math.isfinite(v)
            if ok and isinstance(default, int):
                v = int(v)
                d = {**d, k: v}
        else:
            ok = True
        if not ok:
            raise SearchError(f"{where}: {k}: expected {type(default).__name__}, got {v!r}")
    return cls(**d)


@dataclass
class LoopConfig:
    """Settings of the search loop, the same for every strategy."""

    steps: int = 300                 # total steps
    warmup_steps: int = 60           # weight-only steps first (architecture frozen)
    batch_size: int = 64             # per rank
    val_fraction: float = 0.2        # share of the used training images that trains the architecture
    train_limit: int | None = 12000  # training images used (None = all); proxy-scale searches need few
    weight_lr: float = 0.05          # SGD (momentum, nesterov), cosine to 0 over `steps`
    weight_momentum: float = 0.9
    weight_decay: float = 4e-5
    checkpoint_every: int = 25       # steps between checkpoints (also on SIGTERM/SIGINT)
    threads: int = 0                 # torch CPU threads (0 = torch's default; recorded)
    eval_images: int = 2000          # val images to score the derived network on (0 = skip)
    channels_last: bool = True       # weights and batches in channels_last (faster here on CPU; False: the
                                     # memory format of searches recorded before 2026-12-04)
    bn_recalibration_images: int = 512  # training images that re-estimate the derived net's BatchNorm
                                     # statistics before its inherited accuracy is scored (0 = keep the
                                     # supernet's running statistics, as searches before 2026-12-04 did)

    def validate(self) -> None:
        if self.steps < 1:
            raise SearchError(f"--steps: expected a positive integer, got {self.steps}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise SearchError(f"warmup_steps: expected 0..steps ({self.steps}), got {self.warmup_steps}")
        if self.batch_size < 1:
            raise SearchError(f"batch_size: expected a positive integer, got {self.batch_size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise SearchError(f"val_fraction: expected a share in (0, 1), got {self.val_fraction}")
        if self.checkpoint_every < 1:
            raise SearchError(f"checkpoint_every: expected a positive integer, got {self.checkpoint_every}")
        if self.weight_lr <= 0:
            raise SearchError(f"weight_lr: expected a positive number, got {self.weight_lr}")
        if self.bn_recalibration_images < 0:
            raise SearchError(f"bn_recalibration_images: expected 0 or more images, got {self.bn_recalibration_images}")


LOOP_FIELDS = frozenset(f.name for f in fields(LoopConfig))


@dataclass
class RunSpec:
    """What the user asked for (``run.json`` in the run folder; ``resume`` reads it back)."""

    space: str
    data: str
    target_ms: float
    strategy: str = "prunet"
    backend: str = "onnxruntime"
    lut: str | None = None
    seed: int = 0
    latency_threads: int = 1
    device: str = "cpu"
    allow_foreign_lut: bool = False
    loop: LoopConfig = field(default_factory=LoopConfig)
    strategy_config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = "run.json") -> "RunSpec":
        if not isinstance(d, dict):
            raise SearchError(f"{where}: expected a JSON object")
        d = dict(d)
        if "config" in d and "loop" not in d:
            raise SearchError(f"{where}: written by an earlier prunet (one flat 'config'); this version cannot "
                              "resume it: start the search again")
        loop = dataclass_from_dict(LoopConfig, d.pop("loop", {}), f"{where}: loop")
        strategy_config = d.pop("strategy_config", {})
        if not isinstance(strategy_config, dict):
            raise SearchError(f"{where}: strategy_config: expected a JSON object")
        spec = dataclass_from_dict(cls, d, where)
        spec.loop, spec.strategy_config = loop, dict(strategy_config)
        return spec

    def validate(self) -> None:
        if not isinstance(self.target_ms, (int, float)) or not (self.target_ms > 0 and math.isfinite(self.target_ms)):
            raise SearchError(f"--target-ms: expected a positive number, got {self.target_ms}")
        self.loop.validate()


def split_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A flat ``--config`` object → (loop fields, strategy fields): users write one object."""
    loop = {k: v for k, v in settings.items() if k in LOOP_FIELDS}
    rest = {k: v for k, v in settings.items() if k not in LOOP_FIELDS}
    return loop, rest


def changed_fields(recorded: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two ``RunSpec.to_dict()`` objects."""
    out: list[str] = []
    for k in sorted(set(recorded) | set(current)):
        a, b = recorded.get(k, "<absent>"), current.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_fields(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out
