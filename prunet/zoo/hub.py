"""Writing timm-compatible Hugging Face Hub repos (and NGC → Hub conversion).

A repo written here loads with plain timm: ``timm.create_model('hf-hub:owner/repo')`` reads
``config.json`` (architecture + pretrained_cfg) and ``model.safetensors``. Architectures outside
the zoo (e.g. search output) travel inside ``config.json`` as ``model_args.arch`` and are built by
the generic ``prunet_arch`` entrypoint, so they load the same way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from prunet._io import atomic_write_bytes, check_output, default_dir_mode
from prunet.arch import ArchSpec, to_dict
from prunet.zoo import registry
from prunet.zoo.factory import build, load_checkpoint, pretrained_cfg_for


def hub_export_args(model: Any, zoo_name: str | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``model_config`` and ``model_args`` for timm's ``save_for_hf``/``push_to_hf_hub``.

    The pretrained_cfg is the zoo's (NVIDIA's evaluation settings) under the zoo name; any other
    architecture is written as ``prunet_arch`` with the architecture itself in ``model_args``, so
    ``timm.create_model('hf-hub:...')`` rebuilds it. timm adds the model's current ``num_classes``,
    ``in_chans`` and pooling, so a fine-tuned head travels too.
    """
    spec = model.arch
    entry = registry.entry(zoo_name) if zoo_name else None
    cfg = pretrained_cfg_for(spec, entry)
    for key in ("url", "custom_load", "hf_hub_id"):
        cfg.pop(key, None)
    cfg["architecture"] = zoo_name or "prunet_arch"
    return {"pretrained_cfg": cfg}, (None if zoo_name else {"arch": to_dict(spec)})


def model_card(spec: ArchSpec, zoo_name: str | None, source: str) -> dict[str, Any]:
    """The model card as timm's ``generate_readme`` takes it (also what ``push_to_hf_hub`` writes)."""
    entry = registry.entry(zoo_name) if zoo_name else None
    pub = entry.published if entry else {}
    details: dict[str, Any] = {
        "Architecture": f"{len(spec.blocks)} blocks, input {spec.input_size[1]}x{spec.input_size[2]}",
        "Source": f"converted with `prunet zoo convert-ngc` from `{Path(source).name}`",
    }
    if pub:
        details["NVIDIA's published figures"] = (
            f"top-1 {pub.get('top1')} %, latency {pub.get('latency_ms')} ms ({pub.get('latency_protocol')}); "
            f"source: {pub.get('source')}")
    if entry and entry.license.get("weights"):
        details["Weights licence"] = entry.license["weights"]
    return {
        "license": "apache-2.0",
        "tags": ["image-classification", "timm", "prunet", "gpunet"],
        "description": entry.display_name if entry else spec.name,
        "details": details,
        "usage": "```python\nimport prunet, timm\n"
                 "model = timm.create_model('hf-hub:<this repo>', pretrained=True)\n```\n",
    }


HUB_FILES = ("model.safetensors", "config.json", "README.md")


def _hub_files(model: Any, zoo_name: str | None, source: str) -> dict[str, bytes]:
    """The repo's files as timm's ``save_for_hf`` writes them (safetensors weights, config.json),
    plus the model card; returned as bytes so the caller decides how they land (atomically)."""
    from timm.models import save_for_hf
    from timm.models._hub import generate_readme

    model_config, model_args = hub_export_args(model, zoo_name)
    with tempfile.TemporaryDirectory(prefix="prunet-hub-") as tmp:
        save_for_hf(model, tmp, model_config=model_config, model_args=model_args, safe_serialization=True)
        files = {name: (Path(tmp) / name).read_bytes() for name in HUB_FILES if name != "README.md"}
    card = model_card(model.arch, zoo_name, source or "checkpoint")
    files["README.md"] = generate_readme(card, zoo_name or model.arch.name).encode()
    return files


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
        from timm.models import push_to_hf_hub

        model_config, model_args = hub_export_args(model, zoo_name)
        push_to_hf_hub(model, push_to_hub, commit_message="Upload prunet conversion", private=private,
                       model_config=model_config, model_args=model_args,
                       model_card=model_card(spec, zoo_name, str(checkpoint)), safe_serialization=True)
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
