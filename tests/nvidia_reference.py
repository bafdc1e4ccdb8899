"""Rebuild the deterministic weights and input of ../shared/fixtures/gpunet/reference (its README)."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "gpunet"
DTYPES = {"torch.float32": np.float32, "torch.int64": np.int64}


def manifest(name: str) -> dict:
    return json.loads((FIXTURES / "reference" / f"{name}.manifest.json").read_text())


def recipe_weights(man: dict) -> "OrderedDict[str, torch.Tensor]":
    """One RandomState(weight_seed) visiting the manifest in order, as the README prescribes."""
    rng = np.random.RandomState(man["weight_seed"])
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, shape, dtype in man["manifest"]:
        shape = tuple(shape)
        if key.endswith("num_batches_tracked"):
            arr = np.zeros(shape, dtype=np.int64)
        elif key.endswith("running_mean"):
            arr = rng.normal(0, 0.1, shape)
        elif key.endswith("running_var"):
            arr = rng.uniform(0.5, 1.5, shape)
        elif key.endswith(".weight") and len(shape) == 1:
            arr = rng.uniform(0.8, 1.2, shape)
        elif key.endswith(".bias"):
            arr = rng.normal(0, 0.01, shape)
        else:
            arr = rng.normal(0, 1, shape) * np.sqrt(2 / np.prod(shape[1:]))
        out[key] = torch.from_numpy(np.asarray(arr).astype(DTYPES[dtype]))
    return out


def recipe_input(man: dict) -> torch.Tensor:
    res = man["img_resolution"]
    x = np.random.RandomState(man["input_seed"]).standard_normal((2, 3, 8, 8))
    x = np.repeat(np.repeat(x, res // 8, axis=2), res // 8, axis=3)
    return torch.from_numpy(x.astype(np.float32))


def reference_logits(name: str) -> np.ndarray:
    return np.load(FIXTURES / "reference" / f"{name}.logits.npy")


def reference_names() -> list[str]:
    return sorted(p.name[: -len(".manifest.json")] for p in (FIXTURES / "reference").glob("*.manifest.json"))
