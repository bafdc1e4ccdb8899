"""timm registration and model creation for the zoo and for any architecture JSON.

Zoo models are ordinary timm models: ``import prunet`` registers them, so
``timm.create_model('prunet_p0', pretrained=True, features_only=True)`` works as for any timm
network. Weights come from the HF Hub when a cfg names an ``hf_hub_id``; until NVIDIA's weights
are mirrored there, from NVIDIA's NGC zip, converted on the fly by :meth:`PruNetZooModel.load_pretrained`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

import timm
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from prunet.arch import ArchError, ArchSpec, load
from prunet.nn import PruNet, feature_map_size
from prunet.zoo import registry
from prunet.zoo.nvidia import CheckpointError, is_nvidia_state_dict, load_into, read_checkpoint

IMAGENET_MEAN, IMAGENET_STD = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD  # what NVIDIA evaluates with
PAPER_IDS = ("arXiv:2209.11785", "arXiv:2205.00841")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be fetched; the message says how to load a local file."""


class PruNetZooModel(PruNet):
    """:class:`PruNet` plus the hook timm calls for non-native weight files (NGC zips)."""

    def load_pretrained(self, checkpoint_path: str, prefix: str = "") -> None:
        load_into(self, read_checkpoint(checkpoint_path), self.arch, source=str(checkpoint_path))


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: PruNet) -> Mapping[str, Any]:
    """Let timm's loaders accept NVIDIA-keyed weights too (e.g. a Hub repo of raw NGC weights)."""
    from prunet.zoo.nvidia import convert_nvidia_state_dict, extract_state_dict

    sd = extract_state_dict(state_dict) if not all(hasattr(v, "shape") for v in state_dict.values()) else state_dict
    if is_nvidia_state_dict(sd):
        return convert_nvidia_state_dict(sd, model.arch)
    return sd


def pretrained_cfg_for(spec: ArchSpec, entry: registry.ZooEntry | None = None, **overrides: Any) -> dict[str, Any]:
    """timm pretrained_cfg: preprocessing as NVIDIA evaluates, pool size computed from the spec."""
    ev = dict(entry.eval_cfg) if entry else {}
    h, w = spec.input_size[1:]
    cfg: dict[str, Any] = dict(
        num_classes=spec.num_classes,
        input_size=tuple(spec.input_size),
        pool_size=feature_map_size(spec, (h, w))[-1],
        crop_pct=ev.get("crop_pct", 1.0),
        interpolation=ev.get("interpolation", "bicubic"),
        mean=tuple(ev.get("mean", IMAGENET_MEAN)),
        std=tuple(ev.get("std", IMAGENET_STD)),
        first_conv="stem.0.conv",
        classifier="head.classifier",
        paper_ids=PAPER_IDS,
        license=(entry.license.get("code", "apache-2.0").lower() if entry else "apache-2.0"),
        origin_url="https://github.com/NVIDIA/DeepLearningExamples/tree/master/PyTorch/Classification/GPUNet",
    )
    if entry is not None:
        if entry.hf_hub_id:
            cfg["hf_hub_id"] = entry.hf_hub_id
        elif entry.ngc_checkpoint_url:
            cfg["url"] = (entry.ngc_checkpoint_url, ngc_cache_name(entry.ngc_checkpoint_url))
            cfg["custom_load"] = True
    cfg.update(overrides)
    return cfg


def ngc_cache_name(url: str) -> str:
    """The file name a download from NGC is cached under (in ``$TORCH_HOME/hub/checkpoints``).

    Every NGC download URL ends in ``.../<model>/versions/<version>/zip`` and timm names a cached
    file after the URL's last segment, so all zoo models would share one file called ``zip`` and
    each would read whichever was downloaded first. A ``(url, name)`` pair gives each its own.
    No ``-`` in the name: timm reads ``-<hex>.`` in a cached name as a hash prefix to check.
    """
    parts = urlparse(url).path.strip("/").split("/")
    if len(parts) >= 4 and parts[-1] == "zip" and parts[-3] == "versions":
        name = f"{parts[-4]}_{parts[-2]}.zip"
    else:
        name = f"ngc_{hashlib.sha256(url.encode()).hexdigest()[:16]}.zip"
    return name.replace("-", "_")


