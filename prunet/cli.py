"""The ``prunet`` command: zoo, export, bench, latency tables, search, train, demo.

Sub-command groups owned by other parts of the package register themselves through
``add_*_commands(subparsers)`` functions, so this file stays a thin dispatcher.

Error policy (one place, :func:`main`): a user error (bad file, unknown name, existing output,
foreign latency table, ...) prints one line ``prunet: error: ...`` and exits 2; ``--debug`` (or
``PRUNET_DEBUG=1``) prints the traceback as well. Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from rich.console import Console
from rich.table import Table

# Tables must not be squeezed to 80 columns when output goes to a pipe or CI log.
console = Console(width=None if sys.stdout.isatty() else 140)


EXIT_USAGE = 2


class UsageError(ValueError):
    """A command-line mistake found by a command itself (argparse cannot see it)."""


# (module, class) of every exception raised on purpose for bad user input. Looked up in
# sys.modules when an error arrives, so `prunet --help` imports none of them (an exception of
# a class whose module was never imported cannot have been raised).
USER_ERRORS: tuple[tuple[str, str], ...] = (
    ("prunet.cli", "UsageError"),
    ("prunet._io", "OutputExistsError"),
    ("prunet.arch.io", "ArchError"),
    ("prunet.arch.io", "JsonError"),
    ("prunet.data.classification", "DataError"),
    ("prunet.export.errors", "PrunetExportError"),
    ("prunet.latency.lut", "LutError"),
    ("prunet.search.config", "SearchError"),
    ("prunet.arch.registry", "UnknownBlockType"),
    ("prunet._runtime", "DeviceError"),
    ("prunet.train", "TrainError"),
    ("prunet.zoo.factory", "WeightsUnavailableError"),
    ("prunet.zoo.nvidia", "CheckpointError"),
    ("prunet.zoo.registry", "UnknownModelError"),
)

_debug = bool(os.environ.get("PRUNET_DEBUG"))


def user_error_types() -> tuple[type[BaseException], ...]:
    found = []
    for module, name in USER_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, user_error_types())


def report_user_error(exc: BaseException) -> int:
    """Print ``prunet: error: <message>`` (with the traceback under ``--debug``); return 2.

    For command handlers that catch errors themselves (they used to print their own line)."""
    if _debug:
        traceback.print_exception(exc)
    message = str(exc).strip() or type(exc).__name__
    print(f"prunet: error: {message}", file=sys.stderr)
    return EXIT_USAGE


# ----------------------------------------------------------------------------- zoo


def _looks_like_path(name: str) -> bool:
    return name.endswith(".json") or os.sep in name or os.path.isfile(name)


def _spec_from(name_or_path: str):
    from prunet import arch, zoo
    from prunet.zoo.registry import UnknownModelError

    if name_or_path in zoo.index():
        return zoo.get_arch(name_or_path)
    if not _looks_like_path(name_or_path):
        raise UnknownModelError(f"unknown model {name_or_path!r}: not a zoo model ({', '.join(zoo.list_models())}) "
                                "and not an architecture JSON file")
    return arch.load(name_or_path)


def count_params(spec) -> int:
    """Parameter count without allocating weights (meta device)."""
    import torch

    from prunet.zoo import build

    with torch.device("meta"):
        model = build(spec)
    return sum(p.numel() for p in model.parameters())


def cmd_zoo_list(args: argparse.Namespace) -> int:
    from prunet import zoo

    rows = []
    for name in zoo.list_models():
        e, spec = zoo.entry(name), zoo.get_arch(name)
        pub = e.published
        rows.append(dict(name=name, model=e.display_name, input=spec.input_size[1], params_m=count_params(spec) / 1e6,
                         nvidia_latency_ms=pub.get("latency_ms"), nvidia_top1=pub.get("top1"),
                         weights=e.hf_hub_id or ("NGC" if e.ngc_checkpoint_url else "-")))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    table = Table(title="prunet zoo (latency/top-1: NVIDIA's published V100 TensorRT FP16 bs1 figures)")
    for col in ("name", "model", "input", "params (M)", "NVIDIA latency (ms)", "NVIDIA top-1 (%)", "weights"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["model"], str(r["input"]), f"{r['params_m']:.2f}", str(r["nvidia_latency_ms"]),
                      str(r["nvidia_top1"]), r["weights"])
    console.print(table)
    return 0


def cmd_zoo_show(args: argparse.Namespace) -> int:
    from prunet.arch import ConvSpec
    from prunet.nn import block_module_names, feature_map_size, stage_layout

    spec = _spec_from(args.model)
    table = Table(title=f"{spec.name}: input {tuple(spec.input_size)}, {count_params(spec) / 1e6:.2f} M params")
    for col in ("#", "module", "type", "in", "out", "hidden", "k", "s", "act", "SE", "residual"):
        table.add_column(col)
    for i, c in enumerate(spec.stem):
        table.add_row(f"s{i}", f"stem.{i}", "conv", str(c.in_chs), str(c.out_chs), "", str(c.kernel), str(c.stride),
                      c.act, "", "")
    names = block_module_names(spec)
    for i, b in enumerate(spec.blocks):
        hidden = "" if isinstance(b, ConvSpec) else str(getattr(b, "hidden_chs", ""))
        se = "" if isinstance(b, ConvSpec) or not hasattr(b, "se_chs") else (str(b.se_chs) if b.se_chs else "-")
        res = "" if isinstance(b, ConvSpec) else ("yes" if getattr(b, "has_residual", False) else "")
        if getattr(b, "nodes", None) is not None:  # a cell: its kept conv widths, node by node
            hidden = " ".join("+".join(f"{e.op}:{e.width}" if e.width else e.op for e in n) for n in b.nodes)
        table.add_row(str(i), names[i], b.type, str(b.in_chs), str(b.out_chs), hidden, str(getattr(b, "kernel", "")),
                      str(b.stride), b.act, se, res)
    h = spec.head
    table.add_row("h", "head", "conv1x1+pool" + ("+conv1x1" if h.post_pool_chs else ""), str(h.in_chs),
                  str(h.post_pool_chs or h.conv_chs), str(h.conv_chs), "1", "1", h.act, "", f"→ {h.num_classes}")
    console.print(table)
    sizes = feature_map_size(spec, spec.input_size[1:])
    levels = ", ".join(f"{i}: {s[0]}x{s[1]} ({len(b)} blocks)" for i, (s, b) in enumerate(zip(sizes, stage_layout(spec))))
    console.print(f"feature levels: {levels}")
    return 0


def cmd_zoo_validate(args: argparse.Namespace) -> int:
    from prunet.arch import ArchError, load

    try:
        spec = load(args.json_file)
    except ArchError as e:
        console.print(f"[red]invalid[/red]: {e}")
        return 2
    print(f"ok: {args.json_file}: {spec.name}, {len(spec.blocks)} blocks, input {tuple(spec.input_size)}, "
          f"{count_params(spec) / 1e6:.2f} M params")
    return 0


def cmd_zoo_convert_ngc(args: argparse.Namespace) -> int:
    from prunet._io import check_output
    from prunet.zoo.hub import convert_ngc, guess_zoo_name
    from prunet.zoo.nvidia import CheckpointError

    check_output(args.out, args.overwrite, folder=True)  # before reading a 100 MB checkpoint
    if not os.path.isfile(args.checkpoint):
        raise CheckpointError(f"{args.checkpoint}: checkpoint file not found")
    arch = args.arch or guess_zoo_name(args.checkpoint)
    if not arch:
        raise UsageError(f"{args.checkpoint}: cannot tell the architecture from the file name; pass --arch NAME|JSON")
    out = convert_ngc(args.checkpoint, arch, args.out, push_to_hub=args.push_to_hub, overwrite=args.overwrite)
    print(f"wrote {out} (model.safetensors, config.json, README.md)"
          + (f"; pushed to {args.push_to_hub}" if args.push_to_hub else ""))
    return 0


def cmd_zoo_summary(args: argparse.Namespace) -> int:
    """Build every zoo model; params, FLOPs (torch.utils.flop_counter) and CPU eager latency, bs1."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from tqdm.auto import tqdm

    from prunet import zoo
    from prunet.latency import measure

    names = args.models or zoo.list_models()
    rows = []
    for name in tqdm(names, desc="zoo", disable=args.quiet):
        model = zoo.create_model(name).eval()
        shape = (1, *model.pretrained_cfg["input_size"])
        x = torch.randn(shape)
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(x)
        stats = measure(model, shape, backend="torch", warmup=args.warmup, iters=args.iters, threads=args.threads)
        rows.append(dict(name=name, input=shape[-1], params_m=sum(p.numel() for p in model.parameters()) / 1e6,
                         gflops=fc.get_total_flops() / 2e9, latency_ms=stats.value, statistic=stats.headline,
                         threads=stats.threads, published_ms=zoo.entry(name).published.get("latency_ms")))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    table = Table(title=f"zoo on this machine: torch eager CPU, batch 1, {rows[0]['statistic'] if rows else ''} of "
                        f"{args.iters} runs (NVIDIA column: V100 TensorRT FP16, published)")
    for col in ("name", "input", "params (M)", "GMACs", "CPU latency (ms)", "NVIDIA V100 (ms)"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], str(r["input"]), f"{r['params_m']:.2f}", f"{r['gflops']:.2f}",
                      f"{r['latency_ms']:.1f}", str(r["published_ms"]))
    console.print(table)
    return 0


