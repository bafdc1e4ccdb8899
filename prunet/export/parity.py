"""Numerical agreement between a torch model and its ONNX export, run through onnxruntime.

Relative error is measured against the size of the reference output (max |ort - torch| divided by
max |torch|), not element by element: logits near zero would make an element-wise ratio explode
without meaning anything, while a scale-relative error is what decides whether top-1 changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class ParityFigures:
    """Agreement on one kind of input."""

    inputs: str  # "random" or "imagenet"
    n: int  # samples compared
    max_abs: float
    max_rel: float  # max |ort - torch| / max |torch|
    top1_agree: float | None = None  # share of samples with the same arg-max, when outputs are logits
    # How much the torch output varies across the samples, relative to its size. Near zero means
    # the output hardly depends on the input (untrained weights), so agreement proves little.
    input_sensitivity: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _flatten(out) -> list[np.ndarray]:
    if isinstance(out, torch.Tensor):
        return [out.detach().cpu().float().numpy()]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        flat: list[np.ndarray] = []
        for o in out:
            flat.extend(_flatten(o))
        return flat
    raise TypeError(f"cannot compare model output of type {type(out).__name__}")


def run_torch(model: nn.Module, x: torch.Tensor, chunk: int = 32) -> list[np.ndarray]:
    """Reference outputs. Eval-mode models treat samples independently, so the reference runs
    in large chunks whatever batch the exported graph takes (much faster on CPU)."""
    parts: list[list[np.ndarray]] = []
    with torch.inference_mode():
        for i in range(0, x.shape[0], chunk):
            parts.append(_flatten(model(x[i:i + chunk])))
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def run_ort(session, x: torch.Tensor, chunk: int) -> list[np.ndarray]:
    name = session.get_inputs()[0].name
    parts = [session.run(None, {name: x[i:i + chunk].numpy()}) for i in range(0, x.shape[0], chunk)]
    return [np.concatenate([p[k] for p in parts]).astype(np.float32) for k in range(len(parts[0]))]


def compare(ref: list[np.ndarray], got: list[np.ndarray], inputs: str) -> ParityFigures:
    if len(ref) != len(got):
        raise ValueError(f"torch returned {len(ref)} outputs, onnxruntime {len(got)}")
    max_abs = 0.0
    max_rel = 0.0
    for r, g in zip(ref, got):
        if r.shape != g.shape:
            raise ValueError(f"output shape differs: torch {r.shape}, onnxruntime {g.shape}")
        diff = float(np.max(np.abs(r - g))) if r.size else 0.0
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf")))
    sens = None
    if ref[0].shape[0] > 1:
        sens = max(float(np.max(np.std(r, axis=0))) / max(float(np.max(np.abs(r))), 1e-30)
                   for r in ref)
    top1 = None
    if len(ref) == 1 and ref[0].ndim == 2 and ref[0].shape[1] > 1:
        top1 = float(np.mean(ref[0].argmax(1) == got[0].argmax(1)))
    return ParityFigures(inputs=inputs, n=int(ref[0].shape[0]), max_abs=max_abs, max_rel=max_rel,
                         top1_agree=top1, input_sensitivity=sens)


WEAK_SENSITIVITY = 1e-4


def calibrate_batchnorm(model: nn.Module, input_shape: tuple[int, ...], batches: int = 2,
                        seed: int = 0) -> nn.Module:
    """Set BatchNorm running statistics from random inputs (in place) and return the model.

    Untrained zoo models keep BN's default statistics, under which activations fade to ~1e-6 by
    the head and the logits equal the classifier bias for every input; parity on such a model
    tests nothing. Calibrated statistics keep activations at unit scale, so tests exercise the
    whole graph.
    """
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
        m.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(input_shape, generator=gen))
    for m, (momentum, training) in zip(norms, saved):
        m.momentum = momentum
        m.train(training)
    return model


def check(model: nn.Module, session, x: torch.Tensor, chunk: int, inputs: str) -> ParityFigures:
    """Run both on `x` in chunks of `chunk` samples and compare."""
    return compare(run_torch(model, x), run_ort(session, x, chunk), inputs)
