"""The block-type registry: one entry per block type, read by every layer of the toolkit.

Each layer needs something different from a block type — the JSON reader its spec class, the
builder its ``prunet.nn`` module, the latency table the fields that decide its cost, the search
where a Prunode's width gate sits and which BN ranks its hidden channels. Keeping all of it in
one :class:`BlockType` entry means adding a type is one :func:`register_block` call plus its own
module, and an unknown ``type`` is the same clear error everywhere instead of a silent fallback.

This module does not import torch: the builder is named as ``"package.module:Class"`` and
imported only when a network is built.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Iterable

from prunet.arch import cell as _cell
from prunet.arch.rep import RepSpec, rep_latency_key
from prunet.arch.rep import table_parts as rep_table_parts
from prunet.arch.spec import ConvSpec, FusedIRBSpec, IRBSpec


class UnknownBlockType(ValueError):
    """A spec or JSON names a block type nobody registered."""


@dataclass(frozen=True)
class BlockType:
    """Everything the toolkit knows about one block type.

    ``module``: ``"package.module:Class"`` of its :mod:`prunet.nn` implementation, constructed as
    ``Class(spec, drop_path_rate=..., device=..., dtype=...)``.
    ``latency_key``: the spec's fields that change its latency, as the table key's middle part
    (BN eps does not; keys must stay stable, or every cached table goes stale).
    ``gate_site``: submodule whose *input* is the hidden tensor a Prunode gates — set only for
    types whose ``hidden_chs`` the search may shrink.
    ``importance_norm``: BN whose ``|γ|`` ranks the hidden channels when a Prunode shrinks.
    ``short_name``: prefix of candidate names in search spaces (``ir_k3_relu``).
    ``latency_parts``: for a composite block (a cell), ``(spec, in_hw) → [(path, sub_spec,
    sub_in_hw)]``: the timed sub-blocks a latency table prices it by when it has no entry for the
    whole block (a table can still time each distinct composite block whole).
    ``table_parts``: for types a search derives without them being space candidates (``rep``), the
    ``(spec, in_chs, in_hw)`` a space implies for them, so the space's latency table holds them too.
    ``part_only``: a timed part of a composite block (a cell's pooling, skip and node sums), never
    a block of a network: the arch reader refuses it as a block, and a table's fitted model leaves
    its entries uncorrected (zero features): the model is fitted on whole nets sampled from the
    space, which never contain such a part, so any correction of it would be extrapolation.
    """

    name: str
    spec: type
    module: str
    latency_key: Callable[[Any], str]
    gate_site: str | None = None
    importance_norm: str | None = None
    short_name: str = ""
    latency_parts: Callable[[Any, tuple[int, int]], list[tuple[str, Any, tuple[int, int]]]] | None = None
    table_parts: Callable[[Any], Iterable[tuple[Any, int, tuple[int, int]]]] | None = None
    part_only: bool = False

    @property
    def width_searchable(self) -> bool:
        return self.gate_site is not None and self.importance_norm is not None

    def field_names(self) -> list[str]:
        return [f.name for f in fields(self.spec)]


_REGISTRY: dict[str, BlockType] = {}


def register_block(entry: BlockType) -> BlockType:
    """Add a block type (its ``spec`` must be a frozen dataclass with a ``type`` field equal to ``name``)."""
    if entry.name in _REGISTRY:
        raise ValueError(f"block type {entry.name!r} is registered already")
    type_field = {f.name: f for f in fields(entry.spec)}.get("type")
    if type_field is None or type_field.default != entry.name:
        raise ValueError(f"block type {entry.name!r}: {entry.spec.__name__}.type must default to {entry.name!r}")
    _REGISTRY[entry.name] = entry
    return entry


def block_types() -> dict[str, BlockType]:
    """Registered types by name (a copy: register through :func:`register_block`)."""
    return dict(_REGISTRY)


def block_type(spec_or_name: Any) -> BlockType:
    """The entry of a spec instance, spec class or type name; unknown types raise."""
    name = spec_or_name if isinstance(spec_or_name, str) else getattr(spec_or_name, "type", None)
    entry = _REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None:
        raise UnknownBlockType(f"unknown block type {name!r} (registered: {sorted(_REGISTRY)})")
    return entry


def _bottleneck_key(s: Any) -> str:
    return f"{s.in_chs}>{s.out_chs}:h{s.hidden_chs}:k{s.kernel}s{s.stride}:se{s.se_chs}:{s.act}:{s.padding}"


register_block(BlockType(
    name="conv", spec=ConvSpec, module="prunet.nn.blocks:ConvBnAct",
    latency_key=lambda s: f"{s.in_chs}>{s.out_chs}:k{s.kernel}s{s.stride}:{s.act}:{s.padding}",
))
register_block(BlockType(
    name="irb", spec=IRBSpec, module="prunet.nn.blocks:InvertedResidual", latency_key=_bottleneck_key,
    gate_site="se", importance_norm="bn2", short_name="ir",
))
register_block(BlockType(
    name="fused_irb", spec=FusedIRBSpec, module="prunet.nn.blocks:FusedInvertedResidual",
    latency_key=_bottleneck_key, gate_site="se", importance_norm="bn1", short_name="fir",
))
register_block(BlockType(
    name="cell", spec=_cell.CellSpec, module="prunet.nn.cell:Cell", latency_key=_cell.latency_key,
    latency_parts=_cell.latency_parts, table_parts=_cell.table_parts,
))
# A cell's parameter-free parts, timed so a cell the table has no whole entry for is priced fully.
register_block(BlockType(
    name="cell_free", spec=_cell.CellFreeSpec, module="prunet.nn.cell:FreePart",
    latency_key=_cell.free_latency_key, part_only=True,
))
# Keyed by what inference runs (the fused 3x3 conv + act), not by the training-time branches.
register_block(BlockType(
    name="rep", spec=RepSpec, module="prunet.nn.rep:RepBlock", latency_key=rep_latency_key,
    table_parts=rep_table_parts,
))