def _add_summary_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="*", help="zoo names (default: all)")
    p.add_argument("--iters", type=int, default=10, help="timed runs per model")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_zoo_commands(sub: Any) -> None:
    zoo = sub.add_parser("zoo", help="list, inspect, validate and convert zoo models")
    zsub = zoo.add_subparsers(dest="zoo_cmd", required=True)
    p = zsub.add_parser("list", help="table of zoo models")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_zoo_list)
    p = zsub.add_parser("show", help="per-layer summary of a zoo model or arch JSON")
    p.add_argument("model", help="zoo name or path to an arch JSON (ours or NVIDIA's)")
    p.set_defaults(func=cmd_zoo_show)
    p = zsub.add_parser("validate", help="check an arch JSON; exit 2 with the JSON path of the problem")
    p.add_argument("json_file")
    p.set_defaults(func=cmd_zoo_validate)
    p = zsub.add_parser("convert-ngc", help="NVIDIA NGC checkpoint → timm Hub repo folder")
    p.add_argument("checkpoint", help="NGC zip or .pth.tar")
    p.add_argument("--out", required=True, help="output folder (model.safetensors, config.json, README.md)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace those three files in an existing non-empty --out (nothing else there is touched)")
    p.add_argument("--arch", help="zoo name or arch JSON (default: guessed from the NGC file name)")
    p.add_argument("--push-to-hub", metavar="REPO", help="also upload to this HF Hub repo (needs a token)")
    p.set_defaults(func=cmd_zoo_convert_ngc)
    p = zsub.add_parser("summary", help="build every model: params, FLOPs, CPU latency (bs1)")
    _add_summary_args(p)
    p.set_defaults(func=cmd_zoo_summary)


