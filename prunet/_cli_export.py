"""`prunet export onnx|tensorrt|triton` and `prunet bench` (registered by prunet/cli.py).

Handlers print one clear line and return exit status 2 for user errors (unknown model, corrupt
ONNX, missing backend, wrong shape); anything else is a bug and keeps its traceback. An existing
output file is refused unless ``--overwrite`` is given (checked before any work is done).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


def _fail(exc: Exception) -> int:
    from prunet.cli import report_user_error

    return report_user_error(exc)


def _check_outputs(overwrite: bool, *paths: str | Path | None) -> None:
    """Refuse existing outputs up front: minutes of export must not end in a refusal."""
    from prunet._io import check_output

    for p in paths:
        if p is not None:
            check_output(p, overwrite)


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _input_size(text: str | None) -> tuple[int, int, int] | None:
    """'224', '224x224', '3x224x224' -> (C, H, W)."""
    if text is None:
        return None
    try:
        parts = [int(p) for p in text.lower().replace(",", "x").split("x") if p]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--input-size: expected H, HxW or CxHxW, got {text!r}") from None
    if len(parts) == 1:
        parts = [3, parts[0], parts[0]]
    elif len(parts) == 2:
        parts = [3, *parts]
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"--input-size: expected H, HxW or CxHxW, got {text!r}")
    return tuple(parts)  # type: ignore[return-value]


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _create_kwargs(args: argparse.Namespace) -> dict:
    return {"pretrained": True} if getattr(args, "pretrained", False) else {}


def _write_json(path: str, doc: dict) -> None:
    from prunet._io import atomic_write_text

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=2, default=str) + "\n")


# ----------------------------------------------------------------------------- export onnx


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from prunet.export import PrunetExportError, to_onnx

    _check_outputs(args.overwrite, args.out, args.json)
    try:
        report = to_onnx(args.model, args.out, batch=None if args.dynamic else args.batch,
                         opset=args.opset, exporter=args.exporter, input_size=args.input_size,
                         rtol=args.rtol, images=not args.no_images, slim=args.slim,
                         verbose=args.verbose, **_create_kwargs(args))
    except PrunetExportError as exc:
        report = getattr(exc, "report", None)
        if report is not None and args.json:
            _write_json(args.json, report.to_dict())
        return _fail(exc)
    print(report.summary())
    if report.tensorrt is not None:
        from prunet.export.trt_support import TensorRTSupportReport

        print(TensorRTSupportReport(**report.tensorrt).summary())
    if args.json:
        _write_json(args.json, report.to_dict())
    return 0


# ----------------------------------------------------------------------------- export tensorrt


def _onnx_for(args: argparse.Namespace, batch_dynamic: bool) -> str:
    """The ONNX file to hand to TensorRT: given, or exported next to the output first."""
    from prunet.export import to_onnx
    from prunet.export.resolve import is_onnx_path

    if is_onnx_path(args.model):
        return args.model
    out = Path(args.out).with_suffix(".onnx")
    report = to_onnx(args.model, out, batch=None if batch_dynamic else args.batch,
                     input_size=args.input_size, **_create_kwargs(args))
    print(report.summary())
    return str(out)


def cmd_export_tensorrt(args: argparse.Namespace) -> int:
    from prunet.export import PrunetExportError
    from prunet.export.onnx import load_onnx, onnx_input_shape
    from prunet.export.tensorrt import build_engine, run_trtexec, trtexec_command
    from prunet.export.trt_support import check_tensorrt_support

    from prunet.export.resolve import is_onnx_path

    dynamic = args.max_batch is not None
    writes_plan = not (args.check_only or args.print_command)
    _check_outputs(args.overwrite, None if is_onnx_path(args.model) else Path(args.out).with_suffix(".onnx"),
                   args.out if writes_plan else None,
                   Path(args.out).with_suffix(".trtexec.log") if args.trtexec and writes_plan else None,
                   args.json if writes_plan else None)
    try:
        onnx_path = _onnx_for(args, dynamic)
        model = load_onnx(onnx_path)
        support = check_tensorrt_support(model)
        print(support.summary())
        if args.check_only:
            return 0 if support.ok else 1
        name, dims = onnx_input_shape(onnx_path)
        shape = [args.batch, *dims[1:]]
        if args.print_command:
            print(" ".join(trtexec_command(onnx_path, shape, input_name=name,
                                           precision=args.precision, trtexec=args.trtexec_path,
                                           tensorrt_major=args.trt_major,
                                           save_engine=args.out, timing_cache=args.timing_cache)))
            return 0
        if args.trtexec:
            cmd, summary = run_trtexec(onnx_path, shape, input_name=name,
                                       precision=args.precision, trtexec=args.trtexec_path,
                                       save_engine=args.out, timing_cache=args.timing_cache,
                                       log_path=Path(args.out).with_suffix(".trtexec.log"))
            print(" ".join(cmd))
            print(f"GPU compute time: median {summary.gpu_compute_median_ms:.4f} ms "
                  f"(TensorRT {summary.tensorrt_version}, throughput {summary.throughput_qps} qps)")
            if args.json:
                _write_json(args.json, {"command": cmd, "summary": summary.to_dict()})
            return 0
        batch: Any = (1, args.opt_batch or args.batch, args.max_batch) if dynamic else args.batch
        report = build_engine(onnx_path, args.out, precision=args.precision, batch=batch,
                              workspace_gib=args.workspace_gib, timing_cache=args.timing_cache,
                              verbose=args.verbose)
    except PrunetExportError as exc:
        return _fail(exc)
    print(f"{report.plan}: {report.precision} engine, TensorRT {report.tensorrt_version}, "
          f"{report.plan_bytes / 1e6:.1f} MB, built in {report.build_seconds:.1f} s")
    for n in report.notes:
        print(f"  note: {n}")
    if args.json:
        _write_json(args.json, report.to_dict())
    return 0


# ----------------------------------------------------------------------------- export triton


def cmd_export_triton(args: argparse.Namespace) -> int:
    from prunet.export import PrunetExportError, export_triton

    try:
        report = export_triton(args.model, args.repo, name=args.name, backend=args.backend,
                               max_batch_size=args.max_batch_size, plan=args.plan,
                               precision=args.precision, instance_kind=args.instance_kind,
                               overwrite=args.overwrite, **_create_kwargs(args),
                               **({"input_size": args.input_size} if args.input_size else {}))
    except PrunetExportError as exc:
        return _fail(exc)
    print(f"wrote {report.model_dir}/ ({report.backend}, max_batch_size {report.max_batch_size}, "
          f"input {report.input_dims}, output {report.output_dims})")
    print(Path(report.config).read_text(encoding="utf-8"))
    return 0


def add_export_commands(sub: Any) -> None:
    """Register `prunet export onnx|tensorrt|triton`."""
    exp = sub.add_parser("export", help="export to ONNX, TensorRT engines, Triton repositories")
    esub = exp.add_subparsers(dest="export_cmd", required=True)

    p = esub.add_parser("onnx", help="export a model to ONNX and check it against torch")
    p.add_argument("model", help="zoo/timm name or architecture JSON")
    p.add_argument("--out", required=True, help="output .onnx path")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--batch", type=_positive, default=1, help="static batch size (default 1)")
    g.add_argument("--dynamic", action="store_true", help="dynamic batch dimension")
    p.add_argument("--opset", type=int, default=None,
                   help="ONNX opset (dynamo: >= 18; use --exporter torchscript below that)")
    p.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo")
    p.add_argument("--input-size", type=_input_size, default=None, metavar="CxHxW",
                   help="override the model's native input size")
    p.add_argument("--rtol", type=float, default=1e-4,
                   help="max relative error vs torch (default 1e-4)")
    p.add_argument("--no-images", action="store_true",
                   help="skip the real-image parity check (no PyPI access)")
    p.add_argument("--slim", action="store_true", help="also run onnxslim on the graph")
    p.add_argument("--pretrained", action="store_true",
                   help="load the model's published weights (parity is only meaningful then)")
    p.add_argument("--json", metavar="PATH", help="write the export report as JSON")
    _add_overwrite(p)
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=cmd_export_onnx)

    p = esub.add_parser("tensorrt", help="TensorRT readiness check, engine build or trtexec run")
    p.add_argument("model", help="ONNX file, zoo/timm name or architecture JSON")
    p.add_argument("--out", required=True, help="output .plan path")
    p.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    p.add_argument("--batch", type=_positive, default=1,
                   help="batch size (static engine, and the trtexec --shapes batch)")
    p.add_argument("--opt-batch", type=_positive, default=None)
    p.add_argument("--max-batch", type=_positive, default=None,
                   help="build a dynamic-batch engine with profile 1..MAX (opt: --opt-batch)")
    p.add_argument("--input-size", type=_input_size, default=None, metavar="CxHxW")
    p.add_argument("--workspace-gib", type=float, default=4.0)
    p.add_argument("--pretrained", action="store_true", help="load published weights first")
    p.add_argument("--timing-cache", default=None, help="timing cache file (read and updated)")
    p.add_argument("--check-only", action="store_true",
                   help="only check the graph against TensorRT's ONNX operator table")
    p.add_argument("--trtexec", action="store_true",
                   help="run the paper's trtexec protocol instead of the Python API")
    p.add_argument("--print-command", action="store_true",
                   help="print the trtexec command of the paper's protocol and exit")
    p.add_argument("--trtexec-path", default="trtexec")
    p.add_argument("--trt-major", type=int, default=10,
                   help="TensorRT major version the printed command targets (>= 11: no --fp16)")
    p.add_argument("--json", metavar="PATH")
    _add_overwrite(p)
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=cmd_export_tensorrt)

    p = esub.add_parser("triton", help="write a Triton model-repository entry")
    p.add_argument("model", help="ONNX file, zoo/timm name or architecture JSON")
    p.add_argument("--repo", required=True, help="model repository folder")
    p.add_argument("--name", default=None, help="model name in the repository")
    p.add_argument("--backend", choices=("onnxruntime", "tensorrt"), default="onnxruntime")
    p.add_argument("--max-batch-size", type=int, default=8,
                   help="Triton max_batch_size (0 = fixed batch 1, no dynamic batching)")
    p.add_argument("--plan", default=None, help="existing TensorRT .plan (tensorrt backend)")
    p.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    p.add_argument("--instance-kind", choices=("KIND_GPU", "KIND_CPU", "KIND_AUTO"),
                   default="KIND_GPU")
    p.add_argument("--input-size", type=_input_size, default=None, metavar="CxHxW")
    p.add_argument("--pretrained", action="store_true", help="load published weights first")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing model folder, replacing only config.pbtxt and the model file")
    p.set_defaults(func=cmd_export_triton)


# ----------------------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from prunet.export import PrunetExportError
    from prunet.export.resolve import OnnxFile, check_input_size, native_input_size, resolve
    from prunet.latency import Candidate, measure_interleaved
    from prunet.latency.backends import backend_names

    known = backend_names()
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    bad = [b for b in backends if b not in known]
    if bad or not backends:
        return _fail(ValueError(f"--backend: expected a comma list of {known}, got "
                                f"{args.backend!r}"))
    _check_outputs(args.overwrite, args.json, args.plot)
    try:
        _check_backends(backends, args.device)
        results = []
        for spec in args.targets:
            target = resolve(spec)
            if isinstance(target, OnnxFile):
                from prunet.latency import input_shape_for

                shape = (input_shape_for(spec, args.batch) if args.input_size is None
                         else (args.batch, *args.input_size))
                usable = [b for b in backends if b != "torch"]
                if len(usable) < len(backends):
                    print(f"note: {spec}: the torch backend needs a model, not an ONNX file; "
                          "skipped", file=sys.stderr)
            else:
                size = (check_input_size(args.input_size) if args.input_size
                        else native_input_size(target))
                shape = (args.batch, *size)
                usable = backends
            cands = [Candidate(label=f"{spec} [{b}]", target=target, input_shape=shape, backend=b,
                               device=args.device) for b in usable]
            if not cands:
                continue
            # A/A: every (target, backend) a second time, its own runner, in the same rounds
            twins = [Candidate(label=f"{c.label} (A/A)", target=c.target, input_shape=c.input_shape,
                               backend=c.backend, device=c.device) for c in cands] if args.aa else []
            stats = measure_interleaved(cands + twins, warmup=args.warmup, iters=args.iters,
                                        threads=args.threads, headline=args.headline,
                                        progress=not args.quiet)
            for c in cands:
                s = stats[c.label]
                s.target = str(spec)
                if args.aa:
                    again = stats[f"{c.label} (A/A)"].value
                    s.settings["aa_value"] = again
                    s.settings["aa_error"] = abs(again - s.value) / s.value
                results.append(s)
    except PrunetExportError as exc:
        return _fail(exc)

    table = Table(title=f"latency, batch {args.batch} ({args.headline} of {args.iters} runs, "
                        "backends interleaved)")
    table.add_column("target", overflow="fold")
    cols = ["backend", f"{args.headline} (ms)", "median", "p10", "p90", "threads", "ratio"]
    for col in cols + (["A/A diff"] if args.aa else []):
        table.add_column(col, no_wrap=True)
    first: dict[str, float] = {}
    for r in results:
        base = first.setdefault(r.target, r.value)
        row = [r.target, r.backend, f"{r.value:.3f}", f"{r.median:.3f}", f"{r.p10:.3f}",
               f"{r.p90:.3f}", str(r.threads), f"{r.value / base:.2f}"]
        table.add_row(*row, *([f"{100 * r.settings['aa_error']:.1f} %"] if args.aa else []))
    Console(width=max(Console().width, 110)).print(table)
    floor = _aa_floor(results) if args.aa else None
    if floor:
        print(f"A/A floor: each figure measured twice in the same rounds; {100 * floor['within_10pct']:.0f} % "
              f"of {floor['pairs']} pairs within ±10 %, MAPE {100 * floor['mape']:.1f} % "
              "(differences between rows below this are noise)")
    if args.json:
        from prunet.latency.report import write_json

        write_json(args.json, results, command="prunet bench", aa_floor=floor)
        print(f"wrote {args.json}")
    if args.plot:
        from prunet.latency.report import plot

        plot(args.plot, results, title=f"latency, batch {args.batch}")
        print(f"wrote {args.plot}")
    return 0


def _aa_floor(results: list) -> dict:
    """Share of A/A pairs within ±10 % and their MAPE: the noise floor of this bench run."""
    errs = [r.settings["aa_error"] for r in results]
    return {"pairs": len(errs), "within_10pct": sum(e <= 0.10 for e in errs) / max(len(errs), 1),
            "mape": sum(errs) / max(len(errs), 1)}


def _check_backends(backends: list[str], device: str) -> None:
    from prunet.export.errors import BackendUnavailableError

    if "onnxruntime" in backends:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise BackendUnavailableError(
                "onnxruntime not installed: pip install 'prunet[export]'") from None
    if "tensorrt" in backends:
        from prunet.export.tensorrt import import_tensorrt

        import_tensorrt()
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailableError("--device cuda: torch sees no CUDA GPU here")


def add_bench_command(sub: Any) -> None:
    """Register `prunet bench`."""
    p = sub.add_parser("bench", help="measure latency on torch / onnxruntime / tensorrt")
    p.add_argument("targets", nargs="+", metavar="NAME|JSON|ONNX",
                   help="zoo/timm names, architecture JSONs or ONNX files")
    p.add_argument("--backend", default="torch,onnxruntime",
                   help="comma list of torch, onnxruntime, tensorrt (default torch,onnxruntime)")
    p.add_argument("--batch", type=_positive, default=1)
    p.add_argument("--input-size", type=_input_size, default=None, metavar="CxHxW")
    p.add_argument("--threads", type=_positive, default=None,
                   help="CPU threads per backend (default: all available; record what you deploy)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--iters", type=_positive, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--headline", choices=("min", "p10", "median", "mean"), default="min",
                   help="statistic reported (min: robust on shared CPUs, see docs)")
    p.add_argument("--json", metavar="PATH", help="write results with provenance as JSON")
    p.add_argument("--no-aa", dest="aa", action="store_false",
                   help="do not measure every figure a second time (the A/A noise floor)")
    p.add_argument("--plot", metavar="PATH", help="write a PNG bar chart")
    _add_overwrite(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_bench)
