"""``prdarts``: DARTS-style cell search for *pruned* networks (after PR-DARTS / DASS, Mousavi et al.).

The supernet follows the space's stage layout: its stem, one **mixed cell** per layer slot, its
head. A mixed cell (:class:`MixedCell`) is a DAG of ``nodes`` intermediate nodes; node 1 has two
mixed edges from the cell input, node ``i ≥ 2`` one mixed edge from each earlier state, weighted
by a softmax over its edge logits ``β`` (PC-DARTS' edge normalisation, scaled so the weights sum
to 2: the derived node sums two edges). A mixed edge is a softmax over op logits ``α`` of the
ops the stage's space candidates give (``ir_k3``, ``fir_k3``, ...) plus pooling/skip where the
shapes allow.

Every conv op is a :class:`PrunedOp`: the zoo block at the widest hidden width the space allows
there, whose hidden channels are multiplied by a learned **channel mask** ``m = 1[σ(θ) > ½]``
with the straight-through gradient of ``σ(θ)``. Forward passes therefore always run the *pruned*
network (the weights are trained, and ``α``/``β`` judged, with respect to the pruned channels:
PR-DARTS' point that architectures found for dense nets are not the right ones for pruned nets),
while ``θ`` still gets a gradient. Masks are structured (whole hidden channels), so the derived
edge is a narrower dense block and the latency table sees the gain.

A step (the loop's bi-level first-order schedule): weights on a train-split batch (SGD);
then architecture (``α``, ``β``, the per-cell keep/skip logits ``γ`` of skippable slots, and
the mask logits ``θ``) on a val-split batch (Adam) with ``CE + λ·max(0, E[lat]/T′ − 1) +
μ·mean σ(θ)``; ``E[lat]`` is the table's calibrated prediction of the expected cell net, each
conv op at its soft width ``Σ σ(θ)`` (table entries interpolated along the space's width grid),
each pooling/skip op and each cell's node sums at their own measured entries
(:class:`prunet.arch.cell.CellFreeSpec`) — the same parts the derived net is predicted by.

Derivation (deterministic, from the all-reduced parameters and the table only): per node the
two edges with the largest ``β``, per edge the argmax op, per conv edge the channels with
``σ(θ) > ½`` (at least the grid minimum, rounded up to the grid, most-important first); a
skippable cell whose skip logit wins is left out. While the table predicts more than the target:
shrink the conv edge whose next grid step saves the most latency per unit of mask mass dropped;
then skip skippable cells (most-skipped first); last, swap the costliest conv edge for the
cheapest op its shape admits. The network's prediction is therefore ≤ the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunet.arch import ArchSpec, block_type, conv_out_hw
from prunet.arch.cell import CellEdge, CellFreeSpec, CellSpec, conv_op_name, node_sum
from prunet.latency.lut import block_key
from prunet.search.config import SearchError
from prunet.search.space import Candidate, LayerSlot, SearchSpace
from prunet.search.strategy import Derived, Named, Strategy, register_strategy
from prunet.nn.cell import free_op
from prunet.search.supernet import hidden_dims, select_channels


@dataclass
class PRDartsConfig:
    nodes: int = 3               # intermediate nodes per cell (DARTS: 4; 3 keeps a CPU step affordable)
    arch_lr: float = 0.01        # Adam on α, β, γ
    mask_lr: float = 0.05        # Adam on the channel-mask logits θ
    mask_init: float = 2.0       # θ at the start (σ = 0.88: every channel kept)
    mask_l1: float = 0.01        # μ: pull on mean σ(θ), the pruning regulariser
    latency_lambda: float = 2.0  # λ of the latency hinge
    target_margin: float = 0.02  # T′ = T·(1 − margin)

    def validate(self) -> None:
        if not 1 <= self.nodes <= 8:
            raise SearchError(f"nodes: expected an integer in [1, 8], got {self.nodes}")
        for name in ("arch_lr", "mask_lr"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise SearchError(f"{name}: expected a positive learning rate, got {v}")
        for name in ("mask_l1", "latency_lambda"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise SearchError(f"{name}: expected a number >= 0, got {v}")
        if not math.isfinite(self.mask_init):
            raise SearchError(f"mask_init: expected a finite logit, got {self.mask_init}")
        if not 0.0 <= self.target_margin < 0.5:
            raise SearchError(f"target_margin: expected a share in [0, 0.5), got {self.target_margin}")


# ----------------------------------------------------------------------------- supernet


def straight_through_mask(theta: torch.Tensor) -> torch.Tensor:
    """Forward: the binary mask ``σ(θ) > ½`` (the pruned net); backward: ``σ``'s gradient."""
    soft = torch.sigmoid(theta)
    return (soft.detach() > 0.5).to(soft.dtype) + (soft - soft.detach())


