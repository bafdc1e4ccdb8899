"""The re-parameterisable block (``rep``): a diverse-branch block that inference runs as one 3×3 conv.

During training a ``rep`` block sums several linear branches (each ending in its own BN) and applies
the activation; since every branch is linear in its input, they fold into a single 3×3 conv with a
bias (structural re-parameterisation: RepVGG, DiverseBranchBlock, RepNAS). The spec records which
branches the block trains with; the network that is exported, timed and deployed is the fused
3×3 conv + activation, whatever the branches. That is why the latency key has no branch field.

Also here: the plain conv chains RepNAS derives from a search space's stage layout (per stage a
width and a depth), and the latency-table parts they need. Plain data, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterator, Literal

from prunet.arch.spec import Activation, HeadSpec, Padding, conv_out_hw

# Branch names, in the fixed order the search's architecture weights use.
REP_BRANCHES: tuple[str, ...] = ("1x1", "3x3", "1x1_3x3", "1x1_avg", "1x3", "3x1", "identity")

# Widths a RepNAS plain chain may give a stage, as shares of the space's stage width (rounded to the
# space's width step). Fixed here because the latency table must hold every one of them.
CHAIN_WIDTH_FRACTIONS: tuple[float, ...] = (0.5, 0.75, 1.0)


class SpecFieldError(ValueError):
    """A spec field holds a value its block type refuses; ``field`` names it for the JSON reader."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


def identity_allowed(in_chs: int, out_chs: int, stride: int) -> bool:
    """The identity/BN branch exists only where input and output have the same shape."""
    return stride == 1 and in_chs == out_chs


@dataclass(frozen=True)
class RepSpec:
    """A re-parameterisable block: the sum of ``branches`` → activation; fused, one 3×3 conv + act.

    Branches: ``1x1``, ``3x3``, ``1x1_3x3`` (1×1 → BN → 3×3), ``1x1_avg`` (1×1 → BN → 3×3 average
    pool), ``1x3``, ``3x1`` (each conv followed by its BN) and ``identity`` (BN alone; only with
    stride 1 and equal widths).
    """

    in_chs: int
    out_chs: int
    stride: int = 1
    act: Activation = "relu"
    branches: tuple[str, ...] = ("3x3",)
    bn_eps: float = 1e-5
    padding: Padding = "symmetric"
    type: Literal["rep"] = "rep"

    def __post_init__(self) -> None:
        if isinstance(self.branches, str) or not isinstance(self.branches, (tuple, list)):
            raise SpecFieldError("branches", f"expected a list of branch names from {list(REP_BRANCHES)}, "
                                             f"got {self.branches!r}")
        object.__setattr__(self, "branches", tuple(self.branches))
        if not self.branches:
            raise SpecFieldError("branches", f"expected at least one branch of {list(REP_BRANCHES)}")
        for b in self.branches:
            if b not in REP_BRANCHES:
                raise SpecFieldError("branches", f"unknown branch {b!r} (known: {list(REP_BRANCHES)})")
        if len(set(self.branches)) != len(self.branches):
            raise SpecFieldError("branches", f"a branch is listed twice in {list(self.branches)}")
        if "identity" in self.branches and not identity_allowed(self.in_chs, self.out_chs, self.stride):
            raise SpecFieldError("branches", f"'identity' needs stride 1 and in_chs == out_chs, got stride "
                                             f"{self.stride}, {self.in_chs} -> {self.out_chs}")

    @property
    def kernel(self) -> int:
        return 3  # the fused conv

    def out_hw(self, hw: tuple[int, int]) -> tuple[int, int]:
        return conv_out_hw(hw, 3, self.stride, self.padding)


def all_branches(in_chs: int, out_chs: int, stride: int) -> tuple[str, ...]:
    """Every branch a block of this shape can have (identity only where the shapes allow)."""
    return tuple(b for b in REP_BRANCHES if b != "identity" or identity_allowed(in_chs, out_chs, stride))


def rep_latency_key(s: RepSpec) -> str:
    """What inference runs — the fused 3×3 conv + act — so the branches are not part of the key:
    every branch set of a shape shares one measurement, and a search may change branches freely."""
    return f"{s.in_chs}>{s.out_chs}:s{s.stride}:{s.act}:{s.padding}"


