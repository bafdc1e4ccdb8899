"""The cell block: a small DAG of edges, the unit PR-DARTS searches (``type: "cell"``).

A cell has ``len(nodes)`` intermediate nodes. Node ``i`` (1-based) is the sum of two edges, each
reading the cell input (``input: 0``) or an earlier node (``input: j < i``). An edge is one op:

* ``ir_k3`` / ``ir_k5`` / ``ir_k7``: the zoo's inverted bottleneck (1×1 expand → k×k depthwise
  → 1×1 linear projection, residual where shapes allow), with ``width`` hidden channels;
* ``fir_k3`` / ``fir_k5``: the zoo's fused inverted bottleneck (k×k conv → 1×1 projection);
* ``max_pool_3x3`` / ``avg_pool_3x3`` / ``skip``: parameter-free (``width`` 0).

``width`` is the *kept* hidden width after structured channel pruning. Conv edges are ordinary
zoo blocks (:meth:`CellSpec.edge_block`), so a latency table that prices those blocks prices the
edges too, and pruning a channel removes it from two dense convs — which ONNX Runtime and
TensorRT turn into real time saved (they gain nothing from unstructured zeros).

Every edge maps to the node width ``out_chs``; edges that read the cell input apply the cell's
``stride``. The cell's output is the **sum** of its nodes (not DARTS' concatenation): the output
stays ``out_chs`` wide without a 1×1 merge conv, so a cell chains like any other block, and the
sum costs one elementwise add per node instead of a conv whose cost would grow with the number of
nodes.

This module does not import torch (the schema is plain data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Literal

from prunet.arch.spec import Activation, FusedIRBSpec, IRBSpec, conv_out_hw

CONV_OPS: dict[str, tuple[str, int]] = {
    "ir_k3": ("irb", 3), "ir_k5": ("irb", 5), "ir_k7": ("irb", 7),
    "fir_k3": ("fused_irb", 3), "fir_k5": ("fused_irb", 5),
}
FREE_OPS: tuple[str, ...] = ("max_pool_3x3", "avg_pool_3x3", "skip")
CELL_OPS: tuple[str, ...] = (*CONV_OPS, *FREE_OPS)
MAX_NODES = 8


def conv_op_name(block_type: str, kernel: int) -> str | None:
    """The cell op of a zoo block type and kernel (``("irb", 3)`` → ``"ir_k3"``), if there is one."""
    for name, tk in CONV_OPS.items():
        if tk == (block_type, kernel):
            return name
    return None


@dataclass(frozen=True)
class CellEdge:
    """One edge: which tensor it reads (0 = cell input, j = node j), its op, its kept width."""

    input: int
    op: str
    width: int = 0


@dataclass(frozen=True)
class CellSpec:
    """A DAG cell (see the module docstring); ``nodes[i]`` holds the two edges into node ``i + 1``."""

    in_chs: int
    out_chs: int
    nodes: tuple[tuple[CellEdge, CellEdge], ...]
    stride: int = 1
    act: Activation = "relu"
    bn_eps: float = 1e-5
    type: Literal["cell"] = "cell"

    def out_hw(self, hw: tuple[int, int]) -> tuple[int, int]:
        """Every op of an input edge is odd-sized with 'same' padding: the stride alone decides."""
        return conv_out_hw(hw, 3, self.stride)

    def edges(self) -> Iterator[tuple[str, CellEdge]]:
        """``(relative JSON path, edge)`` in node order."""
        for i, node in enumerate(self.nodes):
            for j, e in enumerate(node):
                yield f"nodes[{i}][{j}]", e

    def edge_shape(self, edge: CellEdge) -> tuple[int, int]:
        """(input channels, stride) of an edge."""
        return (self.in_chs, self.stride) if edge.input == 0 else (self.out_chs, 1)

    def edge_block(self, edge: CellEdge) -> IRBSpec | FusedIRBSpec | None:
        """The zoo block a conv edge is (``None`` for pooling and skip)."""
        if edge.op not in CONV_OPS:
            return None
        kind, kernel = CONV_OPS[edge.op]
        cin, stride = self.edge_shape(edge)
        cls = IRBSpec if kind == "irb" else FusedIRBSpec
        return cls(in_chs=cin, out_chs=self.out_chs, hidden_chs=edge.width, kernel=kernel, stride=stride,
                   act=self.act, se_chs=0, bn_eps=self.bn_eps)

    def problems(self) -> Iterator[tuple[str, str]]:
        """``(relative JSON path, message)`` for everything that makes the cell unbuildable."""
        if not 1 <= len(self.nodes) <= MAX_NODES:
            yield "nodes", f"expected 1 to {MAX_NODES} nodes, got {len(self.nodes)}"
        for i, node in enumerate(self.nodes):
            if len(node) != 2:
                yield f"nodes[{i}]", f"expected two edges, got {len(node)}"
                continue
            for j, e in enumerate(node):
                where = f"nodes[{i}][{j}]"
                if not 0 <= e.input <= i:
                    yield f"{where}.input", (f"expected the cell input (0) or an earlier node (1..{i})"
                                             if i else "expected 0 (the cell input; node 1 has no earlier node)") \
                        + f", got {e.input}"
                if e.op not in CELL_OPS:
                    yield f"{where}.op", f"expected one of {list(CELL_OPS)}, got {e.op!r}"
                    continue
                cin, stride = self.edge_shape(e)
                if e.op in CONV_OPS:
                    if e.width < 1:
                        yield f"{where}.width", f"expected a kept width >= 1 for {e.op!r}, got {e.width}"
                    continue
                if e.width != 0:
                    yield f"{where}.width", f"expected 0 for the parameter-free op {e.op!r}, got {e.width}"
                if cin != self.out_chs:
                    yield f"{where}.op", (f"{e.op!r} keeps the channel count, but this edge maps {cin} "
                                          f"to {self.out_chs} channels; use a conv op")
                elif e.op == "skip" and stride != 1:
                    yield f"{where}.op", "'skip' cannot reduce the resolution (stride 2 edge); use a pool or conv op"


def latency_key(s: CellSpec) -> str:
    """The whole genotype: every distinct cell is its own table entry."""
    nodes = ";".join("+".join(f"{e.input}/{e.op}/{e.width}" for e in node) for node in s.nodes)
    return f"{s.in_chs}>{s.out_chs}:s{s.stride}:{s.act}:[{nodes}]"


def latency_parts(s: CellSpec, in_hw: tuple[int, int]) -> list[tuple[str, Any, tuple[int, int]]]:
    """The timed parts of a cell: every edge (conv edges as zoo blocks, pooling and skip as
    :class:`CellFreeSpec`), each at the resolution it reads, then the node sums (``sum``).

    Used to price a cell the table has no whole entry for. The free parts are timed too: at the
    small resolutions cells run at, a 3×3 pool costs as much as a narrow conv block, and a search
    that priced them at zero pushed its edges to pooling (docs/search.md, PR-DARTS).
    """
    out_hw = s.out_hw(in_hw)
    parts: list[tuple[str, Any, tuple[int, int]]] = []
    for path, e in s.edges():
        hw = in_hw if e.input == 0 else out_hw
        block = s.edge_block(e)
        if block is None:
            cin, stride = s.edge_shape(e)
            block = CellFreeSpec(cin, s.out_chs, e.op, stride)
        parts.append((path, block, hw))
    parts.append(("sum", node_sum(s.out_chs, len(s.nodes)), out_hw))
    return parts


@dataclass(frozen=True)
class CellFreeSpec:
    """A parameter-free part of a cell, as the latency table times it (``type: "cell_free"``).

    ``op``: a pooling/skip edge (``FREE_OPS``; ``in_chs == out_chs``) at its ``stride``, or
    ``"sum"``: the ``2·nodes − 1`` elementwise adds of a cell with ``nodes`` nodes (one per node,
    the rest summing the nodes into the output), timed together so the table carries one
    measurement overhead per cell rather than one per add. A part of a cell only, never a block
    of a network (the registry marks the type ``part_only``).
    """

    in_chs: int
    out_chs: int
    op: str
    stride: int = 1
    nodes: int = 0
    type: Literal["cell_free"] = "cell_free"

    def out_hw(self, hw: tuple[int, int]) -> tuple[int, int]:
        return conv_out_hw(hw, 3, self.stride)

    @property
    def adds(self) -> int:
        return 2 * self.nodes - 1 if self.op == "sum" else 0


def node_sum(chs: int, nodes: int) -> CellFreeSpec:
    """The node-sum part of a cell with ``nodes`` nodes of ``chs`` channels."""
    return CellFreeSpec(chs, chs, "sum", 1, nodes)


def free_latency_key(s: CellFreeSpec) -> str:
    return f"{s.op}:{s.out_chs}:n{s.nodes}" if s.op == "sum" else f"{s.op}:{s.out_chs}:s{s.stride}"


def table_parts(space: Any) -> Iterator[tuple[CellFreeSpec, int, tuple[int, int]]]:
    """The free parts a cell of ``space`` can contain, per layer slot: pooling (and skip at
    stride 1) on every edge whose shape keeps the channel count, and the node sums of cells of
    1 to ``MAX_NODES`` nodes at the slot's output. Conv edges are the space's own blocks
    already (a cell edge from a node reads ``out_chs`` at stride 1, which the slot's repeated
    blocks have; where none does, the search offers no conv op there)."""
    for slot in space.layers():
        out_hw = conv_out_hw(slot.in_hw, 3, slot.stride)
        for cin, stride, hw in ((slot.in_chs, slot.stride, slot.in_hw), (slot.out_chs, 1, out_hw)):
            if cin != slot.out_chs:
                continue
            for op in FREE_OPS:
                if op != "skip" or stride == 1:
                    yield CellFreeSpec(cin, cin, op, stride), cin, hw
        for n in range(1, MAX_NODES + 1):
            yield node_sum(slot.out_chs, n), slot.out_chs, out_hw


def read_nodes(value: Any, path: str) -> tuple[tuple[CellEdge, CellEdge], ...]:
    """Decode ``nodes`` (an array of two-edge arrays) with one-line errors naming the JSON path.

    Types and op names are checked here; the shape rules (inputs, widths, pools) by
    :meth:`CellSpec.problems`, which :func:`prunet.arch.io.validate` runs with the block's path.
    """
    from prunet.arch.io import ArchError, JsonReader

    if not isinstance(value, list) or not value:
        raise ArchError(path, "expected a non-empty JSON array of nodes, each [edge, edge]")
    if len(value) > MAX_NODES:
        raise ArchError(path, f"expected at most {MAX_NODES} nodes, got {len(value)}")
    nodes = []
    for i, node in enumerate(value):
        if not isinstance(node, list) or len(node) != 2:
            raise ArchError(f"{path}[{i}]", "expected an array of exactly two edges")
        edges = []
        for j, obj in enumerate(node):
            r = JsonReader(obj, f"{path}[{i}][{j}]")
            edge = CellEdge(input=r.int("input", lo=0, hi=MAX_NODES), op=r.str("op", choices=CELL_OPS),
                            width=r.int("width", 0, lo=0))
            r.reject_unknown()
            edges.append(edge)
        nodes.append((edges[0], edges[1]))
    return tuple(nodes)
