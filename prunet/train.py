"""One plain, solid training recipe for searched and hand-designed networks alike.

Comparisons between a searched net and a baseline are only fair when both are trained the same
way, so this trainer has few knobs and sensible defaults: AdamW (or SGD) with warm-up + cosine,
label smoothing, optional EMA of weights, optional knowledge distillation, AMP on CUDA, DDP under
``torchrun`` (gloo on CPU, nccl on GPU). Training is step-based with a seeded, checkpointable
batch stream, so a run interrupted and resumed ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from prunet._io import atomic_torch_save, atomic_write_bytes, atomic_write_text
from prunet import _runtime
from prunet.arch import save as save_arch
from prunet.data.classification import BatchStream, DataError, ImageSet, fashion_mnist_set, imagefolder_set, train_val_split

CHECKPOINT = "checkpoint.pt"
# Every file train() writes into a run folder (what --overwrite replaces; nothing else is touched).
RUN_FILES = ("train_config.json", CHECKPOINT, "model.safetensors", "arch.json", "log.jsonl", "summary.json")


class TrainError(ValueError):
    """Bad training input (config, data, checkpoint); the message names it."""


@dataclass
class TrainConfig:
    """Everything that decides the result. Saved beside the weights; resume refuses a changed one."""

    model: str  # zoo/timm name or architecture JSON path
    data: str = "fashion-mnist"  # or imagefolder:PATH
    steps: int = 1000
    batch_size: int = 128
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_steps: int = 50
    label_smoothing: float = 0.1
    ema_decay: float = 0.0  # 0 = no EMA
    teacher: str | None = None  # timm name / arch JSON of a teacher for distillation
    teacher_checkpoint: str | None = None
    kd_alpha: float = 0.5
    kd_tau: float = 2.0
    input_size: tuple[int, int, int] | None = None  # default: the architecture's own
    train_limit: int | None = None  # use only the first N training images (quick runs)
    eval_limit: int | None = None
    eval_batch_size: int = 256
    checkpoint_every: int = 200
    seed: int = 0
    amp: bool = True  # only takes effect on CUDA
    threads: int | None = None
    device: str | None = None  # None: this process's GPU when there is one, else the CPU

    def to_json(self) -> dict[str, Any]:
        """What ``train_config.json`` holds (compared as JSON, so tuples become lists first)."""
        d = asdict(self)
        d["input_size"] = list(self.input_size) if self.input_size else None
        return d

    def check(self) -> None:
        if self.steps < 1:
            raise TrainError(f"steps: expected >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise TrainError(f"batch_size: expected >= 1, got {self.batch_size}")
        if self.optimizer not in ("adamw", "sgd"):
            raise TrainError(f"optimizer: expected 'adamw' or 'sgd', got {self.optimizer!r}")
        if not self.lr > 0:
            raise TrainError(f"lr: expected > 0, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise TrainError(f"ema_decay: expected 0 (off) or a number in (0, 1), got {self.ema_decay}")
        if not 0 <= self.label_smoothing < 1:
            raise TrainError(f"label_smoothing: expected a number in [0, 1), got {self.label_smoothing}")


@dataclass
class TrainResult:
    top1: float
    top1_ema: float | None
    steps: int
    wall_s: float
    final_loss: float
    eval_images: int
    run_dir: str
    history: list[dict[str, float]] = field(default_factory=list)


# ----------------------------------------------------------------------------- pieces


def init_distributed(requested: str | None = None) -> tuple[int, int, torch.device]:
    """``requested`` (``cpu``, ``cuda``), else this process's GPU when there is one (else the CPU),
    joining torchrun's process group; the same helper as the search's (:mod:`prunet._runtime`).
    A choice is needed on GPU hosts too: two CPU processes on a one-GPU machine otherwise ask for
    ``cuda:1`` (seen on an H200 host)."""
    try:
        device = _runtime.init_distributed(requested)
    except _runtime.DeviceError as e:
        raise TrainError(str(e)) from None
    rank, world = _runtime.world()
    return rank, world, device


def open_data(cfg: TrainConfig, input_size: tuple[int, int, int]) -> tuple[ImageSet, list[int], ImageSet, list[int]]:
    """Train and evaluation sets: Fashion-MNIST's own test split, or a held-out 10 % of an ImageFolder."""
    if cfg.data == "fashion-mnist":
        train = fashion_mnist_set(input_size, train=True)
        test = fashion_mnist_set(input_size, train=False)
        train_idx = list(range(len(train)))[: cfg.train_limit]
        test_idx = list(range(len(test)))[: cfg.eval_limit]
        return train, train_idx, test, test_idx
    if cfg.data.startswith("imagefolder:"):
        data = imagefolder_set(cfg.data.split(":", 1)[1], input_size)
        train_idx, val_idx = train_val_split(len(data), 0.1, seed=cfg.seed)
        return data, train_idx[: cfg.train_limit], data, val_idx[: cfg.eval_limit]
    raise TrainError(f"data: expected 'fashion-mnist' or 'imagefolder:PATH', got {cfg.data!r}")


