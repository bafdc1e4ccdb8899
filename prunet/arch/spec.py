"""Typed architecture specs: the plain data every prunet network is decoded from.

A spec holds *resolved* numbers (hidden widths, SE widths, padding, BN eps) rather than the
formulas that produced them. That is deliberate: NVIDIA's two builders derive hidden widths
differently (``make_divisible(in * expansion)`` vs ``in * expansion``), and the search writes
hidden widths that no expansion ratio describes. Keeping the result, not the rule, lets one
builder serve all of them and makes a JSON file a complete description of the network.

This module must not import torch: specs are read, validated and written by tools (CLI,
latency tables, search bookkeeping) that should not pay for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, Union

Activation = Literal["relu", "silu"]
Padding = Literal["symmetric", "valid"]
ACTIVATIONS: tuple[str, ...] = ("relu", "silu")
PADDINGS: tuple[str, ...] = ("symmetric", "valid")


def conv_padding(kernel: int, stride: int, mode: str) -> int:
    """Padding in pixels for a conv; 'valid' exists because NVIDIA's fused-IRB stride-2 convs
    ask for TF 'same' padding that their helper silently turns into no padding at all."""
    if mode == "valid":
        return 0
    return ((stride - 1) + (kernel - 1)) // 2


def conv_out_hw(hw: tuple[int, int], kernel: int, stride: int, padding: str = "symmetric") -> tuple[int, int]:
    """Spatial size after a conv: the one formula the reader, builder, tables and spaces share."""
    p = conv_padding(kernel, stride, padding)
    return ((hw[0] + 2 * p - kernel) // stride + 1, (hw[1] + 2 * p - kernel) // stride + 1)


@dataclass(frozen=True)
class ConvSpec:
    """Conv → BN → activation (no residual: NVIDIA's ConvBnAct never adds one)."""

    in_chs: int
    out_chs: int
    kernel: int = 3
    stride: int = 1
    act: Activation = "relu"
    bn_eps: float = 1e-5
    padding: Padding = "symmetric"
    type: Literal["conv"] = "conv"

    def out_hw(self, hw: tuple[int, int]) -> tuple[int, int]:
        return conv_out_hw(hw, self.kernel, self.stride, self.padding)


@dataclass(frozen=True)
class _BottleneckSpec:
    """Fields shared by the two inverted-bottleneck kinds (siblings, never parent and child)."""

    in_chs: int
    out_chs: int
    hidden_chs: int
    kernel: int = 3
    stride: int = 1
    act: Activation = "relu"
    se_chs: int = 0
    bn_eps: float = 1e-5
    padding: Padding = "symmetric"

    @property
    def has_residual(self) -> bool:
        return self.stride == 1 and self.in_chs == self.out_chs

    def out_hw(self, hw: tuple[int, int]) -> tuple[int, int]:
        """The strided k×k conv (depthwise or fused expand) sets the output size."""
        return conv_out_hw(hw, self.kernel, self.stride, self.padding)


@dataclass(frozen=True)
class IRBSpec(_BottleneckSpec):
    """Inverted bottleneck: 1×1 expand → k×k depthwise → optional SE → 1×1 project."""

    type: Literal["irb"] = "irb"


@dataclass(frozen=True)
class FusedIRBSpec(_BottleneckSpec):
    """Fused inverted bottleneck (EdgeResidual / FusedMBConv): k×k expand → SE → 1×1 project."""

    type: Literal["fused_irb"] = "fused_irb"


BlockSpec = Union[ConvSpec, IRBSpec, FusedIRBSpec]


@dataclass(frozen=True)
class HeadSpec:
    """Classifier head.

    ``conv_chs``: 1×1 conv + BN + act before pooling (the feature map's final width).
    ``post_pool_chs``: optional 1×1 conv (no BN) + act after pooling, as in NVIDIA's distilled
    ("-D") GPUNets and MobileNetV3; ``None`` when absent.
    """

    in_chs: int
    conv_chs: int
    num_classes: int = 1000
    act: Activation = "relu"
    bn_eps: float = 1e-5
    post_pool_chs: int | None = None
    dropout: float = 0.2


@dataclass(frozen=True)
class Provenance:
    """Where a spec came from: an NVIDIA config, a search run, a hand-written baseline."""

    source: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Latency:
    """A latency figure attached to an architecture, always with how it was obtained."""

    value_ms: float
    kind: Literal["measured", "predicted", "published"]
    protocol: str = ""
    source: str = ""


@dataclass(frozen=True)
class ArchSpec:
    """A whole network: stem convs, a flat list of blocks, a head, and metadata."""

    name: str
    input_size: tuple[int, int, int]
    stem: tuple[ConvSpec, ...]
    blocks: tuple[BlockSpec, ...]
    head: HeadSpec
    drop_path_rate: float = 0.0
    provenance: Provenance = field(default_factory=Provenance)
    latency: tuple[Latency, ...] = ()

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def stride_after(self) -> list[int]:
        """Cumulative stride after the stem (index 0) and after each block (index i + 1)."""
        stride = 1
        for conv in self.stem:
            stride *= conv.stride
        out = [stride]
        for block in self.blocks:
            stride *= block.stride
            out.append(stride)
        return out

    def with_num_classes(self, num_classes: int) -> "ArchSpec":
        return replace(self, head=replace(self.head, num_classes=num_classes))


def spec_fields(cls: type) -> dict[str, Any]:
    """Field name → default (or ``...`` when required), used by the JSON decoder's checks."""
    from dataclasses import MISSING

    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
        else:
            out[f.name] = ...
    return out
