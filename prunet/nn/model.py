"""The one network class every prunet/GPUNet architecture is built as.

Blocks are grouped into *stages* at every stride-2 block, so stage ``i`` ends at feature level
``i`` (stride ``stem_stride * 2**i``). That grouping is what timm's ``feature_info``,
``forward_intermediates`` and detection necks need, and it is derived from the spec rather than
from NVIDIA's ``stage`` labels, which do not line up with strides.
"""


from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from timm.models import checkpoint_seq
from timm.models._features import feature_take_indices  # not re-exported by timm.models (1.0.31)
from torch import nn

from prunet.arch import ArchSpec
from prunet.nn.blocks import ClassifierHead, ConvBnAct, build_block


def stage_layout(spec: ArchSpec) -> list[list[int]]:
    """Block indices per stage: a new stage starts at each stride-2 block."""
    stages: list[list[int]] = [[]]
    for i, block in enumerate(spec.blocks):
        if block.stride > 1:
            stages.append([])
        stages[-1].append(i)
    return stages


def block_module_names(spec: ArchSpec) -> list[str]:
    """Module path of each block in :class:`PruNet` (``stages.<s>.<j>``), by block index."""
    names: list[str] = [""] * len(spec.blocks)
    for s, idxs in enumerate(stage_layout(spec)):
        for j, i in enumerate(idxs):
            names[i] = f"stages.{s}.{j}"
    return names


def feature_map_size(spec: ArchSpec, size: Tuple[int, int]) -> list[Tuple[int, int]]:
    """Spatial size after the stem and after each stage, for an input of ``size``."""
    hw = tuple(size)
    out = []
    for c in spec.stem:
        hw = c.out_hw(hw)
    for idxs in stage_layout(spec):
        for i in idxs:
            hw = spec.blocks[i].out_hw(hw)
        out.append(hw)
    return out


WEIGHT_INITS = ("efficientnet", "torch")


def init_weights(model: nn.Module) -> None:
    """Initialise like timm's EfficientNet family and the MnasNet/EfficientNet papers.

    Conv weights ~ N(0, sqrt(2 / fan_out)) (fan-out per group), BN γ=1, β=0, linear weights
    ~ U(±1/sqrt(out_features)), all biases 0. PyTorch's defaults (Kaiming-uniform with a=sqrt(5),
    non-zero biases) are what the zoo nets had before; ``weight_init="torch"`` keeps them so that
    older runs can be reproduced. The effect on the proxy training is measured in
    ``benchmarks/init_effect.py``.
    """
    from timm.models._efficientnet_builder import efficientnet_init_weights

    efficientnet_init_weights(model)


class PruNet(nn.Module):
    """Stem → stages of blocks → 1×1 conv head → pool → (post-pool conv) → classifier.

    timm's model API is implemented in full so the zoo behaves like any timm model:
    ``forward_features``/``forward_head``, ``reset_classifier``, ``forward_intermediates``,
    ``feature_info``, ``group_matcher``, gradient checkpointing.
    """

    def __init__(
        self,
        arch: ArchSpec,
        num_classes: Optional[int] = None,
        in_chans: Optional[int] = None,
        global_pool: str = "avg",
        drop_rate: Optional[float] = None,
        drop_path_rate: Optional[float] = None,
        device: Any = None,
        dtype: Any = None,
        weight_init: str = "efficientnet",
    ):
        super().__init__()
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"weight_init: expected one of {WEIGHT_INITS}, got {weight_init!r}")
        dd = dict(device=device, dtype=dtype)
        if in_chans is not None and in_chans != arch.input_size[0]:
            from dataclasses import replace

            arch = replace(arch, input_size=(in_chans, *arch.input_size[1:]),
                           stem=(replace(arch.stem[0], in_chs=in_chans), *arch.stem[1:]))
        if num_classes is not None:
            arch = arch.with_num_classes(num_classes)
        self.arch = arch
        head = arch.head
        self.num_classes = head.num_classes
        self.in_chans = arch.input_size[0]
        self.drop_rate = head.dropout if drop_rate is None else drop_rate
        self.grad_checkpointing = False
        dpr = arch.drop_path_rate if drop_path_rate is None else drop_path_rate

        self.stem = nn.Sequential(*[ConvBnAct(c, **dd) for c in arch.stem])
        n = max(len(arch.blocks), 1)
        stages = []
        for idxs in stage_layout(arch):
            stages.append(nn.Sequential(*[build_block(arch.blocks[i], dpr * i / n, **dd) for i in idxs]))
        self.stages = nn.Sequential(*stages)

        stem_stride = 1
        for c in arch.stem:
            stem_stride *= c.stride
        self.feature_info: List[Dict[str, Any]] = []
        chs = arch.stem[-1].out_chs
        for s, idxs in enumerate(stage_layout(arch)):
            if idxs:
                chs = arch.blocks[idxs[-1]].out_chs
            self.feature_info.append(dict(num_chs=chs, reduction=stem_stride * 2 ** s, module=f"stages.{s}"))
        self.stage_ends = list(range(len(self.feature_info)))

        self.head = ClassifierHead(head, global_pool, self.drop_rate, **dd)
        self.num_features = self.head.num_features
        self.head_hidden_size = self.head.head_hidden_size
        if weight_init == "efficientnet":
            init_weights(self)

    # ------------------------------------------------------------------ timm API

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)",
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.classifier

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Outputs of the feature levels in ``indices`` (timm semantics), optionally stopping early."""
        assert output_fmt == "NCHW", "Output format must be NCHW."
        if stop_early:
            assert intermediates_only, "Must use intermediates_only for early stopping."
        intermediates: List[torch.Tensor] = []
        take_indices, max_index = feature_take_indices(len(self.stage_ends), indices)
        x = self.stem(x)
        if torch.jit.is_scripting() or not stop_early:
            stages = self.stages
        else:
            stages = self.stages[: max_index + 1]
        for feat_idx, stage in enumerate(stages):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
            if feat_idx in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        x = self.head.forward_conv(x)
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: Union[int, List[int]] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages (and head) not needed to produce the requested feature levels."""
        take_indices, max_index = feature_take_indices(len(self.stage_ends), indices)
        self.stages = self.stages[: max_index + 1]
        if prune_head:
            self.head.conv_head = nn.Identity()
            self.head.norm_head = nn.Identity()
            self.head.conv_post_pool = nn.Identity()
            self.head.act_post_pool = nn.Identity()
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.stages, x, flatten=True)
        else:
            x = self.stages(x)
        return self.head.forward_conv(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head.forward_pooled(x, pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
