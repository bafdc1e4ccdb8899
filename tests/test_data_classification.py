"""prunet.data: Fashion-MNIST via torchvision from the Debian files, ImageFolder, seeded streams."""

from __future__ import annotations

import pytest
import torch

from prunet.data.classification import (BatchStream, DataError, fashion_mnist, fashion_mnist_set, imagefolder_set,
                                        open_dataset, train_val_split)
from test_search_fixtures import needs_fashion


@needs_fashion
def test_fashion_mnist_through_torchvision(tmp_path):
    ds = fashion_mnist(train=False, root=tmp_path)
    assert len(ds) == 10000 and type(ds).__name__ == "FashionMNIST"
    assert (tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").exists()
    s = fashion_mnist_set((3, 20, 20), limit=100)
    x, y = s.batch([0, 5, 7])
    assert x.shape == (3, 3, 20, 20) and x.dtype == torch.float32 and y.tolist() == s.labels[[0, 5, 7]].tolist()
    assert abs(float(s.batch(range(100))[0].mean())) < 0.5


def test_missing_fashion_files_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        fashion_mnist(source=tmp_path / "none", root=tmp_path / "cache")
    with pytest.raises(DataError, match="imagefolder:PATH"):
        open_dataset("mnist", (1, 8, 8))


def test_imagefolder(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (12, 10), (i * 40, 0, 200 if cls == "b" else 0)).save(tmp_path / cls / f"{i}.png")
    s = open_dataset(f"imagefolder:{tmp_path}", (3, 8, 8))
    assert s.num_classes == 2 and len(s) == 6
    x, y = s.batch([0, 4])
    assert x.shape == (2, 3, 8, 8) and y.tolist() == [0, 1]
    with pytest.raises(DataError, match="not a folder"):
        imagefolder_set(tmp_path / "nope", (3, 8, 8))


def test_split_and_stream_resume_exactly():
    from prunet.data.classification import ImageSet

    data = ImageSet(None, (1, 2, 2), 10, torch.arange(200).view(200, 1, 1, 1).float(), torch.arange(200) % 10)
    tr, va = train_val_split(200, 0.25, seed=1)
    assert not set(tr) & set(va) and len(va) == 50 and len(tr) + len(va) == 200
    assert train_val_split(200, 0.25, seed=1) == (tr, va) != train_val_split(200, 0.25, seed=2)
    a = BatchStream(data, tr, 16, seed=5)
    seen = [a.next()[1] for _ in range(7)]  # crosses an epoch boundary (150 // 16 = 9 per epoch? no: 150 images)
    state = a.state_dict()
    rest = [a.next()[0].flatten().tolist() for _ in range(12)]
    b = BatchStream(data, tr, 16, seed=5)
    b.load_state_dict(state)
    assert [b.next()[0].flatten().tolist() for _ in range(12)] == rest
    assert len(seen) == 7
    # Two ranks see disjoint halves of every epoch.
    r0, r1 = BatchStream(data, tr, 5, 5, rank=0, world=2), BatchStream(data, tr, 5, 5, rank=1, world=2)
    i0 = {int(v) for _ in range(15) for v in r0.next()[0].flatten()}
    i1 = {int(v) for _ in range(15) for v in r1.next()[0].flatten()}
    assert not i0 & i1
    with pytest.raises(DataError, match="seed"):
        BatchStream(data, tr, 16, seed=6).load_state_dict(state)