def native_input_size(model: str) -> tuple[int, int, int]:
    """The input size a model was designed for, without building it (zoo, timm, ``hf-hub:``,
    ``local-dir:`` or architecture JSON; see :func:`prunet.zoo.factory.input_size_of`)."""
    from prunet.zoo import registry
    from prunet.zoo.factory import input_size_of

    try:
        return input_size_of(model)
    except registry.UnknownModelError as e:
        raise TrainError(f"model: {e}") from None


def build_model(cfg: TrainConfig, num_classes: int, in_chans: int) -> torch.nn.Module:
    from prunet.zoo import create_model

    return create_model(cfg.model, num_classes=num_classes, in_chans=in_chans)


def lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / max(1, cfg.warmup_steps)
        t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    kwargs: dict[str, Any] = {"momentum": cfg.momentum} if cfg.optimizer == "sgd" else {}
    return create_optimizer_v2(model, opt=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)


@torch.no_grad()
@torch.inference_mode()  # no autograd graph of a forward nothing differentiates
def evaluate(model: torch.nn.Module, data: ImageSet, indices: list[int], batch_size: int,
             device: torch.device, quiet: bool = True) -> float:
    """Top-1 accuracy (%) over ``indices`` (every rank evaluates all of them: simple and exact)."""
    model.eval()
    correct = 0
    for i in tqdm(range(0, len(indices), batch_size), desc="eval", disable=quiet, leave=False):
        x, y = data.batch(indices[i: i + batch_size])
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        correct += (model(x).argmax(1).cpu() == y).sum().item()
    return 100.0 * correct / max(1, len(indices))


def load_training_state(path: Path) -> dict[str, Any]:
    """Read ``checkpoint.pt`` weights-only: a file in a run folder may come from anywhere, and
    what :func:`train` saves is tensors and plain data only, so nothing else needs allowing."""
    from prunet import _weights_only

    state = _weights_only.load(path, str(path), TrainError)
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise TrainError(f"{path}: not a prunet training checkpoint (expected a dict with 'model' and 'step')")
    return state


# ----------------------------------------------------------------------------- the loop


def _check_run_folder(run: Path, cfg: TrainConfig, resume: bool, overwrite: bool) -> None:
    """Refuse a resume without its run, or a new run over an old one; writes nothing."""
    ckpt_path, saved = run / CHECKPOINT, run / "train_config.json"
    if resume:
        if not ckpt_path.is_file():
            raise TrainError(f"{ckpt_path}: no checkpoint to resume from")
        if load_config(run).to_json() != cfg.to_json():
            raise TrainError(f"{saved}: the run was started with a different config; resume with the same one")
    elif ckpt_path.exists() and not overwrite:
        raise TrainError(f"{run}: already holds a training run; resume it, choose another --out or pass --overwrite")


def _start_run_folder(run: Path, cfg: TrainConfig, overwrite: bool) -> None:
    """Create the run folder and write its config atomically. Under ``overwrite`` the old run's
    files go first, so an interrupted new run can never resume the old run's checkpoint."""
    run.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for name in RUN_FILES:
            (run / name).unlink(missing_ok=True)
    atomic_write_text(run / "train_config.json", json.dumps(cfg.to_json(), indent=1) + "\n")


