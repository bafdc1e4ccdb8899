"""GrowEfficient: grow a network from a small seed by structured continuous sparsification
(Yuan, Savarese & Maire, "Growing Efficient Deep Networks by Structured Continuous
Sparsification", ICLR 2021), with the latency table as the budget.

The network (:class:`prunet.search.growing.GrowingNet`) holds one block per layer — the same
candidate in every step, ``candidate`` in the config (default: per layer the one whose narrowest
width the table predicts cheapest) — at the space's largest hidden width. Every group of ``width_step`` hidden channels and every skippable
layer has a mask parameter ``s``; its probability of being on is ``σ(β·s)``. The seed is small:
``seed_width`` of each layer's groups start on (``s = +s_init``), the rest off (``−s_init``), and
skippable layers start off unless ``seed_layers_on``.

One *joint* step (weights by the loop's SGD, masks by Adam, on the same train batch — the paper
trains both together): a binary mask is sampled per group and layer from ``σ(β·s)`` with the
straight-through gradient, the sampled sub-network runs (sampled-off layers are skipped, off
groups masked), and the loss is ``CE + λ/2·(u − 1)²`` with ``u = E[cost]/goal``: its gradient
``λ·(u − 1)·∇u`` is the paper's budget-aware regularisation, a pull whose sign follows the gap, so
masks switch off above the budget and on below it — the net grows and shrinks. ``E[cost]`` is the calibrated expected latency from the table (``budget="latency"``) or
the expected FLOPs (``budget="flops"``, the paper's setting, with ``target_mflops``).
``β`` rises exponentially from ``beta_start`` to ``beta_end`` after warm-up, so ``σ(β·s)`` tends
to the step function ``s > 0`` that derivation reads. During ``warmup_steps`` the seed alone
trains (hard masks, no mask gradient).

Derivation: keep what ``s > 0`` keeps; while the prediction (or FLOPs) is over the target, drop
the kept group or layer with the smallest ``s``; then, with ``fill``, add back off groups and
layers with the largest ``s`` while they fit. There is no fine-tuning stage: the loop's own
evaluation of the inherited weights and any later training of the derived net are what every
strategy gets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunet.arch import ArchSpec
from prunet.latency.lut import arch_parts, block_key
from prunet.search.config import SearchError
from prunet.search.growing import HARD, GrowingNet, LayerCosts, MaskDraw, block_mflops
from prunet.search.space import Candidate
from prunet.search.strategy import Derived, Named, Strategy, register_strategy

BUDGETS = ("latency", "flops")


@dataclass
class GrowEfficientConfig:
    """GrowEfficient's knobs, with their defaults and meaning."""

    budget: str = "latency"       # "latency": the table's calibrated prediction; "flops": the paper's FLOPs budget
    target_mflops: float = 0.0    # the FLOPs target (millions, multiply-add = 2) when budget = "flops"
    budget_weight: float = 10.0   # λ of the budget penalty λ/2·(u − 1)², u = E[cost]/goal
    target_margin: float = 0.03   # aim E[cost] at target·(1 − margin)
    arch_lr: float = 0.1          # Adam on the mask parameters s
    beta_start: float = 1.0       # temperature β of σ(β·s), raised exponentially ...
    beta_end: float = 100.0       # ... to this at the last step
    s_init: float = 1.0           # |s| at the start: seed parts +s_init, the rest −s_init
    seed_width: float = 0.25      # share of each layer's filter groups on in the seed
    seed_layers_on: bool = False  # skippable layers start on (default: off — the seed is shallow)
    candidate: str = "cheapest"   # each layer's block: "cheapest" at its narrowest width, "first", or a candidate name
    fill: bool = True             # after trimming, add back the most likely off parts that fit

    def validate(self) -> None:
        if self.budget not in BUDGETS:
            raise SearchError(f"budget: expected one of {list(BUDGETS)}, got {self.budget!r}")
        if self.budget == "flops" and not self.target_mflops > 0:
            raise SearchError(f"target_mflops: expected a positive number of MFLOPs with budget='flops', "
                              f"got {self.target_mflops}")
        if self.budget_weight <= 0:
            raise SearchError(f"budget_weight: expected a positive number, got {self.budget_weight}")
        if not 0.0 <= self.target_margin < 1.0:
            raise SearchError(f"target_margin: expected a share in [0, 1), got {self.target_margin}")
        if self.arch_lr <= 0:
            raise SearchError(f"arch_lr: expected a positive number, got {self.arch_lr}")
        if not (0 < self.beta_start <= self.beta_end):
            raise SearchError(f"beta_start, beta_end: expected 0 < beta_start <= beta_end, got "
                              f"{self.beta_start}, {self.beta_end}")
        if self.s_init <= 0:
            raise SearchError(f"s_init: expected a positive number, got {self.s_init}")
        if not 0.0 <= self.seed_width <= 1.0:
            raise SearchError(f"seed_width: expected a share in [0, 1], got {self.seed_width}")


