"""The search loop: everything a search needs that is not its algorithm.

It owns the two data streams (train split for weights, val split for the architecture), the
process group (gloo on CPU, NCCL on GPU, every collective on the process's device), the weight
optimiser (SGD, nesterov, timm's cosine schedule) and the strategy's architecture optimiser with
their state carried across structure changes by parameter name, checkpoints that resume exactly
(structure, weights, optimisers, strategy state, sampler positions and every RNG — CUDA's
included), SIGINT/SIGTERM, progress and ``log.jsonl``, and at the end evaluation and measurement
of the derived network and the run folder's ``arch.json``, ``model.safetensors`` and
``summary.json``. The algorithm is a :class:`prunet.search.strategy.Strategy`.

Checkpoints are atomic (temp file + rename), so a killed run resumed from its last checkpoint
ends with the same architecture as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import torch

from prunet import _runtime
from prunet._io import atomic_torch_save, atomic_write_bytes, atomic_write_text
from prunet.arch import Latency, Provenance, save
from prunet.latency.lut import STATISTIC, LatencyTable, LutError, load_table, min_reachable_ms
from prunet.search.config import RunSpec, SearchError, changed_fields
from prunet.search.space import SpaceError, load_space
from prunet.search.strategy import Named, Strategy, StrategyContext, StructureChange, get_strategy
from prunet.search.supernet import select_channels
from prunet.search.tables import default_lut_path, ensure_table

CKPT_FORMAT = "prunet.search-ckpt/2"
RUN_FILES = ("run.json", "ckpt.pt", "log.jsonl", "arch.json", "model.safetensors", "summary.json", "trajectories.png")


class SearchInterrupted(Exception):
    def __init__(self, step: int, out: Path, signum: int):
        self.step, self.out, self.signum = step, out, signum
        super().__init__(f"interrupted by signal {signum} after step {step}; checkpoint saved. "
                         f"Continue with: prunet search resume {out}")


@contextlib.contextmanager
def frozen(named: Named) -> Iterator[None]:
    """The other half of an alternating update: its parameters get no gradient meanwhile."""
    for _, p in named:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for _, p in named:
            p.requires_grad_(True)


class SavedTensorBytes:
    """Bytes autograd saves for backward during one forward: the activation memory of a step.

    The process's peak RSS is set by the first steps (before any pruning) and freed activations
    stay resident, so RSS cannot show what pruning saves; this count can, step by step. Storages
    are counted once."""

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


def _state_hash(model: torch.nn.Module, structure: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(structure, sort_keys=True).encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except json.JSONDecodeError:
        return False


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class SearchLoop:
    """Runs one strategy over one run folder."""

    def __init__(self, run: RunSpec, out: str | os.PathLike, *, quiet: bool = False,
                 table: LatencyTable | None = None, device: torch.device | None = None):
        run.validate()
        self.run, self.loop_cfg = run, run.loop
        self.out = Path(out)
        self.quiet = quiet
        self.rank, self.world = _runtime.world()
        self.device = device if device is not None else _choose_device(run.device)
        self.comm = _runtime.Collectives(self.device)
        strategy_cls = get_strategy(run.strategy)
        strategy_cfg = strategy_cls.make_config(run.strategy_config, "--config")
        try:
            self.space = load_space(run.space)
        except SpaceError as e:
            raise SearchError(f"--space: {e}") from None
        self.table = table if table is not None else self._load_or_build_table()
        self.table.check_for(self.space.hash, run.backend, run.latency_threads, statistic=STATISTIC)
        foreign = self.table.check_machine(allow_foreign=run.allow_foreign_lut)
        if foreign and not quiet and self.rank == 0:
            print(f"prunet: warning: {self.table.path}: measured on another machine ({'; '.join(foreign)}); "
                  "its latencies may not hold here (--allow-foreign-lut)", file=sys.stderr)
        floor = min_reachable_ms(self.table, self.space)
        if run.target_ms < floor:
            raise SearchError(f"--target-ms {run.target_ms}: below the smallest net the space "
                              f"{self.space.name!r} allows ({floor:.4f} ms predicted on {self.table.backend}); "
                              "raise the target or use a smaller space")
        ctx = StrategyContext(space=self.space, table=self.table, target_ms=run.target_ms, seed=run.seed,
                              loop=self.loop_cfg, device=self.device, sync_buffers=self._sync_buffers)
        self.strategy: Strategy = strategy_cls(ctx, strategy_cfg)
        self.strategy.check_target()
        if self.loop_cfg.threads:
            torch.set_num_threads(self.loop_cfg.threads)
        self.threads = torch.get_num_threads()
        self.events: list[dict[str, Any]] = []
        self._saved_mb = 0.0
        self._wall_before = 0.0
        self._setup_data()

    # -------------------------------------------------------------- setup

    def _load_or_build_table(self) -> LatencyTable:
        if self.run.lut:
            return load_table(self.run.lut)
        path = default_lut_path(self.space, self.run.backend, self.run.latency_threads)
        if self.rank == 0:
            ensure_table(self.space, self.run.backend, self.run.latency_threads, quiet=self.quiet)
        self.comm.barrier()
        return load_table(path)

    def _setup_data(self) -> None:
        from prunet.data.classification import BatchStream, open_dataset, train_val_split

        data = open_dataset(self.run.data, self.space.input_size, limit=None)
        if data.num_classes != self.space.num_classes:
            raise SearchError(f"--data {self.run.data}: {data.num_classes} classes, but space "
                              f"{self.space.name!r} has num_classes={self.space.num_classes}")
        c = self.loop_cfg
        tr, va = train_val_split(len(data), c.val_fraction, self.run.seed, c.train_limit)
        self.data, self.val_indices, self.train_indices = data, va, tr
        self.train_stream = BatchStream(data, tr, c.batch_size, self.run.seed, self.rank, self.world)
        self.val_stream = BatchStream(data, va, c.batch_size, self.run.seed + 1, self.rank, self.world)

    @property
    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.loop_cfg.channels_last else torch.contiguous_format

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        """An image batch on the loop's device, in the supernet's memory format."""
        return x.to(self.device).contiguous(memory_format=self._memory_format)

    def _build(self) -> None:
        torch.manual_seed(self.run.seed)  # identical initial weights on every rank
        # channels_last by default, as train.py: these depthwise-heavy nets step faster in it on CPU
        # (a demo search here: 8 steps, 66 → 52 s wall); float kernels differ, so results do too.
        self.model = self.strategy.build().to(self.device, memory_format=self._memory_format)
        self.step = 0
        self._make_optimizers({}, {})
        torch.manual_seed(self.run.seed * 7919 + self.rank)
        random.seed(self.run.seed * 7919 + self.rank)

    # -------------------------------------------------------------- optimisers

    def _make_optimizers(self, w_state: dict[str, dict], a_state: dict[str, dict]) -> None:
        from timm.scheduler import CosineLRScheduler

        c = self.loop_cfg
        self.w_named = self.strategy.weight_parameters()
        self.a_named = self.strategy.arch_parameters()
        self.w_opt = torch.optim.SGD([p for _, p in self.w_named], lr=c.weight_lr, momentum=c.weight_momentum,
                                     nesterov=True, weight_decay=c.weight_decay)
        self.w_sched = CosineLRScheduler(self.w_opt, t_initial=c.steps, lr_min=0.0, t_in_epochs=False)
        self.a_opt = self.strategy.arch_optimizer([p for _, p in self.a_named]) if self.a_named else None
        pairs = [(self.w_named, self.w_opt, w_state)]
        if self.a_opt is not None:
            pairs.append((self.a_named, self.a_opt, a_state))
        for named, opt, st in pairs:
            for n, p in named:
                if n in st:
                    opt.state[p] = st[n]

    def _optimizer_state_by_name(self) -> tuple[dict[str, dict], dict[str, dict]]:
        w = {n: self.w_opt.state[p] for n, p in self.w_named if p in self.w_opt.state}
        a = {n: self.a_opt.state[p] for n, p in self.a_named if self.a_opt is not None and p in self.a_opt.state}
        return w, a

    def _apply_change(self, change: StructureChange, w_state: dict[str, dict], a_state: dict[str, dict]) -> None:
        """Rebuild the optimisers after the strategy changed parameters, carrying their state."""
        for name, (dims, order) in change.sliced.items():
            for states in (w_state, a_state):
                st = states.get(name)
                if st is not None and dims:
                    for key, val in list(st.items()):
                        if torch.is_tensor(val) and val.dim() > 0:
                            st[key] = select_channels(val, dims, order)
        for name in change.dropped:
            w_state.pop(name, None)
            a_state.pop(name, None)
        self.model.to(memory_format=self._memory_format)  # parameters the change made are contiguous
        self._make_optimizers(w_state, a_state)

    def _structure_step(self, hook: Any, step: int) -> list[dict[str, Any]]:
        w_state, a_state = self._optimizer_state_by_name()  # before parameters are replaced
        change = hook(step)
        if change is None:
            return []
        self._apply_change(change, w_state, a_state)
        return change.events

    # -------------------------------------------------------------- one step

    def _reduce_grads(self, named: Named) -> None:
        """Fill missing grads with zeros (every rank must all-reduce the same list) and average them."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in named]
        for (_, p), g in zip(named, grads):
            p.grad = g
        self.comm.mean_(grads)

    def _sync_buffers(self) -> None:
        if self.world > 1:
            self.comm.mean_([b for _, b in self.model.named_buffers() if b.is_floating_point()])

    def _weight_step(self, step: int) -> float:
        self.model.train()
        x, y = self.train_stream.next()
        x, y = self._images(x), y.to(self.device)
        self.w_sched.step_update(step)
        self.w_opt.zero_grad(set_to_none=False)
        if self.a_opt is not None:
            self.a_opt.zero_grad(set_to_none=False)
        saved = SavedTensorBytes()
        joint = self.strategy.joint
        with frozen([] if joint else self.a_named):
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
                loss = self.strategy.weight_loss(x, y, step)
            loss.backward()
        self._saved_mb = saved.bytes / 2**20
        self._reduce_grads(self.w_named)
        self.w_opt.step()
        if joint and self.a_opt is not None:
            self._reduce_grads(self.a_named)
            self.a_opt.step()
        return float(loss.detach())

    def _arch_step(self, step: int) -> dict[str, float]:
        x, y = self.val_stream.next()
        x, y = self._images(x), y.to(self.device)
        assert self.a_opt is not None
        self.a_opt.zero_grad(set_to_none=False)
        with frozen(self.w_named):
            loss, metrics = self.strategy.arch_loss(x, y, step)
            loss.backward()
        self._reduce_grads(self.a_named)
        self.a_opt.step()
        return metrics

    # -------------------------------------------------------------- checkpoints

    @property
    def ckpt_path(self) -> Path:
        return self.out / "ckpt.pt"

    def save_checkpoint(self) -> None:
        self._sync_buffers()
        rngs = self.comm.gather_objects(_runtime.rng_state(self.device))
        structure = self.strategy.structure()
        if self.world > 1:
            hashes = self.comm.gather_objects(_state_hash(self.model, structure))
            if len(set(hashes)) != 1:
                raise SearchError(f"ranks disagree on the supernet state at step {self.step}: {hashes}")
        if self.rank != 0:
            return
        state = {
            "format": CKPT_FORMAT, "step": self.step, "run": self.run.to_dict(), "world": self.world,
            "strategy": self.strategy.name, "space_hash": self.space.hash, "lut_id": self.table.id,
            "structure": structure, "strategy_state": self.strategy.state_dict(), "model": self.model.state_dict(),
            "w_names": [n for n, _ in self.w_named], "a_names": [n for n, _ in self.a_named],
            "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict() if self.a_opt is not None else None,
            "rng": rngs, "streams": {"train": self.train_stream.state_dict(), "val": self.val_stream.state_dict()},
            "events": list(self.events), "wall_s": self._wall(),
        }
        atomic_torch_save(state, self.ckpt_path)

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
        changed = changed_fields(_as_recorded(state["run"]), self.run.to_dict())
        if changed:
            raise SearchError(f"{self.out / 'run.json'}: edited since the search started ({', '.join(changed)} "
                              "changed); restore it, or start a new search in another folder")
        if state["space_hash"] != self.space.hash:
            raise SearchError(f"{path}: written for another version of space {self.space.name!r}")
        if state["lut_id"] != self.table.id:
            raise SearchError(f"{path}: written with latency table {state['lut_id']}, now {self.table.id}")
        if state["world"] != self.world:
            raise SearchError(f"{path}: written by {state['world']} process(es), resumed with {self.world}; "
                              "resume with the same --nproc-per-node")
        self.strategy.apply_structure(state["structure"])
        self.model.to(self.device, memory_format=self._memory_format)  # as the uninterrupted run's
        self.model.load_state_dict(state["model"])
        self._make_optimizers({}, {})
        if [n for n, _ in self.w_named] != state["w_names"] or [n for n, _ in self.a_named] != state["a_names"]:
            raise SearchError(f"{path}: parameters do not match the rebuilt supernet")
        self.w_opt.load_state_dict(state["w_opt"])
        if self.a_opt is not None:
            self.a_opt.load_state_dict(state["a_opt"])
        self.strategy.load_state_dict(state["strategy_state"])
        self.step = int(state["step"])
        try:
            _runtime.set_rng_state(state["rng"][self.rank], self.device)
        except ValueError as e:
            raise SearchError(f"{path}: {e}") from None
        self.train_stream.load_state_dict(state["streams"]["train"])
        self.val_stream.load_state_dict(state["streams"]["val"])
        self.events = list(state["events"])
        self._wall_before = float(state.get("wall_s", 0.0))

    # -------------------------------------------------------------- logging

    def _wall(self) -> float:
        return self._wall_before + (time.time() - self._t0)

    def _log(self, rec: dict[str, Any]) -> None:
        if self.rank == 0:
            with open(self.out / "log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
        if self.world > 1:
            with open(self.out / f"trace.rank{self.rank}.jsonl", "a", encoding="utf-8") as f:
                structure = self.strategy.structure()
                f.write(json.dumps({"step": rec["step"], "hash": _state_hash(self.model, structure),
                                    "structure": structure}) + "\n")

    def _truncate_logs(self) -> None:
        """Drop log lines of steps after the checkpoint: the resumed run writes them again."""
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

    # -------------------------------------------------------------- main loop

    def start(self, resume: bool = False) -> dict[str, Any]:
        self._t0 = time.time()
        self._build()
        if resume:
            self.load_checkpoint()
            self._truncate_logs()
        with _runtime.StopSignals() as signals:
            return self._loop(signals)

    def _loop(self, signals: _runtime.StopSignals) -> dict[str, Any]:
        from tqdm.auto import tqdm

        c = self.loop_cfg
        strategy = self.strategy
        has_arch_step = bool(self.a_named) and not strategy.joint
        bar = tqdm(total=c.steps, initial=self.step, desc=f"search {self.space.name} [{strategy.name}]",
                   unit="step", disable=self.quiet or self.rank != 0, dynamic_ncols=True)
        try:
            while self.step < c.steps:
                step = self.step
                events = self._structure_step(strategy.on_step_start, step)
                loss_w = self._weight_step(step)
                lr = self.w_opt.param_groups[0]["lr"]  # a structure change below rebuilds the optimiser
                metrics: dict[str, float] = {}
                if step >= c.warmup_steps:
                    if has_arch_step:
                        metrics = self._arch_step(step)
                    events += self._structure_step(strategy.after_step, step)
                for e in events:
                    e["step"] = step
                self.events.extend(events)
                self._sync_buffers()
                self.step = step + 1
                self._log({"step": step, "lr": lr, "loss_train": loss_w,
                           **strategy.record(step), **metrics,
                           "events": events,
                           "saved_mb": round(self._saved_mb, 2)})
                bar.update(1)
                if metrics:
                    bar.set_postfix(strategy.progress(metrics, step))
                stop = self.comm.max_int(signals.signum)
                if stop or self.step % c.checkpoint_every == 0 or self.step == c.steps:
                    self.save_checkpoint()
                if stop:
                    raise SearchInterrupted(self.step, self.out, stop)
        finally:
            bar.close()
        return self.finish()

    # -------------------------------------------------------------- the result

    def finish(self) -> dict[str, Any]:
        derived = self.strategy.derive()
        t, run = self.table, self.run
        pred = t.predict(derived.spec)
        details = {
            "strategy": self.strategy.name, "space": self.space.name, "space_hash": self.space.hash,
            "target_ms": run.target_ms, "lut_id": t.id, "lut_backend": t.backend, "lut_threads": t.threads,
            "lut_statistic": t.statistic, "seed": run.seed, "steps": self.loop_cfg.steps, "data": run.data,
            "predicted_ms": round(pred, 6), "world_size": self.world, **derived.details,
            "events": {k: sum(1 for e in self.events + derived.events if e["event"] == k)
                       for k in self.strategy.event_kinds},
        }
        spec = replace(derived.spec, name=f"{self.space.name}-search-{run.target_ms:g}ms",
                       provenance=Provenance(source="prunet.search", details=details),
                       latency=(Latency(round(pred, 6), "predicted",
                                        protocol=f"LUT a*sum+c, {t.backend}, {t.threads} thread(s), {t.statistic}",
                                        source=f"lut:{t.id}"),))
        summary: dict[str, Any] = {}
        if self.rank == 0:
            summary = self._write_result(spec, derived, pred)
        if self.world > 1:
            from prunet.arch import to_dict

            with open(self.out / f"trace.rank{self.rank}.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": self.loop_cfg.steps, "final": to_dict(spec)}) + "\n")
            self.comm.barrier()
        return summary

    def _write_result(self, spec: Any, derived: Any, pred: float) -> dict[str, Any]:
        from safetensors.torch import save as safetensors_bytes

        save(spec, self.out / "arch.json")
        inherited_running_bn = self._evaluate(derived.model)
        recalibrated = self._recalibrate_bn(derived.model)
        weights = self.out / "model.safetensors"
        tensors = {k: v.detach().cpu().contiguous() for k, v in derived.model.state_dict().items()}
        atomic_write_bytes(weights, safetensors_bytes(tensors))
        t = self.table
        summary = {
            "strategy": self.strategy.name, "arch": str(self.out / "arch.json"), "weights": str(weights),
            "predicted_ms": pred, "target_ms": self.run.target_ms, "within_target": pred <= self.run.target_ms,
            "measured": self._measure(spec), "steps": self.loop_cfg.steps, "wall_s": round(self._wall(), 2),
            "peak_rss_mb": round(_peak_rss_mb(), 1), "activation_mb": self._activation_summary(),
            "world_size": self.world, "threads": self.threads,
            "lut": {"id": t.id, "path": t.path, "backend": t.backend, "threads": t.threads, "statistic": t.statistic},
            "val_accuracy_inherited": self._evaluate(derived.model) if recalibrated else inherited_running_bn,
            "val_accuracy_inherited_running_bn": inherited_running_bn, "bn_recalibration_images": recalibrated,
            "blocks": len(spec.blocks), "events": spec.provenance.details["events"], "final_events": derived.events,
        }
        atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=1) + "\n")
        try:
            self.strategy.plot(self.out / "log.jsonl", self.out / "trajectories.png")
        except ImportError:  # matplotlib is optional
            pass
        return summary

    def _activation_summary(self) -> dict[str, float]:
        """Activation memory of a weight step (MB saved for backward): first, mean and last step."""
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

    def _recalibrate_bn(self, model: torch.nn.Module) -> int:
        """Re-estimate every BatchNorm's running statistics of the derived net on the first
        ``bn_recalibration_images`` training images (a cumulative average, no gradient); returns
        how many images were used.

        The supernet's running statistics average over every path and width it sampled, so the
        derived net, one path, is scored with statistics of a mixture of nets: v3's searched nets
        scored 14-27 % that way at the middle and high targets and 33-46 % after re-estimation
        (as single-path NAS and slimmable networks do). The weights saved with the result carry
        the re-estimated statistics."""
        n = min(self.loop_cfg.bn_recalibration_images, len(self.train_indices))
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if n <= 0 or not norms:
            return 0
        model = model.to(self.device, memory_format=self._memory_format)
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        with torch.no_grad():
            for i in range(0, n, self.loop_cfg.batch_size):
                x, _ = self.data.batch(self.train_indices[i:min(i + self.loop_cfg.batch_size, n)])
                model(self._images(x))
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
        return n

    def _evaluate(self, model: torch.nn.Module) -> float | None:
        n = min(self.loop_cfg.eval_images, len(self.val_indices))
        if n <= 0:
            return None
        model = model.to(self.device, memory_format=self._memory_format).eval()
        correct = 0
        with torch.inference_mode():
            for i in range(0, n, 256):
                x, y = self.data.batch(self.val_indices[i:min(i + 256, n)])
                correct += int((model(self._images(x)).argmax(1) == y.to(self.device)).sum())
        return correct / n


