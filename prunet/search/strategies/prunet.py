"""PruNet: differentiable latency-aware search with tiered pruning (arXiv 2209.11785).

One step (after ``warmup_steps`` of weight-only training):

1. weights: a train-split batch through the supernet with Gumbel noise at temperature ``τ``,
   cross-entropy (the loop runs SGD). ``mode="mixture"`` runs every candidate of a layer weighted
   by a soft Gumbel-softmax sample; ``mode="sampled"`` runs one candidate per layer, drawn by a
   hard Gumbel-softmax with the straight-through gradient (GDAS), so a step costs one candidate
   per layer whatever their number;
2. architecture: a val-split batch through the same mode, ``CE + λ·max(0, E[lat]/T' − 1)``
   (``latency_loss="hinge"``) or ``CE·(E[lat]/T')^β`` (``"multiplicative"``, FBNet/MnasNet
   style) with ``E[lat]`` the calibrated expected latency (``a·E[Σ] + c``, from the
   probabilities in both modes) and ``T' = T·(1 − target_margin)``, Adam on the logits ``α``
   (candidates/Skip) and ``β`` (Prunode big/small);
3. decisions, from the (all-reduced, hence identical) logits (at most one layer removal per
   step): a Prunode whose small path has probability > ``prunode_threshold`` for
   ``prunode_window`` consecutive steps commits ``c ← c − s`` (tier 1); a candidate below
   ``block_threshold`` for ``block_window`` steps is deleted (tier 2); a layer whose Skip is above
   ``layer_threshold`` for ``layer_window`` steps (or that has only Skip left) is removed
   (tier 3). Width commits are taken only while the expected latency is above ``T'``; block and
   layer pruning too unless ``prune_waits_for_budget=False``, which lets them act on the
   probabilities alone (they cut cost and search depth). Each tier can be switched off for
   ablations.

``τ`` anneals exponentially from ``tau_start`` to ``tau_end``. The result keeps the argmax per
layer and, while the predicted latency of the derived network exceeds ``T``, shrinks the block
whose next ``s`` channels save the most latency (then skips skippable layers), so the result's
prediction is always ≤ ``T``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunet.latency.lut import block_key
from prunet.search.config import SearchError
from prunet.search.strategy import Derived, Named, Strategy, StructureChange, register_strategy
from prunet.search.supernet import SKIP, GumbelMixture, GumbelSampledPath, Prunode, Relaxation, Supernet

MODES = ("mixture", "sampled")
LATENCY_LOSSES = ("hinge", "multiplicative")


@dataclass
class PruNetConfig:
    """PruNet's knobs, with their defaults and meaning."""

    arch_lr: float = 0.05            # Adam, betas (0.5, 0.999)
    tau_start: float = 5.0           # Gumbel-softmax temperature, annealed exponentially ...
    tau_end: float = 0.5             # ... to this at the last step
    latency_weight: float = 4.0      # λ of the hinge penalty
    target_margin: float = 0.03      # aim E[lat] at T·(1 − margin): finalisation then has little to cut
    shrink_step: int = 0             # Prunode step s in channels (0 = the space's width_step) ...
    shrink_fraction: float = 0.125   # ... or this share of the current width, if larger (0 = fixed s)
    shrink_widths: bool = True       # tier 1: Prunodes commit smaller widths during the search
    prune_blocks: bool = True        # tier 2: delete unlikely candidates of a layer
    prune_layers: bool = True        # tier 3: remove layers whose Skip wins
    prunode_threshold: float = 0.6   # commit when p_small stays above this ...
    prunode_window: int = 5          # ... for this many consecutive steps
    block_threshold: float = 0.08    # delete a candidate whose probability stays below this ...
    block_window: int = 10           # ... for this many steps
    layer_threshold: float = 0.6     # remove a layer whose Skip probability stays above this ...
    layer_window: int = 10           # ... for this many steps
    mode: str = "mixture"            # "mixture": every candidate runs; "sampled": one per layer (GDAS)
    prune_waits_for_budget: bool = True  # False: tiers 2 and 3 act whatever the latency gap (tier 1 waits)
    latency_loss: str = "hinge"      # "hinge": CE + λ·max(0, E/T' − 1); "multiplicative": CE·(E/T')^β
    latency_beta: float = 0.6        # β of the multiplicative loss

    def validate(self) -> None:
        if self.mode not in MODES:
            raise SearchError(f"mode: expected one of {list(MODES)}, got {self.mode!r}")
        if self.latency_loss not in LATENCY_LOSSES:
            raise SearchError(f"latency_loss: expected one of {list(LATENCY_LOSSES)}, got {self.latency_loss!r}")
        if not self.latency_beta > 0:
            raise SearchError(f"latency_beta: expected a positive number, got {self.latency_beta}")
        for name in ("prunode_threshold", "block_threshold", "layer_threshold"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise SearchError(f"{name}: expected a probability in (0, 1), got {v}")
        for name in ("prunode_window", "block_window", "layer_window"):
            if getattr(self, name) < 1:
                raise SearchError(f"{name}: expected a positive number of steps, got {getattr(self, name)}")
        if not 0.0 <= self.shrink_fraction < 1.0:
            raise SearchError(f"shrink_fraction: expected a share in [0, 1), got {self.shrink_fraction}")
        if not (self.tau_start > 0 and self.tau_end > 0):
            raise SearchError("tau_start and tau_end must be positive")
        if self.arch_lr <= 0:
            raise SearchError(f"arch_lr: expected a positive number, got {self.arch_lr}")


@register_strategy
class PruNetStrategy(Strategy):
    name = "prunet"
    summary = "PruNet: Gumbel-softmax supernet, Prunode width search, block and layer pruning (default)"
    config_class = PruNetConfig
    event_kinds = ("commit", "delete_block", "remove_layer", "final_shrink", "final_skip", "final_replace",
                   "final_keep_layer", "final_keep_width")

    def __init__(self, ctx: Any, config: PruNetConfig):
        super().__init__(ctx, config)
        self.counters: dict[str, int] = {}

    # ----------------------------------------------------------------- construction

    def build(self) -> nn.Module:
        c = self.cfg
        self.net = Supernet(self.ctx.space, self.ctx.table, c.shrink_step or None, c.shrink_fraction)
        return self.net

    def weight_parameters(self) -> Named:
        return self.net.weight_parameters()

    def arch_parameters(self) -> Named:
        return self.net.arch_parameters()

    def arch_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.cfg.arch_lr, betas=(0.5, 0.999))

    # ----------------------------------------------------------------- schedules and losses

    def tau(self, step: int) -> float:
        c, loop = self.cfg, self.ctx.loop
        span = max(loop.steps - loop.warmup_steps, 1)
        t = min(max(step - loop.warmup_steps, 0) / span, 1.0)
        return c.tau_start * (c.tau_end / c.tau_start) ** t

    @property
    def goal_ms(self) -> float:
        return self.ctx.target_ms * (1.0 - self.cfg.target_margin)

    def relaxation(self, step: int) -> Relaxation:
        """The forward policy of both steps: the full mixture or one sampled path per layer."""
        if self.cfg.mode == "sampled":
            return GumbelSampledPath(self.tau(step))
        return GumbelMixture(self.tau(step))

    def weight_loss(self, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        return F.cross_entropy(self.net(x, self.relaxation(step)), y)

    def arch_loss(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        ce = F.cross_entropy(self.net(x, self.relaxation(step)), y)
        pred = self.net.expected_ms()
        loss = self.latency_loss(ce, pred)
        return loss, {"ce_val": float(ce.detach()), "expected_ms": float(pred.detach())}

    def latency_loss(self, ce: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """The architecture loss from the val cross-entropy and the expected latency.

        ``hinge`` (default) adds ``λ·max(0, E/T' − 1)``: no pull once the expectation is under the
        goal, so accuracy alone decides there. ``multiplicative`` scales the cross-entropy by
        ``(E/T')^β`` (FBNet's ``CE·α·log(LAT)^β`` and MnasNet's ``ACC·(LAT/T)^w`` in loss form): a
        pull towards cheaper choices at every latency, proportional to how much the loss still
        depends on accuracy."""
        if self.cfg.latency_loss == "multiplicative":
            return ce * (pred / self.goal_ms) ** self.cfg.latency_beta
        return ce + self.cfg.latency_weight * F.relu(pred / self.goal_ms - 1.0)

    # ----------------------------------------------------------------- structure changes

    def on_step_start(self, step: int) -> StructureChange | None:
        """After warm-up, order every Prunode's channels by importance (so the first gate sits on
        the least important ``s``)."""
        warmup = self.ctx.loop.warmup_steps
        if not (step == warmup and warmup > 0):
            return None
        self.ctx.sync_buffers()
        change = StructureChange()
        for prefix, node in self.net.prunodes():
            self._commit(prefix, node, change, keep=node.hidden)
        return change

    @staticmethod
    def _commit(prefix: str, node: Prunode, change: StructureChange, keep: int | None = None) -> None:
        order = node.commit(keep)
        for k, dims in node.last_dims.items():
            change.sliced[f"{prefix}.{k}"] = (dims, order)

    def _count(self, key: str, cond: bool) -> int:
        self.counters[key] = self.counters.get(key, 0) + 1 if cond else 0
        return self.counters[key]

    def after_step(self, step: int) -> StructureChange | None:
        cfg, net = self.cfg, self.net
        commits: list[tuple[str, Prunode]] = []
        drop_options: list[tuple[str, str]] = []
        drop_layers: list[str] = []
        for li, layer in net.layers.items():
            probs = layer.probs()
            if (cfg.prune_layers and SKIP in probs
                    and self._count(f"l:{li}", probs[SKIP] > cfg.layer_threshold) >= cfg.layer_window):
                drop_layers.append(li)
                continue
            if cfg.prune_blocks:
                for n, pr in probs.items():
                    if n != SKIP and self._count(f"b:{li}.{n}", pr < cfg.block_threshold) >= cfg.block_window:
                        drop_options.append((li, n))
            if cfg.shrink_widths:
                for n, node in layer.options.items():
                    if (li, n) in drop_options or not node.gated:
                        continue
                    small = float(node.probs().detach()[0]) > cfg.prunode_threshold
                    if self._count(f"g:{li}.{n}", small) >= cfg.prunode_window:
                        commits.append((f"layers.{li}.options.{n}", node))
        if not (commits or drop_options or drop_layers):
            return None
        # Width commits are driven by the latency penalty: once the expected latency is under the
        # goal they wait (the counters keep running), so simultaneous commits cannot overshoot far
        # below the target. Block and layer pruning wait too by default; with
        # `prune_waits_for_budget=False` they act on the probabilities alone: deleting what the
        # search has ruled out is how it cuts its own cost and searches depth, and a layer whose
        # Skip wins on accuracy would otherwise never go while widths close the gap first.
        # Choices that win on accuracy alone still reach the result through the final argmax. At
        # most one layer goes per step, the most skipped.
        with torch.no_grad():
            if float(net.expected_ms()) <= self.goal_ms:
                if cfg.prune_waits_for_budget or not (drop_options or drop_layers):
                    return None
                commits = []
        if len(drop_layers) > 1:
            drop_layers = [max(drop_layers, key=lambda li: net.layers[li].probs()[SKIP])]
        self.ctx.sync_buffers()
        change = StructureChange()
        for prefix, node in commits:
            old = node.hidden
            self._commit(prefix, node, change)
            change.dropped.add(f"{prefix}.beta")
            li, n = prefix.split(".")[1], prefix.split(".")[3]
            self.counters.pop(f"g:{li}.{n}", None)
            change.events.append({"event": "commit", "layer": int(li), "option": n, "from": old, "to": node.hidden})
        for li, n in drop_options:
            layer = net.layers[li]
            non_skip = [x for x in layer.names() if x != SKIP]
            if len(non_skip) == 1 and n in non_skip:
                if SKIP not in layer.names():
                    continue  # the last block of a layer that cannot be skipped stays
                if drop_layers and li not in drop_layers and not cfg.prune_waits_for_budget:
                    continue  # one layer per step: this one goes at a later step (its count runs on)
                drop_layers.append(li)
                continue
            layer.remove_option(n)
            self.counters.pop(f"b:{li}.{n}", None)
            change.events.append({"event": "delete_block", "layer": int(li), "option": n})
        for li in dict.fromkeys(drop_layers):
            if li in net.layers:
                net.remove_layer(int(li))
                change.events.append({"event": "remove_layer", "layer": int(li)})
        for k in [k for k in self.counters if k.split(":")[1].split(".")[0] not in net.layers]:
            self.counters.pop(k)
        return change

    # ----------------------------------------------------------------- logging and resume

    def record(self, step: int) -> dict[str, Any]:
        widths, p_small, layer_p = {}, {}, {}
        for li, layer in self.net.layers.items():
            layer_p[li] = {k: round(v, 5) for k, v in layer.probs().items()}
            for n, node in layer.options.items():
                widths[f"{li}.{n}"] = node.hidden
                p_small[f"{li}.{n}"] = round(float(node.probs().detach()[0]), 5) if node.gated else None
        return {"tau": round(self.tau(step), 6), "ce_val": None, "expected_ms": None, "widths": widths,
                "p_small": p_small, "layer_probs": layer_p}

    def progress(self, metrics: dict[str, float], step: int) -> dict[str, str]:
        return {"ce": f"{metrics['ce_val']:.3f}", "ms": f"{metrics['expected_ms']:.3f}", "tau": f"{self.tau(step):.2f}"}

    def plot(self, log_path: Path, png_path: Path) -> None:
        from prunet.search.plots import plot_run

        plot_run(log_path, png_path, self.ctx.target_ms)

    def structure(self) -> dict[str, Any]:
        return self.net.structure()

    def apply_structure(self, structure: dict[str, Any]) -> None:
        self.net.apply_structure(structure)

    def state_dict(self) -> dict[str, Any]:
        return {"counters": dict(self.counters)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counters = dict(state["counters"])

    # ----------------------------------------------------------------- the result

    def derive(self) -> Derived:
        events = self._finalize()
        spec = self.net.derive("final")
        return Derived(spec=spec, model=export_model(self.net, spec), events=events)

    def _finalize(self) -> list[dict[str, Any]]:
        """Collapse to one choice per layer, fill the budget, then prune until the prediction is ≤ T."""
        net, table, target = self.net, self.ctx.table, self.ctx.target_ms
        space = self.ctx.space
        events: list[dict[str, Any]] = []
        keep = self._fill_budget()
        for li in list(net.layers):
            layer = net.layers[li]
            names = layer.names()
            best = names[int(torch.argmax(layer.logits().detach()))]
            if best == SKIP and keep.get(li) == "layer":
                best = max((n for n in names if n != SKIP), key=lambda n: layer.probs()[n])
                events.append({"event": "final_keep_layer", "layer": int(li), "option": best})
            if best == SKIP:
                net.remove_layer(int(li))
                continue
            for n in names:
                if n != best:
                    layer.remove_option(n)
            node = layer.options[best]
            if node.prefers_small:
                if keep.get(li) == "width":
                    with torch.no_grad():
                        node.beta.zero_()  # undecided gate: `derive` keeps width c
                    events.append({"event": "final_keep_width", "layer": int(li), "hidden": node.hidden})
                else:
                    node.commit()
        while True:
            pred = table.predict(net.derive("final"))
            if pred <= target:
                break
            best_gain, action = 0.0, None
            for li, layer in net.layers.items():
                node = next(iter(layer.options.values()))
                if node.gated:
                    gain = node.latency(node.hidden) - node.latency(node.hidden - node.s)
                    if gain > best_gain:
                        best_gain, action = gain, ("shrink", li, node)
            if action is None:
                for li, layer in net.layers.items():
                    if layer.slot.skippable:
                        node = next(iter(layer.options.values()))
                        gain = node.latency(node.hidden)
                        if gain > best_gain:
                            best_gain, action = gain, ("skip", li, node)
            if action is None:
                # Last resort: a cheaper candidate (deleted during the search) at its smallest
                # width, with fresh weights; the floor check at start guarantees this suffices.
                for li, layer in net.layers.items():
                    node = next(iter(layer.options.values()))
                    for cand in layer.slot.candidates:
                        w0 = layer.slot.hidden_widths(cand, space.width_step)[0]
                        cost = table.lookup(block_key(layer.slot.block_spec(cand, w0), layer.slot.in_hw))
                        gain = node.latency(node.hidden) - cost
                        if gain > best_gain:
                            best_gain, action = gain, ("replace", li, (cand, w0))
            if action is None:
                raise SearchError(f"cannot reach --target-ms {target}: smallest derivable net is {pred:.4f} ms")
            kind, li, node = action
            if kind == "replace":
                layer = net.layers[li]
                cand, w0 = node
                old_name = next(iter(layer.options))
                layer.replace_option(old_name, cand, w0, table, space)
                events.append({"event": "final_replace", "layer": int(li), "from": old_name, "to": f"{cand.name}@{w0}"})
            elif kind == "shrink":
                old = node.hidden
                node.commit()
                events.append({"event": "final_shrink", "layer": int(li), "from": old, "to": node.hidden})
            else:
                net.remove_layer(int(li))
                events.append({"event": "final_skip", "layer": int(li)})
        for layer in net.layers.values():
            for n in [n for n in layer.names() if n == SKIP]:
                layer.remove_option(n)
        return events

    def _fill_budget(self) -> dict[str, str]:
        """Layers whose runner-up choice the final network keeps because the budget allows it:
        ``"layer"`` (its best block although Skip won) or ``"width"`` (``c`` although the gate
        preferred ``c − s``).

        The argmax of a soft distribution can land well under the target: Skip may win a layer by
        a hair, or a gate prefer the small width narrowly, and the expected latency the penalty
        drove to ``T′`` counted those layers partly. Spending the rest of the budget on the
        closest calls (highest runner-up / winner probability ratio first) keeps the result near
        the target it was searched for, using only weights the supernet trained."""
        net, table, target = self.net, self.ctx.table, self.ctx.target_ms
        options = []  # (runner-up / winner probability, extra raw ms, layer, what is kept)
        for li, layer in net.layers.items():
            probs = layer.probs()
            best = max(probs, key=probs.get)
            if best == SKIP:
                blocks = [n for n in probs if n != SKIP]
                if blocks:
                    alt = max(blocks, key=probs.get)
                    node = layer.options[alt]
                    options.append((probs[alt] / probs[SKIP], node.latency(node.derived_width), li, "layer"))
                continue
            node = layer.options[best]
            if node.prefers_small:
                p_small, p_big = (float(v) for v in node.probs().detach())
                options.append((p_big / p_small, node.latency(node.hidden) - node.latency(node.hidden - node.s), li, "width"))
        pred = table.predict(net.derive("argmax"))  # what ``choices`` gives: argmax and gate widths
        keep: dict[str, str] = {}
        for _, cost, li, what in sorted(options, key=lambda o: -o[0]):
            if pred + table.a * cost <= target:
                pred += table.a * cost
                keep[li] = what
        return keep


def export_model(net: Supernet, spec: Any) -> nn.Module:
    """The derived network as a :class:`prunet.nn.PruNet`, initialised from the supernet."""
    from prunet.nn import PruNet, block_module_names

    model = PruNet(spec)
    sd: dict[str, torch.Tensor] = {}
    for k, v in net.stem.state_dict().items():
        sd[f"stem.{k}"] = v
    names = block_module_names(spec)
    i = 0
    for slot in net.space.layers():
        li = str(slot.index)
        if li not in net.layers:
            continue
        node = next(iter(net.layers[li].options.values()))
        for k, v in node.block.state_dict().items():
            sd[f"{names[i]}.{k}"] = v
        i += 1
    for k, v in net.head.state_dict().items():
        sd[f"head.{k}"] = v
    model.load_state_dict(sd)
    return model