def layer_mflops(slot: Any, cand: Candidate, widths: list[int]) -> list[float]:
    """MFLOPs of ``cand`` at each hidden width of ``slot``.

    Counting a block takes tens of milliseconds and a space has hundreds of widths per candidate
    list, so the count is taken at the two narrowest widths and the widest: when the three lie
    on one line — every convolution of an (fused) inverted residual is linear in the hidden width,
    SE included, since its width does not follow the hidden one — the line gives every width
    exactly; otherwise every width is counted."""
    def count(w: int) -> float:
        return block_mflops(slot.block_spec(cand, w), slot.in_chs, slot.in_hw)

    if len(widths) < 3:
        return [count(w) for w in widths]
    f0, f1, fn = count(widths[0]), count(widths[1]), count(widths[-1])
    slope = (f1 - f0) / (widths[1] - widths[0])
    if abs(f0 + slope * (widths[-1] - widths[0]) - fn) <= 1e-9 * max(fn, 1.0):
        return [f0 + slope * (w - widths[0]) for w in widths]
    return [count(w) for w in widths]


@register_strategy
class GrowEfficientStrategy(Strategy):
    name = "growefficient"
    summary = ("GrowEfficient (Yuan et al. 2021): grow filter groups and layers from a small seed by sampled "
               "σ(β·s) masks under the latency (or a FLOPs) budget")
    config_class = GrowEfficientConfig
    joint = True
    event_kinds = ("final_trim_width", "final_trim_layer", "final_fill_width", "final_fill_layer")

    def __init__(self, ctx: Any, config: GrowEfficientConfig):
        super().__init__(ctx, config)
        self._costs: list[LayerCosts] | None = None
        self._last: dict[str, float] = {}

    # ----------------------------------------------------------------- construction

    def candidates(self) -> list[Candidate]:
        """The one candidate of each layer: GrowEfficient grows widths and depth, not block types."""
        out = []
        space, table = self.ctx.space, self.ctx.table
        for slot in space.layers():
            if self.cfg.candidate == "first":
                out.append(slot.candidates[0])
                continue
            if self.cfg.candidate == "cheapest":  # the loop's floor check uses the same rule
                out.append(min(slot.candidates, key=lambda c: table.lookup(block_key(
                    slot.block_spec(c, slot.hidden_widths(c, space.width_step)[0]), slot.in_hw))))
                continue
            found = [c for c in slot.candidates if c.name == self.cfg.candidate]
            if not found:
                raise SearchError(f"candidate: {self.cfg.candidate!r} is not a candidate of layer {slot.index} "
                                  f"(stage {slot.stage}) of space {self.ctx.space.name!r}; its candidates: "
                                  f"{[c.name for c in slot.candidates]}")
            out.append(found[0])
        return out

    def _prepare(self) -> None:
        """Per layer and reachable width: the table's entry (and FLOPs when the budget is FLOPs);
        stem and head, which never change, as constants."""
        if self._costs is not None:
            return
        space, table = self.ctx.space, self.ctx.table
        flops = self.cfg.budget == "flops"
        self.cands = self.candidates()
        costs = []
        for slot, cand in zip(space.layers(), self.cands):
            widths = slot.hidden_widths(cand, space.width_step)
            ms = [table.lookup(block_key(slot.block_spec(cand, w), slot.in_hw), f"layer {slot.index} {cand.name} h={w}")
                  for w in widths]
            costs.append(LayerCosts(tuple(ms), tuple(layer_mflops(slot, cand, widths)) if flops else None))
        self._costs = costs
        fixed = [(p, k, s, hw) for p, k, s, hw in arch_parts(self._arch([None] * len(costs), {}))
                 if not p.startswith("blocks")]
        self.fixed_ms = sum(table.lookup(k, p) for p, k, _, _ in fixed)
        self.fixed_mflops = sum(block_mflops(s, s.in_chs, hw) for _, _, s, hw in fixed) if flops else None

    def _arch(self, on: list[bool | None], groups: dict[int, set[int]], name: str = "final") -> ArchSpec:
        """The architecture of a mask state: per layer on/off and its filter groups on."""
        space = self.ctx.space
        choices: list[tuple[Candidate, int] | None] = []
        for slot, cand, layer_on in zip(space.layers(), self.candidates() if self._costs is None else self.cands, on):
            if not layer_on and slot.skippable:
                choices.append(None)
            else:
                w = slot.hidden_widths(cand, space.width_step)[0] + space.width_step * len(groups.get(slot.index, ()))
                choices.append((cand, w))
        return space.arch_from_choices(choices, name)

    def check_target(self) -> None:
        """Refuse a target below the smallest net this strategy can derive (its candidate at its
        narrowest width, skippable layers skipped), before the run folder exists."""
        self._prepare()
        low = [c.ms[0] if not slot.skippable else 0.0 for slot, c in zip(self.ctx.space.layers(), self._costs or [])]
        floor = self.ctx.table.a * (self.fixed_ms + sum(low)) + self.ctx.table.c
        if floor > self.ctx.target_ms:
            raise SearchError(f"--target-ms {self.ctx.target_ms}: below the smallest net growefficient can derive "
                              f"with its candidates ({floor:.4f} ms predicted); raise the target or set "
                              "'candidate' in --config")
        if self.cfg.budget == "flops":
            low_f = [c.mflops[0] if not slot.skippable else 0.0  # type: ignore[index]
                     for slot, c in zip(self.ctx.space.layers(), self._costs or [])]
            floor_f = (self.fixed_mflops or 0.0) + sum(low_f)
            if floor_f > self.cfg.target_mflops:
                raise SearchError(f"target_mflops: {self.cfg.target_mflops} is below the smallest net growefficient "
                                  f"can derive ({floor_f:.3f} MFLOPs)")

    def build(self) -> nn.Module:
        from prunet.nn.model import init_weights

        self._prepare()
        assert self._costs is not None
        self.net = GrowingNet(self.ctx.space, self.cands, self._costs, self.fixed_ms, self.fixed_mflops)
        init_weights(self.net)  # the zoo's initialisation, as the derived net would get it
        c = self.cfg
        with torch.no_grad():
            for layer in self.net.layers.values():
                if layer.width_s is not None:
                    n_on = self.seed_groups(layer.groups)
                    layer.width_s.fill_(-c.s_init)
                    layer.width_s[:n_on] = c.s_init
                if layer.depth_s is not None:
                    layer.depth_s.fill_(c.s_init if c.seed_layers_on else -c.s_init)
        return self.net

    def seed_groups(self, groups: int) -> int:
        return int(math.floor(self.cfg.seed_width * groups + 0.5))  # half up: 1 of 2 groups at 0.25

    def weight_parameters(self) -> Named:
        return self.net.weight_parameters()

    def arch_parameters(self) -> Named:
        return self.net.mask_parameters()

    def arch_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.cfg.arch_lr)

    # ----------------------------------------------------------------- schedule and loss

    def beta(self, step: int) -> float:
        """``β`` at a step: ``beta_start`` through warm-up, then exponential to ``beta_end`` at the last step."""
        c, loop = self.cfg, self.ctx.loop
        span = max(loop.steps - loop.warmup_steps - 1, 1)
        t = min(max(step - loop.warmup_steps, 0) / span, 1.0)
        return c.beta_start * (c.beta_end / c.beta_start) ** t

    @property
    def goal(self) -> float:
        target = self.cfg.target_mflops if self.cfg.budget == "flops" else self.ctx.target_ms
        return target * (1.0 - self.cfg.target_margin)

    def expected_ms(self, beta: float) -> torch.Tensor:
        """Calibrated expected latency ``a·E[Σ] + c`` under the mask probabilities at ``β``."""
        return self.ctx.table.a * self.net.expected_raw(beta, "ms") + self.ctx.table.c

    def expected_cost(self, beta: float) -> torch.Tensor:
        return self.net.expected_raw(beta, "mflops") if self.cfg.budget == "flops" else self.expected_ms(beta)

    def budget_penalty(self, cost: torch.Tensor) -> torch.Tensor:
        """``λ/2·(u − 1)²``, ``u = E[cost]/goal``: its gradient ``λ·(u − 1)·∇u`` is the paper's
        budget-aware term, a sparsity pull whose strength and sign follow the gap — masks are
        pushed off above the goal and on below it (written as a square so the logged loss stays ≥ CE)."""
        u = cost / self.goal
        return 0.5 * self.cfg.budget_weight * (u - 1.0) ** 2

    def draw(self, step: int) -> MaskDraw:
        """The step's sampler: its own generator seeded from the run seed and the step, so every
        rank samples the same sub-network and a resumed run samples what the original did."""
        gen = torch.Generator(device=self.ctx.device)
        gen.manual_seed(self.ctx.seed * 1_000_003 + step + 1)
        return MaskDraw(self.beta(step), sample=True, generator=gen)

    def weight_loss(self, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        if step < self.ctx.loop.warmup_steps:
            ce = F.cross_entropy(self.net(x, HARD), y)  # the seed trains alone; masks get no gradient
            self._last = {"ce": float(ce.detach())}
            return ce
        ce = F.cross_entropy(self.net(x, self.draw(step)), y)
        cost = self.expected_cost(self.beta(step))
        self._last = {"ce": float(ce.detach()), "expected_cost": float(cost.detach())}
        return ce + self.budget_penalty(cost)

    # ----------------------------------------------------------------- logging and resume

    def record(self, step: int) -> dict[str, Any]:
        beta = self.beta(step)
        with torch.no_grad():
            exp_ms = float(self.expected_ms(beta))
            rec: dict[str, Any] = {"beta": round(beta, 4), "ce": self._last.get("ce"), "expected_ms": round(exp_ms, 6)}
            if self.cfg.budget == "flops":
                rec["expected_mflops"] = round(float(self.net.expected_raw(beta, "mflops")), 4)
        rec["hidden"] = {li: (layer.min_hidden + layer.step * len(layer.groups_on())) if layer.layer_on() else 0
                         for li, layer in self.net.layers.items()}
        return rec

    def structure(self) -> dict[str, Any]:
        """The masks never change the network's shape; the candidates are recorded so a resume
        with another ``candidate`` is refused."""
        return {"candidates": [c.name for c in self.cands]}

    def apply_structure(self, structure: dict[str, Any]) -> None:
        if structure.get("candidates") != [c.name for c in self.cands]:
            raise SearchError(f"checkpoint grew candidates {structure.get('candidates')}, this run "
                              f"{[c.name for c in self.cands]}")

    # ----------------------------------------------------------------- the result

    def derive(self) -> Derived:
        net, table, target = self.net, self.ctx.table, self.ctx.target_ms
        flops = self.cfg.budget == "flops"
        layers = list(net.layers.values())
        on = [layer.layer_on() for layer in layers]
        groups = {layer.slot.index: set(layer.groups_on()) for layer in layers}
        grown = self._hidden(on, groups)
        s_w = {layer.slot.index: layer.width_s.detach().tolist() if layer.width_s is not None else [] for layer in layers}
        s_d = {layer.slot.index: float(layer.depth_s.detach()) for layer in layers if layer.depth_s is not None}

        def cost(kind: str) -> float:
            total = self.fixed_ms if kind == "ms" else (self.fixed_mflops or 0.0)
            for layer, is_on in zip(layers, on):
                if is_on or not layer.slot.skippable:
                    values = layer.costs.ms if kind == "ms" else layer.costs.mflops
                    total += values[len(groups[layer.slot.index])]  # type: ignore[index]
            return table.a * total + table.c if kind == "ms" else total

        def fits() -> bool:
            return cost("ms") <= target and (not flops or cost("mflops") <= self.cfg.target_mflops)

        events: list[dict[str, Any]] = []
        while not fits():  # trim: the kept part with the smallest s goes first
            kept = [(v, li, g) for li, vs in s_w.items() if on[li] for g, v in enumerate(vs) if g in groups[li]]
            kept += [(v, li, -1) for li, v in s_d.items() if on[li]]
            if not kept:
                raise SearchError(f"cannot reach --target-ms {target}: smallest derivable net is {cost('ms'):.4f} ms")
            _, li, g = min(kept)
            if g < 0:
                on[li] = False
                events.append({"event": "final_trim_layer", "layer": li})
            else:
                groups[li].discard(g)
                events.append({"event": "final_trim_width", "layer": li, "group": g})
        changed = self.cfg.fill
        while changed:  # fill: the most likely parts left out, while they fit
            changed = False
            off = [(-v, li, g) for li, vs in s_w.items() if on[li] for g, v in enumerate(vs) if g not in groups[li]]
            off += [(-v, li, -1) for li, v in s_d.items() if not on[li]]
            for _, li, g in sorted(off):
                if g < 0:
                    on[li] = True
                else:
                    groups[li].add(g)
                if fits():
                    changed = True
                    events.append({"event": "final_fill_layer", "layer": li} if g < 0 else
                                  {"event": "final_fill_width", "layer": li, "group": g})
                    break  # a layer switched on opens its groups: list again
                if g < 0:
                    on[li] = False
                else:
                    groups[li].discard(g)
        spec = self._arch(on, groups)
        pred = table.predict(spec)
        if abs(pred - cost("ms")) > 1e-9 * max(1.0, pred):
            raise SearchError(f"internal: derivation's latency sum {cost('ms')} differs from the table's {pred}")
        details: dict[str, Any] = {"growefficient": {
            "budget": self.cfg.budget, "candidates": [c.name for c in self.cands],
            "seed_hidden": {str(layer.slot.index): (layer.min_hidden + layer.step * self.seed_groups(layer.groups))
                            if (self.cfg.seed_layers_on or not layer.slot.skippable) else 0 for layer in layers},
            "grown_hidden": grown, "final_hidden": self._hidden(on, groups)}}
        if flops:
            details["growefficient"].update(target_mflops=self.cfg.target_mflops, mflops=round(cost("mflops"), 6))
        return Derived(spec=spec, model=self.export_model(spec, on, groups), events=events, details=details)

    def _hidden(self, on: list[bool], groups: dict[int, set[int]]) -> dict[str, int]:
        """Hidden width per layer (0: skipped)."""
        return {str(layer.slot.index): (layer.min_hidden + layer.step * len(groups[layer.slot.index]))
                if (on[layer.slot.index] or not layer.slot.skippable) else 0 for layer in self.net.layers.values()}

    def export_model(self, spec: ArchSpec, on: list[bool], groups: dict[int, set[int]]) -> nn.Module:
        """The derived network as a :class:`prunet.nn.PruNet` holding the kept channels' weights."""
        from prunet.nn import PruNet, block_module_names
        from prunet.search.supernet import hidden_dims, select_channels

        net = self.net
        model = PruNet(spec)
        sd: dict[str, torch.Tensor] = {f"stem.{k}": v for k, v in net.stem.state_dict().items()}
        names = iter(block_module_names(spec))
        for layer in net.layers.values():
            li = layer.slot.index
            if not on[li] and layer.slot.skippable:
                continue
            prefix = next(names)
            keep = torch.tensor(layer.channels(sorted(groups[li])), dtype=torch.long)
            dims = hidden_dims(layer.block)
            for k, v in layer.block.state_dict().items():
                sd[f"{prefix}.{k}"] = select_channels(v, dims[k], keep) if dims[k] else v
        sd.update({f"head.{k}": v for k, v in net.head.state_dict().items()})
        model.load_state_dict(sd)
        return model


__all__ = ["GrowEfficientConfig", "GrowEfficientStrategy", "BUDGETS"]