def train(cfg: TrainConfig, run_dir: str | os.PathLike, resume: bool = False, quiet: bool = False,
          stop_after: int | None = None, overwrite: bool = False) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data``; writes checkpoint.pt, model.safetensors, arch.json,
    summary.json and log.jsonl into ``run_dir``. ``stop_after`` ends early (tests of resume).

    A folder holding a run is refused unless ``overwrite``; then that run's files
    (:data:`RUN_FILES`) are removed first, so an interrupted new run can never be resumed from
    the old run's checkpoint, and nothing else in the folder is touched."""
    cfg.check()
    run = Path(run_dir)
    rank, world, device = init_distributed(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    ckpt_path = run / CHECKPOINT
    if rank == 0:
        _check_run_folder(run, cfg, resume, overwrite)

    input_size = tuple(cfg.input_size or native_input_size(cfg.model))
    try:
        train_set, train_idx, eval_set, eval_idx = open_data(cfg, input_size)  # type: ignore[arg-type]
    except DataError as e:
        raise TrainError(str(e)) from None
    torch.manual_seed(cfg.seed)  # identical init on every rank and in every resumed run
    # channels_last: about 2x faster on CPU for these depthwise-heavy nets (measured), and the
    # layout Tensor Cores prefer under AMP.
    model = build_model(cfg, train_set.num_classes, input_size[0]).to(device, memory_format=torch.channels_last)
    raw_model = model
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = make_optimizer(cfg, raw_model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    ema = None
    if cfg.ema_decay:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(raw_model, decay=cfg.ema_decay)
    teacher = None
    if cfg.teacher:
        from prunet.zoo import create_model, load_checkpoint

        teacher = create_model(cfg.teacher, num_classes=train_set.num_classes, in_chans=input_size[0])
        if cfg.teacher_checkpoint:
            load_checkpoint(teacher, cfg.teacher_checkpoint)
        teacher = teacher.to(device).eval().requires_grad_(False)
    if rank == 0 and not resume:
        # Only now that data, model and teacher loaded: a failed start leaves no folder behind.
        _start_run_folder(run, cfg, overwrite)
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    stream = BatchStream(train_set, train_idx, cfg.batch_size, seed=cfg.seed, rank=rank, world=world)

    step, history, wall_before = 0, [], 0.0
    if resume:
        state = load_training_state(ckpt_path)
        raw_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
        scaler.load_state_dict(state["scaler"])
        stream.load_state_dict(state["stream"][rank] if isinstance(state["stream"], list) else state["stream"])
        try:
            _runtime.set_rng_state(state["rng"][rank] if isinstance(state["rng"], list) else state["rng"], device)
        except (ValueError, IndexError, KeyError, TypeError) as e:
            raise TrainError(f"{ckpt_path}: RNG state does not fit this run ({e})") from None
        step, history, wall_before = state["step"], state["history"], state["wall_s"]

    comm = _runtime.Collectives(device)

    def checkpoint() -> None:
        streams = comm.gather_objects(stream.state_dict())
        rngs = comm.gather_objects(_runtime.rng_state(device))
        if rank == 0:
            atomic_torch_save({
                "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "ema": ema.module.state_dict() if ema else None,
                "scaler": scaler.state_dict(), "stream": streams, "rng": rngs, "step": step,
                "history": history, "wall_s": wall_before + time.time() - t0,
            }, ckpt_path)

    signals = _runtime.StopSignals().install()  # a signal ends the step, checkpoints, exits cleanly
    t0 = time.time()
    loss_val = float("nan")
    bar = tqdm(total=cfg.steps, initial=step, desc="train", disable=quiet or rank != 0)
    try:
        while step < cfg.steps:
            model.train()
            x, y = stream.next()
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
                if teacher is not None:
                    with torch.no_grad():
                        t_logits = teacher(x)
                    kd = F.kl_div(F.log_softmax(logits / cfg.kd_tau, 1), F.softmax(t_logits / cfg.kd_tau, 1),
                                  reduction="batchmean") * cfg.kd_tau ** 2
                    loss = (1 - cfg.kd_alpha) * loss + cfg.kd_alpha * kd
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update(raw_model, step=step)
            step += 1
            loss_val = float(loss.detach())
            if not math.isfinite(loss_val):
                raise TrainError(f"loss became {loss_val} at step {step}: lower --lr")
            history.append({"step": step, "loss": loss_val, "lr": scheduler.get_last_lr()[0]})
            bar.update(1)
            bar.set_postfix(loss=f"{loss_val:.3f}")
            stop = comm.max_int(signals.signum)  # every rank stops at the same step
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop or step == stop_after:
                checkpoint()
            if stop or step == stop_after:
                break
    finally:
        bar.close()
        signals.restore()

    wall = wall_before + time.time() - t0
    if step < cfg.steps:
        return TrainResult(float("nan"), None, step, wall, loss_val, 0, str(run), history)
    top1 = evaluate(raw_model, eval_set, eval_idx, cfg.eval_batch_size, device, quiet or rank != 0)
    top1_ema = evaluate(ema.module, eval_set, eval_idx, cfg.eval_batch_size, device, True) if ema else None
    result = TrainResult(top1, top1_ema, step, wall, loss_val, len(eval_idx), str(run), history)
    if rank == 0:
        _write_outputs(run, raw_model, ema, result)
    return result


def _write_outputs(run: Path, model: torch.nn.Module, ema: Any, result: TrainResult) -> None:
    from safetensors.torch import save as safetensors_bytes

    best = ema.module if ema is not None and (result.top1_ema or 0) > result.top1 else model
    sd = {k: v.detach().cpu().contiguous() for k, v in best.state_dict().items()}
    atomic_write_bytes(run / "model.safetensors", safetensors_bytes(sd, metadata={"format": "pt"}))
    if hasattr(model, "arch"):
        save_arch(model.arch, run / "arch.json")
    atomic_write_text(run / "log.jsonl", "".join(json.dumps(h) + "\n" for h in result.history))
    summary = {k: v for k, v in asdict(result).items() if k != "history"}
    atomic_write_text(run / "summary.json", json.dumps(summary, indent=1) + "\n")


def load_config(run_dir: str | os.PathLike) -> TrainConfig:
    path = Path(run_dir) / "train_config.json"
    if not path.is_file():
        raise TrainError(f"{path}: not a training run folder")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TrainError(f"{path}: not a readable training config ({e})") from None
    if not isinstance(d, dict):
        raise TrainError(f"{path}: expected a JSON object of TrainConfig fields")
    if d.get("input_size"):
        d["input_size"] = tuple(d["input_size"])
    try:
        return TrainConfig(**d)
    except TypeError as e:
        raise TrainError(f"{path}: not a TrainConfig of this prunet version ({e})") from None
