"""The supernet: stochastic layers of Prunodes whose cost shrinks as the search learns.

Every block here is a :mod:`prunet.nn` module built by :func:`prunet.nn.build_block` from a
:mod:`prunet.arch` spec — the supernet only wraps them:

* :class:`Prunode` holds one ``InvertedResidual``/``FusedInvertedResidual`` at its *current*
  hidden width ``c`` and gates the last ``s`` hidden channels by the big path's probability
  (a forward pre-hook on the block's ``se`` module, i.e. after the depthwise/expand BN+act and
  before SE and the projection; with the gate at 0 the block computes exactly what the block of
  width ``c − s`` computes). One hidden tensor, whatever the number of reachable widths.
  :meth:`Prunode.commit` rebuilds the block at the new width and copies the ``c − s`` most
  important channels (BN |γ|, ordered most important first, so the next ``s`` to be gated are
  the least important).
* :class:`StochasticLayer` mixes its surviving candidates (and Skip where shapes allow) by a
  Gumbel-softmax over its logits ``α`` (:class:`GumbelMixture`: every candidate runs), or runs
  the one candidate a hard Gumbel-softmax draws (:class:`GumbelSampledPath`: GDAS, one candidate
  per layer and step whatever their number); candidates can be deleted (tier 2) and the layer
  removed (tier 3).

Parameters are named so that the weight optimiser's state can be carried across structure
changes by name (see :mod:`prunet.search.loop`): a commit keeps names and only slices tensors.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunet.arch import ArchSpec, Provenance
from prunet.latency.lut import LatencyTable, block_key
from prunet.arch import block_type
from prunet.nn import ClassifierHead, ConvBnAct, build_block
from prunet.search.space import Candidate, LayerSlot, SearchSpace

SKIP = "skip"


def gumbel_softmax(logits: torch.Tensor, tau: float, noise: bool = True) -> torch.Tensor:
    """Soft Gumbel-softmax sample (``noise=False``: the tempered softmax).

    Not ``torch.nn.functional.gumbel_softmax``: that draws its noise through ``exponential_``, a
    different use of the RNG stream, so every recorded search result would change; the
    distribution is the same."""
    if not noise:
        return F.softmax(logits / tau, dim=-1)
    u = torch.rand_like(logits).clamp_(1e-9, 1.0 - 1e-9)
    return F.softmax((logits - torch.log(-torch.log(u))) / tau, dim=-1)


def gumbel_softmax_hard(logits: torch.Tensor, tau: float) -> torch.Tensor:
    """One-hot of a Gumbel-max draw whose gradient is the soft sample's (straight-through, GDAS).

    Written ``hard + (soft − sg(soft))`` so the forward value is exactly one-hot (the usual
    ``hard − sg(soft) + soft`` can leave a 1 ± ulp, and the chosen output is scaled by it). Noise
    is drawn like :func:`gumbel_softmax` (one ``rand_like``), not through ``F.gumbel_softmax``."""
    soft = gumbel_softmax(logits, tau)
    hard = F.one_hot(torch.argmax(soft.detach()), logits.numel()).to(soft.dtype)
    return hard + (soft - soft.detach())


class Relaxation:
    """How one forward turns architecture logits into path weights. The strategy that owns the
    logits chooses it per step; the modules only ask it, in forward order (so the RNG stream is
    consumed in the same order as the layers run).

    ``hard``: no noise and no gradient, each layer runs its argmax (the collapsed net).
    ``sampled``: :meth:`layer_weights` is one-hot and the layer runs only the chosen path, scaled
    by its weight (so the logits still get a gradient); otherwise every path runs."""

    hard = False
    sampled = False

    def layer_weights(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - interface

    def gate(self, beta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - interface


class GumbelMixture(Relaxation):
    """Every path weighted by a Gumbel-softmax sample at temperature ``tau`` (DARTS/FBNet style)."""

    def __init__(self, tau: float, noise: bool = True):
        self.tau, self.noise = tau, noise

    def layer_weights(self, logits: torch.Tensor) -> torch.Tensor:
        return gumbel_softmax(logits, self.tau, self.noise)

    def gate(self, beta: torch.Tensor) -> torch.Tensor:
        return gumbel_softmax(beta, self.tau, self.noise)[1]


class ArgmaxPath(Relaxation):
    """The collapsed network: each layer's most likely choice, each gate at its likelier width."""

    hard = True

    def layer_weights(self, logits: torch.Tensor) -> torch.Tensor:
        return F.one_hot(torch.argmax(logits), logits.numel()).to(logits.dtype).detach()

    def gate(self, beta: torch.Tensor) -> torch.Tensor:
        return (beta[1] >= beta[0]).to(beta.dtype).detach()


