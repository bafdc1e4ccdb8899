"""The measuring loops: one target, or several interleaved round by round.

Interleaving follows the measured rules in shared/notes/latency-measurement.md: turn the order
every round (whoever runs first pays) and switch onnxruntime's spinning threads off while another
backend shares the cores (spinning made torch eager look 2.5x slower on 2 cores).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tqdm.auto import tqdm

from prunet.export.errors import InputShapeError

from .provenance import device_description, now, versions
from .runners import Runner, make_runner
from .stats import HEADLINES, LatencyStats

DEFAULT_WARMUP = 20
DEFAULT_ITERS = 200


def _label(target) -> str:
    if isinstance(target, (str, os.PathLike)):
        return os.fspath(target)
    cfg = getattr(target, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(target).__name__


def _check_counts(warmup: int, iters: int) -> None:
    if warmup < 0 or iters < 1:
        raise ValueError(f"need warmup >= 0 and iters >= 1, got warmup={warmup}, iters={iters}")


def _stats(runner: Runner, samples: list[float], *, label: str, shape, warmup: int,
           headline: str, keep_samples: bool) -> LatencyStats:
    return LatencyStats.from_samples(
        samples, headline=headline, keep_samples=keep_samples, backend=runner.backend,
        device=device_description(runner.device), threads=runner.threads, batch=int(shape[0]),
        input_shape=[int(d) for d in shape], warmup=warmup, target=label,
        versions=versions(), date=now(), settings=dict(runner.settings),
    )


def measure(target, input_shape, *, backend: str = "onnxruntime", warmup: int = DEFAULT_WARMUP,
            iters: int = DEFAULT_ITERS, threads: int | None = None, device: str = "cpu",
            headline: str = "min", spinning: bool = True, providers: list[str] | None = None,
            precision: str = "fp16", progress: bool = False,
            keep_samples: bool = False) -> LatencyStats:
    """Latency of one inference of `target` on `backend`, over `iters` runs after `warmup`.

    target: nn.Module, zoo/timm name, architecture JSON, .onnx file (or .plan for tensorrt).
    input_shape: full input shape including the batch, e.g. (1, 3, 224, 224).
    threads: CPU threads (torch intra-op / onnxruntime intra-op); None = all available CPUs.
    The result's `value` is the `headline` statistic (default: minimum, see stats.py).
    """
    _check_counts(warmup, iters)
    if headline not in HEADLINES:
        raise ValueError(f"headline: expected one of {HEADLINES}, got {headline!r}")
    runner = make_runner(target, input_shape, backend=backend, threads=threads, device=device,
                         spinning=spinning, providers=providers, precision=precision)
    try:
        for _ in range(warmup):
            runner()
        samples = [runner() for _ in tqdm(range(iters), disable=not progress,
                                          desc=f"{_label(target)} [{backend}]", leave=False)]
        return _stats(runner, samples, label=_label(target), shape=input_shape, warmup=warmup,
                      headline=headline, keep_samples=keep_samples)
    finally:
        runner.close()


@dataclass
class Candidate:
    """One entry of an interleaved measurement."""

    label: str
    target: object
    input_shape: tuple[int, ...]
    backend: str = "onnxruntime"
    device: str = "cpu"


def measure_interleaved(candidates: list[Candidate], *, warmup: int = DEFAULT_WARMUP,
                        iters: int = DEFAULT_ITERS, threads: int | None = None,
                        headline: str = "min", progress: bool = False,
                        keep_samples: bool = False, burst: int = 1) -> dict[str, LatencyStats]:
    """Measure several targets/backends side by side: each round runs every candidate, starting
    one position later than the round before, so no candidate always runs first.

    ``burst = 1``: one run per candidate per round — every run follows another model, so caches
    hold someone else's weights (a multi-model server). ``burst = B > 1``: per round, one
    unrecorded run then ``B`` recorded back-to-back runs — the warm-cache latency of a model
    serving alone, which is what latency tables and single-model timings measure, while the
    rounds still spread machine drift over all candidates. On this 2-core machine the two
    differed by up to 1.5× for 0.5 ms nets, and not by the same factor for every net.

    onnxruntime spinning is switched off here (it steals the cores from the others).
    """
    _check_counts(warmup, iters)
    if burst < 1:
        raise ValueError(f"need burst >= 1, got {burst}")
    labels = [c.label for c in candidates]
    if len(set(labels)) != len(labels):
        raise ValueError(f"candidate labels must be unique, got {labels}")
    runners: list[Runner] = []
    try:
        for c in candidates:
            runners.append(make_runner(c.target, c.input_shape, backend=c.backend,
                                       threads=threads, device=c.device, spinning=False))
        k = len(runners)
        samples: list[list[float]] = [[] for _ in range(k)]
        for r in range(warmup):
            for j in range(k):
                runners[(r + j) % k]()
        for r in tqdm(range(iters), disable=not progress, desc=" vs ".join(labels), leave=False):
            for j in range(k):
                i = (r + j) % k
                if burst > 1:
                    runners[i]()
                samples[i].extend(runners[i]() for _ in range(burst))
        out = {}
        for c, runner, s in zip(candidates, runners, samples):
            st = _stats(runner, s, label=c.label, shape=c.input_shape, warmup=warmup,
                        headline=headline, keep_samples=keep_samples)
            st.settings["interleaved_with"] = [x for x in labels if x != c.label]
            st.settings["burst"] = burst
            out[c.label] = st
        return out
    finally:
        for runner in runners:
            runner.close()


def input_shape_for(target, batch: int = 1) -> tuple[int, ...]:
    """Full input shape for a target at `batch`: native size of a model, declared shape of an
    ONNX graph (its symbolic batch replaced by `batch`)."""
    from prunet.export.resolve import OnnxFile, native_input_size, resolve

    resolved = resolve(target)
    if isinstance(resolved, OnnxFile):
        from prunet.export.onnx import onnx_input_shape

        name, dims = onnx_input_shape(resolved.path)
        if not dims:
            raise InputShapeError(f"{resolved.path}: input '{name}' has no declared shape")
        first = dims[0]
        if isinstance(first, int) and first > 0 and first != batch:
            raise InputShapeError(f"{resolved.path}: graph has a fixed batch of {first}, "
                                  f"asked for batch {batch}")
        rest = dims[1:]
        if any(not isinstance(d, int) or d < 1 for d in rest):
            raise InputShapeError(f"{resolved.path}: input '{name}' has dynamic dimensions "
                                  f"{dims}; pass the input shape explicitly")
        return (batch, *rest)
    return (batch, *native_input_size(resolved))
