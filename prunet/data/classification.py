"""Image-classification data for the search: Fashion-MNIST (Debian package) and any ImageFolder.

Why this shape: a differentiable search needs *two* disjoint streams from the training set
(weights learn on one, architecture logits on the other, so the logits are chosen by how well a
choice generalises) and must be resumable to the exact batch. So datasets are exposed as
indexable sets plus :class:`BatchStream`, a seeded, shardable sampler whose position is part of
the checkpoint; nothing depends on DataLoader worker order.

Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist/*.gz``) and is read by torchvision's own
:class:`~torchvision.datasets.FashionMNIST`: the package's gzip files are checked against
torchvision's MD5s and decompressed, by torchvision's ``extract_archive``, into the ``raw/``
layout that class expects, under a cache folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from prunet._cache import cache_dir
from typing import Any, Sequence

import torch

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = 10


class DataError(ValueError):
    """A data source is missing or malformed; the message says what and how to fix it."""


# ----------------------------------------------------------------------------- Fashion-MNIST


def fashion_mnist_root(source: str | os.PathLike = DEBIAN_FASHION_MNIST, root: str | os.PathLike | None = None) -> Path:
    """Lay the package's files out as torchvision expects; returns the ``root`` to pass it.

    torchvision's MD5s are of the upstream gzip files; Debian recompressed them, so the check is
    on content instead: torchvision's reader verifies the IDX headers, and :func:`fashion_mnist`
    the image counts.
    """
    from torchvision.datasets import FashionMNIST
    from torchvision.datasets.utils import extract_archive

    source = Path(source)
    root = Path(root) if root is not None else cache_dir() / "datasets"
    raw = root / "FashionMNIST" / "raw"
    wanted = [(name, md5) for name, md5 in FashionMNIST.resources]
    if all((raw / Path(name).with_suffix("").name).exists() for name, _ in wanted):
        return root
    missing = [name for name, _ in wanted if not (source / name).exists()]
    if missing:
        raise DataError(f"Fashion-MNIST: {source} lacks {missing}; install the Debian package "
                        "(apt-get install dataset-fashion-mnist) or pass the folder holding the four .gz files")
    raw.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".raw.", dir=raw.parent))
    try:
        for name, _ in wanted:
            try:
                extract_archive(str(source / name), str(tmp))
            except (OSError, EOFError) as e:
                raise DataError(f"Fashion-MNIST: cannot decompress {source / name}: {e}") from None
        if raw.exists():
            shutil.rmtree(raw)
        os.replace(tmp, raw)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def fashion_mnist(train: bool = True, source: str | os.PathLike = DEBIAN_FASHION_MNIST,
                  root: str | os.PathLike | None = None) -> Any:
    """torchvision's FashionMNIST over the Debian package's files (no download)."""
    from torchvision.datasets import FashionMNIST

    try:
        ds = FashionMNIST(str(fashion_mnist_root(source, root)), train=train, download=False)
    except (RuntimeError, ValueError, AssertionError) as e:
        raise DataError(f"Fashion-MNIST from {source}: unreadable IDX files ({e})") from None
    want = 60000 if train else 10000
    if len(ds) != want or tuple(ds.data.shape[1:]) != (28, 28):
        raise DataError(f"Fashion-MNIST from {source}: expected {want} images of 28x28, got {tuple(ds.data.shape)}")
    return ds


# ----------------------------------------------------------------------------- tensor view


@dataclass
class ImageSet:
    """Indexable images at the search's input size, plus labels.

    Small sets (Fashion-MNIST) live in one tensor and are converted a batch at a time, which keeps
    a step's data cost negligible on two cores; ImageFolder sets are decoded per item.
    """

    dataset: Any
    input_size: tuple[int, int, int]
    num_classes: int
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    transform: Any = None
    convert: Any = None  # whole-batch conversion of ``images`` (uint8 → normalised float)

    def __len__(self) -> int:
        return len(self.labels) if self.labels is not None else len(self.dataset)

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        if self.images is not None:
            x = self.images[idx]
            return (self.convert(x) if self.convert is not None else x), self.labels[idx]
        xs, ys = [], []
        for i in idx.tolist():
            x, y = self.dataset[i]
            xs.append(self.transform(x))
            ys.append(int(y))
        return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def _match_channels(x: torch.Tensor, chans: int, where: str) -> torch.Tensor:
    if x.shape[1] == chans:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, chans, -1, -1).contiguous()
    if chans == 1:
        return x.mean(1, keepdim=True)
    raise DataError(f"{where}: images have {x.shape[1]} channels, the space expects {chans}")


def fashion_mnist_set(input_size: tuple[int, int, int], train: bool = True, limit: int | None = None,
                      source: str | os.PathLike = DEBIAN_FASHION_MNIST) -> ImageSet:
    """Fashion-MNIST at ``input_size`` (resized, normalised, channels repeated) per batch: the
    uint8 images stay in one tensor, so only the images a search touches are converted."""
    ds = fashion_mnist(train, source)
    data, labels = ds.data, ds.targets
    if limit is not None:
        data, labels = data[:limit], labels[:limit]
    c, h, w = input_size

    def convert(u8: torch.Tensor) -> torch.Tensor:
        x = u8.unsqueeze(1).float().div_(255.0)
        x = _resize(x, (h, w))
        x = (x - 0.2860) / 0.3530  # Fashion-MNIST train mean/std
        return _match_channels(x, c, "fashion-mnist")

    return ImageSet(ds, input_size, FASHION_MNIST_CLASSES, data, labels.clone(), convert=convert)


def imagefolder_set(path: str | os.PathLike, input_size: tuple[int, int, int]) -> ImageSet:
    """Any torchvision ImageFolder tree (``class_x/xxx.png``), resized to ``input_size``."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    p = Path(path)
    if not p.is_dir():
        raise DataError(f"imagefolder:{path}: not a folder")
    try:
        ds = ImageFolder(str(p))
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"imagefolder:{path}: {e}") from None
    c, h, w = input_size
    steps: list[Any] = [transforms.Resize((h, w)), transforms.ToTensor()]
    steps.append(transforms.Grayscale(1) if c == 1 else transforms.Lambda(lambda t: t.expand(c, -1, -1) if t.shape[0] == 1 else t))
    steps.append(transforms.Normalize([0.5] * c, [0.5] * c))
    return ImageSet(ds, input_size, len(ds.classes), transform=transforms.Compose(steps))


