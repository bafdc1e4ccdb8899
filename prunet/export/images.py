"""Real ImageNet images for parity checks, taken from the foolbox 3.3.4 wheel on PyPI.

Random inputs miss numerical problems that only natural image statistics trigger (saturating
activations, large dynamic range after normalisation), so every export is also checked on real
photos. foolbox ships 20 ImageNet validation JPEGs (512x512, label in the file name) inside its
wheel; PyPI is reachable from every machine this project runs on, so the wheel is fetched with pip
on first use, checked against its known SHA-256 and unpacked into a cache directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from prunet._cache import cache_dir

import torch
from torch import nn

FOOLBOX_VERSION = "3.3.4"
FOOLBOX_WHEEL = f"foolbox-{FOOLBOX_VERSION}-py3-none-any.whl"
# SHA-256 of the wheel as published on PyPI (checked on download).
FOOLBOX_WHEEL_SHA256 = "11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb"
N_IMAGES = 20


class ImagesUnavailableError(RuntimeError):
    """The foolbox wheel could not be fetched or did not hold the expected images."""


def images_dir() -> Path:
    return cache_dir() / "data" / f"foolbox-{FOOLBOX_VERSION}-imagenet"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download_wheel(dest: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-q", "-d", str(dest), f"foolbox=={FOOLBOX_VERSION}",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImagesUnavailableError(f"pip download foolbox=={FOOLBOX_VERSION} failed: {exc}") from exc
    wheel = dest / FOOLBOX_WHEEL
    if proc.returncode != 0 or not wheel.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ImagesUnavailableError(
            f"pip download foolbox=={FOOLBOX_VERSION} failed (exit {proc.returncode}): "
            + " | ".join(tail)
        )
    return wheel


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
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".foolbox-") as tmp:
        tmp_path = Path(tmp)
        wheel = _download_wheel(tmp_path)
        digest = _sha256(wheel)
        if digest != FOOLBOX_WHEEL_SHA256:
            raise ImagesUnavailableError(
                f"{wheel.name}: SHA-256 {digest} does not match the published {FOOLBOX_WHEEL_SHA256}"
            )
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
