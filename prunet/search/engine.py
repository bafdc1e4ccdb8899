"""The search loop: warm-up, alternating first-order updates, tiered pruning, finalisation.

One step (after ``warmup_steps`` of weight-only training):

1. weights: a train-split batch through the supernet with Gumbel noise at temperature ``τ``,
   cross-entropy, SGD (gradients all-reduced across ranks);
2. architecture: a val-split batch, ``CE + λ·max(0, E[lat]/T' − 1)`` with ``E[lat]`` the
   calibrated expected latency (``a·E[Σ] + c``) and ``T' = T·(1 − target_margin)``, Adam on the
   logits ``α`` (candidates/Skip) and ``β`` (Prunode big/small), weights frozen;
3. decisions, from the (all-reduced, hence identical) logits, taken only while the expected
   latency is above ``T'`` (at most one layer removal per step): a Prunode whose small path has
   probability > ``prunode_threshold`` for ``prunode_window`` consecutive steps commits
   ``c ← c − s``; a candidate below ``block_threshold`` for ``block_window`` steps is deleted;
   a layer whose Skip is above ``layer_threshold`` for ``layer_window`` steps (or that has only
   Skip left) is removed. Every change is followed by rebuilding the optimizers with their state
   carried over by parameter name (and sliced like the tensors it belongs to).

``τ`` anneals exponentially from ``tau_start`` to ``tau_end``; the weight learning rate follows
a cosine. Finalisation keeps the argmax per layer and, while the predicted latency of the derived
network exceeds ``T``, shrinks the block whose next ``s`` channels save the most latency (then
skips skippable layers), so the result's prediction is always ≤ ``T``.

Checkpoints are atomic (temp file + ``os.replace``) and hold everything the next step depends
on — structure, weights, logits, both optimizers, counters, temperature schedule position, RNG
states of every rank, sampler positions — so a killed run resumed from its last checkpoint ends
with the same architecture as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import resource
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from prunet.arch import Latency, Provenance, save
from prunet._cache import cache_dir
from prunet.arch.io import atomic_write_text
from prunet.latency.lut import LatencyTable, block_key, min_reachable_ms
from prunet.search.space import SearchSpace, load_space
from prunet.search.supernet import SKIP, Prunode, Supernet, select_channels

CKPT_FORMAT = "prunet.search-ckpt/1"


class SearchError(RuntimeError):
    """A search cannot start or continue; the message names the file/option and the fix."""


@dataclass
class SearchConfig:
    """Every knob of a search, with its default and meaning."""

    steps: int = 300                 # total steps (one weight + one architecture update each)
    warmup_steps: int = 60           # weight-only steps first (architecture frozen, uniform)
    batch_size: int = 64             # per rank
    val_fraction: float = 0.2        # share of the used training images that trains the logits
    train_limit: int | None = 12000  # training images used (None = all); proxy-scale searches need few
    weight_lr: float = 0.05          # SGD (momentum, nesterov), cosine to 0 over `steps`
    weight_momentum: float = 0.9
    weight_decay: float = 4e-5
    arch_lr: float = 0.05            # Adam, betas (0.5, 0.999)
    tau_start: float = 5.0           # Gumbel-softmax temperature, annealed exponentially ...
    tau_end: float = 0.5             # ... to this at the last step
    latency_weight: float = 4.0      # λ of the hinge penalty
    target_margin: float = 0.03      # aim E[lat] at T·(1 − margin): finalisation then has little to cut
    shrink_step: int = 0             # Prunode step s in channels (0 = the space's width_step) ...
    shrink_fraction: float = 0.125   # ... or this share of the current width, if larger (0 = fixed s)
    prunode_threshold: float = 0.6   # commit when p_small stays above this ...
    prunode_window: int = 5          # ... for this many consecutive steps
    block_threshold: float = 0.08    # delete a candidate whose probability stays below this ...
    block_window: int = 10           # ... for this many steps
    layer_threshold: float = 0.6     # remove a layer whose Skip probability stays above this ...
    layer_window: int = 10           # ... for this many steps
    checkpoint_every: int = 25       # steps between checkpoints (also on SIGTERM/SIGINT)
    threads: int = 0                 # torch CPU threads for the search (0 = torch's default; recorded)
    eval_images: int = 2000          # val images to score the derived network on (0 = skip)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SearchError(f"config: unknown field {unknown[0]!r} (known: {sorted(known)})")
        return cls(**d)

    def validate(self) -> None:
        if self.steps < 1:
            raise SearchError(f"--steps: expected a positive integer, got {self.steps}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise SearchError(f"warmup_steps: expected 0..steps ({self.steps}), got {self.warmup_steps}")
        if self.batch_size < 1:
            raise SearchError(f"batch_size: expected a positive integer, got {self.batch_size}")
        for name in ("prunode_threshold", "block_threshold", "layer_threshold"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise SearchError(f"{name}: expected a probability in (0, 1), got {v}")
        if not 0.0 <= self.shrink_fraction < 1.0:
            raise SearchError(f"shrink_fraction: expected a share in [0, 1), got {self.shrink_fraction}")
        if not (self.tau_start > 0 and self.tau_end > 0):
            raise SearchError("tau_start and tau_end must be positive")


@dataclass
class RunSpec:
    """What the user asked for (``run.json`` in the run folder; ``resume`` reads it back)."""

    space: str
    data: str
    target_ms: float
    backend: str = "onnxruntime"
    lut: str | None = None
    seed: int = 0
    latency_threads: int = 1
    device: str = "cpu"
    config: SearchConfig = field(default_factory=SearchConfig)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        d = dict(d)
        cfg = SearchConfig.from_dict(d.pop("config", {}))
        return cls(config=cfg, **d)


# ----------------------------------------------------------------------------- helpers


def init_distributed(device: str | None) -> None:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on GPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return
    cuda = bool(device and device.startswith("cuda")) and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _allreduce_mean(tensors: list[torch.Tensor]) -> None:
    rank, world = _world()
    if world == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    dist.all_reduce(flat)
    flat /= world
    off = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[off:off + n].view_as(t).to(t.dtype))
        off += n


@contextlib.contextmanager
def _frozen(named: list[tuple[str, torch.Tensor]]):
    """The other half of the alternating update: its parameters get no gradient meanwhile."""
    for _, p in named:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for _, p in named:
            p.requires_grad_(True)


def _reduce_grads(named: list[tuple[str, torch.Tensor]]) -> None:
    """Fill missing grads with zeros (every rank must all-reduce the same list) and average them."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in named]
    for (_, p), g in zip(named, grads):
        p.grad = g
    _allreduce_mean(grads)