# What prunet.pipeline.run writes at the top of its output folder.
DEMO_OUTPUTS = frozenset({"search", "train", "onnx", "results.json", "results.md", "pareto.png"})


def check_demo_out(out: str, overwrite: bool) -> None:
    """The demo reruns cheaply into its own folder (finished stages are reused, interrupted ones
    resumed), so a folder holding only what it writes is accepted; one holding anything else is
    someone else's and refused unless ``--overwrite`` (even then only the demo's files change)."""
    from prunet._io import OutputExistsError

    p = Path(out)
    if p.exists() and not p.is_dir():
        raise OutputExistsError(f"{p}: exists and is not a folder")
    if not p.is_dir() or overwrite:
        return
    other = sorted(e.name for e in p.iterdir() if e.name not in DEMO_OUTPUTS and not e.name.startswith("."))
    if other:
        shown = ", ".join(other[:3]) + (", ..." if len(other) > 3 else "")
        raise OutputExistsError(f"{p}: holds files the demo did not write ({shown}); choose another --out, or pass "
                                "--overwrite (the demo's own files are replaced, nothing else is touched)")


def cmd_demo(args: argparse.Namespace) -> int:
    """Small-scale run of prunet.pipeline (benchmarks/proxy_pareto.py is the full-size one)."""
    from dataclasses import replace

    from prunet.pipeline import DEMO, ROW_COLUMNS, result_rows, run

    check_demo_out(args.out, args.overwrite)
    cfg = replace(DEMO, targets_ms=[args.target_ms]) if args.target_ms else DEMO
    console.print(f"[bold]prunet demo[/bold]: search on {cfg.space} (Fashion-MNIST), train, export, measure; "
                  f"outputs in {args.out}/")
    results = run(cfg, args.out, quiet=args.quiet)
    prov = results["provenance"]
    table = Table(title=f"measured on this machine (onnxruntime CPU, {prov['threads']} thread, {prov['statistic']} of "
                        f"{prov['rounds']} interleaved rounds × {prov['burst']} runs)")
    shown = range(7)  # network … top-1; the search's cost columns stay in results.md
    for i in shown:
        table.add_column(ROW_COLUMNS[i])
    for row in result_rows(results):
        table.add_row(*(row[i] for i in shown))
    console.print(table)
    console.print(f"wrote {args.out}/results.json, {args.out}/results.md, {args.out}/pareto.png "
                  f"(runs under {args.out}/search, train, onnx) in {results['wall_s']:.0f} s")
    return 0


