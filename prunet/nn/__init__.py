"""Block modules and the network class; the only implementation of each block."""

from prunet.nn.blocks import (
    ClassifierHead,
    ConvBnAct,
    FusedInvertedResidual,
    InvertedResidual,
    SqueezeExcite,
    act_layer,
    build_block,
)
from prunet.nn.model import PruNet, block_module_names, feature_map_size, stage_layout
from prunet.nn.rep import RepBlock, inference_form

__all__ = [
    "ClassifierHead", "ConvBnAct", "FusedInvertedResidual", "InvertedResidual", "PruNet", "SqueezeExcite", "act_layer",
    "block_module_names", "build_block", "feature_map_size", "stage_layout", "RepBlock", "inference_form",
]