class GumbelSampledPath(Relaxation):
    """One path per layer: a hard Gumbel-softmax draw at temperature ``tau`` with the
    straight-through gradient (GDAS, Dong & Yang 2019). A step then costs one candidate per layer
    whatever the number of candidates — the full mixture costs all of them. The Prunode width gate
    inside the chosen candidate stays soft (drawn as :class:`GumbelMixture` draws it): it costs
    nothing extra, since both widths share one hidden tensor."""

    sampled = True

    def __init__(self, tau: float):
        self.tau = tau

    def layer_weights(self, logits: torch.Tensor) -> torch.Tensor:
        return gumbel_softmax_hard(logits, self.tau)

    def gate(self, beta: torch.Tensor) -> torch.Tensor:
        return gumbel_softmax(beta, self.tau)[1]


ARGMAX = ArgmaxPath()


_TWIN_CACHE: dict[Any, dict[str, tuple[int, ...]]] = {}


def hidden_dims(block: nn.Module) -> dict[str, list[int]]:
    """Per tensor of ``block``'s state dict, the dims indexed by hidden channel: those whose size
    changes when the hidden width does (found on a meta-device twin one channel wider)."""
    spec = block.spec
    if spec not in _TWIN_CACHE:
        twin = build_block(replace(spec, hidden_chs=spec.hidden_chs + 1), device="meta")
        _TWIN_CACHE[spec] = {k: tuple(v.shape) for k, v in twin.state_dict().items()}
    twin = _TWIN_CACHE[spec]
    return {k: [d for d, (a, b) in enumerate(zip(v.shape, twin[k])) if a != b] for k, v in block.state_dict().items()}


def select_channels(t: torch.Tensor, dims: list[int], order: torch.Tensor) -> torch.Tensor:
    """``t`` (a block tensor or optimizer state shaped like it) restricted to hidden channels
    ``order`` along ``dims``."""
    out = t
    for d in dims:
        out = out.index_select(d, order.to(out.device))
    return out.clone()


