"""``PruNetBackbone``: any zoo model or architecture JSON as an MMDetection backbone.

The network is built through the zoo (``prunet.create_model(..., features_only=True)``), so a
detector uses exactly the modules, feature levels and weights that classification uses. Feature
levels are counted as timm's ``feature_info`` counts them: level ``i`` has stride ``2**(i+1)``,
so ResNet-style ``C2..C5`` are levels ``(1, 2, 3, 4)``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from mmengine.model import BaseModule
from torch import nn
from timm.models import FeatureDictNet
from torch.nn.modules.batchnorm import _BatchNorm

from mmdet.registry import MODELS

from prunet.detection.checkpoint import match_state_dict, read_checkpoint
from prunet.nn import PruNet

__all__ = ["PruNetBackbone", "backbone_channels"]


def _create_model(arch: str, **kwargs) -> nn.Module:
    import prunet  # noqa: PLC0415  (the zoo; kept local so import order never matters)

    return prunet.create_model(arch, **kwargs)


def _resolve_arch(arch) -> str:
    """Zoo name or arch-JSON path; a path that does not exist fails here, naming the field."""
    if isinstance(arch, os.PathLike):
        arch = os.fspath(arch)
    if not isinstance(arch, str) or not arch:
        raise TypeError(f"arch: expected a zoo model name or a path to an architecture JSON, got {arch!r}")
    looks_like_path = arch.endswith(".json") or os.sep in arch
    if looks_like_path and not arch.startswith("hf-hub:"):
        path = Path(arch).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"arch: architecture JSON {arch!r} does not exist")
        return str(path)
    return arch


def _check_out_indices(out_indices) -> tuple[int, ...]:
    if isinstance(out_indices, int) or not isinstance(out_indices, Sequence) or isinstance(out_indices, str):
        raise TypeError(f"out_indices: expected a tuple of feature-level indices such as (1, 2, 3, 4), "
                        f"got {out_indices!r}")
    idx = tuple(out_indices)
    if not idx or not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
        raise TypeError(f"out_indices: expected a non-empty tuple of ints, got {out_indices!r}")
    if any(i < 0 for i in idx) or list(idx) != sorted(set(idx)):
        raise ValueError(f"out_indices: expected distinct non-negative levels in increasing order, got {idx}")
    return idx


class _LevelsError(ValueError):
    pass


def _levels_description(arch: str) -> tuple[int, str]:
    """Number of feature levels of ``arch`` and a 'level: stride/channels' summary for errors."""
    model = _create_model(arch, pretrained=False, features_only=True)
    info = model.feature_info
    n = len(info)
    desc = ", ".join(f"{i}: stride {info.reduction(i)}, {info.channels(i)} ch" for i in range(n))
    return n, desc


def build_feature_model(arch: str, out_indices: tuple[int, ...], pretrained: bool) -> nn.Module:
    """Zoo model as a timm feature extractor for ``out_indices``, with errors that name the field."""
    try:
        model = _create_model(arch, pretrained=pretrained, features_only=True, out_indices=out_indices)
    except Exception as e:  # noqa: BLE001  (re-raised with a clearer message where we can tell why)
        try:
            n, desc = _levels_description(arch)
        except Exception:  # noqa: BLE001  (the arch itself is the problem)
            raise _unknown_arch(arch, e) from e
        if max(out_indices) >= n:
            raise ValueError(f"out_indices: {out_indices} asks for level {max(out_indices)}, but {arch!r} "
                             f"has {n} feature levels ({desc})") from e
        if pretrained and type(e).__name__ == "WeightsUnavailableError":
            raise type(e)(f"{e}\nIn a detector config, point the backbone at a local copy instead: "
                          f"model.backbone.pretrained='/path/to/checkpoint' (or 'hf-hub:org/repo[/file]')") from e
        raise
    info = model.feature_info
    if max(out_indices) >= len(info) or tuple(info.out_indices) != out_indices:
        n, desc = len(info), ", ".join(str(info.reduction(i)) for i in range(len(info)))
        raise ValueError(f"out_indices: {out_indices} is not available for {arch!r}: it has {n} feature "
                         f"levels with strides {desc}")
    return model


def _unknown_arch(arch: str, err: Exception) -> Exception:
    if arch.endswith(".json"):
        return ValueError(f"arch: {arch!r} is not a valid architecture JSON: {err}")
    try:
        import prunet  # noqa: PLC0415

        names = prunet.list_models()
    except Exception:  # noqa: BLE001
        names = []
    hint = f"; zoo models: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}" if names else ""
    return ValueError(f"arch: cannot build {arch!r} ({type(err).__name__}: {err}){hint}")


def backbone_channels(arch: str, out_indices: Sequence[int] = (2, 3, 4)) -> list[int]:
    """Channels of the requested feature levels: the ``in_channels`` a neck (FPN) needs."""
    model = build_feature_model(_resolve_arch(arch), _check_out_indices(out_indices), pretrained=False)
    return list(model.feature_info.channels())


@MODELS.register_module()
class PruNetBackbone(BaseModule):
    """A zoo model (name or arch JSON) as a detection backbone returning a tuple of feature maps.

    Args:
        arch: zoo model name (e.g. ``'prunet_p0'``) or path to an architecture JSON.
        out_indices: feature levels to return (level ``i`` has stride ``2**(i+1)``).
        frozen_stages: freeze the stem and the stage modules of feature levels 0..``frozen_stages``
            (``-1``: nothing) and keep them in eval mode (BN statistics, dropout, drop-path).
            Matches mmdet's ResNet, whose ``frozen_stages=1`` freezes through stride 4 (level 1).
        norm_eval: keep all BatchNorm layers in eval mode during training (frozen statistics).
        pretrained: ``True`` loads the zoo's weights for ``arch``; a path or ``hf-hub:`` reference
            loads that checkpoint. Shorthand for ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
        init_cfg: mmengine init config; ``type='Pretrained'`` (with optional ``prefix``, e.g.
            ``'backbone.'`` for a detector checkpoint) is loaded strictly, other types as usual.

    The checkpoint is read and checked while the model is built, so a wrong file fails before any
    training starts; the weights are then in place (``init_weights`` does not re-initialise them).
    """

    def __init__(self, arch: str | os.PathLike = "prunet_p0", out_indices: Sequence[int] = (2, 3, 4),
                 frozen_stages: int = -1, norm_eval: bool = False, pretrained=None, init_cfg=None):
        checkpoint, prefix, init_cfg = self._split_pretrained(pretrained, init_cfg)
        super().__init__(init_cfg=init_cfg)
        self.arch = _resolve_arch(arch)
        self.out_indices = _check_out_indices(out_indices)
        self.norm_eval = bool(norm_eval)
        self.model = build_feature_model(self.arch, self.out_indices, pretrained=checkpoint is True)
        info = self.model.feature_info
        self.num_levels = len(info)
        self.out_channels: list[int] = list(info.channels())
        self.strides: list[int] = list(info.reduction())
        if not isinstance(frozen_stages, int) or isinstance(frozen_stages, bool) or not (
                -1 <= frozen_stages <= max(self.out_indices)):
            raise ValueError(f"frozen_stages: expected an int from -1 (nothing frozen) to "
                             f"{max(self.out_indices)} (the last level computed for out_indices "
                             f"{self.out_indices}), got {frozen_stages!r}")
        self.frozen_stages = frozen_stages
        self.checkpoint = None if checkpoint in (None, True) else str(checkpoint)
        if self.checkpoint is not None:
            self._load_checkpoint(self.checkpoint, prefix)
        self._frozen_modules = self._freeze_stages()

    # -------------------------------------------------------------- construction helpers

    @staticmethod
    def _split_pretrained(pretrained, init_cfg):
        """Return (checkpoint or True or None, key prefix, the init_cfg left for mmengine)."""
        if pretrained is not None and init_cfg is not None:
            raise ValueError("pretrained and init_cfg: set only one of them (init_cfg=dict(type='Pretrained', "
                             "checkpoint=...) is the long form of pretrained=...)")
        if pretrained is not None:
            if pretrained is False:
                return None, "", None
            if not (pretrained is True or isinstance(pretrained, (str, os.PathLike))):
                raise TypeError(f"pretrained: expected True (zoo weights), a checkpoint path or "
                                f"'hf-hub:org/repo[/file]', got {pretrained!r}")
            return pretrained, "", None
        cfgs = init_cfg if isinstance(init_cfg, list) else [init_cfg] if init_cfg is not None else []
        rest, checkpoint, prefix = [], None, ""
        for cfg in cfgs:
            if isinstance(cfg, dict) and cfg.get("type") == "Pretrained":
                if checkpoint is not None:
                    raise ValueError("init_cfg: more than one 'Pretrained' entry")
                checkpoint = cfg.get("checkpoint")
                if checkpoint in (None, ""):
                    raise ValueError("init_cfg: type='Pretrained' needs a 'checkpoint' (path, hf-hub: ref "
                                     "or 'zoo' for the zoo's weights)")
                checkpoint = True if checkpoint == "zoo" else checkpoint
                prefix = cfg.get("prefix", "") or ""
                if prefix and not prefix.endswith("."):
                    prefix += "."
            else:
                rest.append(cfg)
        return checkpoint, prefix, (rest if len(rest) > 1 else rest[0] if rest else None)

    def _load_checkpoint(self, ref: str, prefix: str) -> None:
        sd = read_checkpoint(ref, prefix=prefix)
        spec = getattr(getattr(self.model, "model", None), "arch", None)
        if spec is not None:
            from prunet.zoo import convert_nvidia_state_dict  # noqa: PLC0415
            from prunet.zoo.nvidia import is_nvidia_state_dict  # noqa: PLC0415

            if is_nvidia_state_dict(sd):  # NVIDIA's GPUNet/PruNet training checkpoints
                sd = convert_nvidia_state_dict(sd, spec)
        matched = match_state_dict(self.model, sd, source=f"checkpoint {ref!r}", arch=self.arch)
        self.model.load_state_dict(matched, strict=False)
        self._is_init = True  # mmengine: weights are set, nothing to initialise

    def _freeze_stages(self) -> list[nn.Module]:
        """Freeze the named modules that compute levels 0..``frozen_stages`` (their parameters stop
        learning; :meth:`train` keeps the whole modules in eval mode, so BN statistics, dropout and
        drop-path in them are frozen too); return those modules."""
        if self.frozen_stages < 0:
            return []
        modules = [m for _, m in self._stage_modules(self.frozen_stages)]
        for m in modules:
            m.requires_grad_(False)
            m.eval()
        return modules

    def _stage_modules(self, level: int) -> list[tuple[str, nn.Module]]:
        """The modules that compute feature levels 0..``level``, by name, as mmdet's ResNet freezes
        ``conv1``/``norm1`` and ``layer1..k``.

        A zoo network (timm's FeatureGetterNet around a :class:`PruNet`) has a ``stem`` and one
        ``stages.<i>`` module per level. Any other timm model comes as a FeatureListNet, whose
        children run in the order listed and whose level ``i`` is the child that
        ``feature_info.module_name(i)`` names (``stages.1`` appears as ``stages_1``): every child up
        to it computes levels 0..``i``.
        """
        fm = self.model
        inner = getattr(fm, "model", None)
        if isinstance(inner, PruNet):
            return [("model.stem", inner.stem)] + [(f"model.stages.{i}", inner.stages[i]) for i in range(level + 1)]
        if isinstance(fm, FeatureDictNet):
            target = fm.feature_info.module_name(level)
            out = []
            for name, child in fm.named_children():
                out.append((name, child))
                if name in (target, target.replace(".", "_")):
                    return out
            raise RuntimeError(f"frozen_stages: the module of feature level {level} ({target!r}) is not a "
                               f"child of {type(fm).__name__}")
        raise ValueError(f"frozen_stages: {self.arch!r} builds a {type(fm).__name__}, whose stage modules are "
                         "unknown; use frozen_stages=-1")

    # -------------------------------------------------------------- nn.Module API

    def init_weights(self) -> None:
        """Weights come from the zoo or the checkpoint at build time; only a non-Pretrained init_cfg runs."""
        if self.init_cfg is not None and not self._is_init:
            super().init_weights()
        self._is_init = True

    def train(self, mode: bool = True) -> "PruNetBackbone":
        super().train(mode)
        if mode:
            for m in self._frozen_modules:
                m.eval()
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, _BatchNorm):
                        m.eval()
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(x))
