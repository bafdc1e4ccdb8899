"""The model zoo: named architectures, timm registration, weights (HF Hub, NVIDIA NGC)."""

from prunet.zoo.factory import (
    PruNetZooModel,
    WeightsUnavailableError,
    build,
    create_model,
    load_checkpoint,
    pretrained_cfg_for,
)
from prunet.zoo.nvidia import CheckpointError, convert_nvidia_state_dict, read_checkpoint
from prunet.zoo.registry import UnknownModelError, entry, get_arch, index, list_models

__all__ = [
    "CheckpointError", "PruNetZooModel", "UnknownModelError", "WeightsUnavailableError", "build",
    "convert_nvidia_state_dict", "create_model", "entry", "get_arch", "index", "list_models",
    "load_checkpoint", "pretrained_cfg_for", "read_checkpoint",
]
