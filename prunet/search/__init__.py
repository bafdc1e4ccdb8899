"""Latency-aware architecture search: one loop, pluggable strategies (PruNet first).

See docs/search.md. Entry points: ``prunet search run|resume|strategies`` (CLI),
``python -m prunet.search`` (torchrun), :func:`run_search` / :func:`resume_search` (Python).
The loop (:mod:`prunet.search.loop`) knows no algorithm; strategies live in
:mod:`prunet.search.strategies` and register with :func:`register_strategy`.
"""

from prunet.search.config import LoopConfig, RunSpec, SearchError
from prunet.search.space import SearchSpace, SpaceError, builtin_spaces, load_space

__all__ = ["SearchSpace", "SpaceError", "builtin_spaces", "load_space", "run_search", "resume_search",
           "LoopConfig", "RunSpec", "SearchError", "Strategy", "register_strategy", "strategies", "get_strategy"]

_LAZY = {"run_search": "loop", "resume_search": "loop", "Strategy": "strategy", "register_strategy": "strategy",
         "strategies": "strategy", "get_strategy": "strategy"}


def __getattr__(name: str):  # torch-heavy parts load on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"prunet.search.{_LAZY[name]}"), name)
    raise AttributeError(name)