def open_dataset(spec: str, input_size: tuple[int, int, int], limit: int | None = None) -> ImageSet:
    """``fashion-mnist`` or ``imagefolder:PATH`` → the training :class:`ImageSet`."""
    if spec == "fashion-mnist":
        return fashion_mnist_set(input_size, train=True, limit=limit)
    if spec.startswith("imagefolder:"):
        ds = imagefolder_set(spec.split(":", 1)[1], input_size)
        return ds
    raise DataError(f"--data: expected 'fashion-mnist' or 'imagefolder:PATH', got {spec!r}")


# ----------------------------------------------------------------------------- splits and sampling


def train_val_split(n: int, val_fraction: float, seed: int, limit: int | None = None) -> tuple[list[int], list[int]]:
    """Disjoint index lists (train for weights, val for architecture logits), seeded."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction: expected a number in (0, 1), got {val_fraction}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g).tolist()
    if limit is not None:
        perm = perm[:limit]
    n_val = max(1, int(round(len(perm) * val_fraction)))
    if len(perm) - n_val < 1:
        raise DataError(f"dataset too small for a train/val split: {len(perm)} images")
    return sorted(perm[n_val:]), sorted(perm[:n_val])


class BatchStream:
    """Endless seeded batches over a subset, sharded across ranks, with a checkpointable position.

    Each epoch is a fresh permutation drawn from ``(seed, epoch)`` alone, so the stream after
    ``load_state_dict`` is the one an uninterrupted run would have produced. With ``world`` ranks,
    every rank sees a disjoint ``1/world`` of each epoch (strided), like DistributedSampler.
    """

    def __init__(self, data: ImageSet, indices: Sequence[int], batch_size: int, seed: int,
                 rank: int = 0, world: int = 1):
        if len(indices) < batch_size * world:
            raise DataError(f"subset of {len(indices)} images is smaller than batch {batch_size} x {world} ranks")
        self.data, self.indices = data, list(indices)
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.epoch, self.pos = 0, 0
        self._order: list[int] | None = None

    def _epoch_order(self) -> list[int]:
        if self._order is None:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            perm = torch.randperm(len(self.indices), generator=g).tolist()
            per_rank = len(perm) // self.world
            mine = perm[self.rank: per_rank * self.world: self.world]
            self._order = [self.indices[i] for i in mine]
        return self._order

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        order = self._epoch_order()
        if self.pos + self.batch_size > len(order):
            self.epoch, self.pos, self._order = self.epoch + 1, 0, None
            order = self._epoch_order()
        idx = order[self.pos: self.pos + self.batch_size]
        self.pos += self.batch_size
        return self.data.batch(idx)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos, "seed": self.seed, "n": len(self.indices),
                "rank": self.rank, "world": self.world}

    def load_state_dict(self, state: dict[str, int]) -> None:
        mine = {"seed": self.seed, "n": len(self.indices), "world": self.world}
        for k, v in mine.items():
            if state.get(k) != v:
                raise DataError(f"sampler state: {k}={state.get(k)!r} differs from this run's {v!r}")
        self.epoch, self.pos, self._order = int(state["epoch"]), int(state["pos"]), None
