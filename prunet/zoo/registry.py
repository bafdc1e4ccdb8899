"""The zoo's index: which named architectures ship with prunet and what NVIDIA published for them.

The data lives in the top-level ``zoo/`` folder (installed as the package ``prunet.zoo_data``);
this module only reads it, once, and hands out validated specs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from prunet.arch import ArchError, ArchSpec, from_dict

INDEX_FORMAT = "prunet.zoo-index/1"


class UnknownModelError(KeyError):
    """A name that is neither in the zoo, nor a timm model, nor an arch JSON path."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


@dataclass(frozen=True)
class ZooEntry:
    name: str
    arch_file: str
    display_name: str
    input_size: tuple[int, int, int]
    eval_cfg: dict[str, Any]
    published: dict[str, Any]
    nvidia_config: str | None = None
    ngc_checkpoint_url: str | None = None
    ngc_checkpoint_member: str | None = None
    hf_hub_id: str | None = None
    license: dict[str, Any] = field(default_factory=dict)
    training_recipe: str = ""


def _data_text(name: str) -> str:
    return resources.files("prunet.zoo_data").joinpath(name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def index() -> dict[str, ZooEntry]:
    raw = json.loads(_data_text("index.json"))
    if raw.get("format") != INDEX_FORMAT:
        raise ArchError("format", f"expected {INDEX_FORMAT!r} in zoo/index.json, got {raw.get('format')!r}")
    out = {}
    for name, m in raw["models"].items():
        out[name] = ZooEntry(
            name=name, arch_file=m["arch"], display_name=m.get("display_name", name),
            input_size=tuple(m["input_size"]), eval_cfg=dict(m.get("eval", {})),
            published=dict(m.get("published", {})), nvidia_config=m.get("nvidia_config"),
            ngc_checkpoint_url=m.get("ngc_checkpoint_url"), ngc_checkpoint_member=m.get("ngc_checkpoint_member"),
            hf_hub_id=m.get("hf_hub_id"), license=dict(m.get("license", {})),
            training_recipe=m.get("training_recipe", ""),
        )
    return out


def list_models() -> list[str]:
    return list(index())


def entry(name: str) -> ZooEntry:
    try:
        return index()[name]
    except KeyError:
        raise UnknownModelError(f"unknown zoo model {name!r}; available: {', '.join(index())}") from None


@lru_cache(maxsize=None)
def get_arch(name: str) -> ArchSpec:
    """The validated spec of a zoo model (read from its JSON in ``zoo/``)."""
    e = entry(name)
    return from_dict(json.loads(_data_text(e.arch_file)), source=f"zoo/{e.arch_file}")
