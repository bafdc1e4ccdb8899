"""Process runtime shared by the search loop and the trainer: device choice, the process group,
collectives on the right device, RNG state and stop signals.

Both loops run under torchrun (gloo on CPU, NCCL on GPU) and both resume exactly, so they must
agree on these details; one helper keeps them from drifting apart (the search used to all-reduce a
CPU tensor, which NCCL rejects, and forgot CUDA's RNG, which drives its Gumbel noise on a GPU).
"""

from __future__ import annotations

import os
import random
import signal
from dataclasses import dataclass
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist


class DeviceError(RuntimeError):
    """The requested device cannot be used here (one line for the user)."""


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def choose_device(requested: str | None = None) -> torch.device:
    """``None``/``"auto"``: this process's GPU when CUDA is there, else the CPU. ``"cuda"`` means
    the GPU of this process (``LOCAL_RANK`` under torchrun)."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if requested in (None, "auto"):
        return torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(requested)
    except RuntimeError:
        raise DeviceError(f"--device: expected cpu, cuda or cuda:N, got {requested!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {requested}: torch sees no CUDA GPU here")
        return torch.device("cuda", local if dev.index is None else dev.index)
    if dev.type != "cpu":
        raise DeviceError(f"--device: expected cpu, cuda or cuda:N, got {requested!r}")
    return dev


def init_distributed(requested: str | None = None) -> torch.device:
    """Choose the device and, when torchrun started several processes, join the process group
    (NCCL when this process runs on a GPU, gloo on the CPU)."""
    device = choose_device(requested)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not (dist.is_available() and dist.is_initialized()):
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


@dataclass(frozen=True)
class Collectives:
    """Every tensor a collective sees lives on ``device``: NCCL rejects CPU tensors, gloo CUDA ones."""

    device: torch.device

    @property
    def world(self) -> int:
        return world()[1]

    def mean_(self, tensors: list[torch.Tensor]) -> None:
        """Average ``tensors`` in place across ranks (one flat all-reduce)."""
        if self.world == 1 or not tensors:
            return
        flat = torch.cat([t.detach().reshape(-1).float().to(self.device) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world
        off = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[off:off + n].view_as(t).to(device=t.device, dtype=t.dtype))
            off += n

    def max_int(self, value: int) -> int:
        """The largest ``value`` over ranks (e.g. a stop signal any rank received)."""
        if self.world == 1:
            return int(value)
        flag = torch.tensor([int(value)], dtype=torch.int64, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def gather_objects(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Every RNG a step may draw from: torch CPU, Python, and the CUDA generator of ``device``."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    torch.set_rng_state(state["torch"])
    if "python" in state:
        random.setstate(_tuplify(state["python"]))
    if device is not None and device.type == "cuda":
        if "cuda" not in state:
            raise ValueError("checkpoint has no CUDA RNG state (written on CPU); resume on the device it ran on")
        torch.cuda.set_rng_state(state["cuda"], device)


def _tuplify(x: Any) -> Any:
    """``random.setstate`` wants tuples; a weights-only checkpoint gives lists back."""
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


class StopSignals:
    """Record SIGTERM/SIGINT instead of dying mid-step, so the loop can checkpoint and exit; the
    previous handlers come back on exit. Signals can only be caught in the main thread."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum = 0
        self._old: dict[int, Any] = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def install(self) -> "StopSignals":
        self._old = {s: signal.signal(s, self._on_signal) for s in self.SIGNALS}
        return self

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}

    def __enter__(self) -> "StopSignals":
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.restore()