def _create(variant: str, spec: ArchSpec, pretrained: bool = False, **kwargs: Any) -> PruNet:
    # Everything the getter needs comes from forward_intermediates; no forward hooks involved.
    kwargs.setdefault("feature_cfg", dict(feature_cls="getter", flatten_sequential=True))
    try:
        return build_model_with_cfg(PruNetZooModel, variant, pretrained, arch=spec,
                                    pretrained_filter_fn=checkpoint_filter_fn, **kwargs)
    except (OSError, ConnectionError) as e:
        if not pretrained:
            raise
        raise WeightsUnavailableError(_offline_message(variant, e)) from e
    except Exception as e:  # huggingface_hub raises its own error types when offline
        if pretrained and type(e).__module__.startswith(("huggingface_hub", "requests", "httpx", "urllib")):
            raise WeightsUnavailableError(_offline_message(variant, e)) from e
        raise


def _offline_message(variant: str, err: BaseException) -> str:
    return (
        f"could not download pretrained weights for {variant!r} ({type(err).__name__}: {err}).\n"
        "To load a checkpoint you already have (NVIDIA NGC zip/.pth.tar, or our model.safetensors):\n"
        f"  timm.create_model({variant!r}, pretrained=True, pretrained_cfg_overlay=dict(file='/path/to/checkpoint', custom_load=True))\n"
        f"or: model = prunet.create_model({variant!r}); prunet.zoo.load_checkpoint(model, '/path/to/checkpoint')"
    )


# ---------------------------------------------------------------------------- timm registration

# What ``prunet_arch`` builds when given no ``arch=``: timm requires every registered name to build
# with default arguments (its model tests, ``timm.list_models()`` loops). PruNet-P0 is the family's
# base network; the default carries no weights (``pretrained=True`` without a source is refused by timm).
PRUNET_ARCH_DEFAULT = "prunet_p0"

default_cfgs = generate_default_cfgs({
    **{name: pretrained_cfg_for(registry.get_arch(name), registry.entry(name)) for name in registry.list_models()},
    "prunet_arch": pretrained_cfg_for(registry.get_arch(PRUNET_ARCH_DEFAULT)),
})


def _register(name: str) -> None:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> PruNet:
        return _create(name, registry.get_arch(name), pretrained, **kwargs)

    entrypoint.__name__ = name
    entrypoint.__qualname__ = name
    entrypoint.__doc__ = f"{registry.entry(name).display_name}, built from zoo/{registry.entry(name).arch_file}."
    register_model(entrypoint)


for _name in registry.list_models():
    _register(_name)


@register_model
def prunet_arch(pretrained: bool = False, arch: Any = None, **kwargs: Any) -> PruNet:
    """Any architecture given inline (``arch=`` spec, JSON object or path): how Hub repos of
    searched networks load through ``timm.create_model('hf-hub:...')``. Without ``arch=``, the
    PruNet-P0 architecture (:data:`PRUNET_ARCH_DEFAULT`), untrained."""
    if arch is None:
        spec = registry.get_arch(PRUNET_ARCH_DEFAULT)
    else:
        spec = arch if isinstance(arch, ArchSpec) else load(arch)
    if kwargs.get("pretrained_cfg") is None:
        kwargs["pretrained_cfg"] = pretrained_cfg_for(spec)
    return _create("prunet_arch", spec, pretrained, **kwargs)


# ---------------------------------------------------------------------------- public API


def build(spec: ArchSpec, **kwargs: Any) -> PruNet:
    """Build a model from a spec (any spec: zoo, NVIDIA JSON, search output), without weights."""
    return _create(spec.name, spec, False, pretrained_cfg=pretrained_cfg_for(spec), **kwargs)


# Name prefixes timm resolves itself (a Hub repo, a folder written by timm.models.save_for_hf).
TIMM_SOURCES = ("hf-hub:", "local-dir:")


def is_timm_source(name: str) -> bool:
    """``hf-hub:owner/repo`` or ``local-dir:/path``: contains ``/`` but is no architecture file."""
    return name.startswith(TIMM_SOURCES)


