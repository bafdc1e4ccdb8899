"""Reading backbone checkpoints for detection: local files and ``hf-hub:`` references.

Why not mmengine's ``PretrainedInit``: it loads non-strictly and only logs missing keys, so a
checkpoint of a different architecture silently leaves a randomly initialised backbone. Here every
backbone tensor must be found in the checkpoint with the right shape, or building fails with an
error naming the checkpoint and the first mismatches.
"""
from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Mapping

import torch

__all__ = ["HF_HUB_PREFIX", "allow_mmengine_checkpoints", "match_state_dict", "mmengine_safe_globals",
           "read_checkpoint", "register_hf_hub_scheme", "resolve_hf_hub"]

HF_HUB_PREFIX = "hf-hub:"
# Files tried, in order, when an ``hf-hub:`` reference names a repository but no file.
_HF_DEFAULT_FILES = ("model.safetensors", "pytorch_model.bin")


def resolve_hf_hub(ref: str) -> str:
    """Download ``hf-hub:org/repo[/path/in/repo][@revision]`` and return the local file path.

    Uses ``huggingface_hub`` (its cache, token, ``HF_ENDPOINT`` and offline mode all apply).
    Without a file path, ``model.safetensors`` then ``pytorch_model.bin`` are tried.
    """
    from huggingface_hub import hf_hub_download  # noqa: PLC0415
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError  # noqa: PLC0415

    if not ref.startswith(HF_HUB_PREFIX):
        raise ValueError(f"checkpoint: expected 'hf-hub:org/repo[/file][@revision]', got {ref!r}")
    body = ref[len(HF_HUB_PREFIX):]
    revision = None
    if "@" in body:
        body, revision = body.rsplit("@", 1)
    parts = body.strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise ValueError(f"checkpoint: expected 'hf-hub:org/repo[/file][@revision]', got {ref!r}")
    repo_id = "/".join(parts[:2])
    if len(parts) > 2:
        return hf_hub_download(repo_id, "/".join(parts[2:]), revision=revision)
    last: Exception | None = None
    for name in _HF_DEFAULT_FILES:
        try:
            return hf_hub_download(repo_id, name, revision=revision)
        except EntryNotFoundError as e:
            last = e
        except HfHubHTTPError as e:  # a 404 without the Hub's X-Error-Code header (mirrors, proxies)
            if getattr(getattr(e, "response", None), "status_code", None) != 404:
                raise
            last = e
    raise FileNotFoundError(f"checkpoint {ref!r}: the repository has none of {_HF_DEFAULT_FILES}; "
                            f"name the file, e.g. hf-hub:{repo_id}/weights.pth") from last


def read_checkpoint(ref: str | os.PathLike, prefix: str = "") -> "OrderedDict[str, torch.Tensor]":
    """The tensors of a checkpoint: local path or ``hf-hub:`` ref, in any format the zoo reads.

    Files are read by the zoo's reader (safetensors, torch weights-only, NVIDIA NGC zips; the EMA
    weights when a training checkpoint holds both). ``prefix`` keeps only the keys under it, with
    the prefix removed (``backbone.`` for a detector checkpoint).
    """
    from prunet.zoo import read_checkpoint as zoo_read_checkpoint  # noqa: PLC0415

    ref = str(ref)
    path = resolve_hf_hub(ref) if ref.startswith(HF_HUB_PREFIX) else os.path.expanduser(ref)
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint: {path} does not exist")
    allow_mmengine_checkpoints()  # process-wide and idempotent (a scoped allow-list would undo it on exit)
    raw = zoo_read_checkpoint(path)
    sd = OrderedDict((k, v) for k, v in raw.items() if isinstance(v, torch.Tensor))
    if not sd:
        raise ValueError(f"checkpoint {ref!r}: contains no tensors")
    if prefix:
        sd = OrderedDict((k[len(prefix):], v) for k, v in sd.items() if k.startswith(prefix))
        if not sd:
            raise ValueError(f"checkpoint {ref!r}: no tensors under prefix {prefix!r}")
    return sd


def _history_buffer_getattr(obj, name: str):
    """``getattr`` as mmengine's pickled ``HistoryBuffer`` needs it (its statistics methods), nothing more.

    Allowing the real ``builtins.getattr`` in a weights-only load would let a crafted file reach
    module globals; this stand-in only returns public methods of ``HistoryBuffer`` itself.
    """
    from mmengine.logging.history_buffer import HistoryBuffer  # noqa: PLC0415

    if obj is HistoryBuffer and isinstance(name, str) and not name.startswith("_") and callable(
            vars(HistoryBuffer).get(name)):
        return getattr(obj, name)
    raise pickle.UnpicklingError(f"refusing getattr({obj!r}, {name!r}) while loading a checkpoint")


