"""Turn what a user typed (zoo name, timm name, architecture JSON, ONNX file) into something runnable.

Every entry point (to_onnx, measure, the CLI) accepts the same spellings, so resolution lives in one
place and fails with one clear error instead of a timm stack trace.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch
from torch import nn

from .errors import InputShapeError, InvalidOnnxError, UnknownModelError

ModelSpec = Union[nn.Module, str, os.PathLike]


@dataclass(frozen=True)
class OnnxFile:
    """An existing ONNX file given as a target (kept apart from model names on purpose)."""

    path: Path


def is_onnx_path(spec: object) -> bool:
    return isinstance(spec, (str, os.PathLike)) and str(spec).lower().endswith(".onnx")


def _create_model_fn():
    """prunet.create_model: timm names, zoo names (registered with timm) and architecture JSONs."""
    from prunet.zoo import create_model

    return create_model


def _known_names() -> list[str]:
    import timm

    import prunet.zoo  # noqa: F401  (registers the zoo's names with timm)

    return list(timm.list_models())


def _is_model_name(name: str) -> bool:
    """A zoo/timm name, or an ``hf-hub:``/``local-dir:`` reference (timm reads its config.json)."""
    import timm

    from prunet.zoo.factory import is_timm_source

    return is_timm_source(name) or bool(timm.is_model(name))


def resolve(spec: ModelSpec, **create_kwargs) -> nn.Module | OnnxFile:
    """Return an eval-mode nn.Module, or an OnnxFile for an existing ``.onnx`` path.

    Raises UnknownModelError (bad name or missing JSON) or InvalidOnnxError (missing ONNX file).
    """
    if isinstance(spec, nn.Module):
        return spec.eval()
    if isinstance(spec, OnnxFile):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise UnknownModelError(
            f"model: expected an nn.Module, a model name, an architecture .json or an .onnx path, "
            f"got {type(spec).__name__}"
        )
    text = os.fspath(spec)
    path = Path(text)
    if is_onnx_path(text):
        if not path.is_file():
            raise InvalidOnnxError(f"{text}: ONNX file not found")
        return OnnxFile(path)
    if text.lower().endswith(".json"):
        if not path.is_file():
            raise UnknownModelError(f"{text}: architecture JSON not found")
        create = _create_model_fn()
        import timm

        if create is timm.create_model:
            raise UnknownModelError(
                f"{text}: architecture JSONs need prunet.create_model (the prunet zoo), which this "
                "install does not provide"
            )
        return create(text, **create_kwargs).eval()
    if not _is_model_name(text):
        close = difflib.get_close_matches(text, _known_names(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"model '{text}': not a prunet zoo or timm model name, nor an existing .json/.onnx "
            f"file{hint}"
        )
    return _create_model_fn()(text, **create_kwargs).eval()


def resolve_module(spec: ModelSpec, **create_kwargs) -> nn.Module:
    """Like resolve() but an ONNX file is an error (exporting an ONNX file makes no sense)."""
    target = resolve(spec, **create_kwargs)
    if isinstance(target, OnnxFile):
        raise UnknownModelError(
            f"{target.path}: expected a model (name, .json or nn.Module), not an ONNX file"
        )
    return target


def model_name(spec: ModelSpec, module: nn.Module | None = None) -> str:
    """A short human name for reports and file names."""
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        if text.startswith(("hf-hub:", "local-dir:")):  # used in file names: no ':' or '/'
            return text.split(":", 1)[1].rstrip("/").rsplit("/", 1)[-1].split("@", 1)[0] or "model"
        p = Path(text)
        return p.stem if p.suffix.lower() in (".json", ".onnx") else text
    module = module if module is not None else spec
    cfg = getattr(module, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(module).__name__


def native_input_size(model: nn.Module) -> tuple[int, int, int]:
    """(C, H, W) the model was designed for, from timm's pretrained_cfg."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = cfg.get("input_size")
    if not size or len(size) != 3:
        raise InputShapeError(
            f"{type(model).__name__}: no pretrained_cfg['input_size']; pass input_size=(C, H, W)"
        )
    return tuple(int(s) for s in size)  # type: ignore[return-value]


def check_input_size(input_size: object) -> tuple[int, int, int]:
    """Validate a (C, H, W) triple given by a user."""
    try:
        size = tuple(int(s) for s in input_size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise InputShapeError(f"input_size: expected (C, H, W) integers, got {input_size!r}") from None
    if len(size) != 3 or min(size) < 1:
        raise InputShapeError(f"input_size: expected three positive integers (C, H, W), got {size}")
    return size  # type: ignore[return-value]


def probe_forward(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """Run the model once on zeros of `shape`, turning shape mismatches into InputShapeError."""
    with torch.inference_mode():
        try:
            return model(torch.zeros(shape))
        except RuntimeError as exc:  # conv/linear shape mismatches surface as RuntimeError
            raise InputShapeError(
                f"input shape {tuple(shape)} does not fit {type(model).__name__}: {exc}"
            ) from exc