def _looks_like_path(name: str) -> bool:
    return not is_timm_source(name) and (name.endswith(".json") or os.sep in name or Path(name).is_file())


def source_pretrained_cfg(name: str) -> dict[str, Any]:
    """The pretrained_cfg an ``hf-hub:``/``local-dir:`` model will be built with (reads only its
    config.json, no weights): what train and bench need to know before building it."""
    from timm.models import load_model_config_from_hf, parse_model_name
    from timm.models._hub import load_model_config_from_path

    source, model_id = parse_model_name(name)
    try:
        if source == "hf-hub":
            cfg, _, _ = load_model_config_from_hf(model_id)
        else:
            cfg, _, _ = load_model_config_from_path(model_id)
    except Exception as e:  # noqa: BLE001 - huggingface_hub, OSError and JSON errors alike
        raise registry.UnknownModelError(f"{name}: cannot read its config.json ({type(e).__name__}: "
                                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return dict(cfg)


def _create_from_source(name: str, pretrained: bool, **kwargs: Any) -> Any:
    """``timm.create_model`` for ``hf-hub:``/``local-dir:``; its config.json (read before any
    weights) missing or unreachable is one line naming the model, not a Hub/OS traceback."""
    source_pretrained_cfg(name)  # the same read timm does next; fails with UnknownModelError
    return timm.create_model(name, pretrained=pretrained, **kwargs)


def input_size_of(name: str) -> tuple[int, int, int]:
    """(C, H, W) a named model (zoo, timm, ``hf-hub:``/``local-dir:``, architecture JSON) was made for,
    without building it."""
    if name in registry.index():
        return tuple(registry.get_arch(name).input_size)  # type: ignore[return-value]
    if is_timm_source(name):
        return tuple(source_pretrained_cfg(name)["input_size"])  # type: ignore[return-value]
    if _looks_like_path(name):
        if not Path(name).is_file():
            raise ArchError("", "file not found", name)
        return tuple(load(name).input_size)  # type: ignore[return-value]
    if not timm.is_model(name):
        raise registry.UnknownModelError(
            f"unknown model {name!r}: not a zoo model, not a timm model, and not an architecture JSON file")
    return tuple(timm.models.get_pretrained_cfg(name).input_size)  # type: ignore[return-value]


def create_model(name_or_path: str | os.PathLike | ArchSpec, pretrained: bool = False, **kwargs: Any):
    """``timm.create_model`` that also accepts an architecture JSON file (ours or NVIDIA's) or spec.

    Zoo names and every timm name go through timm itself, so all of timm's options apply.
    """
    if isinstance(name_or_path, ArchSpec):
        spec = name_or_path
    else:
        name = os.fspath(name_or_path)
        if not _looks_like_path(name):
            if is_timm_source(name):
                return _create_from_source(name, pretrained, **kwargs)
            if name in registry.index() or timm.is_model(name):
                return timm.create_model(name, pretrained=pretrained, **kwargs)
            raise registry.UnknownModelError(
                f"unknown model {name!r}: not a zoo model ({', '.join(registry.list_models())}), not a timm model, "
                "and not an architecture JSON file")
        if not Path(name).is_file():
            raise ArchError("", "file not found", name)
        spec = load(name)
    if pretrained:
        raise WeightsUnavailableError(
            f"{spec.name!r} is an architecture file: it carries no weights. Load a checkpoint with "
            "prunet.zoo.load_checkpoint(model, path) or pretrained_cfg_overlay=dict(file=...)")
    return build(spec, **kwargs)


def load_checkpoint(model: PruNet, path: str | os.PathLike) -> PruNet:
    """Load ours (safetensors/.pth) or NVIDIA's (NGC zip/.pth.tar) weights; all or nothing."""
    load_into(model, read_checkpoint(path), model.arch, source=str(path))
    return model


__all__ = [
    "CheckpointError", "PruNetZooModel", "WeightsUnavailableError", "build", "checkpoint_filter_fn",
    "create_model", "default_cfgs", "input_size_of", "is_timm_source", "load_checkpoint", "pretrained_cfg_for",
    "source_pretrained_cfg",
]
