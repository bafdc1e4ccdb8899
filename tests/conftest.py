"""Fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """A small architecture JSON and matching random weights (our key names)."""
    from safetensors.torch import save_file

    from prunet.arch import ArchSpec, ConvSpec, HeadSpec, IRBSpec, save
    from prunet.zoo import build

    d = tmp_path_factory.mktemp("tiny")
    spec = ArchSpec("tiny", (3, 32, 32), (ConvSpec(3, 8, 3, 2),), (IRBSpec(8, 8, 16, 3, 1),), HeadSpec(8, 16, 10))
    arch = save(spec, d / "tiny.json")
    weights = d / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in build(spec).state_dict().items()}, str(weights))
    return arch, weights