# ----------------------------------------------------------------------------- plain chains of a space


@dataclass(frozen=True)
class StageChoice:
    """One stage of a plain chain: its width and how many of its layers it keeps."""

    width: int
    depth: int


def _round_width(chs: float, step: int) -> int:
    return max(step, int(round(chs / step)) * step)


def stage_options(space: Any) -> list[list[StageChoice]]:
    """Per stage of ``space`` (a :class:`prunet.search.space.SearchSpace`, duck-typed): the widths of
    :data:`CHAIN_WIDTH_FRACTIONS` times every depth from ``min_depth`` to ``depth``."""
    out = []
    for st in space.stages:
        widths = sorted({_round_width(st.out_chs * f, space.width_step) for f in CHAIN_WIDTH_FRACTIONS})
        out.append([StageChoice(w, d) for w in widths for d in range(st.min_depth, st.depth + 1)])
    return out


def stage_act(stage: Any) -> str:
    """A chain's activation in a stage: that of the stage's first candidate (spaces give acts per candidate)."""
    return stage.candidates[0].act


def chain_layers(space: Any, choice: list[StageChoice], branches: Any = None) -> list[tuple[RepSpec, tuple[int, int]]]:
    """The rep blocks of one plain chain with their input resolutions. ``branches(spec)`` gives each
    block's branches (default: the 3×3 alone; the latency does not depend on them)."""
    if len(choice) != len(space.stages):
        raise ValueError(f"expected one choice per stage ({len(space.stages)}), got {len(choice)}")
    hw = tuple(space.input_size[1:])
    for c in space.stem:
        hw = c.out_hw(hw)
    prev = space.stem[-1].out_chs
    out: list[tuple[RepSpec, tuple[int, int]]] = []
    for st, ch in zip(space.stages, choice):
        for j in range(ch.depth):
            spec = RepSpec(in_chs=prev, out_chs=ch.width, stride=st.stride if j == 0 else 1, act=stage_act(st))  # type: ignore[arg-type]
            if branches is not None:
                spec = replace(spec, branches=tuple(branches(spec)))
            out.append((spec, hw))  # type: ignore[arg-type]
            hw = spec.out_hw(hw)
            prev = ch.width
    return out


def chain_head(space: Any, choice: list[StageChoice]) -> HeadSpec:
    return replace(space.head, in_chs=choice[-1].width)


def final_hw(space: Any) -> tuple[int, int]:
    """Skipped layers have stride 1, so the head's resolution does not depend on the depths."""
    hw = tuple(space.input_size[1:])
    for c in space.stem:
        hw = c.out_hw(hw)
    for st in space.stages:
        hw = conv_out_hw(hw, 3, st.stride)  # type: ignore[arg-type]
    return hw  # type: ignore[return-value]


def table_parts(space: Any) -> Iterator[tuple[Any, int, tuple[int, int]]]:
    """Every (spec, in_chs, in_hw) a RepNAS plain chain of ``space`` can contain beyond the space's
    own parts: each stage's first block from every width of the previous stage, its repeated
    block, and the head at every last-stage width."""
    opts = stage_options(space)
    hw = tuple(space.input_size[1:])
    for c in space.stem:
        hw = c.out_hw(hw)
    prev_widths = [space.stem[-1].out_chs]
    for st, choices in zip(space.stages, opts):
        widths = sorted({c.width for c in choices})
        act = stage_act(st)
        for w in widths:
            for p in prev_widths:
                first = RepSpec(in_chs=p, out_chs=w, stride=st.stride, act=act)  # type: ignore[arg-type]
                yield first, p, hw  # type: ignore[misc]
            if st.depth > 1:
                yield RepSpec(in_chs=w, out_chs=w, stride=1, act=act), w, conv_out_hw(hw, 3, st.stride)  # type: ignore[arg-type, misc]
        hw = conv_out_hw(hw, 3, st.stride)  # type: ignore[assignment]
        prev_widths = widths
    fh = final_hw(space)
    for w in prev_widths:
        yield replace(space.head, in_chs=w), w, fh
