"""The strategy interface: what a search algorithm supplies to the loop, and the registry.

The loop (:mod:`prunet.search.loop`) owns everything every search needs — data streams, DDP,
optimisers and their state across structure changes, checkpoints, signals, logs, evaluation,
measurement and the run folder. A strategy owns the algorithm: its supernet, which parameters are
weights and which are architecture, its losses, its structural decisions and how the final
network is derived. ``docs/search.md`` ("Adding a strategy") walks through the ``random``
strategy as the worked example.

A strategy is one class registered with :func:`register_strategy` in its own module under
:mod:`prunet.search.strategies`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from prunet.arch import ArchSpec
from prunet.latency.lut import LatencyTable
from prunet.search.config import LoopConfig, SearchError, dataclass_from_dict
from prunet.search.space import SearchSpace

Named = list[tuple[str, nn.Parameter]]


@dataclass
class StrategyContext:
    """What a strategy is built from; ``sync_buffers`` averages BN statistics across ranks (call it
    before a decision that reads them, so every rank decides the same)."""

    space: SearchSpace
    table: LatencyTable
    target_ms: float
    seed: int
    loop: LoopConfig
    device: torch.device
    sync_buffers: Callable[[], None] = lambda: None


@dataclass
class StructureChange:
    """A change of the supernet's parameters after a step, so the loop can carry optimiser state.

    ``sliced``: parameter name → (dims, kept indices): its state tensors are sliced like the
    parameter was (a Prunode commit). ``dropped``: names whose state is discarded (a reset
    logit). State of parameters that disappeared is dropped anyway; names that stay keep theirs.
    """

    events: list[dict[str, Any]] = field(default_factory=list)
    sliced: dict[str, tuple[list[int], torch.Tensor]] = field(default_factory=dict)
    dropped: set[str] = field(default_factory=set)


@dataclass
class Derived:
    """The final network: its spec (without provenance, which the loop adds), a
    :class:`prunet.nn.PruNet` holding the inherited weights, the events of finalisation, and
    strategy-specific details for the provenance."""

    spec: ArchSpec
    model: nn.Module
    events: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class Strategy(ABC):
    """One search algorithm. Subclasses set ``name``, ``summary`` (one line, for ``prunet search
    strategies``) and ``config_class`` (a dataclass of its settings), then implement the hooks.

    The loop calls, per step: :meth:`on_step_start`; a weight step with :meth:`weight_loss`
    (architecture parameters frozen; both groups train when ``joint``); after ``warmup_steps``
    and unless ``joint``, an architecture step with :meth:`arch_loss` (weights frozen) followed
    by :meth:`after_step`. Anything that draws random numbers must draw them from torch's or
    Python's global generators (the loop checkpoints those) in the same order on every rank.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    joint: ClassVar[bool] = False
    event_kinds: ClassVar[tuple[str, ...]] = ()  # counted (zeros included) in the provenance and summary

    def __init__(self, ctx: StrategyContext, config: Any):
        self.ctx = ctx
        self.cfg = config

    # ----------------------------------------------------------------- construction

    @classmethod
    def make_config(cls, settings: dict[str, Any], where: str = "strategy_config") -> Any:
        cfg = dataclass_from_dict(cls.config_class, dict(settings), f"{where} ({cls.name})")
        validate = getattr(cfg, "validate", None)
        if validate is not None:
            validate()
        return cfg

    def check_target(self) -> None:
        """Refuse a target the space cannot reach, before anything is written."""

    @abstractmethod
    def build(self) -> nn.Module:
        """The supernet (or network) the loop trains; called with torch seeded identically on every rank."""

    @abstractmethod
    def weight_parameters(self) -> Named:
        """(name, parameter) of the weights: SGD with the loop's schedule."""

    def arch_parameters(self) -> Named:
        """(name, parameter) of the architecture; none for strategies without a relaxation."""
        return []

    def arch_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer | None:
        return None

    # ----------------------------------------------------------------- one step

    @abstractmethod
    def weight_loss(self, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        ...

    def arch_loss(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        raise SearchError(f"strategy {self.name!r} has architecture parameters but no arch_loss")

    def on_step_start(self, step: int) -> StructureChange | None:
        return None

    def after_step(self, step: int) -> StructureChange | None:
        return None

    def record(self, step: int) -> dict[str, Any]:
        """Extra fields of this step's ``log.jsonl`` line."""
        return {}

    def progress(self, metrics: dict[str, float], step: int) -> dict[str, str]:
        """A few fields for the progress bar."""
        return {}

    # ----------------------------------------------------------------- resume

    def structure(self) -> dict[str, Any]:
        """Plain data from which :meth:`apply_structure` rebuilds the current supernet shape."""
        return {}

    def apply_structure(self, structure: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """Decision state beyond parameters (counters...), restored by :meth:`load_state_dict`."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    # ----------------------------------------------------------------- the result

    @abstractmethod
    def derive(self) -> Derived:
        """Collapse to one network whose predicted latency is ≤ the target."""

    def plot(self, log_path: Path, png_path: Path) -> None:
        """Draw this strategy's trajectories from ``log.jsonl`` (optional; matplotlib may be absent)."""

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.cfg)


_REGISTRY: dict[str, type[Strategy]] = {}
_BUILTIN_PACKAGE = "prunet.search.strategies"


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make ``cls`` available as ``--strategy cls.name``."""
    if not cls.name or not cls.summary:
        raise ValueError(f"{cls.__name__}: a strategy needs a name and a one-line summary")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"strategy {cls.name!r} is registered already")
    _REGISTRY[cls.name] = cls
    return cls


def strategies() -> dict[str, type[Strategy]]:
    importlib.import_module(_BUILTIN_PACKAGE)  # registers the built-in ones
    return dict(_REGISTRY)


def get_strategy(name: str) -> type[Strategy]:
    known = strategies()
    if name not in known:
        raise SearchError(f"--strategy: unknown strategy {name!r} (known: {sorted(known)})")
    return known[name]