class PrunedOp(nn.Module):
    """A zoo block at its widest hidden width with a learned structured channel mask."""

    def __init__(self, edge_slot: LayerSlot, cand: Candidate, step: int, table: Any, mask_init: float):
        super().__init__()
        from prunet.nn import build_block

        self.widths = edge_slot.hidden_widths(cand, step)
        self.kind = block_type(cand.type)
        self.block = build_block(edge_slot.block_spec(cand, self.widths[-1]))
        self.theta = nn.Parameter(torch.full((self.widths[-1],), float(mask_init)))
        self.lut = [table.lookup(block_key(edge_slot.block_spec(cand, w), edge_slot.in_hw)) for w in self.widths]
        getattr(self.block, self.kind.gate_site).register_forward_pre_hook(self._mask_hook)

    def _mask_hook(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        m = straight_through_mask(self.theta).to(args[0].dtype)
        return (args[0] * m.view(1, -1, 1, 1),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)

    def soft_width(self) -> torch.Tensor:
        return torch.sigmoid(self.theta).sum()

    def expected_cost(self) -> torch.Tensor:
        """Table cost at the soft width, interpolated linearly along the width grid."""
        w = self.soft_width().clamp(self.widths[0], self.widths[-1])
        if len(self.widths) == 1:
            return w.new_tensor(self.lut[0])
        step = self.widths[1] - self.widths[0]
        pos = (w - self.widths[0]) / step
        i = int(min(len(self.widths) - 2, max(0, math.floor(float(pos.detach())))))
        frac = pos - i
        return self.lut[i] + frac * (self.lut[i + 1] - self.lut[i])

    def order(self) -> torch.Tensor:
        """Hidden channels, most important (largest θ) first; ties by index, so every rank agrees."""
        return torch.argsort(self.theta.detach(), descending=True, stable=True)

    def kept_width(self) -> int:
        """Channels the mask keeps, at least the grid minimum, rounded up to the grid."""
        n = int((torch.sigmoid(self.theta.detach()) > 0.5).sum())
        return next(w for w in self.widths if w >= n) if n <= self.widths[-1] else self.widths[-1]


class MixedEdge(nn.Module):
    """Softmax(α)-weighted sum of the ops admissible on one edge; ``free_ms``: the table's term
    of each parameter-free op (pooling, skip) on this edge."""

    def __init__(self, ops: dict[str, nn.Module], free_ms: dict[str, float]):
        super().__init__()
        self.names = list(ops)
        self.ops = nn.ModuleDict(ops)
        self.free_ms = dict(free_ms)
        self.alpha = nn.Parameter(torch.zeros(len(ops)))

    def cheapest(self) -> tuple[float, str, int]:
        """``(table ms, op, width)`` of the cheapest op here (conv ops at their narrowest)."""
        return min(((op.lut[0], n, op.widths[0]) if isinstance(op, PrunedOp) else (self.free_ms[n], n, 0)
                    for n, op in self.ops.items()), key=lambda c: c[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.softmax(self.alpha, dim=-1)
        return sum(w[i] * self.ops[n](x) for i, n in enumerate(self.names))

    def expected_cost(self) -> torch.Tensor:
        w = F.softmax(self.alpha, dim=-1)
        costs = [self.ops[n].expected_cost() if isinstance(self.ops[n], PrunedOp) else w.new_tensor(self.free_ms[n])
                 for n in self.names]
        return sum(w[i] * c for i, c in enumerate(costs))


class MixedCell(nn.Module):
    """The searchable cell of one layer slot (see the module docstring)."""

    def __init__(self, slot: LayerSlot, space: SearchSpace, table: Any, cfg: PRDartsConfig, act: str):
        super().__init__()
        self.slot, self.act = slot, act
        self.inputs: list[list[int]] = [[0, 0]] + [list(range(i + 1)) for i in range(1, cfg.nodes)]
        self.edges = nn.ModuleDict()
        for i, ins in enumerate(self.inputs):
            for k, j in enumerate(ins):
                self.edges[f"{i}_{k}"] = MixedEdge(*self._ops(j, space, table, cfg))
        # the node sums every derived cell of this slot pays (2·nodes − 1 adds at the output)
        out_hw = conv_out_hw(slot.in_hw, 3, slot.stride)
        self.sum_ms = table.lookup(block_key(node_sum(slot.out_chs, cfg.nodes), out_hw),
                                   f"space {space.name!r}, layer {slot.index}, the cell's node sums")
        self.beta = nn.ParameterList([nn.Parameter(torch.zeros(len(ins))) for ins in self.inputs])
        # keep/skip logits (γ) only where the space lets the layer go
        self.gamma = nn.Parameter(torch.zeros(2)) if slot.skippable else None

    def _ops(self, j: int, space: SearchSpace, table: Any,
             cfg: PRDartsConfig) -> tuple[dict[str, nn.Module], dict[str, float]]:
        s = self.slot
        cin, stride, hw = (s.in_chs, s.stride, s.in_hw) if j == 0 else (s.out_chs, 1, conv_out_hw(s.in_hw, 3, s.stride))
        edge_slot = LayerSlot(-1, s.stage, cin, s.out_chs, stride, hw, s.candidates, False)
        ops: dict[str, nn.Module] = {}
        for cand in s.candidates:
            name = conv_op_name(cand.type, cand.kernel)
            if name is None or cand.se or cand.act != self.act or name in ops:
                continue
            keys = [block_key(edge_slot.block_spec(cand, w), hw) for w in edge_slot.hidden_widths(cand, space.width_step)]
            if all(k in table.entries for k in keys):  # only what the table can price
                ops[name] = PrunedOp(edge_slot, cand, space.width_step, table, cfg.mask_init)
        free_ms: dict[str, float] = {}
        if cin == s.out_chs:  # pooling and skip keep the channel count
            for name in ("max_pool_3x3", "avg_pool_3x3", "skip"):
                key = block_key(CellFreeSpec(cin, cin, name, stride), hw)
                if (name != "skip" or stride == 1) and key in table.entries:  # priced like the conv ops
                    ops[name] = free_op(name, stride)
                    free_ms[name] = table.lookup(key)
        if not ops:
            raise SearchError(f"space {space.name!r}, layer {s.index}: no op fits a cell edge from "
                              f"{'the cell input' if j == 0 else 'a node'} (no table entries for a conv op "
                              f"{cin}>{s.out_chs} stride {stride} at {hw[0]}x{hw[1]}, and no pooling fits)")
        return ops, free_ms

    def node_weights(self, i: int) -> torch.Tensor:
        return 2.0 * F.softmax(self.beta[i], dim=-1)

    def keep_prob(self) -> torch.Tensor | None:
        return None if self.gamma is None else F.softmax(self.gamma, dim=-1)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x]
        for i, ins in enumerate(self.inputs):
            w = self.node_weights(i)
            states.append(sum(w[k] * self.edges[f"{i}_{k}"](states[j]) for k, j in enumerate(ins)))
        out = states[1]
        for s in states[2:]:
            out = out + s
        p = self.keep_prob()
        return out if p is None else p * out + (1 - p) * x

    def expected_cost(self) -> torch.Tensor:
        total = sum((self.node_weights(i)[k] * self.edges[f"{i}_{k}"].expected_cost()
                     for i, ins in enumerate(self.inputs) for k in range(len(ins))), torch.tensor(self.sum_ms))
        p = self.keep_prob()
        return total if p is None else p * total


class CellSupernet(nn.Module):
    """The space's stem → one mixed cell per layer slot → the space's head."""

    def __init__(self, space: SearchSpace, table: Any, cfg: PRDartsConfig):
        super().__init__()
        from prunet.nn import ClassifierHead, ConvBnAct

        self.space = space
        self.act = space.stages[0].candidates[0].act
        self.stem = nn.Sequential(*[ConvBnAct(c) for c in space.stem])
        self.cells = nn.ModuleList([MixedCell(slot, space, table, cfg, self.act) for slot in space.layers()])
        self.head_spec = replace(space.head, in_chs=space.stages[-1].out_chs)
        self.head = ClassifierHead(self.head_spec)
        hw = tuple(space.input_size[1:])
        fixed = 0.0
        for c in space.stem:
            fixed += table.lookup(block_key(c, hw))
            hw = c.out_hw(hw)
        from prunet.latency.lut import head_key

        fixed += table.lookup(head_key(self.head_spec, space.final_hw()))
        self.fixed_ms = fixed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.head(x)

    def expected_raw_ms(self) -> torch.Tensor:
        return self.fixed_ms + sum(c.expected_cost() for c in self.cells)


# ----------------------------------------------------------------------------- derivation


@dataclass
class _Edge:
    """One derived edge and where it came from (``op`` is a conv op or a parameter-free one)."""

    node: int
    k: int          # index of the mixed edge in its node
    input: int
    op: str
    width: int = 0


def _cell_spec(cell: MixedCell, edges: list[list[_Edge]]) -> CellSpec:
    nodes = tuple((CellEdge(a.input, a.op, a.width), CellEdge(b.input, b.op, b.width)) for a, b in edges)
    s = cell.slot
    return CellSpec(s.in_chs, s.out_chs, nodes, s.stride, cell.act)  # type: ignore[arg-type]


def _genotype(cell: MixedCell) -> list[list[_Edge]]:
    """Top-2 edges per node by β, argmax op per edge, mask-kept width per conv edge."""
    out = []
    for i, ins in enumerate(cell.inputs):
        beta = cell.beta[i].detach()
        top = sorted(torch.argsort(beta, descending=True, stable=True)[:2].tolist())
        node = []
        for k in top:
            mixed = cell.edges[f"{i}_{k}"]
            name = mixed.names[int(torch.argmax(mixed.alpha.detach()))]
            op = mixed.ops[name]
            node.append(_Edge(i, k, ins[k], name, op.kept_width() if isinstance(op, PrunedOp) else 0))
        out.append(node)
    return out


@register_strategy
class PRDartsStrategy(Strategy):
    name = "prdarts"
    summary = ("PR-DARTS: DARTS cells of channel-pruned convs (masks learned on the pruned objective), "
               "bi-level first-order, derived cells fitted to the target by the latency table")
    config_class = PRDartsConfig
    event_kinds = ("shrink_edge", "skip_cell", "swap_edge")

    # ----------------------------------------------------------------- construction

    def floor_ms(self) -> float:
        """Predicted latency of the cheapest cell net the supernet could derive: PR-DARTS's own
        floor, which can sit above the space's (:func:`prunet.latency.lut.min_reachable_ms`)."""
        torch_state = torch.random.get_rng_state()
        probe = CellSupernet(self.ctx.space, self.ctx.table, self.cfg)  # weights unused: only shapes and costs
        torch.random.set_rng_state(torch_state)
        cells = [self._cheapest_cell(cell) for cell in probe.cells if cell.gamma is None]
        return self.ctx.table.predict(self._arch(probe, cells))

    def check_target(self) -> None:
        """Refuse a target below the cheapest cell net the supernet could derive."""
        floor = self.floor_ms()
        if self.ctx.target_ms < floor:
            raise SearchError(f"--target-ms {self.ctx.target_ms}: below the cheapest cell net prdarts can derive "
                              f"from space {self.ctx.space.name!r} ({floor:.4f} ms predicted); raise the target")

    def build(self) -> nn.Module:
        self.net = CellSupernet(self.ctx.space, self.ctx.table, self.cfg)
        return self.net

    def _is_arch(self, name: str) -> bool:
        leaf = name.rsplit(".", 1)[-1]
        return leaf in ("alpha", "gamma", "theta") or ".beta." in name

    def weight_parameters(self) -> Named:
        return [(n, p) for n, p in self.net.named_parameters() if not self._is_arch(n)]

    def arch_parameters(self) -> Named:
        return [(n, p) for n, p in self.net.named_parameters() if self._is_arch(n)]

    def arch_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        masks = {id(p) for n, p in self.arch_parameters() if n.endswith(".theta")}
        groups = [{"params": [p for p in params if id(p) not in masks], "lr": self.cfg.arch_lr},
                  {"params": [p for p in params if id(p) in masks], "lr": self.cfg.mask_lr}]
        return torch.optim.Adam([g for g in groups if g["params"]], betas=(0.5, 0.999))

    # ----------------------------------------------------------------- one step

    @property
    def goal_ms(self) -> float:
        return self.ctx.target_ms * (1.0 - self.cfg.target_margin)

    def expected_ms(self) -> torch.Tensor:
        t = self.ctx.table
        return t.a * self.net.expected_raw_ms() + t.c

    def weight_loss(self, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        return F.cross_entropy(self.net(x), y)

    def _mask_mean(self) -> torch.Tensor:
        sig = [torch.sigmoid(p) for n, p in self.net.named_parameters() if n.endswith(".theta")]
        return torch.cat(sig).mean() if sig else torch.zeros(())

    def arch_loss(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        ce = F.cross_entropy(self.net(x), y)
        lat = self.expected_ms()
        mask = self._mask_mean()
        loss = ce + self.cfg.latency_lambda * F.relu(lat / self.goal_ms - 1.0) + self.cfg.mask_l1 * mask
        return loss, {"loss_arch": float(loss.detach()), "ce_arch": float(ce.detach()),
                      "expected_ms": float(lat.detach()), "mask_kept": float(mask.detach())}

    def record(self, step: int) -> dict[str, Any]:
        return {"expected_ms": round(float(self.expected_ms().detach()), 6)}

    def progress(self, metrics: dict[str, float], step: int) -> dict[str, str]:
        return {"E[ms]": f"{metrics.get('expected_ms', 0):.3f}", "kept": f"{metrics.get('mask_kept', 0):.2f}"}

    # ----------------------------------------------------------------- the result

    def _arch(self, net: CellSupernet, cells: list[CellSpec]) -> ArchSpec:
        sp = self.ctx.space
        return ArchSpec(name="prdarts", input_size=sp.input_size, stem=sp.stem, blocks=tuple(cells),
                        head=net.head_spec)

    def _cheapest_cell(self, cell: MixedCell) -> CellSpec:
        """Per node the two cheapest edges, each at its cheapest op (conv ops at their minimum width)."""
        nodes = []
        for i, ins in enumerate(cell.inputs):
            costed = []
            for k, j in enumerate(ins):
                best = cell.edges[f"{i}_{k}"].cheapest()
                costed.append((best[0], k, _Edge(i, k, j, best[1], best[2])))
            two = sorted(sorted(costed, key=lambda c: (c[0], c[1]))[:2], key=lambda c: c[1])
            nodes.append([c[2] for c in two])
        return _cell_spec(cell, nodes)

    def derive(self) -> Derived:
        net, table, target = self.net, self.ctx.table, self.ctx.target_ms
        kept: dict[int, list[list[_Edge]]] = {}
        skip_p: dict[int, float] = {}
        for li, cell in enumerate(net.cells):
            p = cell.keep_prob()
            if p is not None:
                skip_p[li] = 1.0 - float(p.detach())
                if skip_p[li] > 0.5:
                    continue
            kept[li] = _genotype(cell)
        events: list[dict[str, Any]] = []

        def spec() -> ArchSpec:
            return self._arch(net, [_cell_spec(net.cells[li], kept[li]) for li in sorted(kept)])

        pred = table.predict(spec())
        while pred > target:
            move = self._best_shrink(kept)
            if move is not None:
                li, e, w = move
                events.append({"event": "shrink_edge", "cell": li, "node": e.node, "edge": e.k, "op": e.op,
                               "from": e.width, "to": w})
                e.width = w
            else:
                skippable = [li for li in kept if li in skip_p]
                if skippable:
                    li = max(skippable, key=lambda i: (skip_p[i], i))
                    del kept[li]
                    events.append({"event": "skip_cell", "cell": li})
                else:
                    li, e, k, op, w = self._costliest_swap(kept)
                    events.append({"event": "swap_edge", "cell": li, "node": e.node, "edge": e.k, "from": e.op,
                                   "to_edge": k, "to": op})
                    e.k, e.input, e.op, e.width = k, net.cells[li].inputs[e.node][k], op, w
                    kept[li][e.node].sort(key=lambda x: x.k)
            pred = table.predict(spec())
        final = spec()
        return Derived(spec=final, model=self._export(final, kept), events=events,
                       details={"prdarts": {"nodes": self.cfg.nodes, "cells": len(final.blocks),
                                            "cells_skipped": sorted(set(range(len(net.cells))) - set(kept))}})

    def _op(self, li: int, e: _Edge) -> nn.Module:
        return self.net.cells[li].edges[f"{e.node}_{e.k}"].ops[e.op]

    def _best_shrink(self, kept: dict[int, list[list[_Edge]]]) -> tuple[int, _Edge, int] | None:
        """The conv edge whose next grid step saves most latency per unit of mask mass dropped."""
        best: tuple[float, int, _Edge, int] | None = None
        for li in sorted(kept):
            for node in kept[li]:
                for e in node:
                    op = self._op(li, e)
                    if not isinstance(op, PrunedOp) or e.width <= op.widths[0]:
                        continue
                    i = op.widths.index(e.width)
                    lower = op.widths[i - 1]
                    saved = op.lut[i] - op.lut[i - 1]
                    order = op.order()
                    mass = float(torch.sigmoid(op.theta.detach())[order[lower:e.width]].sum())
                    score = saved / (mass + 1e-6)
                    if best is None or score > best[0]:
                        best = (score, li, e, lower)
        return None if best is None else best[1:]  # type: ignore[return-value]

    def _edge_ms(self, li: int, e: _Edge) -> float:
        """The table term of one derived edge as it stands (op and kept width)."""
        op = self._op(li, e)
        if isinstance(op, PrunedOp):
            return op.lut[op.widths.index(e.width)]
        return self.net.cells[li].edges[f"{e.node}_{e.k}"].free_ms[e.op]

    def _costliest_swap(self, kept: dict[int, list[list[_Edge]]]) -> tuple[int, _Edge, int, str, int]:
        """The kept edge whose swap saves the most table latency, with its replacement: the
        cheapest op of its own mixed edge or of an edge into the same node that is not kept.
        Repeated, this reaches per node the two cheapest edges at their cheapest ops — the
        floor :meth:`check_target` checked the target against — so a checked target always fits."""
        best: tuple[float, int, _Edge, int, str, int] | None = None
        for li in sorted(kept):
            cell = self.net.cells[li]
            for node in kept[li]:
                used = {e.k for e in node}
                for e in node:
                    ks = [e.k] + [k for k in range(len(cell.inputs[e.node])) if k not in used]
                    (ms, op, w), k = min(((cell.edges[f"{e.node}_{k}"].cheapest(), k) for k in ks),
                                         key=lambda c: (c[0][0], c[1]))
                    gain = self._edge_ms(li, e) - ms
                    if gain > 0 and (best is None or gain > best[0]):
                        best = (gain, li, e, k, op, w)
        if best is None:  # check_target refused targets below the cheapest net, so this is a bug
            raise SearchError("prdarts: cannot fit the target (no cheaper op left)")
        return best[1:]  # type: ignore[return-value]

    def _export(self, spec: ArchSpec, kept: dict[int, list[list[_Edge]]]) -> nn.Module:
        """The derived :class:`prunet.nn.PruNet`, initialised from the supernet (kept channels only)."""
        from prunet.nn import PruNet, block_module_names

        model = PruNet(spec)
        sd: dict[str, torch.Tensor] = {f"stem.{k}": v for k, v in self.net.stem.state_dict().items()}
        names = block_module_names(spec)
        for b, li in enumerate(sorted(kept)):
            for node in kept[li]:
                for slot_k, e in enumerate(node):
                    op = self._op(li, e)
                    if not isinstance(op, PrunedOp):
                        continue
                    order = op.order()[:e.width]
                    dims = hidden_dims(op.block)
                    for k, v in op.block.state_dict().items():
                        sd[f"{names[b]}.edges.{e.node}_{slot_k}.{k}"] = select_channels(v, dims[k], order)
        sd.update({f"head.{k}": v for k, v in self.net.head.state_dict().items()})
        model.load_state_dict(sd)
        return model
