"""Latency tables for searches: the per-machine cache and its provisioning.

A search needs the table of its space measured on the machine it targets; when the user gives
none, the one cached in ``$PRUNET_CACHE/luts`` is used, measured first if there is none yet.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prunet._cache import cache_dir
from prunet.latency.backends import get_backend
from prunet.search.space import SearchSpace


def default_lut_path(space: SearchSpace, backend: str, threads: int, runs: int | None = None) -> Path:
    """``$PRUNET_CACHE/luts/<space>-<hash>-<backend>-<threads>t[-<runs>runs].json``; every part is
    checked to be one plain path component (space names by the space reader, backends by the
    registry). A table timed with fewer runs per entry than the default (``make demo``'s) has a
    file of its own, so a benchmark never picks it up from the cache."""
    get_backend(backend)
    suffix = "" if runs is None else f"-{_checked_runs(runs)}runs"
    return cache_dir() / "luts" / f"{space.name}-{space.hash}-{backend}-{int(threads)}t{suffix}.json"


def _checked_runs(runs: int) -> int:
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 10:
        raise ValueError(f"lut_runs: expected an integer >= 10 (timed runs per table entry), got {runs!r}")
    return runs


def table_measurer(backend: str, threads: int, runs: int | None = None) -> Any:
    """The measurer a cached table is built with: the defaults, or ``runs`` timed runs per entry
    after a tenth as many warm-up runs (at least 10)."""
    from prunet.latency.lut import Measurer

    if runs is None:
        return Measurer(backend=backend, threads=threads)
    return Measurer(backend=backend, threads=threads, iters=_checked_runs(runs), warmup=max(10, runs // 10))


def ensure_table(space: SearchSpace, backend: str = "onnxruntime", threads: int = 1, quiet: bool = False,
                 runs: int | None = None) -> Path:
    """The cached latency table of ``space`` on this machine, measured now if there is none yet
    (``runs``: timed runs per entry, None for the default; recorded as the table's ``iters``)."""
    from prunet.latency.lut import CALIBRATION_SAMPLER, LutError, build_table, load_table

    measurer = table_measurer(backend, threads, runs)
    path = default_lut_path(space, backend, threads, runs)
    why = "no latency table given"
    if path.exists():
        try:
            table = load_table(path)
            stale = table.machine_differences()  # the cache may come from another machine
            if table.provenance.get("iters") != measurer.iters:
                stale.append(f"timed with {table.provenance.get('iters')} runs per entry, not {measurer.iters}")
            sampler = table.calibration.get("sampler", "uniform")
            if sampler != CALIBRATION_SAMPLER:  # uniform nets left the ends of the space to extrapolation
                stale.append(f"calibrated on {sampler!r} nets, not {CALIBRATION_SAMPLER!r}")
        except LutError as e:
            stale = [str(e)]
        if not stale:
            return path
        why = f"the cached table does not fit ({'; '.join(stale)})"
    if not quiet:
        print(f"{why}: measuring one for {space.name!r} on {backend} ({threads} thread(s), {measurer.iters} timed "
              f"runs per block) into {path}", file=sys.stderr)
    build_table(space, measurer, progress=not quiet).save(path)
    return path
