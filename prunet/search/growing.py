"""The network GrowEfficient trains: one block per layer at the space's largest width, with a
continuous mask parameter per filter group and per skippable layer.

Yuan, Savarese & Maire (ICLR 2021) relax each binary structure indicator to ``σ(β·s)`` and raise
``β`` over training until the sigmoid is a step function; during training a binary mask is
*sampled* from those probabilities. Here:

* the unit of width is a *group* of ``width_step`` hidden channels (the paper masks single
  filters): every width the sampled masks can produce is then one of the space's widths, so each
  has its own latency-table entry and nothing is interpolated. The first ``min_hidden`` channels
  are always on (the space allows no narrower block).
* a layer mask exists for each skippable layer (stride 1, equal widths, after ``min_depth``).
* a sampled-off layer is not computed at all; sampled-off filter groups are only *masked* (their
  channels are computed and multiplied by 0), so the straight-through estimator can give their
  ``s`` a gradient from the task loss.

The cost of a layer under the mask probabilities is exact: the number of groups switched on is a
Poisson-binomial variable, whose distribution :func:`poisson_binomial` computes differentiably,
and each count is one width with one table entry (or one FLOPs count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunet.arch import block_type
from prunet.nn import ClassifierHead, ConvBnAct, build_block
from prunet.search.space import Candidate, LayerSlot, SearchSpace


def poisson_binomial(p: torch.Tensor) -> torch.Tensor:
    """Distribution of the number of successes of independent Bernoulli(p_i), as a tensor of
    ``len(p) + 1`` probabilities, differentiable in ``p`` (an O(n²) recursion; n ≤ a few hundred)."""
    dist = p.new_ones(1)
    zero = p.new_zeros(1)
    for pi in p:
        dist = torch.cat([dist * (1 - pi), zero]) + torch.cat([zero, dist * pi])
    return dist


def mask_probs(s: torch.Tensor, beta: float) -> torch.Tensor:
    """``σ(β·s)``; at ``β = ∞`` the step function ``s > 0`` (what derivation keeps)."""
    if math.isinf(beta):
        return (s.detach() > 0).to(s.dtype)
    return torch.sigmoid(beta * s)


class MaskDraw:
    """How one forward turns mask parameters into masks.

    ``sample``: a binary mask drawn from ``σ(β·s)`` with the straight-through gradient, written
    ``q + (p − sg(p))`` so the forward value is exactly 0 or 1. The draws come from ``generator``
    (one per step, seeded from the run seed and the step: the same sub-network on every rank, so
    BN's integer counters stay equal across ranks, and reproducible on resume without state).
    Otherwise: the hard mask ``s > 0`` with no gradient (warm-up and the collapsed network)."""

    def __init__(self, beta: float = math.inf, sample: bool = False, generator: torch.Generator | None = None):
        self.beta, self.sample, self.generator = beta, sample, generator

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        if not self.sample:
            return (s.detach() > 0).to(s.dtype)
        p = torch.sigmoid(self.beta * s)
        u = torch.rand(p.shape, generator=self.generator, device=p.device, dtype=p.dtype)
        q = (u < p.detach()).to(p.dtype)
        return q + (p - p.detach())


HARD = MaskDraw()


def block_mflops(spec: Any, in_chs: int, hw: tuple[int, int]) -> float:
    """FLOPs of one part (block, stem conv or head) at batch 1, in millions, counted by
    ``torch.utils.flop_counter`` on the meta device (convolutions and matmuls; a multiply-add
    counts 2, as torch counts it; BN, activations and pooling are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    from prunet.arch import HeadSpec

    mod = ClassifierHead(spec, device="meta") if isinstance(spec, HeadSpec) else build_block(spec, device="meta")
    x = torch.empty(1, in_chs, *hw, device="meta")
    with FlopCounterMode(display=False) as fc:
        mod.eval()(x)
    return fc.get_total_flops() / 1e6


@dataclass(frozen=True)
class LayerCosts:
    """Per reachable width of a layer's block (``min_hidden + k·width_step``, k = 0..groups):
    calibrated-table raw milliseconds and, when asked for, MFLOPs."""

    ms: tuple[float, ...]
    mflops: tuple[float, ...] | None = None


class GrowingLayer(nn.Module):
    """One layer: its block at the largest width, a mask parameter per filter group
    (``width_s``) and, if the layer may be skipped, one for the layer (``depth_s``)."""

    def __init__(self, slot: LayerSlot, cand: Candidate, step: int, costs: LayerCosts):
        super().__init__()
        self.slot, self.cand, self.step, self.costs = slot, cand, step, costs
        widths = slot.hidden_widths(cand, step)
        self.widths = widths
        self.min_hidden, self.groups = widths[0], len(widths) - 1
        self.block = build_block(slot.block_spec(cand, widths[-1]))
        self.width_s = nn.Parameter(torch.zeros(self.groups)) if self.groups else None
        self.depth_s = nn.Parameter(torch.zeros(())) if slot.skippable else None
        self._scale: torch.Tensor | None = None
        getattr(self.block, block_type(cand.type).gate_site).register_forward_pre_hook(self._mask_hook)

    def _mask_hook(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
        """Multiply the hidden tensor (after the hidden conv's BN+activation, before SE and the
        projection) by the channel mask: a zero channel then contributes exactly nothing, as if
        the block were built without it."""
        m = self._scale
        if m is None:
            return None
        x = args[0]
        scale = torch.cat([m.new_ones(self.min_hidden), m.repeat_interleave(self.step)])
        return (x * scale.to(x.dtype).view(1, -1, 1, 1),)

    def forward(self, x: torch.Tensor, draw: MaskDraw = HARD) -> torch.Tensor:
        on = None
        if self.depth_s is not None:
            on = draw(self.depth_s)
            if float(on.detach()) == 0.0:
                return x  # sampled off: the layer costs nothing this step (and its s_l gets no CE gradient)
        self._scale = draw(self.width_s) if self.width_s is not None else None
        try:
            y = self.block(x)
        finally:
            self._scale = None
        if on is None or not on.requires_grad:
            return y
        return y + (on - on.detach()) * (y - x)  # value exactly y; d/d(on) = y − x (the residual branch)

    # ------------------------------------------------------------------ cost

    def group_probs(self, beta: float) -> torch.Tensor | None:
        return mask_probs(self.width_s, beta) if self.width_s is not None else None

    def layer_prob(self, beta: float) -> torch.Tensor | None:
        return mask_probs(self.depth_s, beta) if self.depth_s is not None else None

    def expected_cost(self, beta: float, kind: str) -> torch.Tensor:
        """E[cost of this layer] under the mask probabilities at temperature ``β``: the
        Poisson-binomial distribution of the number of groups on, against the table's entry (or
        FLOPs) of each width, times the probability that the layer is on."""
        values = self.costs.ms if kind == "ms" else self.costs.mflops
        assert values is not None, "FLOPs were not counted for this net"
        ref = self.width_s if self.width_s is not None else next(self.block.parameters())
        cost = torch.tensor(values, dtype=torch.float32, device=ref.device)
        p = self.group_probs(beta)
        e = (poisson_binomial(p) * cost).sum() if p is not None else cost[0]
        q = self.layer_prob(beta)
        return q * e if q is not None else e

    # ------------------------------------------------------------------ the collapsed choice

    def groups_on(self) -> list[int]:
        if self.width_s is None:
            return []
        return [g for g, v in enumerate(self.width_s.detach().tolist()) if v > 0]

    def layer_on(self) -> bool:
        return self.depth_s is None or float(self.depth_s.detach()) > 0

    def channels(self, groups: list[int]) -> list[int]:
        """Hidden channel indices of the block that keeps filter groups ``groups``."""
        out = list(range(self.min_hidden))
        for g in sorted(groups):
            start = self.min_hidden + g * self.step
            out.extend(range(start, start + self.step))
        return out


class GrowingNet(nn.Module):
    """Stem → one :class:`GrowingLayer` per layer of the space → head."""

    def __init__(self, space: SearchSpace, cands: list[Candidate], costs: list[LayerCosts],
                 fixed_ms: float, fixed_mflops: float | None):
        super().__init__()
        self.space = space
        self.stem = nn.Sequential(*[ConvBnAct(c) for c in space.stem])
        self.layers = nn.ModuleDict({str(slot.index): GrowingLayer(slot, cand, space.width_step, cost)
                                     for slot, cand, cost in zip(space.layers(), cands, costs)})
        self.head = ClassifierHead(space.head)
        self.fixed_ms, self.fixed_mflops = fixed_ms, fixed_mflops

    def mask_parameters(self) -> list[tuple[str, nn.Parameter]]:
        out = []
        for li, layer in self.layers.items():
            if layer.width_s is not None:
                out.append((f"layers.{li}.width_s", layer.width_s))
            if layer.depth_s is not None:
                out.append((f"layers.{li}.depth_s", layer.depth_s))
        return out

    def weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        ids = {id(p) for _, p in self.mask_parameters()}
        return [(n, p) for n, p in self.named_parameters() if id(p) not in ids]

    def forward(self, x: torch.Tensor, draw: MaskDraw = HARD) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers.values():
            x = layer(x, draw)
        return self.head(x)

    def expected_raw(self, beta: float, kind: str) -> torch.Tensor:
        """Σ over layers of the expected cost, plus stem and head (raw table sum, or MFLOPs)."""
        total = sum(layer.expected_cost(beta, kind) for layer in self.layers.values())
        return total + (self.fixed_ms if kind == "ms" else (self.fixed_mflops or 0.0))


__all__ = ["GrowingNet", "GrowingLayer", "LayerCosts", "MaskDraw", "HARD", "poisson_binomial", "mask_probs",
           "block_mflops"]
