"""Per-part features a whole network's latency depends on beyond the sum of isolated blocks.

Why features at all: each block is timed alone, in its own session, with its weights and input
hot in cache and one ``run()`` overhead of its own. Inside a whole network the overheads are paid
once, the weights of all blocks compete for the caches, and activations stream from one block to
the next. What a plain sum misses therefore grows with the number of parts, the bytes of weights
and activations, and with layout changes (stride-2 blocks, width changes) — all of which are
properties of a single part, so a correction built from them stays *additive per block*: the
search's differentiable expected latency (a weighted sum of table entries) keeps its form.

Features are computed once per table entry when the table is built and stored beside it
(format ``prunet.lut/2``), so predicting never builds a module.
"""

from __future__ import annotations

from typing import Any

# Feature names, in the order they are stored. Units keep coefficients of similar size:
# counts, kilobytes of float32 tensors.
FEATURES: tuple[str, ...] = ("parts", "param_kb", "act_kb", "stride2", "width_change")

# Nested candidate models, simplest first: which features join the affine ``a·Σ + c``.
# Chosen per table by cross-validation on its calibration nets (see :mod:`prunet.latency.model`).
CANDIDATE_MODELS: dict[str, tuple[str, ...]] = {
    "affine": (),
    "parts": ("parts",),
    "parts+params": ("parts", "param_kb"),
    "parts+params+act": ("parts", "param_kb", "act_kb"),
    "all": FEATURES,
}


def part_features(spec: Any, in_chs: int, hw: tuple[int, int]) -> dict[str, float]:
    """Features of one timed part (stem conv, block or head) at input resolution ``hw``.

    ``act_kb``: input + output + widest internal (hidden) activation, float32 — the tensors that
    leave the cache between blocks of a whole net. ``param_kb``: the module's parameters, float32
    (BN folding in onnxruntime shrinks them, by a similar share for every block)."""
    from prunet.arch import HeadSpec, block_type
    from prunet.nn import ClassifierHead, build_block

    if not isinstance(spec, HeadSpec) and block_type(spec).part_only:
        return dict.fromkeys(FEATURES, 0.0)  # no whole net the model is fitted on has one (registry)
    module = ClassifierHead(spec) if isinstance(spec, HeadSpec) else build_block(spec)
    params = sum(p.numel() for p in module.parameters())
    if isinstance(spec, HeadSpec):
        out_chs, out_hw, hidden = spec.num_classes, (1, 1), spec.conv_chs * hw[0] * hw[1]
        stride2 = 0.0
    else:
        out_chs, out_hw = spec.out_chs, spec.out_hw(hw)
        hidden = getattr(spec, "hidden_chs", 0) * max(hw[0] * hw[1], out_hw[0] * out_hw[1])
        stride2 = float(out_hw[0] < hw[0] or out_hw[1] < hw[1])
    act = in_chs * hw[0] * hw[1] + out_chs * out_hw[0] * out_hw[1] + hidden
    return {"parts": 1.0, "param_kb": params * 4 / 1024, "act_kb": act * 4 / 1024, "stride2": stride2,
            "width_change": float(in_chs != out_chs)}
