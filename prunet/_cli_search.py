"""``prunet search run|resume`` and ``prunet latency build-lut|validate-lut``.

Heavy imports happen inside the commands so ``prunet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any



def _backends() -> tuple[str, ...]:
    from prunet.latency.backends import backend_names

    return backend_names()


def _fail(exc: BaseException) -> int:
    """One line (``prunet: error: ...``, exit 2); the traceback only under --debug / PRUNET_DEBUG."""
    from prunet.cli import report_user_error

    return report_user_error(exc)


def _user_errors() -> tuple[type[BaseException], ...]:
    from prunet._io import OutputExistsError
    from prunet._runtime import DeviceError
    from prunet.arch import ArchError, JsonError, UnknownBlockType
    from prunet.data.classification import DataError
    from prunet.latency.lut import LutError
    from prunet.search.config import SearchError

    errs: list[type[BaseException]] = [ArchError, JsonError, UnknownBlockType, DataError, LutError, SearchError,
                                       OutputExistsError, DeviceError]
    try:
        from prunet.export.errors import PrunetExportError

        errs.append(PrunetExportError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


# ----------------------------------------------------------------------------- search

LOOP_OPTIONS = ("steps", "warmup_steps", "batch_size", "train_limit", "checkpoint_every", "threads", "eval_images")


def _settings_from_args(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """``--config`` (one flat JSON object: loop and strategy fields) plus the loop options."""
    from prunet.arch import JsonError, loads_strict
    from prunet.search.config import LoopConfig, SearchError, dataclass_from_dict, split_settings

    base: dict[str, Any] = {}
    if args.config:
        try:
            base = loads_strict(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, JsonError) as e:
            raise SearchError(f"--config {args.config}: cannot read a JSON object ({e})") from None
        if not isinstance(base, dict):
            raise SearchError(f"--config {args.config}: expected a JSON object of loop and strategy fields")
    for name in LOOP_OPTIONS:
        v = getattr(args, name, None)
        if v is not None:
            base[name] = v
    if base.get("train_limit") == 0:
        base["train_limit"] = None
    if "steps" in base and "warmup_steps" not in base:
        base["warmup_steps"] = max(0, min(base["steps"] // 5, LoopConfig.warmup_steps))
    loop, strategy = split_settings(base)
    return dataclass_from_dict(LoopConfig, loop, "--config"), strategy


def cmd_search_run(args: argparse.Namespace) -> int:
    from prunet._runtime import init_distributed
    from prunet.search.config import RunSpec
    from prunet.search.loop import SearchInterrupted, run_search

    try:
        init_distributed(args.device)
        loop, strategy_config = _settings_from_args(args)
        run = RunSpec(space=args.space, data=args.data, target_ms=args.target_ms, strategy=args.strategy,
                      backend=args.backend, lut=args.lut, seed=args.seed, latency_threads=args.latency_threads,
                      device=args.device, allow_foreign_lut=args.allow_foreign_lut, loop=loop,
                      strategy_config=strategy_config)
        summary = run_search(run, args.out, quiet=args.quiet, overwrite=args.overwrite)
    except SearchInterrupted as e:
        print(f"prunet: {e}", file=sys.stderr)
        return 128 + e.signum
    except _user_errors() as e:
        return _fail(e)
    _report(summary, args.quiet)
    return 0


def cmd_search_resume(args: argparse.Namespace) -> int:
    from prunet._runtime import init_distributed
    from prunet.search.loop import SearchInterrupted, read_run, resume_search

    try:
        init_distributed(read_run(Path(args.run_dir)).device)
        summary = resume_search(args.run_dir, quiet=args.quiet)
    except SearchInterrupted as e:
        print(f"prunet: {e}", file=sys.stderr)
        return 128 + e.signum
    except _user_errors() as e:
        return _fail(e)
    _report(summary, args.quiet)
    return 0


def cmd_search_strategies(args: argparse.Namespace) -> int:
    from prunet.search.strategy import strategies

    for name, cls in sorted(strategies().items()):
        print(f"{name:<12} {cls.summary}")
    return 0


def _report(summary: dict[str, Any], quiet: bool) -> None:
    if not summary or quiet:
        return
    meas = summary.get("measured") or {}
    m = f"{meas['ms']:.4f} ms measured" if "ms" in meas else f"not measured ({meas.get('error')})"
    print(f"{summary['arch']}: {summary['blocks']} blocks, predicted {summary['predicted_ms']:.4f} ms "
          f"(target {summary['target_ms']} ms), {m}; {summary['steps']} steps in {summary['wall_s']:.1f} s")


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", required=True, help="built-in space name (proxy-small, gpunet-like) or a space .json")
    p.add_argument("--data", required=True, help="fashion-mnist | imagefolder:PATH")
    p.add_argument("--target-ms", type=float, required=True, help="hard latency target (ms, batch 1)")
    p.add_argument("--strategy", default="prunet", help="search strategy (`prunet search strategies` lists them)")
    p.add_argument("--backend", choices=_backends(), default="onnxruntime", help="latency backend of the table")
    p.add_argument("--steps", type=int, default=None, help="search steps (default 300)")
    p.add_argument("--out", required=True, help="run folder (arch.json, summary.json, ckpt.pt, log.jsonl, plots)")
    p.add_argument("--overwrite", action="store_true",
                   help="use an --out folder that holds files (only the search's own files are replaced)")
    p.add_argument("--lut", default=None, help="latency table JSON (default: cached per space/backend, built if missing)")
    p.add_argument("--allow-foreign-lut", dest="allow_foreign_lut", action="store_true",
                   help="use a --lut measured on another machine or software stack (its figures will not hold here)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default=None,
                   help="JSON object of loop and strategy fields (thresholds, windows, schedules; see docs/search.md)")
    p.add_argument("--warmup-steps", dest="warmup_steps", type=int, default=None)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None)
    p.add_argument("--train-limit", dest="train_limit", type=int, default=None, help="training images used (0 = all)")
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads for the search (recorded; resume uses them)")
    p.add_argument("--eval-images", dest="eval_images", type=int, default=None)
    p.add_argument("--latency-threads", dest="latency_threads", type=int, default=1,
                   help="threads the latency table is measured with (deploy setting)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (one process per GPU under torchrun)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary line")


def add_search_commands(sub: Any) -> None:
    search = sub.add_parser("search", help="latency-aware architecture search (Prunode, tiered pruning)")
    ssub = search.add_subparsers(dest="search_cmd", required=True)
    p = ssub.add_parser("run", help="search a space for a net under a latency target")
    add_search_arguments(p)
    p.set_defaults(func=cmd_search_run)
    p = ssub.add_parser("resume", help="continue an interrupted search from its last checkpoint")
    p.add_argument("run_dir")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_search_resume)
    p = ssub.add_parser("strategies", help="list the search strategies, one line each")
    p.set_defaults(func=cmd_search_strategies)


# ----------------------------------------------------------------------------- latency tables


def cmd_build_lut(args: argparse.Namespace) -> int:
    from prunet.latency.lut import Measurer, build_table
    from prunet.search.space import load_space

    from prunet._io import check_output

    try:
        check_output(args.out, args.overwrite)
        space = load_space(args.space)
        m = Measurer(backend=args.backend, threads=args.threads, iters=args.iters, warmup=args.warmup,
                     device=args.device)
        table = build_table(space, m, calib_nets=args.calib_nets, seed=args.seed, progress=not args.quiet)
        table.save(args.out)
    except _user_errors() as e:
        return _fail(e)
    if not args.quiet:
        cal = table.calibration
        print(f"{args.out}: {len(table.entries)} entries, model {table.model!r} a={table.a:.4f} c={table.c:.4f} ms "
              f"(fit MAPE {cal['fit_mape']:.3f} on {cal['nets']} nets, plain sum {cal['raw_sum_mape']:.3f}), id {table.id}")
    return 0


def _space_for_table(table: Any, given: str | None) -> Any:
    from prunet.latency.lut import LutError
    from prunet.search.space import SpaceError, load_space

    for cand in [given, table.provenance.get("space_source"), table.space_name]:
        if not cand:
            continue
        try:
            space = load_space(cand)
        except SpaceError:
            continue
        if space.hash == table.space_hash:
            return space
    raise LutError(f"{table.path}: cannot find space {table.space_name!r} (hash {table.space_hash}); pass --space")


def cmd_validate_lut(args: argparse.Namespace) -> int:
    from prunet.latency.lut import Measurer, load_table, validate_table

    from prunet._io import check_output

    try:
        if args.plot:
            check_output(args.plot, args.overwrite)
        table = load_table(args.lut)
        space = _space_for_table(table, args.space)
        m = Measurer(backend=table.backend, threads=table.threads, iters=args.iters, warmup=args.warmup,
                     statistic=table.statistic, device=table.provenance.get("device_kind") or "cpu")
        res = validate_table(table, space, m, samples=args.samples, seed=args.seed, progress=not (args.quiet or args.json),
                             plot=args.plot, correct_drift=args.correct_drift, allow_foreign=args.allow_foreign_lut)
    except _user_errors() as e:
        return _fail(e)
    if res.get("foreign_machine"):
        print(f"prunet: warning: {args.lut}: measured on another machine ({'; '.join(res['foreign_machine'])})",
              file=sys.stderr)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{res['samples']} nets: {100 * res['within_10pct']:.0f} % within ±10 %, MAPE {100 * res['mape']:.1f} %, "
              f"Spearman {res['spearman']:.3f}; A/A floor (same nets measured twice): "
              f"{100 * res['aa_within_10pct']:.0f} % within ±10 %, MAPE {100 * res['aa_mape']:.1f} %; "
              f"reference drift ×{res['drift']['ratio']:.3f}")
    return 0


def add_latency_commands(sub: Any) -> None:
    lat = sub.add_parser("latency", help="latency lookup tables for search spaces")
    lsub = lat.add_subparsers(dest="latency_cmd", required=True)
    p = lsub.add_parser("build-lut", help="measure every block a space can reach, calibrate on whole nets")
    p.add_argument("--space", required=True)
    p.add_argument("--backend", choices=_backends(), default="onnxruntime")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1, help="inference threads (measure as you deploy)")
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--calib-nets", dest="calib_nets", type=int, default=24,
                   help="whole nets the model is fitted and cross-validated on (never used by validate-lut)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="torch backend: cuda times eager PyTorch with CUDA events (needs a GPU)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_build_lut)
    p = lsub.add_parser("validate-lut", help="predict vs measure N random nets of the table's space")
    p.add_argument("lut")
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--space", default=None, help="the space (default: the one the table names)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", default=None, help="write a predicted-vs-measured PNG here")
    p.add_argument("--correct-drift", dest="correct_drift", action="store_true",
                   help="scale predictions by the reference net's drift ratio")
    p.add_argument("--allow-foreign-lut", dest="allow_foreign_lut", action="store_true",
                   help="validate a table measured on another machine or software stack")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --plot file")
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_validate_lut)