def _choose_device(requested: str | None) -> torch.device:
    try:
        return _runtime.choose_device(requested)
    except _runtime.DeviceError as e:
        raise SearchError(str(e)) from None


# ----------------------------------------------------------------------------- entry points


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse a folder that holds anything unless ``overwrite``; even then a finished or running
    search is only continued by ``resume`` (its checkpoint would be mixed with the new run)."""
    if out.exists() and not out.is_dir():
        raise SearchError(f"--out {out}: exists and is not a folder")
    if (out / "ckpt.pt").exists() or (out / "arch.json").exists():
        if not overwrite:
            raise SearchError(f"--out {out}: already holds a search (ckpt.pt/arch.json); continue it with "
                              f"`prunet search resume {out}`, choose another folder, or pass --overwrite")
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise SearchError(f"--out {out}: exists and is not empty; choose another folder or pass --overwrite "
                          f"(only the search's own files are replaced: {', '.join(RUN_FILES)})")


def run_search(run: RunSpec, out: str | os.PathLike, quiet: bool = False, table: LatencyTable | None = None,
               overwrite: bool = False) -> dict[str, Any]:
    """Start a search in ``out``. Everything is checked before the folder is created, so a failed
    start leaves nothing behind."""
    out = Path(out)
    if _runtime.world()[0] == 0:
        _check_out(out, overwrite)
    loop = SearchLoop(run, out, quiet=quiet, table=table)
    if loop.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:  # --overwrite: our own files only
            if name != "run.json":
                (out / name).unlink(missing_ok=True)  # files this command writes (checked above)
        atomic_write_text(out / "run.json", json.dumps(run.to_dict(), indent=1) + "\n")
    if loop.world > 1:
        loop.comm.barrier()
        (out / f"trace.rank{loop.rank}.jsonl").unlink(missing_ok=True)  # this command's own trace
        loop.comm.barrier()
    return loop.start(resume=False)


def read_run(out: Path) -> RunSpec:
    rj = out / "run.json"
    if out.exists() and not out.is_dir():
        raise SearchError(f"{out}: not a search run folder (a file; give the folder `prunet search run` wrote)")
    try:
        text = rj.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SearchError(f"{out}: not a search run folder (no run.json)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SearchError(f"{rj}: unreadable ({e})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise SearchError(f"{rj}: not valid JSON ({e})") from None
    return RunSpec.from_dict(_as_recorded(obj), str(rj))


def _as_recorded(run: Any) -> Any:
    """A run spec as its search ran: one written before ``loop.channels_last`` existed ran contiguous."""
    loop = run.get("loop") if isinstance(run, dict) else None
    if isinstance(loop, dict) and "channels_last" not in loop:
        return {**run, "loop": {**loop, "channels_last": False}}
    return run


def resume_search(out: str | os.PathLike, quiet: bool = False) -> dict[str, Any]:
    out = Path(out)
    run = read_run(out)
    if (out / "arch.json").exists() and (out / "summary.json").exists():
        raise SearchError(f"{out}: this search already finished (arch.json, summary.json)")
    return SearchLoop(run, out, quiet=quiet).start(resume=True)


__all__ = ["SearchLoop", "SearchInterrupted", "run_search", "resume_search", "read_run", "frozen",
           "SavedTensorBytes", "LutError"]
