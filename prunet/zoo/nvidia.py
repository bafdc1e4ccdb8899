"""NVIDIA GPUNet checkpoints → prunet state dicts.

NVIDIA's builder names modules by their position in the JSON (``network.stage: 3 layer7.conv_pw``,
``network.head:.net.0``, ``network.tail:.net.8``), and its distilled blocks are anonymous
``nn.Sequential`` bodies. We map by *order* (the trailing layer number NVIDIA puts in every name)
and by per-block-type suffix tables, so the mapping needs nothing but the spec — the same one the
model was built from — and works for any config NVIDIA's builder accepts.
"""

from __future__ import annotations

import argparse
import io
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch
from timm.models import clean_state_dict
from timm.models import load_state_dict as timm_load_state_dict

from prunet import _weights_only
from prunet.arch import ArchSpec, ConvSpec, FusedIRBSpec, IRBSpec
from prunet.nn import block_module_names


class CheckpointError(ValueError):
    """A checkpoint does not fit the model; the message lists what is missing/unexpected."""


# suffix maps: NVIDIA sub-module prefix → ours (within one layer)
_IRB = {"conv_pw": "conv_pw", "bn1": "bn1", "conv_dw": "conv_dw", "bn2": "bn2", "se.conv_reduce": "se.conv_reduce",
        "se.conv_expand": "se.conv_expand", "conv_pwl": "conv_pwl", "bn3": "bn3"}
_IRB_DISTILL = {"body.0": "conv_pw", "body.1": "bn1", "body.3": "conv_dw", "body.4": "bn2", "body.6": "conv_pwl",
                "body.7": "bn3"}
_FUSED = {"conv_exp": "conv_exp", "bn1": "bn1", "se.conv_reduce": "se.conv_reduce", "se.conv_expand": "se.conv_expand",
          "conv_pwl": "conv_pwl", "bn2": "bn2"}
_FUSED_DISTILL = {"body.0": "conv_exp", "body.1": "bn1", "body.3": "conv_pwl", "body.4": "bn2"}
_CONV = {"conv": "conv", "bn1": "bn1"}
_STEM = {"net.0": "stem.0.conv", "net.1": "stem.0.bn1", "net.3": "stem.1.conv", "net.4": "stem.1.bn1",
         "net.6": "stem.2.conv", "net.7": "stem.2.bn1"}
_HEAD = {"net.0": "head.conv_head", "net.1": "head.norm_head", "net.6": "head.classifier"}
_HEAD_DISTILL = {"net.0": "head.conv_head", "net.1": "head.norm_head", "net.4": "head.conv_post_pool",
                 "net.8": "head.classifier"}

_LAYER_NUMBER = re.compile(r"(\d+)$")


def _layer_order(layer: str) -> float:
    """NVIDIA layer names end in their JSON position; the distilled head/tail have none."""
    m = _LAYER_NUMBER.search(layer)
    if m:
        return float(m.group(1))
    if layer.startswith("head"):
        return float("-inf")
    if layer.startswith("tail"):
        return float("inf")
    raise CheckpointError(f"unrecognised NVIDIA layer name {layer!r}")


def _split(key: str) -> tuple[str, str]:
    """``network.stage: 1 layer3.bn1.weight`` → (``stage: 1 layer3``, ``bn1.weight``)."""
    rest = key[len("network."):]
    layer, _, tail = rest.partition(".")
    return layer, tail


def is_nvidia_state_dict(sd: Mapping[str, Any]) -> bool:
    return any(k.startswith("network.") for k in sd)


def _map_suffix(tail: str, table: Mapping[str, str], layer: str) -> str:
    for src, dst in table.items():
        if tail.startswith(src + "."):
            return dst + tail[len(src):]
    raise CheckpointError(f"unexpected NVIDIA parameter {layer!r}.{tail} (expected one of {sorted(table)})")


def convert_nvidia_state_dict(nvidia_sd: Mapping[str, torch.Tensor], spec: ArchSpec) -> "OrderedDict[str, torch.Tensor]":
    """Rename an NVIDIA GPUNet state dict (NGC checkpoint or ``GPUNet_Builder`` model) to ours.

    Raises :class:`CheckpointError` if the checkpoint's layers do not line up with ``spec``.
    """
    sd = strip_wrappers(nvidia_sd)
    if not is_nvidia_state_dict(sd):
        raise CheckpointError("not an NVIDIA GPUNet state dict: no key starts with 'network.'")
    layers: dict[str, list[tuple[str, torch.Tensor]]] = {}
    for key, value in sd.items():
        if not key.startswith("network."):
            raise CheckpointError(f"unexpected key {key!r} (NVIDIA keys all start with 'network.')")
        layer, tail = _split(key)
        layers.setdefault(layer, []).append((tail, value))
    ordered = sorted(layers, key=_layer_order)
    units = ["stem", *range(len(spec.blocks)), "head"]
    if len(ordered) != len(units):
        raise CheckpointError(
            f"checkpoint has {len(ordered)} NVIDIA layers, the architecture {spec.name!r} expects {len(units)} "
            f"(stem + {len(spec.blocks)} blocks + head): is it a checkpoint of another model?")
    names = block_module_names(spec)
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for layer, unit in zip(ordered, units):
        if unit == "stem":
            table, prefix = _STEM, ""
        elif unit == "head":
            table, prefix = (_HEAD_DISTILL if spec.head.post_pool_chs else _HEAD), ""
        else:
            block = spec.blocks[unit]  # type: ignore[index]
            prefix = names[unit] + "."  # type: ignore[index]
            uses_body = any(t.startswith("body.") for t, _ in layers[layer])
            if isinstance(block, IRBSpec):
                table = _IRB_DISTILL if uses_body else _IRB
            elif isinstance(block, FusedIRBSpec):
                table = _FUSED_DISTILL if uses_body else _FUSED
            elif isinstance(block, ConvSpec):
                table = _CONV
            else:  # pragma: no cover - specs are closed
                raise CheckpointError(f"no NVIDIA mapping for {type(block).__name__}")
        for tail, value in layers[layer]:
            out[prefix + _map_suffix(tail, table, layer)] = value
    return out