class Prunode(nn.Module):
    """An inverted-bottleneck candidate searching its hidden width by big/small gating."""

    def __init__(self, slot: LayerSlot, cand: Candidate, step: int, shrink: int,
                 lut: dict[int, float] | None = None, hidden: int | None = None, shrink_fraction: float = 0.0):
        super().__init__()
        self.slot, self.cand = slot, cand
        widths = slot.hidden_widths(cand, step)
        self.min_hidden = widths[0]
        self.step, self.shrink, self.shrink_fraction = step, shrink, shrink_fraction
        self.lut = lut or {}
        self.beta = nn.Parameter(torch.zeros(2))  # logits of (small, big)
        self.kind = block_type(cand.type)
        self.block: nn.Module = build_block(slot.block_spec(cand, hidden or widths[-1]))
        self._g_big: torch.Tensor | None = None
        self._hook = None
        self._attach()

    # -------------------------------------------------------------- gate

    def _attach(self) -> None:
        self._hook = getattr(self.block, self.kind.gate_site).register_forward_pre_hook(self._gate_hook)

    def _gate_hook(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
        g = self._g_big
        if g is None:
            return None
        x = args[0]
        c = x.shape[1]
        scale = torch.cat([x.new_ones(c - self.s), g.expand(self.s).to(x.dtype)])
        return (x * scale.view(1, c, 1, 1),)

    @property
    def hidden(self) -> int:
        return self.block.spec.hidden_chs

    @property
    def s(self) -> int:
        """Channels the small path drops. A fixed step needs (c_max − c_min)/s commits to go all
        the way down — hundreds of steps for wide blocks — so ``shrink_fraction`` makes it a share
        of the current width (on the space's width grid): big cuts while wide, fine ones near the
        end. Never past ``min_hidden``."""
        s = self.shrink
        if self.shrink_fraction:
            s = max(s, round(self.hidden * self.shrink_fraction / self.step) * self.step)
        return min(s, self.hidden - self.min_hidden)

    @property
    def gated(self) -> bool:
        """True while a smaller width is still reachable."""
        return self.s > 0

    def probs(self) -> torch.Tensor:
        """(p_small, p_big) without noise: what decisions and expected latency use."""
        return F.softmax(self.beta, dim=-1)

    @property
    def prefers_small(self) -> bool:
        """The gate favours ``c − s`` (what derivation takes unless the budget fill keeps ``c``)."""
        return self.gated and float(self.probs().detach()[0]) > 0.5

    @property
    def derived_width(self) -> int:
        return self.hidden - self.s if self.prefers_small else self.hidden

    def forward(self, x: torch.Tensor, relax: Relaxation = ARGMAX) -> torch.Tensor:
        self._g_big = relax.gate(self.beta) if self.gated else None
        try:
            return self.block(x)
        finally:
            self._g_big = None

    def latency(self, width: int) -> float:
        return self.lut[width]

    def expected_latency(self) -> torch.Tensor:
        if not self.gated:
            return self.beta.new_tensor(self.latency(self.hidden))
        p = self.probs()
        return p[1] * self.latency(self.hidden) + p[0] * self.latency(self.hidden - self.s)

    # -------------------------------------------------------------- structure

    def importance(self) -> torch.Tensor:
        """BN |γ| of the hidden channels (the norm its block type registers)."""
        return getattr(self.block, self.kind.importance_norm).weight.detach().abs()

    def commit(self, keep: int | None = None) -> torch.Tensor:
        """Shrink to ``keep`` (default ``c − s``) channels, most important first; returns the kept
        channel indices so the caller can slice optimizer state the same way. ``keep = c`` only
        reorders (used once after warm-up, so the first gate sits on the least important)."""
        keep = self.hidden - self.s if keep is None else keep
        if keep < self.min_hidden:
            raise ValueError(f"cannot shrink below {self.min_hidden}")
        order = torch.argsort(self.importance(), descending=True, stable=True)[:keep]
        old = self.block
        spec = replace(old.spec, hidden_chs=keep)
        new = build_block(spec).to(next(old.parameters()).device)
        dims = hidden_dims(old)
        new.load_state_dict({k: select_channels(v, dims[k], order) for k, v in old.state_dict().items()})
        new.train(old.training)
        self.last_dims = {f"block.{k}": d for k, d in dims.items()}
        self._hook.remove()
        self.block = new
        self._attach()
        with torch.no_grad():
            self.beta.zero_()
        return order


class StochasticLayer(nn.Module):
    """Candidates (and Skip) mixed by a Gumbel-softmax over logits α."""

    def __init__(self, slot: LayerSlot, space: SearchSpace, shrink: int, table: LatencyTable | None,
                 shrink_fraction: float = 0.0):
        super().__init__()
        self.slot = slot
        self.options_shrink = shrink
        self.shrink_fraction = shrink_fraction
        self.options = nn.ModuleDict()
        self.alpha = nn.ParameterDict()
        for cand in slot.candidates:
            lut = {}
            if table is not None:
                for w in slot.hidden_widths(cand, space.width_step):
                    spec = slot.block_spec(cand, w)
                    lut[w] = table.lookup(block_key(spec, slot.in_hw), f"layer {slot.index} {cand.name} h={w}")
            self.options[cand.name] = Prunode(slot, cand, space.width_step, shrink, lut, shrink_fraction=shrink_fraction)
            self.alpha[cand.name] = nn.Parameter(torch.zeros(()))
        if slot.skippable:
            self.alpha[SKIP] = nn.Parameter(torch.zeros(()))

    def names(self) -> list[str]:
        return list(self.alpha.keys())

    def logits(self) -> torch.Tensor:
        return torch.stack([self.alpha[n] for n in self.names()])

    def probs(self) -> dict[str, float]:
        p = F.softmax(self.logits().detach(), dim=-1).tolist()
        return dict(zip(self.names(), p))

    def forward(self, x: torch.Tensor, relax: Relaxation = ARGMAX) -> torch.Tensor:
        names = self.names()
        if len(names) == 1:
            return x if names[0] == SKIP else self.options[names[0]](x, relax)
        if relax.hard:
            best = names[int(torch.argmax(self.logits()))]
            return x if best == SKIP else self.options[best](x, relax)
        w = relax.layer_weights(self.logits())
        if relax.sampled:
            i = int(torch.argmax(w.detach()))
            n = names[i]
            return w[i] * (x if n == SKIP else self.options[n](x, relax))
        out = 0
        for i, n in enumerate(names):
            out = out + w[i] * (x if n == SKIP else self.options[n](x, relax))
        return out

    def expected_latency(self) -> torch.Tensor:
        names = self.names()
        p = F.softmax(self.logits(), dim=-1)
        total = self.alpha[names[0]].new_zeros(())
        for i, n in enumerate(names):
            if n != SKIP:
                total = total + p[i] * self.options[n].expected_latency()
        return total

    def replace_option(self, name: str, cand: Candidate, hidden: int, table: LatencyTable, space: SearchSpace) -> None:
        """Swap ``name`` for a fresh ``cand`` at ``hidden`` (finalisation's last resort)."""
        lut = {w: table.lookup(block_key(self.slot.block_spec(cand, w), self.slot.in_hw))
               for w in self.slot.hidden_widths(cand, space.width_step)}
        dev = next(self.options[name].parameters()).device
        self.remove_option(name)
        self.options[cand.name] = Prunode(self.slot, cand, space.width_step, self.options_shrink, lut, hidden,
                                          self.shrink_fraction).to(dev)
        self.alpha[cand.name] = nn.Parameter(torch.zeros((), device=dev))

    def remove_option(self, name: str) -> None:
        del self.alpha[name]
        if name != SKIP:
            del self.options[name]


class Supernet(nn.Module):
    """Stem → stochastic layers → head, with the space's latency table attached."""

    def __init__(self, space: SearchSpace, table: LatencyTable | None = None, shrink: int | None = None,
                 shrink_fraction: float = 0.0):
        super().__init__()
        self.space = space
        self.shrink = shrink or space.width_step
        self.stem = nn.Sequential(*[ConvBnAct(c) for c in space.stem])
        self.layers = nn.ModuleDict({str(s.index): StochasticLayer(s, space, self.shrink, table, shrink_fraction)
                                     for s in space.layers()})
        self.head = ClassifierHead(space.head)
        self.table = table
        self.fixed_ms = 0.0
        if table is not None:
            from prunet.latency.lut import arch_parts

            # Stem and head do not change: their share of the sum is a constant.
            probe = space.arch_from_choices([None if s.skippable else (s.candidates[0], s.hidden_widths(s.candidates[0], space.width_step)[0])
                                             for s in space.layers()], "probe")
            parts = arch_parts(probe)
            self.fixed_ms = sum(table.lookup(k, p) for p, k, _, _ in parts if not p.startswith("blocks"))
        self.removed: set[int] = set()

    # -------------------------------------------------------------- parameters

    def _logit_ids(self) -> set[int]:
        """The architecture logits, by identity: every layer's α and every Prunode's β."""
        ids = {id(p) for layer in self.layers.values() for p in layer.alpha.values()}
        return ids | {id(node.beta) for _, node in self.prunodes()}

    def arch_parameters(self) -> list[tuple[str, nn.Parameter]]:
        ids = self._logit_ids()
        return [(n, p) for n, p in self.named_parameters() if id(p) in ids]

    def weight_parameters(self) -> list[tuple[str, nn.Parameter]]:
        ids = self._logit_ids()
        return [(n, p) for n, p in self.named_parameters() if id(p) not in ids]

    def prunodes(self) -> list[tuple[str, Prunode]]:
        return [(f"layers.{li}.options.{n}", p) for li, layer in self.layers.items() for n, p in layer.options.items()]

    # -------------------------------------------------------------- forward

    def forward(self, x: torch.Tensor, relax: Relaxation = ARGMAX) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers.values():
            x = layer(x, relax)
        return self.head(x)

    def expected_raw_ms(self) -> torch.Tensor:
        total = torch.zeros(())
        for layer in self.layers.values():
            total = total + layer.expected_latency()
        return total + self.fixed_ms

    def expected_ms(self) -> torch.Tensor:
        """Differentiable expected latency: ``a·E[Σ] + c`` with the table's calibration."""
        assert self.table is not None
        return self.table.a * self.expected_raw_ms() + self.table.c

    # -------------------------------------------------------------- structure

    def remove_layer(self, index: int) -> None:
        del self.layers[str(index)]
        self.removed.add(index)

    def structure(self) -> dict[str, Any]:
        """Plain-data description of the current supernet (enough to rebuild it for a resume)."""
        return {
            "removed": sorted(self.removed),
            "layers": {li: {"options": layer.names(), "hidden": {n: p.hidden for n, p in layer.options.items()}}
                       for li, layer in self.layers.items()},
        }

    def apply_structure(self, st: dict[str, Any]) -> None:
        """Rebuild pruned/committed structure recorded by :meth:`structure` (weights loaded after)."""
        for idx in st["removed"]:
            if str(idx) in self.layers:
                self.remove_layer(int(idx))
        for li, info in st["layers"].items():
            layer = self.layers[li]
            for n in list(layer.names()):
                if n not in info["options"]:
                    layer.remove_option(n)
            for n, h in info["hidden"].items():
                p = layer.options[n]
                if p.hidden != h:
                    p._hook.remove()
                    p.block = build_block(replace(p.block.spec, hidden_chs=int(h)))
                    p._attach()

    def choices(self) -> list[tuple[Candidate, int] | None]:
        """Argmax per layer (Skip for removed layers); gate decides between ``c`` and ``c − s``."""
        out: list[tuple[Candidate, int] | None] = []
        for slot in self.space.layers():
            layer = self.layers[str(slot.index)] if str(slot.index) in self.layers else None
            if layer is None:
                out.append(None)
                continue
            names = layer.names()
            best = names[int(torch.argmax(layer.logits().detach()))]
            if best == SKIP:
                out.append(None)
                continue
            p = layer.options[best]
            out.append((p.cand, p.derived_width))
        return out

    def derive(self, name: str, provenance: Provenance | None = None) -> ArchSpec:
        return self.space.arch_from_choices(self.choices(), name, provenance)




__all__ = ["Prunode", "StochasticLayer", "Supernet", "SKIP", "gumbel_softmax", "select_channels", "hidden_dims",
           "Relaxation", "GumbelMixture", "GumbelSampledPath", "ArgmaxPath", "ARGMAX", "gumbel_softmax_hard"]
