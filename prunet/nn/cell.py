"""The cell block (:class:`prunet.arch.cell.CellSpec`): a DAG of zoo blocks, pools and skips.

Conv edges are the zoo's own :class:`InvertedResidual` / :class:`FusedInvertedResidual`, built by
:func:`build_block` from the edge's spec, so a cell exports to ONNX as plain convs, pools and adds
and its edges carry the same parameter names as every other block.
"""

from typing import Any

import torch
from torch import nn

from prunet.arch import conv_padding
from prunet.arch.cell import CellEdge, CellFreeSpec, CellSpec
from prunet.nn.blocks import build_block


def edge_op(spec: CellSpec, edge: CellEdge, **dd: Any) -> nn.Module:
    """The module of one edge (its kept width for conv ops)."""
    block = spec.edge_block(edge)
    if block is not None:
        return build_block(block, **dd)
    return free_op(edge.op, spec.edge_shape(edge)[1])


def free_op(op: str, stride: int) -> nn.Module:
    """A parameter-free edge op (pooling keeps 'same' padding, so every input edge agrees on size)."""
    pad = conv_padding(3, stride, "symmetric")
    if op == "max_pool_3x3":
        return nn.MaxPool2d(3, stride, pad)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride, pad, count_include_pad=False)
    if op == "skip" and stride == 1:
        return nn.Identity()
    raise ValueError(f"cell edge op: no parameter-free op {op!r} at stride {stride}")


class Cell(nn.Module):
    """Node ``i`` = sum of its two edges; output = sum of all nodes (``edges.<node>_<k>``)."""

    def __init__(self, spec: CellSpec, drop_path_rate: float = 0.0, **dd: Any):
        # drop_path_rate: accepted like every block's; a cell has no single residual to drop
        super().__init__()
        problems = list(spec.problems())
        if problems:
            path, message = problems[0]
            raise ValueError(f"cell {path}: {message}")
        self.spec = spec
        self.inputs = [[e.input for e in node] for node in spec.nodes]
        self.edges = nn.ModuleDict({f"{i}_{k}": edge_op(spec, e, **dd)
                                    for i, node in enumerate(spec.nodes) for k, e in enumerate(node)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x]
        for i, (a, b) in enumerate(self.inputs):
            states.append(self.edges[f"{i}_0"](states[a]) + self.edges[f"{i}_1"](states[b]))
        out = states[1]
        for s in states[2:]:
            out = out + s
        return out


class FreePart(nn.Module):
    """A cell's parameter-free part as the latency table times it (:class:`CellFreeSpec`): one
    pooling/skip edge, or the node sums (each node adds two tensors, the output adds the nodes:
    ``2·nodes − 1`` adds of ``out_chs`` tensors, computed in the order :class:`Cell` does)."""

    def __init__(self, spec: CellFreeSpec, drop_path_rate: float = 0.0, **dd: Any):
        super().__init__()
        self.spec = spec
        self.op = None if spec.op == "sum" else free_op(spec.op, spec.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.op is not None:
            return self.op(x)
        states = [x]
        for _ in range(self.spec.nodes):
            states.append(states[-1] + x)
        out = states[1]
        for s in states[2:]:
            out = out + s
        return out
