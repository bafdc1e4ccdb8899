"""The building blocks of every prunet network — the only implementation of each.

Zoo models, search supernets (after their choices collapse) and detection backbones all use these
classes, each constructed from its spec in :mod:`prunet.arch`. Parameter names follow timm's
EfficientNet blocks (``conv_pw``/``bn1``/``conv_dw``/...), so timm users find what they expect and
NVIDIA's non-distilled checkpoints map onto them one to one.
"""


from typing import Any

import torch
from timm.layers import BatchNormAct2d, DropPath, get_act_layer
from torch import nn

from prunet.arch import ConvSpec, FusedIRBSpec, IRBSpec, conv_padding

ACT_LAYERS = {"relu": "relu", "silu": "silu"}


def act_layer(name: str) -> "type[nn.Module]":
    return get_act_layer(ACT_LAYERS[name])


def _conv(in_chs: int, out_chs: int, kernel: int, stride: int = 1, padding: str = "symmetric",
          groups: int = 1, bias: bool = False, **dd: Any) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, kernel, stride=stride, padding=conv_padding(kernel, stride, padding),
                     groups=groups, bias=bias, **dd)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation on the hidden tensor; width given explicitly (``se_chs``) because
    NVIDIA's rounding of it depends on the expansion ratio, which a searched block may not have."""

    def __init__(self, chs: int, se_chs: int, act: str = "relu", **dd: Any):
        super().__init__()
        self.conv_reduce = nn.Conv2d(chs, se_chs, 1, bias=True, **dd)
        self.act1 = act_layer(act)(inplace=True)
        self.conv_expand = nn.Conv2d(se_chs, chs, 1, bias=True, **dd)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.conv_expand(self.act1(self.conv_reduce(s)))
        return x * self.gate(s)


class ConvBnAct(nn.Module):
    """Conv → BN → act; used for stems and for NVIDIA's plain 'conv' layers."""

    def __init__(self, spec: ConvSpec, **dd: Any):
        super().__init__()
        self.spec = spec
        self.conv = _conv(spec.in_chs, spec.out_chs, spec.kernel, spec.stride, spec.padding, **dd)
        self.bn1 = BatchNormAct2d(spec.out_chs, eps=spec.bn_eps, act_layer=act_layer(spec.act), **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv(x))


class InvertedResidual(nn.Module):
    """MBConv: 1×1 expand → k×k depthwise → SE → 1×1 linear projection (+ residual)."""

    def __init__(self, spec: IRBSpec, drop_path_rate: float = 0.0, **dd: Any):
        super().__init__()
        self.spec = spec
        act = act_layer(spec.act)
        mid = spec.hidden_chs
        self.has_residual = spec.has_residual
        self.conv_pw = _conv(spec.in_chs, mid, 1, **dd)
        self.bn1 = BatchNormAct2d(mid, eps=spec.bn_eps, act_layer=act, **dd)
        self.conv_dw = _conv(mid, mid, spec.kernel, spec.stride, spec.padding, groups=mid, **dd)
        self.bn2 = BatchNormAct2d(mid, eps=spec.bn_eps, act_layer=act, **dd)
        self.se = SqueezeExcite(mid, spec.se_chs, spec.act, **dd) if spec.se_chs else nn.Identity()
        self.conv_pwl = _conv(mid, spec.out_chs, 1, **dd)
        self.bn3 = BatchNormAct2d(spec.out_chs, eps=spec.bn_eps, apply_act=False, **dd)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 and self.has_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.bn1(self.conv_pw(x))
        x = self.bn2(self.conv_dw(x))
        x = self.se(x)
        x = self.bn3(self.conv_pwl(x))
        if self.has_residual:
            x = self.drop_path(x) + shortcut
        return x


class FusedInvertedResidual(nn.Module):
    """Fused MBConv (EdgeResidual): k×k expand → SE → 1×1 linear projection (+ residual)."""

    def __init__(self, spec: FusedIRBSpec, drop_path_rate: float = 0.0, **dd: Any):
        super().__init__()
        self.spec = spec
        mid = spec.hidden_chs
        self.has_residual = spec.has_residual
        self.conv_exp = _conv(spec.in_chs, mid, spec.kernel, spec.stride, spec.padding, **dd)
        self.bn1 = BatchNormAct2d(mid, eps=spec.bn_eps, act_layer=act_layer(spec.act), **dd)
        self.se = SqueezeExcite(mid, spec.se_chs, spec.act, **dd) if spec.se_chs else nn.Identity()
        self.conv_pwl = _conv(mid, spec.out_chs, 1, **dd)
        self.bn2 = BatchNormAct2d(spec.out_chs, eps=spec.bn_eps, apply_act=False, **dd)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 and self.has_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.bn1(self.conv_exp(x))
        x = self.se(x)
        x = self.bn2(self.conv_pwl(x))
        if self.has_residual:
            x = self.drop_path(x) + shortcut
        return x


def build_block(spec: "ConvSpec | IRBSpec | FusedIRBSpec", drop_path_rate: float = 0.0, **dd: Any) -> nn.Module:
    """The one place a block spec becomes a module."""
    if isinstance(spec, ConvSpec):
        return ConvBnAct(spec, **dd)
    if isinstance(spec, IRBSpec):
        return InvertedResidual(spec, drop_path_rate, **dd)
    if isinstance(spec, FusedIRBSpec):
        return FusedInvertedResidual(spec, drop_path_rate, **dd)
    raise TypeError(f"no block module for spec type {type(spec).__name__}")