# ----------------------------------------------------------------------------- wiring

# Optional groups: (module, function). A group whose module is missing is simply not offered.
_GROUPS: Sequence[tuple[str, str]] = (
    ("prunet._cli_export", "add_export_commands"),
    ("prunet._cli_export", "add_bench_command"),
    ("prunet._cli_search", "add_latency_commands"),
    ("prunet._cli_search", "add_search_commands"),
    ("prunet._cli_train", "add_train_commands"),
    ("prunet._cli_demo", "add_demo_command"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunet", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of a user error too (also: PRUNET_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    add_zoo_commands(sub)
    demo = sub.add_parser("demo", help="the main job on built-in data: search on Fashion-MNIST, train, export, "
                                       "measure, compare with hand-designed baselines")
    demo.add_argument("--out", default="demo_out", help="output folder (results.md/json, pareto.png, runs)")
    demo.add_argument("--target-ms", type=float, default=None,
                      help="latency target (default: the measured latency of the irb_uniform_w075 baseline)")
    demo.add_argument("--overwrite", action="store_true",
                      help="use an --out that holds other files too (only the demo's own files are replaced)")
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(func=cmd_demo)
    for module, func in _GROUPS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        adder: Callable[[Any], None] | None = getattr(mod, func, None)
        if adder is not None:
            adder(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    global _debug
    parser = build_parser()
    args = parser.parse_args(argv)
    _debug = _debug or args.debug
    try:
        return int(args.func(args) or 0)
    except Exception as e:  # noqa: BLE001 - user errors become one line, bugs keep their traceback
        if is_user_error(e):
            return report_user_error(e)
        raise


if __name__ == "__main__":
    # Run the imported module, not this __main__ copy: the error classes and the --debug switch
    # that other modules see are prunet.cli's.
    from prunet.cli import main as _main

    sys.exit(_main())
