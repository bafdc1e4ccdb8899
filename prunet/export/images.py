"""Real ImageNet images for parity checks, taken from the foolbox 3.3.4 wheel on PyPI.

Random inputs miss numerical problems that only natural image statistics trigger (saturating
activations, large dynamic range after normalisation), so every export is also checked on real
photos. foolbox ships 20 ImageNet validation JPEGs (512x512, label in the file name) inside its
wheel; PyPI is reachable from every machine this project runs on, so the wheel is fetched with pip
on first use, checked against its known SHA-256 and unpacked into a cache directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from prunet._cache import cache_dir
from prunet._pypi import WheelSource, fetch_wheel

import torch
from torch import nn

FOOLBOX_VERSION = "3.3.4"
# SHA-256 of the wheel as published on PyPI (checked on download).
FOOLBOX = WheelSource("foolbox", FOOLBOX_VERSION, f"foolbox-{FOOLBOX_VERSION}-py3-none-any.whl",
                      "11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb", "MIT (bethgelab/foolbox)")
N_IMAGES = 20


class ImagesUnavailableError(RuntimeError):
    """The foolbox wheel could not be fetched or did not hold the expected images."""


def images_dir() -> Path:
    return cache_dir() / "data" / f"foolbox-{FOOLBOX_VERSION}-imagenet"


def imagenet_images() -> list[Path]:
    """Paths of the 20 ImageNet JPEGs, fetching and unpacking them on first use.

    File names are ``imagenet_<index>_<label>.jpg``. Raises ImagesUnavailableError when PyPI
    cannot be reached or the wheel does not match its known checksum.
    """
    target = images_dir()
    found = sorted(target.glob("imagenet_*.jpg"))
    if len(found) == N_IMAGES:
        return found
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        wheel = fetch_wheel(FOOLBOX, target.parent / "sources", quiet=True)
    except (RuntimeError, ValueError) as exc:  # pip failed / checksum differs
        raise ImagesUnavailableError(str(exc)) from exc
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".foolbox-") as tmp:
        tmp_path = Path(tmp)
        staged = tmp_path / "images"
        staged.mkdir()
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist()
                       if m.startswith("foolbox/data/imagenet_") and m.endswith(".jpg")]
            for m in members:
                (staged / Path(m).name).write_bytes(zf.read(m))
        if len(members) != N_IMAGES:
            raise ImagesUnavailableError(
                f"{wheel.name}: expected {N_IMAGES} ImageNet JPEGs, found {len(members)}"
            )
        # Publish atomically; a concurrent process may have won the race, which is fine.
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(staged, target)
        except OSError:
            if len(sorted(target.glob("imagenet_*.jpg"))) != N_IMAGES:
                raise
    return sorted(target.glob("imagenet_*.jpg"))


def image_label(path: Path) -> int:
    """ImageNet class index encoded in a foolbox image file name."""
    return int(Path(path).stem.rsplit("_", 1)[1])


def load_batch(model: nn.Module, input_size: tuple[int, int, int] | None = None,
               limit: int | None = None) -> torch.Tensor:
    """The images preprocessed the way `model` expects (timm's eval transform for its config)."""
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    overrides = {"input_size": tuple(input_size)} if input_size is not None else {}
    cfg = resolve_data_config(overrides, model=model)
    transform = create_transform(**cfg, is_training=False)
    paths = imagenet_images()[:limit]
    tensors = []
    for p in paths:
        with Image.open(p) as im:
            tensors.append(transform(im.convert("RGB")))
    return torch.stack(tensors)
