"""Search spaces: plain, validated JSON describing what a search may choose.

A space fixes the skeleton (stem, per-stage output widths and strides, head) and leaves three
things to the search, one per pruning tier:

* per *stochastic layer*, which candidate block (IRB / fused IRB × kernel × SE × activation),
  or Skip where the shapes allow it (stride 1 and equal in/out widths);
* per candidate, its hidden width, from ``max_expansion × in_chs`` down to ``min_hidden`` in
  steps of ``width_step`` (searched by Prunodes);
* per stage, how many of its ``depth`` layers survive (layers whose Skip wins are removed).

Files are read with the same discipline as :mod:`prunet.arch`: every problem is a
:class:`SpaceError` naming the JSON path (``stages[1].candidates[0].kernel``). This module does
not import torch, so the CLI and latency tools can read spaces cheaply.

Format (``"format": "prunet.space/1"``)::

    {"format": "prunet.space/1", "name": "proxy-small", "input_size": [1, 28, 28],
     "num_classes": 10, "width_step": 8,
     "stem": [{"out_chs": 16, "kernel": 3, "stride": 1, "act": "relu"}],
     "candidates": [{"type": "irb", "kernel": 3, "se": false, "act": "relu",
                     "max_expansion": 4, "min_hidden": 16}, ...],      # default for stages
     "stages": [{"out_chs": 24, "stride": 2, "depth": 2, "min_depth": 1,
                 "candidates": [...optional override...]}, ...],
     "head": {"conv_chs": 128, "act": "relu", "dropout": 0.1}}
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from prunet.arch import ArchError, ArchSpec, BlockSpec, ConvSpec, HeadSpec, Provenance, block_type, block_types
from prunet.arch import conv_out_hw, make_divisible
from prunet.arch.io import JsonError, loads_strict
from prunet.arch.io import JsonReader  # the schema's typed JSON reader: same checks, same messages

FORMAT = "prunet.space/1"


def _spaces_dir() -> Path:
    """Built-in spaces ship in the wheel as ``prunet.zoo_data/spaces`` (the repo's ``zoo/spaces``)."""
    try:
        from importlib import resources

        return Path(str(resources.files("prunet.zoo_data").joinpath("spaces")))
    except (ModuleNotFoundError, TypeError):
        return Path(__file__).resolve().parents[2] / "zoo" / "spaces"


class SpaceError(ArchError):
    """A search space file is invalid; ``path`` is the JSON path of the problem."""

    def with_source(self, source: str | None) -> "SpaceError":
        if not source or self.source:
            return self
        return SpaceError(self.path, self.message, source)


@dataclass(frozen=True)
class Candidate:
    """One candidate block type of a stochastic layer; its hidden width is searched."""

    type: str  # a width-searchable registered block type ("irb", "fused_irb")
    kernel: int = 3
    se: bool = False
    act: str = "relu"
    max_expansion: float = 6.0
    min_hidden: int = 8

    @property
    def name(self) -> str:
        t = block_type(self.type).short_name
        return f"{t}_k{self.kernel}{'_se' if self.se else ''}_{self.act}"


@dataclass(frozen=True)
class Stage:
    out_chs: int
    stride: int
    depth: int
    min_depth: int
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True)
class LayerSlot:
    """One stochastic layer of a space, with its resolved shapes."""

    index: int
    stage: int
    in_chs: int
    out_chs: int
    stride: int
    in_hw: tuple[int, int]
    candidates: tuple[Candidate, ...]
    skippable: bool

    def hidden_widths(self, cand: Candidate, step: int) -> list[int]:
        """Reachable hidden widths of ``cand`` here, ascending (multiples of ``step``)."""
        hi = make_divisible(self.in_chs * cand.max_expansion, step)
        return list(range(cand.min_hidden, hi + 1, step))

    def se_chs(self, cand: Candidate, hidden: int) -> int:
        """SE width from the block's input width (as EfficientNet does), capped by the smallest
        reachable hidden width: it stays put while a Prunode shrinks the hidden width, so a commit
        slices only hidden channels."""
        if not cand.se:
            return 0
        return max(1, min(cand.min_hidden, max(8, self.in_chs // 4)))

    def block_spec(self, cand: Candidate, hidden: int, bn_eps: float = 1e-5) -> BlockSpec:
        return block_type(cand.type).spec(in_chs=self.in_chs, out_chs=self.out_chs, hidden_chs=hidden, kernel=cand.kernel,
                   stride=self.stride, act=cand.act, se_chs=self.se_chs(cand, hidden), bn_eps=bn_eps)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SearchSpace:
    name: str
    input_size: tuple[int, int, int]
    num_classes: int
    width_step: int
    stem: tuple[ConvSpec, ...]
    stages: tuple[Stage, ...]
    head: HeadSpec
    source: str = ""
    raw: Mapping[str, Any] | None = None

    @property
    def hash(self) -> str:
        """Content hash of the canonical JSON: latency tables name the space they were built for."""
        text = json.dumps(self.raw, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def layers(self) -> list[LayerSlot]:
        h, w = self.input_size[1:]
        for c in self.stem:
            h, w = c.out_hw((h, w))
        out: list[LayerSlot] = []
        prev = self.stem[-1].out_chs
        for si, st in enumerate(self.stages):
            for j in range(st.depth):
                stride = st.stride if j == 0 else 1
                skippable = stride == 1 and prev == st.out_chs and j >= st.min_depth
                out.append(LayerSlot(len(out), si, prev, st.out_chs, stride, (h, w), st.candidates, skippable))
                h, w = conv_out_hw((h, w), 3, stride)
                prev = st.out_chs
        return out

    def final_hw(self) -> tuple[int, int]:
        layers = self.layers()
        last = layers[-1]
        return conv_out_hw(last.in_hw, 3, last.stride)

    def arch_from_choices(self, choices: list[tuple[Candidate, int] | None], name: str,
                          provenance: Provenance | None = None) -> ArchSpec:
        """The architecture for one choice per layer: ``(candidate, hidden)`` or ``None`` (skip)."""
        layers = self.layers()
        if len(choices) != len(layers):
            raise ValueError(f"expected {len(layers)} choices, got {len(choices)}")
        blocks = []
        for slot, ch in zip(layers, choices):
            if ch is None:
                if not slot.skippable:
                    raise ValueError(f"layer {slot.index} cannot be skipped")
                continue
            blocks.append(slot.block_spec(ch[0], ch[1]))
        from dataclasses import replace

        head = replace(self.head, in_chs=self.stages[-1].out_chs)
        return ArchSpec(name=name, input_size=self.input_size, stem=self.stem, blocks=tuple(blocks), head=head,
                        drop_path_rate=0.0, provenance=provenance or Provenance())

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw or {})


# ----------------------------------------------------------------------------- reading

_ACTS = ("relu", "silu")


def _candidate(obj: Any, path: str, step: int) -> Candidate:
    r = JsonReader(obj, path)
    kind = r.str("type", choices=_searchable_types())
    k = r.int("kernel", 3, lo=1, hi=15)
    if k % 2 == 0:
        raise SpaceError(f"{path}.kernel", f"expected an odd kernel size, got {k}")
    cand = Candidate(type=kind, kernel=k, se=r.bool("se", False), act=r.str("act", "relu", _ACTS),
                     max_expansion=r.float("max_expansion", 6.0, lo=0.0, hi=16.0, lo_open=True),
                     min_hidden=r.int("min_hidden", step))
    if cand.min_hidden % step:
        raise SpaceError(f"{path}.min_hidden", f"expected a multiple of width_step={step}, got {cand.min_hidden}")
    r.reject_unknown()
    return cand


def _searchable_types() -> tuple[str, ...]:
    """Block types whose hidden width a Prunode can search (the registry says where its gate sits)."""
    return tuple(n for n, t in block_types().items() if t.width_searchable)


# A space's name becomes part of file names (its cached latency table): one path component of
# plain characters, so "../../x" cannot write outside the cache.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _candidates(obj: Any, path: str, step: int) -> tuple[Candidate, ...]:
    if not isinstance(obj, list) or not obj:
        raise SpaceError(path, "expected a non-empty JSON array of candidate objects")
    cands = tuple(_candidate(c, f"{path}[{i}]", step) for i, c in enumerate(obj))
    names = [c.name for c in cands]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise SpaceError(f"{path}[{i}]", f"duplicate candidate {n!r} (type, kernel, se and act must differ)")
    return cands


def from_dict(obj: Any, source: str | None = None) -> SearchSpace:
    """Decode and validate a ``prunet.space/1`` object."""
    try:
        return _from_dict(obj, source)
    except ArchError as e:
        err = e if isinstance(e, SpaceError) else SpaceError(e.path, e.message, e.source)
        raise err.with_source(source) from None


def _from_dict(obj: Any, source: str | None) -> SearchSpace:
    r = JsonReader(obj, "")
    fmt = r.str("format")
    if fmt != FORMAT:
        raise SpaceError("format", f"expected {FORMAT!r}, got {fmt!r}")
    name = r.str("name")
    if not _NAME.fullmatch(name):
        raise SpaceError("name", f"expected letters, digits, '.', '_' or '-' (at most 100, not starting with "
                                 f"'.' or '-'; it names cache files), got {name!r}")
    size = r.list("input_size")
    if len(size) != 3:
        raise SpaceError("input_size", f"expected [channels, height, width], got {len(size)} items")
    sr = JsonReader({"c": size[0], "h": size[1], "w": size[2]}, "input_size")
    input_size = (sr.int("c", hi=64), sr.int("h", lo=4, hi=4096), sr.int("w", lo=4, hi=4096))
    ncls = r.int("num_classes", lo=2, hi=1 << 20)
    step = r.int("width_step", 8, hi=1024)
    stem_list = r.list("stem")
    if not stem_list:
        raise SpaceError("stem", "expected at least one conv")
    stem: list[ConvSpec] = []
    prev = input_size[0]
    for i, item in enumerate(stem_list):
        cr = JsonReader(item, f"stem[{i}]")
        k = cr.int("kernel", 3, hi=15)
        if k % 2 == 0:
            raise SpaceError(f"stem[{i}].kernel", f"expected an odd kernel size, got {k}")
        conv = ConvSpec(in_chs=prev, out_chs=cr.int("out_chs"), kernel=k, stride=cr.int("stride", 1, hi=2),
                        act=cr.str("act", "relu", _ACTS))  # type: ignore[arg-type]
        cr.reject_unknown()
        stem.append(conv)
        prev = conv.out_chs
    default_cands = _candidates(r.raw("candidates"), "candidates", step) if r.has("candidates") else None
    stages_list = r.list("stages")
    if not stages_list:
        raise SpaceError("stages", "expected at least one stage")
    stages: list[Stage] = []
    for i, item in enumerate(stages_list):
        p = f"stages[{i}]"
        sr2 = JsonReader(item, p)
        out = sr2.int("out_chs")
        if out % step:
            raise SpaceError(f"{p}.out_chs", f"expected a multiple of width_step={step}, got {out}")
        depth = sr2.int("depth", hi=64)
        min_depth = sr2.int("min_depth", 1, lo=1, hi=depth)
        if sr2.has("candidates"):
            cands = _candidates(sr2.raw("candidates"), f"{p}.candidates", step)
        elif default_cands is not None:
            cands = default_cands
        else:
            raise SpaceError(f"{p}.candidates", "required: no top-level 'candidates' to fall back on")
        stages.append(Stage(out, sr2.int("stride", 1, hi=2), depth, min_depth, cands))
        sr2.reject_unknown()
    hr = JsonReader(r.raw("head"), "head")
    head = HeadSpec(in_chs=stages[-1].out_chs, conv_chs=hr.int("conv_chs"), num_classes=ncls,
                    act=hr.str("act", "relu", _ACTS),  # type: ignore[arg-type]
                    dropout=hr.float("dropout", 0.0, hi=0.99))
    hr.reject_unknown()
    r.raw("description", "")
    r.reject_unknown()
    space = SearchSpace(name=name, input_size=input_size, num_classes=ncls, width_step=step, stem=tuple(stem),
                        stages=tuple(stages), head=head, source=source or "", raw=json.loads(json.dumps(obj)))
    # Every layer must keep a positive feature map and an in-range hidden width.
    for slot in space.layers():
        if min(slot.in_hw) < 1 or min(conv_out_hw(slot.in_hw, 3, slot.stride)) < 1:
            raise SpaceError(f"stages[{slot.stage}]", f"the feature map vanishes for input {input_size[1]}x{input_size[2]}")
        for ci, cand in enumerate(slot.candidates):
            hi = make_divisible(slot.in_chs * cand.max_expansion, step)
            if cand.min_hidden > hi:
                where = f"stages[{slot.stage}].candidates[{ci}]" if "candidates" in stages_list[slot.stage] else f"candidates[{ci}]"
                raise SpaceError(f"{where}.min_hidden", f"{cand.min_hidden} exceeds the largest hidden width "
                                 f"{hi} (= in_chs {slot.in_chs} × max_expansion {cand.max_expansion}) in stage {slot.stage}")
    return space


def builtin_spaces() -> list[str]:
    return sorted(p.stem for p in _spaces_dir().glob("*.json"))


def load_space(name_or_path: str | os.PathLike | Mapping) -> SearchSpace:
    """Load a space by built-in name (``proxy-small``), by path, or from a parsed object."""
    if isinstance(name_or_path, Mapping):
        return from_dict(name_or_path)
    text_path = Path(name_or_path)
    if not text_path.suffix and not text_path.exists():
        cand = _spaces_dir() / f"{name_or_path}.json"
        if not cand.exists():
            raise SpaceError("", f"unknown space {str(name_or_path)!r}; built-in spaces: {builtin_spaces()} "
                                 "(or give a path to a .json file)")
        text_path = cand
    label = str(text_path)
    try:
        text = text_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpaceError("", "file not found", label) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpaceError("", f"cannot read file ({e})", label) from None
    try:
        obj = loads_strict(text)
    except JsonError as e:
        raise SpaceError(e.path, e.message, label) from None
    return from_dict(obj, source=label)
