"""Latency-aware differentiable architecture search with tiered pruning (PruNet's method).

See docs/search.md for the method. Entry points: ``prunet search run|resume`` (CLI),
``python -m prunet.search`` (torchrun), :func:`run_search` / :func:`resume_search` (Python).
"""

from prunet.search.space import SearchSpace, SpaceError, builtin_spaces, load_space

__all__ = ["SearchSpace", "SpaceError", "builtin_spaces", "load_space", "run_search", "resume_search",
           "SearchConfig", "RunSpec", "SearchError"]


def __getattr__(name: str):  # torch-heavy parts load on first use
    if name in ("run_search", "resume_search", "SearchConfig", "RunSpec", "SearchError"):
        from prunet.search import engine

        return getattr(engine, name)
    raise AttributeError(name)