def strip_wrappers(sd: Mapping[str, Any]) -> Mapping[str, Any]:
    """Drop DDP's ``module.`` and torch.compile's ``_orig_mod.`` prefixes (timm's ``clean_state_dict``)."""
    return clean_state_dict(dict(sd))


def extract_state_dict(obj: Any, prefer_ema: bool = True) -> Mapping[str, torch.Tensor]:
    """The state dict inside a checkpoint container (timm/NVIDIA training checkpoints nest it)."""
    if isinstance(obj, Mapping):
        order = ("state_dict_ema", "model_ema", "state_dict", "model") if prefer_ema else (
            "state_dict", "model", "state_dict_ema", "model_ema")
        for key in order:
            if key in obj and isinstance(obj[key], Mapping):
                return strip_wrappers(obj[key])
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return strip_wrappers(obj)
    raise CheckpointError("no state dict found in checkpoint (expected a tensor dict or one under "
                          "'state_dict_ema'/'state_dict'/'model')")


def read_checkpoint(path: str | Path, prefer_ema: bool = True) -> Mapping[str, torch.Tensor]:
    """Read NVIDIA's NGC zip (holding ``<config>.pth.tar``), a ``.pth``/``.pth.tar`` or safetensors file.

    Weights-only: a checkpoint is data and must never run code. Files other than NGC zips are
    read by timm's ``load_state_dict`` (safetensors or ``torch.load(weights_only=True)``, the EMA
    weights when ``prefer_ema`` and the file has them, wrapper prefixes removed).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if zipfile.is_zipfile(path) and not _is_torch_zip(path):
        return _read_ngc_zip(path, prefer_ema)
    try:
        sd = timm_load_state_dict(str(path), use_ema=prefer_ema, weights_only=True)
    except Exception as e:  # noqa: BLE001 - safetensors, torch and timm raise many types for a bad file
        raise CheckpointError(_unreadable(path, e)) from None
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: no state dict found in checkpoint (expected a tensor dict or one under "
                              "'state_dict_ema'/'state_dict'/'model')")
    return sd


def _unreadable(path: Path, err: Exception) -> str:
    """One line for a file timm's reader did not accept (code named in the pickle, or no checkpoint)."""
    if path.suffix == ".safetensors":
        msg = str(err)
        return f"{path}: not a readable safetensors file ({msg.splitlines()[0] if msg else type(err).__name__})"
    return _weights_only.describe_failure(str(path), err)


def _read_ngc_zip(path: Path, prefer_ema: bool) -> Mapping[str, torch.Tensor]:
    """NGC serves a zip around NVIDIA's ``.pth.tar``: read the one member, weights-only.

    NVIDIA trained with timm's train.py, whose checkpoints keep the run's ``argparse.Namespace``
    as ``args``: plain data, allowed as timm's own reader allows it.
    """
    with zipfile.ZipFile(path) as zf:
        members = [n for n in zf.namelist() if n.endswith((".pth.tar", ".pth", ".pt"))]
        if len(members) != 1:
            raise CheckpointError(f"{path}: expected one .pth/.pth.tar file in the NGC zip, found {members}")
        data = zf.read(members[0])
    obj = _weights_only.load(io.BytesIO(data), f"{path}:{members[0]}", CheckpointError, allow=[argparse.Namespace])
    return extract_state_dict(obj, prefer_ema=prefer_ema)


def _is_torch_zip(path: Path) -> bool:
    """torch.save files are zips too; they hold a ``*/data.pkl`` member."""
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("data.pkl") for n in zf.namelist())


def check_state_dict(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Compare keys and shapes before touching the model, so a wrong checkpoint changes nothing."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{source} does not fit {type(model).__name__} "
                 f"'{getattr(getattr(model, 'arch', None), 'name', '?')}':"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
                parts.append(f"  {title}: {shown}")
        raise CheckpointError("\n".join(parts))


def load_into(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], spec: ArchSpec | None = None,
              source: str = "checkpoint") -> None:
    """Load ours or NVIDIA's weights (detected by key names) into a built model, all or nothing."""
    sd = strip_wrappers(sd)
    if is_nvidia_state_dict(sd):
        spec = spec or getattr(model, "arch")
        sd = convert_nvidia_state_dict(sd, spec)
    check_state_dict(model, sd, source)
    model.load_state_dict(sd, strict=True)
