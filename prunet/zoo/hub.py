"""Writing timm-compatible Hugging Face Hub repos (and NGC → Hub conversion).

A repo written here loads with plain timm: ``timm.create_model('hf-hub:owner/repo')`` reads
``config.json`` (architecture + pretrained_cfg) and ``model.safetensors``. Architectures outside
the zoo (e.g. search output) travel inside ``config.json`` as ``model_args.arch`` and are built by
the generic ``prunet_arch`` entrypoint, so they load the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from prunet._io import atomic_write_bytes, check_output, default_dir_mode
from prunet.arch import ArchSpec, to_dict
from prunet.zoo import registry
from prunet.zoo.factory import build, load_checkpoint, pretrained_cfg_for


def hub_config(spec: ArchSpec, zoo_name: str | None) -> dict[str, Any]:
    """timm's ``config.json``: architecture name, classifier shape and the pretrained_cfg."""
    entry = registry.entry(zoo_name) if zoo_name else None
    cfg = pretrained_cfg_for(spec, entry)
    for key in ("url", "custom_load", "hf_hub_id"):
        cfg.pop(key, None)
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
    out: dict[str, Any] = {
        "architecture": zoo_name or "prunet_arch",
        "num_classes": spec.num_classes,
        "num_features": spec.head.conv_chs,
        "global_pool": "avg",
        "pretrained_cfg": cfg,
    }
    if not zoo_name:
        out["model_args"] = {"arch": to_dict(spec)}
    return out


def model_card(spec: ArchSpec, zoo_name: str | None, source: str) -> str:
    entry = registry.entry(zoo_name) if zoo_name else None
    title = entry.display_name if entry else spec.name
    pub = entry.published if entry else {}
    lines = [
        "---",
        "library_name: timm",
        "license: apache-2.0",
        "tags: [image-classification, timm, prunet, gpunet]",
        "---",
        f"# {title}",
        "",
        f"Converted with `prunet zoo convert-ngc` from `{Path(source).name}`.",
        "",
        "```python",
        "import prunet, timm",
        "model = timm.create_model('hf-hub:<this repo>', pretrained=True)",
        "```",
        "",
        f"- architecture: {len(spec.blocks)} blocks, input {spec.input_size[1]}x{spec.input_size[2]}",
    ]
    if pub:
        lines.append(f"- NVIDIA's published figures: top-1 {pub.get('top1')} %, latency {pub.get('latency_ms')} ms "
                     f"({pub.get('latency_protocol')}); source: {pub.get('source')}")
    if entry and entry.license.get("weights"):
        lines.append(f"- weights licence: {entry.license['weights']}")
    return "\n".join(lines) + "\n"


HUB_FILES = ("model.safetensors", "config.json", "README.md")


def _hub_files(model: Any, zoo_name: str | None, source: str) -> dict[str, bytes]:
    from safetensors.torch import save as safetensors_bytes

    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return {
        "model.safetensors": safetensors_bytes(sd, metadata={"format": "pt"}),
        "config.json": (json.dumps(hub_config(model.arch, zoo_name), indent=2) + "\n").encode(),
        "README.md": model_card(model.arch, zoo_name, source or "checkpoint").encode(),
    }


def save_hub_repo(model: Any, out_dir: str | os.PathLike, zoo_name: str | None, source: str = "",
                  overwrite: bool = False) -> Path:
    """Write model.safetensors + config.json + README.md into ``out_dir``.

    A new folder appears whole or not at all (written beside it, then renamed). An existing
    non-empty folder is refused unless ``overwrite``; then only these three files are replaced,
    each atomically. The folder itself is never deleted: ``--out .`` must not empty the current
    directory (issue 12)."""
    out = check_output(out_dir, overwrite, folder=True)
    files = _hub_files(model, zoo_name, source)
    if out.is_dir():
        for name, data in files.items():
            atomic_write_bytes(out / name, data)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, data in files.items():
            atomic_write_bytes(tmp / name, data)
        os.chmod(tmp, default_dir_mode())  # mkdtemp makes 0700
        os.rename(tmp, out)  # not os.replace: a folder that appeared meanwhile is not replaced
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def convert_ngc(checkpoint: str | os.PathLike, arch: str, out_dir: str | os.PathLike,
                push_to_hub: str | None = None, private: bool = True, overwrite: bool = False) -> Path:
    """NVIDIA NGC checkpoint → timm Hub repo folder (optionally uploaded).

    The output is checked first, so a refused ``--out`` costs no checkpoint reading."""
    from prunet.arch import load

    check_output(out_dir, overwrite, folder=True)
    if arch in registry.index():
        spec, zoo_name = registry.get_arch(arch), arch
    elif arch.endswith(".json") or os.sep in arch or Path(arch).is_file():
        spec, zoo_name = load(arch), None
    else:
        raise registry.UnknownModelError(
            f"--arch {arch!r}: not a zoo model ({', '.join(registry.list_models())}) and not an architecture JSON file")
    model = build(spec)
    load_checkpoint(model, checkpoint)
    out = save_hub_repo(model, out_dir, zoo_name, source=str(checkpoint), overwrite=overwrite)
    if push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(push_to_hub, private=private, exist_ok=True)
        api.upload_folder(repo_id=push_to_hub, folder_path=str(out), commit_message="Upload prunet conversion")
    return out


def guess_zoo_name(checkpoint: str | os.PathLike) -> str | None:
    """NGC zips hold ``<nvidia config>.pth.tar``; map that file name back to a zoo model."""
    import zipfile

    names = [Path(checkpoint).name]
    if zipfile.is_zipfile(checkpoint):
        with zipfile.ZipFile(checkpoint) as zf:
            names += [Path(n).name for n in zf.namelist()]
    for zoo_name, e in registry.index().items():
        stem = (e.nvidia_config or "").removesuffix(".json")
        if stem and any(n.startswith(stem + ".pth") or n == e.ngc_checkpoint_member for n in names):
            return zoo_name
    return None
