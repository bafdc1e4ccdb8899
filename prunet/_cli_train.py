"""`prunet train` sub-commands (registered by prunet/cli.py)."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from typing import Any

from prunet._io import check_output
from prunet.train import TrainConfig, load_config, train

_HELP = {
    "steps": "optimizer steps", "batch_size": "images per step (per process under torchrun)",
    "optimizer": "adamw or sgd", "lr": "peak learning rate (warm-up then cosine)",
    "ema_decay": "EMA of weights (0 = off)", "teacher": "zoo/timm name or arch JSON to distil from",
    "teacher_checkpoint": "weights for the teacher", "train_limit": "use only N training images",
    "eval_limit": "evaluate on N images", "input_size": "C H W (default: the architecture's own)",
    "threads": "torch CPU threads", "device": "cpu | cuda (default: this process's GPU when there is one, else the CPU)",
}


def _add_config_args(p: argparse.ArgumentParser) -> None:
    defaults = TrainConfig(model="x")
    for f in fields(TrainConfig):
        if f.name in ("model", "data"):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if f.name == "input_size":
            p.add_argument(flag, type=int, nargs=3, default=None, help=_HELP[f.name])
        elif isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            kind: Any = type(default) if default is not None else (int if f.name in ("train_limit", "eval_limit", "threads") else str)
            p.add_argument(flag, type=kind, default=default, help=_HELP.get(f.name))


def cmd_train(args: argparse.Namespace) -> int:
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name not in ("model", "data")}
    if values["input_size"]:
        values["input_size"] = tuple(values["input_size"])
    cfg = TrainConfig(model=args.model, data=args.data, **values)
    cfg.check()
    # A non-empty --out is refused before any work: it may hold another run or the user's files.
    check_output(args.out, args.overwrite, folder=True)
    return _run(cfg, args.out, resume=False, quiet=args.quiet, overwrite=args.overwrite)


def cmd_resume(args: argparse.Namespace) -> int:
    return _run(load_config(args.run_dir), args.run_dir, resume=True, quiet=args.quiet)


def _run(cfg: TrainConfig, out: str, resume: bool, quiet: bool, overwrite: bool = False) -> int:
    """Errors (TrainError, DataError, ...) go to prunet.cli.main: one line, exit 2."""
    result = train(cfg, out, resume=resume, quiet=quiet, overwrite=overwrite)
    if result.steps < cfg.steps:
        print(f"interrupted at step {result.steps}; checkpoint saved: prunet train --resume {out}")
        return 130
    print(json.dumps({"top1": result.top1, "top1_ema": result.top1_ema, "steps": result.steps,
                      "wall_s": round(result.wall_s, 1), "run_dir": result.run_dir}))
    return 0


def add_train_commands(sub: Any) -> None:
    p = sub.add_parser("train", help="train a zoo model, timm model or architecture JSON (same recipe for all)")
    p.add_argument("model", nargs="?", help="zoo/timm name or architecture JSON")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run (its saved config is used)")
    p.add_argument("--data", default="fashion-mnist", help="fashion-mnist or imagefolder:PATH")
    p.add_argument("--out", default="runs/train", help="run folder")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in a non-empty --out: replaces this command's files there, nothing else")
    p.add_argument("--quiet", action="store_true")
    _add_config_args(p)
    def dispatch(a: argparse.Namespace) -> int:
        if a.resume:
            a.run_dir = a.resume
            return cmd_resume(a)
        if not a.model:
            p.error("give a model, or --resume RUN_DIR")
        return cmd_train(a)

    p.set_defaults(func=dispatch)
