"""RepNAS: which branches each layer of a re-parameterisable net trains with (Zhang et al., 2021).

Every layer is a diverse branch block (:class:`prunet.nn.RepBlock` with all its branches) and every
(layer, branch) pair has an architecture weight ``α``. Each step draws logistic noise (the
difference of two Gumbels), ranks all branches of all layers together by ``α + noise`` and keeps
the global top ``k`` — the branch-number budget — as a hard mask; a kept branch's output is scaled
by ``mask + σ(r) − sg(σ(r))`` (exactly 1 forward, the sigmoid's gradient backward), so ``α`` learns
through the branches that ran. Weights and ``α`` are trained jointly, one stage, on one loss. The
derived net keeps per layer the branches of the noise-free top ``k``; export fuses each block into
one 3×3 conv.

The latency target: the fused net is a plain conv chain whose latency does not depend on the
branches, so the target picks the chain before anything is trained — per stage of the space a
width and a depth, the chain with the largest predicted latency ≤ the target (the latency table
holds every chain's parts, see :func:`prunet.arch.rep.table_parts`) — and the search then spends
the branch budget. ``docs/search.md`` ("RepNAS") gives the choices and their reasons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunet.arch import ArchSpec, Provenance
from prunet.arch.rep import (REP_BRANCHES, StageChoice, all_branches, chain_head, chain_layers, final_hw,
                              stage_options)
from prunet.latency.lut import LutError, block_key, head_key
from prunet.search.config import SearchError
from prunet.search.strategy import Derived, Named, Strategy, register_strategy

BEAM = 400  # partial chains kept per stage and last width while choosing the backbone


@dataclass
class RepNASConfig:
    branch_ratio: float = 0.5   # budget k = this share of all (layer, branch) pairs (the paper's constraint) ...
    branches: int = 0           # ... or exactly this many (0 = use branch_ratio)
    arch_lr: float = 0.01       # Adam on α, trained jointly with the weights
    noise: float = 1.0          # scale of the logistic noise on α (0 = deterministic top-k)

    def validate(self) -> None:
        if not 0.0 < self.branch_ratio <= 1.0:
            raise SearchError(f"branch_ratio: expected a share in (0, 1], got {self.branch_ratio}")
        if self.branches < 0:
            raise SearchError(f"branches: expected 0 (use branch_ratio) or a positive count, got {self.branches}")
        if not self.arch_lr > 0:
            raise SearchError(f"arch_lr: expected a positive number, got {self.arch_lr}")
        if not (self.noise >= 0 and math.isfinite(self.noise)):
            raise SearchError(f"noise: expected a non-negative number, got {self.noise}")


def topk_mask(scores: torch.Tensor, allowed: torch.Tensor, k: int) -> torch.Tensor:
    """The global top-``k`` of ``scores`` (layers × branches) among ``allowed`` entries, with every
    layer keeping at least its best branch (a block with no branch computes nothing)."""
    s = scores.detach().masked_fill(~allowed, float("-inf"))
    mask = torch.zeros_like(allowed)
    rows = torch.arange(s.shape[0], device=s.device)
    mask[rows, s.argmax(1)] = True
    extra = k - s.shape[0]
    if extra > 0:
        rest = s.masked_fill(mask, float("-inf")).flatten()
        mask.view(-1)[rest.topk(extra).indices] = True
    return mask


class RepSupernet(nn.Module):
    """The chain with every allowed branch in every layer, plus ``alphas`` (layers × branches)."""

    def __init__(self, spec: ArchSpec):
        super().__init__()
        from prunet.nn import PruNet

        self.net = PruNet(spec)
        self.blocks = [b for stage in self.net.stages for b in stage]  # a plain list: not registered twice
        allowed = torch.tensor([[b in blk.spec.branches for b in REP_BRANCHES] for blk in self.blocks])
        self.register_buffer("allowed", allowed, persistent=False)
        self.alphas = nn.Parameter(torch.zeros(len(self.blocks), len(REP_BRANCHES)))

    def forward(self, x: torch.Tensor, gates: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.net.stem(x)
        keep = mask.tolist()
        for i, blk in enumerate(self.blocks):
            x = blk(x, {b: gates[i, j] for j, b in enumerate(REP_BRANCHES) if keep[i][j]})
        return self.net.forward_head(self.net.head.forward_conv(x))


@register_strategy
class RepNASStrategy(Strategy):
    name = "repnas"
    summary = ("RepNAS: plain 3x3 chain sized by the table to the target, then a global top-k of diverse "
               "branches (Gumbel + straight-through), fused for inference")
    config_class = RepNASConfig
    joint = True

    # ----------------------------------------------------------------- the backbone

    def check_target(self) -> None:
        """Choose the plain chain now, so an unreachable target fails before the run folder exists."""
        self.choice, self.chain_ms = self._choose_chain()
        self.layers = chain_layers(self.ctx.space, self.choice)
        total = sum(len(all_branches(s.in_chs, s.out_chs, s.stride)) for s, _ in self.layers)
        k = self.cfg.branches or int(round(self.cfg.branch_ratio * total))
        if not len(self.layers) <= k <= total:
            raise SearchError(f"branches: the budget k={k} must lie between the number of layers "
                              f"({len(self.layers)}: one branch each) and the branches they have ({total})")
        self.k, self.total = k, total

    def _choose_chain(self) -> tuple[list[StageChoice], float]:
        """Per stage a width and a depth: the chain with the largest predicted latency ≤ the target.

        Stages are added one at a time; the prediction is ``a·Σ + c``, so partial sums are compared
        against the target's raw budget, and per stage and last width the ``BEAM`` partial chains
        are kept that spread evenly over the achievable sums."""
        space, table, target = self.ctx.space, self.ctx.table, self.ctx.target_ms
        try:
            budget = (target - table.c) / table.a
            stem_hw = tuple(space.input_size[1:])
            stem = 0.0
            for c in space.stem:
                stem += table.lookup(block_key(c, stem_hw), "stem")
                stem_hw = c.out_hw(stem_hw)
            partial: list[tuple[float, list[StageChoice]]] = [(stem, [])]
            opts = stage_options(space)
            for si, options in enumerate(opts):
                grown: dict[int, list[tuple[float, list[StageChoice]]]] = {}
                for raw, chosen in partial:
                    for opt in options:
                        probe = chosen + [opt] + [o[0] for o in opts[si + 1:]]  # later stages: any choice
                        parts = chain_layers(space, probe)
                        start = sum(c.depth for c in chosen)
                        add = sum(table.lookup(block_key(s, hw), f"stage {si}") for s, hw in parts[start:start + opt.depth])
                        if raw + add <= budget:
                            grown.setdefault(opt.width, []).append((raw + add, chosen + [opt]))
                partial = [p for group in grown.values() for p in _spread(group, BEAM)]
                if not partial:
                    break
            fh = final_hw(space)
            done = [(raw + table.lookup(head_key(chain_head(space, ch), fh), "head"), ch) for raw, ch in partial]
        except LutError as e:
            raise SearchError(f"--lut: {e} (tables built before the 'rep' block type lack the RepNAS chain "
                              "parts: rebuild it with `prunet latency build-lut`)") from None
        fitting = [d for d in done if d[0] <= budget]
        if not fitting:
            smallest = [o[0] for o in stage_options(space)]
            floor = table.predict(self._chain_spec(smallest, "min"))
            raise SearchError(f"--target-ms {target}: below the smallest plain chain of space {space.name!r} "
                              f"({floor:.4f} ms predicted; every stage at its narrowest width and least depth)")
        raw, best = max(fitting, key=lambda d: (d[0], sum(c.width * c.depth for c in d[1])))
        return best, table.a * raw + table.c

    def _chain_spec(self, choice: list[StageChoice], name: str, branches: Any = None) -> ArchSpec:
        space = self.ctx.space
        blocks = tuple(s for s, _ in chain_layers(space, choice, branches))
        return ArchSpec(name=name, input_size=space.input_size, stem=space.stem, blocks=blocks,
                        head=chain_head(space, choice), provenance=Provenance())

    # ----------------------------------------------------------------- construction

    def build(self) -> nn.Module:
        spec = self._chain_spec(self.choice, "repnas-supernet",
                                lambda s: all_branches(s.in_chs, s.out_chs, s.stride))
        self.net = RepSupernet(spec)
        return self.net

    def weight_parameters(self) -> Named:
        return [(f"net.{n}", p) for n, p in self.net.net.named_parameters()]

    def arch_parameters(self) -> Named:
        return [("alphas", self.net.alphas)]

    def arch_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.cfg.arch_lr, betas=(0.5, 0.999))

    # ----------------------------------------------------------------- one step

    def gates(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's mask and straight-through gates. The noise comes from a generator seeded by
        (seed, step): identical on every rank and after a resume, with no state to checkpoint."""
        alphas = self.net.alphas
        gen = torch.Generator().manual_seed(self.ctx.seed * 1_000_003 + step)
        u = torch.rand((2, *alphas.shape), generator=gen).clamp_(1e-10, 1 - 1e-10)
        noise = (-torch.log(-torch.log(u[0])) + torch.log(-torch.log(u[1]))).to(alphas.device)
        r = alphas + self.cfg.noise * noise
        mask = topk_mask(r, self.net.allowed, self.k)
        soft = torch.sigmoid(r)
        return mask.to(r.dtype) + (soft - soft.detach()), mask  # exactly the mask forward

    def weight_loss(self, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        gates, mask = self.gates(step)
        self._last_mask = mask
        return F.cross_entropy(self.net(x, gates, mask), y)

    def record(self, step: int) -> dict[str, Any]:
        mask = getattr(self, "_last_mask", None)
        kept = {} if mask is None else {b: int(mask[:, j].sum()) for j, b in enumerate(REP_BRANCHES)}
        return {"kept": kept, "alphas": [[round(float(a), 5) for a in row] for row in self.net.alphas.detach().cpu()]}

    # ----------------------------------------------------------------- resume

    def structure(self) -> dict[str, Any]:
        return {"chain": [[c.width, c.depth] for c in self.choice], "k": self.k}

    def apply_structure(self, structure: dict[str, Any]) -> None:
        if structure != self.structure():
            raise SearchError(f"checkpoint trained chain {structure}, this run chose {self.structure()} "
                              "(a different latency table or target?)")

    # ----------------------------------------------------------------- the result

    def final_mask(self) -> torch.Tensor:
        return topk_mask(self.net.alphas.detach().cpu(), self.net.allowed.cpu(), self.k)

    def derive(self) -> Derived:
        from prunet.nn import PruNet

        mask = self.final_mask()
        kept = [tuple(b for j, b in enumerate(REP_BRANCHES) if mask[i, j]) for i in range(mask.shape[0])]
        it = iter(kept)
        spec = self._chain_spec(self.choice, "repnas", lambda s: next(it))
        model = PruNet(spec)
        source = self.net.net.state_dict()
        target = model.state_dict()
        missing = [k for k in target if k not in source]
        if missing:
            raise SearchError(f"repnas: derived net has parameters the supernet lacks: {missing[:3]}")
        model.load_state_dict({k: source[k] for k in target})
        details = {"repnas": {"chain": [[c.width, c.depth] for c in self.choice], "branch_budget": self.k,
                              "branches_total": self.total, "branches_kept": int(mask.sum()),
                              "chain_predicted_ms": round(self.chain_ms, 6),
                              "kept_per_type": {b: int(mask[:, j].sum()) for j, b in enumerate(REP_BRANCHES)}}}
        return Derived(spec=spec, model=model, details=details)


def _spread(group: list[tuple[float, list[StageChoice]]], n: int) -> list[tuple[float, list[StageChoice]]]:
    """At most ``n`` entries of ``group`` spread evenly over its sorted sums (the largest kept)."""
    group = sorted(group, key=lambda g: g[0])
    if len(group) <= n:
        return group
    step = (len(group) - 1) / (n - 1)
    return [group[round(i * step)] for i in range(n)]