def mmengine_safe_globals() -> list:
    """The non-tensor types in checkpoints that mmengine's Runner saves (message hub, numpy logs).

    torch >= 2.6 loads weights-only by default and mmengine 0.10.7 does not say otherwise, so
    without these its own checkpoints (``load_from``, ``--resume``, test.py) fail to load.
    """
    import numpy as np  # noqa: PLC0415
    from mmengine.logging.history_buffer import HistoryBuffer  # noqa: PLC0415

    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 / numpy 1
    out: list = [HistoryBuffer, np.ndarray, np.dtype, (_history_buffer_getattr, "builtins.getattr")]
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        out += [(core.multiarray._reconstruct, f"{mod}._reconstruct"), (core.multiarray.scalar, f"{mod}.scalar")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return out


def allow_mmengine_checkpoints() -> None:
    """Let torch's weights-only unpickler accept the types mmengine's own checkpoints hold.

    torch >= 2.6 loads weights-only by default and mmengine 0.10.7's local-file loader does not
    say otherwise, so without this, the checkpoints its Runner writes (``load_from``,
    ``--resume``, test.py) fail to load. Extending torch's allow-list is additive: mmengine's own
    loader stays in place (replacing it, as before issue 12, changed every mmengine user in the
    process), and everything else stays refused.
    """
    torch.serialization.add_safe_globals(mmengine_safe_globals())


def _name_candidates(name: str) -> list[str]:
    """Names a feature-extractor parameter may have in the plain model's state dict.

    timm's ``FeatureGetterNet`` wraps the model as ``model.*``; ``FeatureListNet`` with
    ``flatten_sequential`` renames ``stages.0`` to ``stages_0``; a ``PruNetBackbone`` (in a
    detector checkpoint, under ``backbone.``) wraps the feature extractor once more as ``model.*``.
    """
    cands = [name, f"model.{name}"]  # as is; as saved from a PruNetBackbone (detector checkpoints)
    if name.startswith("model."):
        cands.append(name[len("model."):])
    for n in list(cands):
        head, _, rest = n.partition(".")
        if "_" in head:
            a, _, b = head.rpartition("_")
            cands.append(f"{a}.{b}.{rest}" if rest else f"{a}.{b}")
    return cands


def canonical_names(model: torch.nn.Module) -> dict[str, list[str]]:
    """For each state-dict key of ``model``, its candidate names in the plain model."""
    return {k: _name_candidates(k) for k in model.state_dict()}


def match_state_dict(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], source: str,
                     arch: str) -> "OrderedDict[str, torch.Tensor]":
    """Map checkpoint tensors onto ``model``'s keys; raise if any backbone tensor is missing or misshapen.

    Extra checkpoint tensors (classifier, head conv, later stages pruned away) are ignored.
    """
    own = model.state_dict()
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    missing, shape_bad = [], []
    for key, target in own.items():
        hit = next((c for c in _name_candidates(key) if c in sd), None)
        if hit is None:
            if not key.endswith("num_batches_tracked"):
                missing.append(key)
            continue
        if tuple(sd[hit].shape) != tuple(target.shape):
            shape_bad.append(f"{hit}: checkpoint {tuple(sd[hit].shape)} vs model {tuple(target.shape)}")
            continue
        out[key] = sd[hit]
    if missing or shape_bad:
        n_req = sum(1 for k in own if not k.endswith("num_batches_tracked"))
        lines = [f"{source} does not match backbone arch {arch!r}: "
                 f"{len(missing)} of {n_req} tensors missing, {len(shape_bad)} with another shape."]
        if shape_bad:
            lines.append("shape mismatches: " + "; ".join(shape_bad[:5]))
        if missing:
            lines.append("missing: " + ", ".join(missing[:5]))
            lines.append("checkpoint has e.g.: " + ", ".join(list(sd)[:5]))
        lines.append("Is it a checkpoint of another model? For a detector checkpoint pass prefix='backbone.'.")
        raise ValueError("\n".join(lines))
    return out


def register_hf_hub_scheme() -> None:
    """Teach mmengine's ``CheckpointLoader`` the ``hf-hub:`` scheme (``load_from``, ``init_cfg``)."""
    from mmengine.runner import CheckpointLoader  # noqa: PLC0415

    if HF_HUB_PREFIX in CheckpointLoader._schemes:
        return

    @CheckpointLoader.register_scheme(prefixes=HF_HUB_PREFIX)
    def _load_from_hf_hub(filename, map_location=None, logger=None):  # noqa: ARG001
        # Tensors are read onto the CPU; load_state_dict copies them to the model's device.
        return read_checkpoint(filename)