def _state_hash(net: Supernet) -> str:
    h = hashlib.sha256(json.dumps(net.structure(), sort_keys=True).encode())
    for k, v in net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _SavedTensorBytes:
    """Bytes autograd saves for backward during one forward: the activation memory of a step.

    The process's peak RSS is set by the first steps, when every candidate is at full width and
    before any pruning, and freed activations stay resident (the allocator keeps them), so RSS
    cannot show what the tiers save; this count can, step by step. Storages are counted once."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.bytes = 0

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in self.seen:
            self.seen.add(st.data_ptr())
            self.bytes += st.nbytes()
        return t

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t


def default_lut_path(space: SearchSpace, backend: str, threads: int) -> Path:
    return cache_dir() / "luts" / f"{space.name}-{space.hash}-{backend}-{threads}t.json"


def ensure_table(space: SearchSpace, backend: str = "onnxruntime", threads: int = 1, quiet: bool = False) -> Path:
    """The cached latency table of ``space`` on this machine (``$PRUNET_CACHE/luts``), measured
    now if there is none yet; returns its path."""
    from prunet.latency.lut import Measurer, build_table

    path = default_lut_path(space, backend, threads)
    if not path.exists():
        if not quiet:
            print(f"no latency table given: measuring one for {space.name!r} on {backend} "
                  f"({threads} thread(s)) into {path}", file=sys.stderr)
        build_table(space, Measurer(backend=backend, threads=threads), progress=not quiet).save(path)
    return path


# ----------------------------------------------------------------------------- the searcher


class Searcher:
    """Owns the supernet, optimizers, data streams and run folder of one search."""

    def __init__(self, run: RunSpec, out: str | os.PathLike, *, quiet: bool = False, table: LatencyTable | None = None):
        self.run = run
        self.cfg = run.config
        self.cfg.validate()
        self.out = Path(out)
        self.quiet = quiet
        self.rank, self.world = _world()
        self.space = load_space(run.space)
        if run.target_ms is None or not (run.target_ms > 0 and math.isfinite(run.target_ms)):
            raise SearchError(f"--target-ms: expected a positive number, got {run.target_ms}")
        self.table = table if table is not None else self._load_or_build_table()
        self.table.check_for(self.space.hash, run.backend, run.latency_threads)
        floor = min_reachable_ms(self.table, self.space)
        if run.target_ms < floor:
            raise SearchError(f"--target-ms {run.target_ms}: below the smallest net the space "
                              f"{self.space.name!r} allows ({floor:.4f} ms predicted on {self.table.backend}); "
                              "raise the target or use a smaller space")
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        self.threads = torch.get_num_threads()
        self.device = torch.device(run.device)
        self._stop_signal: int | None = None
        self.events: list[dict[str, Any]] = []
        self._saved_mb = 0.0  # activation memory of the last weight step (see _SavedTensorBytes)

    # -------------------------------------------------------------- setup

    def _load_or_build_table(self) -> LatencyTable:
        from prunet.latency.lut import load_table

        if self.run.lut:
            return load_table(self.run.lut)
        path = default_lut_path(self.space, self.run.backend, self.run.latency_threads)
        if self.rank == 0:
            ensure_table(self.space, self.run.backend, self.run.latency_threads, quiet=self.quiet)
        if self.world > 1:
            dist.barrier()
        return load_table(path)

    def _setup_data(self) -> None:
        from prunet.data.classification import BatchStream, open_dataset, train_val_split

        data = open_dataset(self.run.data, self.space.input_size, limit=None)
        if data.num_classes != self.space.num_classes:
            raise SearchError(f"--data {self.run.data}: {data.num_classes} classes, but space "
                              f"{self.space.name!r} has num_classes={self.space.num_classes}")
        tr, va = train_val_split(len(data), self.cfg.val_fraction, self.run.seed, self.cfg.train_limit)
        self.data = data
        self.val_indices = va
        bs = self.cfg.batch_size
        self.train_stream = BatchStream(data, tr, bs, self.run.seed, self.rank, self.world)
        self.val_stream = BatchStream(data, va, bs, self.run.seed + 1, self.rank, self.world)

    def _build(self) -> None:
        torch.manual_seed(self.run.seed)  # identical initial weights on every rank
        self.net = Supernet(self.space, self.table, self.cfg.shrink_step or None, self.cfg.shrink_fraction).to(self.device)
        self.counters: dict[str, int] = {}
        self.step = 0
        self._make_optimizers({}, {})
        torch.manual_seed(self.run.seed * 7919 + self.rank)
        random.seed(self.run.seed * 7919 + self.rank)

    def _make_optimizers(self, w_state: dict[str, dict], a_state: dict[str, dict]) -> None:
        cfg = self.cfg
        self.w_named = self.net.weight_parameters()
        self.a_named = self.net.arch_parameters()
        self.w_opt = torch.optim.SGD([p for _, p in self.w_named], lr=cfg.weight_lr, momentum=cfg.weight_momentum,
                                     nesterov=True, weight_decay=cfg.weight_decay)
        self.a_opt = torch.optim.Adam([p for _, p in self.a_named], lr=cfg.arch_lr, betas=(0.5, 0.999))
        for named, opt, st in ((self.w_named, self.w_opt, w_state), (self.a_named, self.a_opt, a_state)):
            for n, p in named:
                if n in st:
                    opt.state[p] = st[n]

    def _optimizer_state_by_name(self) -> tuple[dict[str, dict], dict[str, dict]]:
        w = {n: self.w_opt.state[p] for n, p in self.w_named if p in self.w_opt.state}
        a = {n: self.a_opt.state[p] for n, p in self.a_named if p in self.a_opt.state}
        return w, a

    # -------------------------------------------------------------- schedules

    def tau(self, step: int) -> float:
        c = self.cfg
        span = max(c.steps - c.warmup_steps, 1)
        t = min(max(step - c.warmup_steps, 0) / span, 1.0)
        return c.tau_start * (c.tau_end / c.tau_start) ** t

    def lr(self, step: int) -> float:
        return 0.5 * self.cfg.weight_lr * (1 + math.cos(math.pi * step / self.cfg.steps))

    # -------------------------------------------------------------- one step

    def _weight_step(self, step: int) -> float:
        net = self.net
        net.train()
        x, y = self.train_stream.next()
        x, y = x.to(self.device), y.to(self.device)
        for g in self.w_opt.param_groups:
            g["lr"] = self.lr(step)
        self.w_opt.zero_grad(set_to_none=False)
        saved = _SavedTensorBytes()
        with _frozen(self.a_named):
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
                loss = F.cross_entropy(net(x, self.tau(step), noise=True), y)
            loss.backward()
        self._saved_mb = saved.bytes / 2**20
        _reduce_grads(self.w_named)
        self.w_opt.step()
        return float(loss.detach())

    def _arch_step(self, step: int) -> tuple[float, float]:
        net, cfg = self.net, self.cfg
        x, y = self.val_stream.next()
        x, y = x.to(self.device), y.to(self.device)
        self.a_opt.zero_grad(set_to_none=False)
        with _frozen(self.w_named):
            ce = F.cross_entropy(net(x, self.tau(step), noise=True), y)
            pred = net.expected_ms()
            goal = self.run.target_ms * (1.0 - cfg.target_margin)
            loss = ce + cfg.latency_weight * F.relu(pred / goal - 1.0)
            loss.backward()
        _reduce_grads(self.a_named)
        self.a_opt.step()
        return float(ce.detach()), float(pred.detach())

    def _sync_buffers(self) -> None:
        if self.world > 1:
            _allreduce_mean([b for n, b in self.net.named_buffers() if b.is_floating_point()])

    # -------------------------------------------------------------- decisions

    def _count(self, key: str, cond: bool) -> int:
        self.counters[key] = self.counters.get(key, 0) + 1 if cond else 0
        return self.counters[key]

    def _decide(self, step: int) -> list[dict[str, Any]]:
        cfg, net = self.cfg, self.net
        commits: list[tuple[str, Prunode]] = []
        drop_options: list[tuple[str, str]] = []
        drop_layers: list[str] = []
        for li, layer in net.layers.items():
            probs = layer.probs()
            if SKIP in probs and self._count(f"l:{li}", probs[SKIP] > cfg.layer_threshold) >= cfg.layer_window:
                drop_layers.append(li)
                continue
            for n, pr in probs.items():
                if n == SKIP:
                    continue
                if self._count(f"b:{li}.{n}", pr < cfg.block_threshold) >= cfg.block_window:
                    drop_options.append((li, n))
            for n, node in layer.options.items():
                if (li, n) in drop_options or not node.gated:
                    continue
                if self._count(f"g:{li}.{n}", float(node.probs().detach()[0]) > cfg.prunode_threshold) >= cfg.prunode_window:
                    commits.append((f"layers.{li}.options.{n}", node))
        events: list[dict[str, Any]] = []
        if not (commits or drop_options or drop_layers):
            return events
        # Structure changes are driven by the latency penalty: once the expected latency is under
        # the goal they wait (the counters keep running), so simultaneous removals cannot
        # overshoot far below the target. Choices that win on accuracy alone still reach the
        # result through the final argmax. At most one layer goes per step, the most skipped.
        goal = self.run.target_ms * (1.0 - cfg.target_margin)
        with torch.no_grad():
            if float(net.expected_ms()) <= goal:
                return events
        if len(drop_layers) > 1:
            drop_layers = [max(drop_layers, key=lambda li: net.layers[li].probs()[SKIP])]
        self._sync_buffers()
        w_state, a_state = self._optimizer_state_by_name()
        for prefix, node in commits:
            old = node.hidden
            order = node.commit()
            for k, dims in node.last_dims.items():
                st = w_state.get(f"{prefix}.{k}")
                if st is not None and dims:
                    for key, val in list(st.items()):
                        if torch.is_tensor(val) and val.dim() > 0:
                            st[key] = select_channels(val, dims, order)
            a_state.pop(f"{prefix}.beta", None)
            li, n = prefix.split(".")[1], prefix.split(".")[3]
            self.counters.pop(f"g:{li}.{n}", None)
            events.append({"event": "commit", "layer": int(li), "option": n, "from": old, "to": node.hidden})
        for li, n in drop_options:
            layer = net.layers[li]
            non_skip = [x for x in layer.names() if x != SKIP]
            if len(non_skip) == 1 and n in non_skip:
                if SKIP not in layer.names():
                    continue  # the last block of a layer that cannot be skipped stays
                drop_layers.append(li)
                continue
            layer.remove_option(n)
            self.counters.pop(f"b:{li}.{n}", None)
            events.append({"event": "delete_block", "layer": int(li), "option": n})
        for li in dict.fromkeys(drop_layers):
            if li in net.layers:
                net.remove_layer(int(li))
                events.append({"event": "remove_layer", "layer": int(li)})
        for k in [k for k in self.counters if k.split(":")[1].split(".")[0] not in net.layers]:
            self.counters.pop(k)
        self._make_optimizers(w_state, a_state)
        for e in events:
            e["step"] = step
        return events

    # -------------------------------------------------------------- checkpoints

    @property
    def ckpt_path(self) -> Path:
        return self.out / "ckpt.pt"

    def save_checkpoint(self) -> None:
        self._sync_buffers()
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        rngs = [rng]
        if self.world > 1:
            rngs = [None] * self.world  # type: ignore[list-item]
            dist.all_gather_object(rngs, rng)
            hashes = [None] * self.world
            dist.all_gather_object(hashes, _state_hash(self.net))
            if len(set(hashes)) != 1:
                raise SearchError(f"ranks disagree on the supernet state at step {self.step}: {hashes}")
        if self.rank != 0:
            return
        state = {
            "format": CKPT_FORMAT, "step": self.step, "run": self.run.to_dict(), "world": self.world,
            "space_hash": self.space.hash, "lut_id": self.table.id,
            "structure": self.net.structure(), "model": self.net.state_dict(),
            "w_names": [n for n, _ in self.w_named], "a_names": [n for n, _ in self.a_named],
            "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(),
            "counters": dict(self.counters), "rng": rngs,
            "streams": {"train": self.train_stream.state_dict(), "val": self.val_stream.state_dict()},
            "events": list(self.events), "wall_s": self._wall(),
        }
        _atomic_torch_save(state, self.ckpt_path)

    def load_checkpoint(self) -> None:
        path = self.ckpt_path
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise SearchError(f"{path}: no checkpoint to resume from") from None
        except Exception as e:  # truncated/corrupt files raise a zoo of types
            raise SearchError(f"{path}: corrupt or unreadable checkpoint ({type(e).__name__}: {e}); "
                              "nothing was changed") from None
        if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
            raise SearchError(f"{path}: not a prunet search checkpoint (format {CKPT_FORMAT!r} expected)")
        if state["space_hash"] != self.space.hash:
            raise SearchError(f"{path}: written for another version of space {self.space.name!r}")
        if state["lut_id"] != self.table.id:
            raise SearchError(f"{path}: written with latency table {state['lut_id']}, now {self.table.id}")
        if state["world"] != self.world:
            raise SearchError(f"{path}: written by {state['world']} process(es), resumed with {self.world}; "
                              "resume with the same --nproc-per-node")
        self.net.apply_structure(state["structure"])
        self.net.to(self.device)
        self.net.load_state_dict(state["model"])
        self._make_optimizers({}, {})
        if [n for n, _ in self.w_named] != state["w_names"] or [n for n, _ in self.a_named] != state["a_names"]:
            raise SearchError(f"{path}: parameters do not match the rebuilt supernet")
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.counters = dict(state["counters"])
        self.step = int(state["step"])
        rng = state["rng"][self.rank]
        torch.set_rng_state(rng["torch"])
        random.setstate(_tuplify(rng["python"]))
        self.train_stream.load_state_dict(state["streams"]["train"])
        self.val_stream.load_state_dict(state["streams"]["val"])
        self.events = list(state["events"])
        self._wall_before = float(state.get("wall_s", 0.0))

    # -------------------------------------------------------------- logging

    def _wall(self) -> float:
        return getattr(self, "_wall_before", 0.0) + (time.time() - self._t0)

    def _log(self, rec: dict[str, Any]) -> None:
        if self.rank == 0:
            with open(self.out / "log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
        if self.world > 1:
            with open(self.out / f"trace.rank{self.rank}.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": rec["step"], "hash": _state_hash(self.net),
                                    "structure": self.net.structure()}) + "\n")

    def _truncate_logs(self) -> None:
        names = ["log.jsonl"] if self.rank == 0 else []
        if self.world > 1:
            names.append(f"trace.rank{self.rank}.jsonl")
        for name in names:
            p = self.out / name
            if not p.exists():
                continue
            keep = [ln for ln in p.read_text(encoding="utf-8").splitlines()
                    if ln.strip() and _is_json(ln) and json.loads(ln).get("step", 1 << 60) < self.step]
            atomic_write_text(p, "".join(ln + "\n" for ln in keep))

    def _record(self, step: int, loss_w: float, ce_val: float | None, pred: float | None,
                events: list[dict[str, Any]]) -> dict[str, Any]:
        widths, p_small, layer_p = {}, {}, {}
        for li, layer in self.net.layers.items():
            layer_p[li] = {k: round(v, 5) for k, v in layer.probs().items()}
            for n, node in layer.options.items():
                widths[f"{li}.{n}"] = node.hidden
                p_small[f"{li}.{n}"] = round(float(node.probs().detach()[0]), 5) if node.gated else None
        return {"step": step, "tau": round(self.tau(step), 6), "lr": self.lr(step), "loss_train": loss_w,
                "ce_val": ce_val, "expected_ms": pred, "widths": widths, "p_small": p_small,
                "layer_probs": layer_p, "events": events, "saved_mb": round(self._saved_mb, 2)}

    # -------------------------------------------------------------- main loop

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop_signal = signum

    def start(self, resume: bool = False) -> dict[str, Any]:
        self._t0 = time.time()
        self._setup_data()
        self._build()
        if resume:
            self.load_checkpoint()
            self._truncate_logs()
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            return self._loop()
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _loop(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        cfg = self.cfg
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"search {self.space.name}", unit="step",
                   disable=self.quiet or self.rank != 0, dynamic_ncols=True)
        try:
            while self.step < cfg.steps:
                step = self.step
                if step == cfg.warmup_steps and cfg.warmup_steps > 0:
                    self._reorder_all()
                loss_w = self._weight_step(step)
                ce_val = pred = None
                events: list[dict[str, Any]] = []
                if step >= cfg.warmup_steps:
                    ce_val, pred = self._arch_step(step)
                    events = self._decide(step)
                    self.events.extend(events)
                self._sync_buffers()
                self.step = step + 1
                self._log(self._record(step, loss_w, ce_val, pred, events))
                bar.update(1)
                if pred is not None:
                    bar.set_postfix(ce=f"{ce_val:.3f}", ms=f"{pred:.3f}", tau=f"{self.tau(step):.2f}")
                stop = self._stop_requested()
                if stop or self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save_checkpoint()
                if stop:
                    raise SearchInterrupted(self.step, self.out, stop)
        finally:
            bar.close()
        return self.finish()

    def _stop_requested(self) -> int:
        flag = torch.tensor([self._stop_signal or 0], dtype=torch.int64)
        if self.world > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def _reorder_all(self) -> None:
        """After warm-up, order every Prunode's channels by importance (so the first gate sits on
        the least important ``s``), permuting optimizer state the same way."""
        self._sync_buffers()
        w_state, a_state = self._optimizer_state_by_name()
        for prefix, node in self.net.prunodes():
            order = node.commit(node.hidden)
            for k, dims in node.last_dims.items():
                st = w_state.get(f"{prefix}.{k}")
                if st is not None and dims:
                    for key, val in list(st.items()):
                        if torch.is_tensor(val) and val.dim() > 0:
                            st[key] = select_channels(val, dims, order)
        self._make_optimizers(w_state, a_state)

    # -------------------------------------------------------------- finalisation

    def finalize(self) -> list[dict[str, Any]]:
        """Collapse to one choice per layer, fill the budget, then prune until the prediction is ≤ T."""
        net, table, target = self.net, self.table, self.run.target_ms
        events: list[dict[str, Any]] = []
        keep = self._fill_budget()
        for li in list(net.layers):
            layer = net.layers[li]
            names = layer.names()
            best = names[int(torch.argmax(layer.logits().detach()))]
            if best == SKIP and keep.get(li) == "layer":
                best = max((n for n in names if n != SKIP), key=lambda n: layer.probs()[n])
                events.append({"event": "final_keep_layer", "layer": int(li), "option": best})
            if best == SKIP:
                net.remove_layer(int(li))
                continue
            for n in names:
                if n != best:
                    layer.remove_option(n)
            node = layer.options[best]
            if node.prefers_small:
                if keep.get(li) == "width":
                    with torch.no_grad():
                        node.beta.zero_()  # undecided gate: `derive` keeps width c
                    events.append({"event": "final_keep_width", "layer": int(li), "hidden": node.hidden})
                else:
                    node.commit()
        while True:
            spec = net.derive("final")
            pred = table.predict(spec)
            if pred <= target:
                break
            best_gain, action = 0.0, None
            for li, layer in net.layers.items():
                node = next(iter(layer.options.values()))
                if node.gated:
                    gain = node.latency(node.hidden) - node.latency(node.hidden - node.s)
                    if gain > best_gain:
                        best_gain, action = gain, ("shrink", li, node)
            if action is None:
                for li, layer in net.layers.items():
                    if layer.slot.skippable:
                        node = next(iter(layer.options.values()))
                        gain = node.latency(node.hidden)
                        if gain > best_gain:
                            best_gain, action = gain, ("skip", li, node)
            if action is None:
                # Last resort: a cheaper candidate (deleted during the search) at its smallest
                # width, with fresh weights; the floor check at start guarantees this suffices.
                for li, layer in net.layers.items():
                    node = next(iter(layer.options.values()))
                    for cand in layer.slot.candidates:
                        w0 = layer.slot.hidden_widths(cand, self.space.width_step)[0]
                        gain = node.latency(node.hidden) - table.lookup(block_key(layer.slot.block_spec(cand, w0), layer.slot.in_hw))
                        if gain > best_gain:
                            best_gain, action = gain, ("replace", li, (cand, w0))
            if action is None:
                raise SearchError(f"cannot reach --target-ms {target}: smallest derivable net is {pred:.4f} ms")
            kind, li, node = action
            if kind == "replace":
                layer = net.layers[li]
                cand, w0 = node
                old_name = next(iter(layer.options))
                layer.replace_option(old_name, cand, w0, table, self.space)
                events.append({"event": "final_replace", "layer": int(li), "from": old_name, "to": f"{cand.name}@{w0}"})
            elif kind == "shrink":
                old = node.hidden
                node.commit()
                events.append({"event": "final_shrink", "layer": int(li), "from": old, "to": node.hidden})
            else:
                net.remove_layer(int(li))
                events.append({"event": "final_skip", "layer": int(li)})
        for layer in net.layers.values():
            for n in [n for n in layer.names() if n == SKIP]:
                layer.remove_option(n)
        return events

    def _fill_budget(self) -> dict[str, str]:
        """Layers whose runner-up choice the final network keeps because the budget allows it:
        ``"layer"`` (its best block although Skip won) or ``"width"`` (``c`` although the gate
        preferred ``c − s``).

        The argmax of a soft distribution can land well under the target: Skip may win a layer by
        a hair, or a gate prefer the small width narrowly, and the expected latency the penalty
        drove to ``T′`` counted those layers partly. Spending the rest of the budget on the
        closest calls (highest runner-up / winner probability ratio first) keeps the result near
        the target it was searched for, using only weights the supernet trained."""
        net, table, target = self.net, self.table, self.run.target_ms
        options = []  # (runner-up / winner probability, extra raw ms, layer, what is kept)
        for li, layer in net.layers.items():
            probs = layer.probs()
            best = max(probs, key=probs.get)
            if best == SKIP:
                blocks = [n for n in probs if n != SKIP]
                if blocks:
                    alt = max(blocks, key=probs.get)
                    node = layer.options[alt]
                    options.append((probs[alt] / probs[SKIP], node.latency(node.derived_width), li, "layer"))
                continue
            node = layer.options[best]
            if node.prefers_small:
                p_small, p_big = (float(v) for v in node.probs().detach())
                options.append((p_big / p_small, node.latency(node.hidden) - node.latency(node.hidden - node.s), li, "width"))
        pred = table.predict(net.derive("argmax"))  # what ``choices`` gives: argmax and gate widths
        keep: dict[str, str] = {}
        for _, cost, li, what in sorted(options, key=lambda o: -o[0]):
            if pred + table.a * cost <= target:
                pred += table.a * cost
                keep[li] = what
        return keep

    def finish(self) -> dict[str, Any]:
        final_events = self.finalize()
        pred = self.table.predict(self.net.derive("final"))
        t = self.table
        details = {
            "space": self.space.name, "space_hash": self.space.hash, "target_ms": self.run.target_ms,
            "lut_id": t.id, "lut_backend": t.backend, "lut_threads": t.threads, "lut_statistic": t.statistic,
            "seed": self.run.seed, "steps": self.cfg.steps, "data": self.run.data,
            "predicted_ms": round(pred, 6), "world_size": self.world,
            "events": {k: sum(1 for e in self.events + final_events if e["event"] == k)
                       for k in ("commit", "delete_block", "remove_layer", "final_shrink", "final_skip", "final_replace",
                                 "final_keep_layer", "final_keep_width")},
        }
        spec = self.net.derive(f"{self.space.name}-search-{self.run.target_ms:g}ms",
                               Provenance(source="prunet.search", details=details))
        from dataclasses import replace

        spec = replace(spec, latency=(Latency(round(pred, 6), "predicted",
                                              protocol=f"LUT a*sum+c, {t.backend}, {t.threads} thread(s), {t.statistic}",
                                              source=f"lut:{t.id}"),))
        summary: dict[str, Any] = {}
        if self.rank == 0:
            save(spec, self.out / "arch.json")
            weights = self.out / "model.safetensors"
            model = export_model(self.net, spec)
            from safetensors.torch import save_file

            tmp = weights.with_name(".model.safetensors.tmp")
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
            os.replace(tmp, weights)
            summary = {
                "arch": str(self.out / "arch.json"), "weights": str(weights),
                "predicted_ms": pred, "target_ms": self.run.target_ms, "within_target": pred <= self.run.target_ms,
                "measured": self._measure(spec), "steps": self.cfg.steps, "wall_s": round(self._wall(), 2),
                "peak_rss_mb": round(_peak_rss_mb(), 1), "activation_mb": self._activation_summary(),
                "world_size": self.world, "threads": self.threads,
                "lut": {"id": t.id, "path": t.path, "backend": t.backend, "threads": t.threads, "statistic": t.statistic},
                "val_accuracy_inherited": self._evaluate(model),
                "blocks": len(spec.blocks), "events": details["events"], "final_events": final_events,
            }
            atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=1) + "\n")
            try:
                from prunet.search.plots import plot_run

                plot_run(self.out / "log.jsonl", self.out / "trajectories.png", self.run.target_ms)
            except ImportError:
                pass
        if self.world > 1:
            with open(self.out / f"trace.rank{self.rank}.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": self.cfg.steps, "final": json.loads(_dumps_spec(spec))}) + "\n")
            dist.barrier()
        return summary

    def _activation_summary(self) -> dict[str, float]:
        """Activation memory of a weight step (MB saved for backward, batch ``batch_size``): at the
        first step, the mean over all steps, and at the last step (from log.jsonl)."""
        log = self.out / "log.jsonl"
        lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
        vals = [r["saved_mb"] for r in map(json.loads, filter(_is_json, lines)) if r.get("saved_mb") is not None]
        if not vals:
            return {}
        return {"first": vals[0], "mean": round(sum(vals) / len(vals), 2), "last": vals[-1]}

    def _measure(self, spec: Any) -> dict[str, Any] | None:
        from prunet.latency.lut import Measurer

        try:
            m = Measurer(backend=self.table.backend, threads=self.table.threads)
            return {"ms": m.whole(spec), "backend": m.backend, "threads": m.threads, "statistic": m.statistic}
        except Exception as e:  # a missing backend must not lose the search result
            return {"error": f"{type(e).__name__}: {e}"}

    def _evaluate(self, model: torch.nn.Module) -> float | None:
        n = min(self.cfg.eval_images, len(self.val_indices))
        if n <= 0:
            return None
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, n, 256):
                x, y = self.data.batch(self.val_indices[i:min(i + 256, n)])
                correct += int((model(x.to(self.device)).argmax(1) == y.to(self.device)).sum())
        return correct / n


class SearchInterrupted(Exception):
    def __init__(self, step: int, out: Path, signum: int):
        self.step, self.out, self.signum = step, out, signum
        super().__init__(f"interrupted by signal {signum} after step {step}; checkpoint saved. "
                         f"Continue with: prunet search resume {out}")


def _dumps_spec(spec: Any) -> str:
    from prunet.arch import dumps

    return dumps(spec)


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except json.JSONDecodeError:
        return False


def export_model(net: Supernet, spec: Any) -> torch.nn.Module:
    """The derived network as a :class:`prunet.nn.PruNet`, initialised from the supernet."""
    from prunet.nn import PruNet, block_module_names

    model = PruNet(spec)
    sd: dict[str, torch.Tensor] = {}
    for k, v in net.stem.state_dict().items():
        sd[f"stem.{k}"] = v
    names = block_module_names(spec)
    i = 0
    for slot in net.space.layers():
        li = str(slot.index)
        if li not in net.layers:
            continue
        layer = net.layers[li]
        node = next(iter(layer.options.values()))
        for k, v in node.block.state_dict().items():
            sd[f"{names[i]}.{k}"] = v
        i += 1
    for k, v in net.head.state_dict().items():
        sd[f"head.{k}"] = v
    model.load_state_dict(sd)
    return model


# ----------------------------------------------------------------------------- entry points


def _prepare_out(out: Path) -> None:
    if (out / "ckpt.pt").exists() or (out / "arch.json").exists():
        raise SearchError(f"--out {out}: already holds a search (ckpt.pt/arch.json); "
                          f"continue it with `prunet search resume {out}` or choose another folder")
    out.mkdir(parents=True, exist_ok=True)


def run_search(run: RunSpec, out: str | os.PathLike, quiet: bool = False, table: LatencyTable | None = None) -> dict[str, Any]:
    out = Path(out)
    rank, _ = _world()
    if rank == 0:
        _prepare_out(out)
    searcher = Searcher(run, out, quiet=quiet, table=table)
    if rank == 0:
        atomic_write_text(out / "run.json", json.dumps(run.to_dict(), indent=1) + "\n")
        for name in ("log.jsonl",):
            (out / name).unlink(missing_ok=True)
    if searcher.world > 1:
        (out / f"trace.rank{searcher.rank}.jsonl").unlink(missing_ok=True)
        dist.barrier()
    return searcher.start(resume=False)


def resume_search(out: str | os.PathLike, quiet: bool = False) -> dict[str, Any]:
    out = Path(out)
    rj = out / "run.json"
    try:
        run = RunSpec.from_dict(json.loads(rj.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise SearchError(f"{out}: not a search run folder (no run.json)") from None
    except (json.JSONDecodeError, TypeError) as e:
        raise SearchError(f"{rj}: unreadable ({e})") from None
    if (out / "arch.json").exists() and (out / "summary.json").exists():
        raise SearchError(f"{out}: this search already finished (arch.json, summary.json)")
    searcher = Searcher(run, out, quiet=quiet)
    return searcher.start(resume=True)
