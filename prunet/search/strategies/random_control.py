"""``random``: the control every search is compared against.

It draws architectures of the space uniformly (candidate, hidden width and Skip per layer) until
one is predicted, by the same latency table, within ``tolerance`` below the target, then trains
that one network for the run's steps with the loop's recipe. A benchmark can then ask whether a
searched net beats chance at the same latency — with the same data, budget and measurement.

It is also the worked example of ``docs/search.md`` ("Adding a strategy"): a config dataclass,
a registered class, a network to train, a loss and a derived result; no architecture
parameters, so the loop runs weight steps only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunet.arch import ArchSpec
from prunet.latency.lut import sample_arch
from prunet.search.config import SearchError
from prunet.search.strategy import Derived, Named, Strategy, register_strategy


@dataclass
class RandomConfig:
    tolerance: float = 0.03   # accept a net predicted within [T·(1 − tolerance), T]
    max_draws: int = 100000   # give up (with the closest draw named) after this many
    skip_prob: float = 0.25   # chance of skipping a skippable layer in a draw

    def validate(self) -> None:
        if not 0.0 < self.tolerance < 1.0:
            raise SearchError(f"tolerance: expected a share in (0, 1), got {self.tolerance}")
        if self.max_draws < 1:
            raise SearchError(f"max_draws: expected a positive integer, got {self.max_draws}")
        if not 0.0 <= self.skip_prob <= 1.0:
            raise SearchError(f"skip_prob: expected a probability, got {self.skip_prob}")


@register_strategy
class RandomStrategy(Strategy):
    name = "random"
    summary = "control: a random net of the space predicted within --config tolerance below the target, trained alone"
    config_class = RandomConfig

    def check_target(self) -> None:
        """Draw now, so an unreachable band fails before the run folder exists."""
        self.spec, self.draws = self._draw()

    def _draw(self) -> tuple[ArchSpec, int]:
        table, target, tol = self.ctx.table, self.ctx.target_ms, self.cfg.tolerance
        rng = random.Random(self.ctx.seed)  # own generator: identical draws on every rank
        closest: tuple[float, float] | None = None
        for i in range(1, self.cfg.max_draws + 1):
            arch = sample_arch(self.ctx.space, rng, "random", self.cfg.skip_prob)
            pred = table.predict(arch)
            if target * (1.0 - tol) <= pred <= target:
                return arch, i
            gap = abs(pred - target)
            if closest is None or gap < closest[0]:
                closest = (gap, pred)
        assert closest is not None
        raise SearchError(f"--strategy random: no net of space {self.ctx.space.name!r} predicted within "
                          f"[{target * (1 - tol):.4f}, {target:.4f}] ms in {self.cfg.max_draws} draws (closest "
                          f"{closest[1]:.4f} ms); widen tolerance in --config or change the target")

    def build(self) -> nn.Module:
        from prunet.nn import PruNet

        self.model = PruNet(self.spec)
        return self.model

    def weight_parameters(self) -> Named:
        return list(self.model.named_parameters())

    def weight_loss(self, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        return F.cross_entropy(self.model(x), y)

    def structure(self) -> dict[str, Any]:
        return {"draws": self.draws}

    def apply_structure(self, structure: dict[str, Any]) -> None:
        if structure.get("draws") != self.draws:
            raise SearchError(f"checkpoint drew its net at draw {structure.get('draws')}, this run at {self.draws}")

    def derive(self) -> Derived:
        return Derived(spec=self.spec, model=self.model,
                       details={"random": {"draws": self.draws, "tolerance": self.cfg.tolerance}})
