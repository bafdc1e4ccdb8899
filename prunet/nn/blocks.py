"""The building blocks of every prunet network — the only implementation of each.

Zoo models, search supernets (after their choices collapse) and detection backbones all use these
classes, each constructed from its spec in :mod:`prunet.arch`. Parameter names follow timm's
EfficientNet blocks (``conv_pw``/``bn1``/``conv_dw``/...), so timm users find what they expect and
NVIDIA's non-distilled checkpoints map onto them one to one.
"""


import importlib
from functools import partial
from typing import Any, Optional

import torch
from timm.layers import BatchNormAct2d, DropPath, SelectAdaptivePool2d, get_act_layer
from timm.models._efficientnet_blocks import ConvBnAct as _TimmConvBnAct
from timm.models._efficientnet_blocks import SqueezeExcite as _TimmSqueezeExcite
from torch import nn

from prunet.arch import ConvSpec, FusedIRBSpec, HeadSpec, IRBSpec, block_type, conv_padding

ACT_LAYERS = {"relu": "relu", "silu": "silu"}


def act_layer(name: str) -> "type[nn.Module]":
    return get_act_layer(ACT_LAYERS[name])


def _conv(in_chs: int, out_chs: int, kernel: int, stride: int = 1, padding: str = "symmetric",
          groups: int = 1, bias: bool = False, **dd: Any) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, kernel, stride=stride, padding=conv_padding(kernel, stride, padding),
                     groups=groups, bias=bias, **dd)


class SqueezeExcite(_TimmSqueezeExcite):
    """timm's EfficientNet squeeze-and-excitation (``conv_reduce``/``act1``/``conv_expand``/``gate``,
    NVIDIA's names too) on the hidden tensor, its width given explicitly (``se_chs``) because
    NVIDIA's rounding of it depends on the expansion ratio, which a searched block may not have."""

    def __init__(self, chs: int, se_chs: int, act: str = "relu", **dd: Any):
        super().__init__(chs, rd_channels=se_chs, act_layer=act_layer(act), **dd)


class ConvBnAct(_TimmConvBnAct):
    """timm's EfficientNet ConvBnAct (``conv``/``bn1``, NVIDIA's names too) built from a spec: Conv →
    BN → act, no residual; used for stems and for NVIDIA's plain 'conv' layers."""

    def __init__(self, spec: ConvSpec, drop_path_rate: float = 0.0, **dd: Any):
        # drop_path_rate: accepted like every block's, unused (no residual)
        super().__init__(spec.in_chs, spec.out_chs, spec.kernel, stride=spec.stride,
                         pad_type=conv_padding(spec.kernel, spec.stride, spec.padding), act_layer=act_layer(spec.act),
                         norm_layer=partial(BatchNormAct2d, eps=spec.bn_eps), **dd)
        self.spec = spec


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


class ClassifierHead(nn.Module):
    """1×1 conv + BN + act → global pool → (1×1 conv + act) → dropout → linear.

    The post-pool conv exists for NVIDIA's distilled GPUNets (and MobileNetV3-style heads).
    Split in two so timm's ``forward_features`` can end at the 1×1 conv, as in EfficientNet.
    """

    def __init__(self, spec: HeadSpec, global_pool: str = "avg", drop_rate: Optional[float] = None, **dd: Any):
        super().__init__()
        self.spec = spec
        self.num_classes = spec.num_classes
        self.num_features = spec.conv_chs
        self.head_hidden_size = spec.post_pool_chs or spec.conv_chs
        self.conv_head = nn.Conv2d(spec.in_chs, spec.conv_chs, 1, bias=False, **dd)
        self.norm_head = BatchNormAct2d(spec.conv_chs, eps=spec.bn_eps, act_layer=act_layer(spec.act), **dd)
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool)
        if spec.post_pool_chs:
            self.conv_post_pool = nn.Conv2d(spec.conv_chs, spec.post_pool_chs, 1, bias=False, **dd)
            self.act_post_pool = act_layer(spec.act)(inplace=True)
        else:
            self.conv_post_pool = nn.Identity()
            self.act_post_pool = nn.Identity()
        self.flatten = nn.Flatten(1) if global_pool else nn.Identity()
        self.head_drop = nn.Dropout(spec.dropout if drop_rate is None else drop_rate)
        self.classifier = (nn.Linear(self.head_hidden_size, spec.num_classes, **dd)
                           if spec.num_classes > 0 else nn.Identity())

    def reset(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        ref = next(self.parameters(), None)
        dd = dict(device=ref.device, dtype=ref.dtype) if ref is not None else {}
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool)
            self.flatten = nn.Flatten(1) if global_pool else nn.Identity()
        if num_classes > 0:
            self.classifier = nn.Linear(self.head_hidden_size, num_classes, **dd)
            self.classifier.train(self.training)
        else:
            self.classifier = nn.Identity()

    def forward_conv(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_head(self.conv_head(x))

    def forward_pooled(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = self.flatten(self.act_post_pool(self.conv_post_pool(x)))
        if pre_logits:
            return x
        return self.classifier(self.head_drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_pooled(self.forward_conv(x))


def build_block(spec: Any, drop_path_rate: float = 0.0, **dd: Any) -> nn.Module:
    """The one place a block spec becomes a module: its type's registered class (see
    :mod:`prunet.arch.registry`), so a new block type needs no edit here."""
    module_name, _, class_name = block_type(spec).module.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(spec, drop_path_rate=drop_path_rate, **dd)
