"""Latency tables for searches: the per-machine cache and its provisioning.

A search needs the table of its space measured on the machine it targets; when the user gives
none, the one cached in ``$PRUNET_CACHE/luts`` is used, measured first if there is none yet.
"""

from __future__ import annotations

import sys
from pathlib import Path

from prunet._cache import cache_dir
from prunet.latency.backends import get_backend
from prunet.search.space import SearchSpace


def default_lut_path(space: SearchSpace, backend: str, threads: int) -> Path:
    """``$PRUNET_CACHE/luts/<space>-<hash>-<backend>-<threads>t.json``; every part is checked to
    be one plain path component (space names by the space reader, backends by the registry)."""
    get_backend(backend)
    return cache_dir() / "luts" / f"{space.name}-{space.hash}-{backend}-{int(threads)}t.json"


def ensure_table(space: SearchSpace, backend: str = "onnxruntime", threads: int = 1, quiet: bool = False) -> Path:
    """The cached latency table of ``space`` on this machine, measured now if there is none yet."""
    from prunet.latency.lut import Measurer, build_table

    from prunet.latency.lut import LutError, load_table

    path = default_lut_path(space, backend, threads)
    why = "no latency table given"
    if path.exists():
        try:
            stale = load_table(path).machine_differences()  # the cache may come from another machine
        except LutError as e:
            stale = [str(e)]
        if not stale:
            return path
        why = f"the cached table was measured elsewhere ({'; '.join(stale)})"
    if not quiet:
        print(f"{why}: measuring one for {space.name!r} on {backend} ({threads} thread(s)) into {path}",
              file=sys.stderr)
    build_table(space, Measurer(backend=backend, threads=threads), progress=not quiet).save(path)
    return path
