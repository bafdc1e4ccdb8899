"""Architecture specs: plain data (no torch) that every prunet network is built from."""

from prunet.arch.io import (
    FORMAT,
    ArchError,
    JsonError,
    atomic_write_text,
    dumps,
    from_dict,
    from_nvidia,
    is_nvidia_config,
    load,
    loads_strict,
    make_divisible,
    save,
    to_dict,
    validate,
)
from prunet.arch.registry import BlockType, UnknownBlockType, block_type, block_types, register_block
from prunet.arch.spec import (
    ArchSpec,
    BlockSpec,
    ConvSpec,
    FusedIRBSpec,
    HeadSpec,
    IRBSpec,
    Latency,
    Provenance,
    conv_out_hw,
    conv_padding,
)

__all__ = [
    "FORMAT", "ArchError", "JsonError", "loads_strict", "atomic_write_text", "ArchSpec", "BlockSpec", "ConvSpec", "FusedIRBSpec", "HeadSpec", "IRBSpec",
    "Latency", "Provenance", "conv_out_hw", "conv_padding", "BlockType", "UnknownBlockType", "block_type",
    "block_types", "register_block", "dumps", "from_dict", "from_nvidia", "is_nvidia_config",
    "load", "make_divisible", "save", "to_dict", "validate",
]
