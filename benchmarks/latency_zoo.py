#!/usr/bin/env python3
"""Torch eager vs onnxruntime (CPU EP), batch 1, for PruNet P0/P1, GPUNet-0 and three timm nets.

Each model is exported to ONNX (checked against torch on random input), then both backends are
timed side by side in one process, alternating which goes first every round, with onnxruntime's
spinning threads off and the same thread count for both (the measured rules in
shared/notes/latency-measurement.md). The headline is the minimum of the timed runs. Writes
benchmarks/results/latency_zoo.{json,png,md}.

Weights are random (untrained): latency of these dense conv nets does not depend on weight
values, and no checkpoint download is needed.

    python benchmarks/latency_zoo.py [--iters 300] [--threads 1] [--quiet]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tqdm.auto import tqdm

from prunet.export import to_onnx
from prunet.export.resolve import native_input_size, resolve_module
from prunet.latency import Candidate, measure_interleaved
from prunet.latency.provenance import machine, versions
from prunet._io import atomic_write_text
from prunet.latency.report import plot, write_json

MODELS = ["prunet_p0", "prunet_p1", "gpunet_0", "resnet50", "efficientnet_b0",
          "mobilenetv3_large_100"]
GOAL_P0 = 0.5  # issue 5: onnxruntime / eager for P0 should be <= 0.5
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--iters", type=int, default=300, help="timed rounds per model")
    ap.add_argument("--warmup", type=int, default=20, help="untimed rounds per model")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for both backends (default 1: most repeatable here)")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)

    t0 = time.time()
    host_before = machine()
    results, rows = [], []
    tmp = Path(tempfile.mkdtemp(prefix="prunet-bench-"))
    try:
        for name in tqdm(args.models, desc="models", disable=args.quiet):
            model = resolve_module(name)
            size = native_input_size(model)
            shape = (1, *size)
            onnx_path = tmp / f"{name}.onnx"
            export = to_onnx(model, onnx_path, batch=1, images=False, check_tensorrt=False)
            stats = measure_interleaved(
                [Candidate(f"{name} [torch]", model, shape, "torch"),
                 Candidate(f"{name} [onnxruntime]", str(onnx_path), shape, "onnxruntime")],
                warmup=args.warmup, iters=args.iters, threads=args.threads,
                progress=not args.quiet)
            eager, ort = stats[f"{name} [torch]"], stats[f"{name} [onnxruntime]"]
            for s in (eager, ort):
                s.target = name
                results.append(s)
            rows.append({
                "model": name, "input": list(shape), "eager_ms": eager.value, "ort_ms": ort.value,
                "eager_median_ms": eager.median, "ort_median_ms": ort.median,
                "ratio_ort_over_eager": ort.value / eager.value,
                "ratio_ort_over_eager_median": ort.median / eager.median,
                "parity_max_rel": export.max_rel,
            })
            if not args.quiet:
                tqdm.write(f"{name:24s} {shape[2]}x{shape[3]}  eager {eager.value:8.2f} ms  "
                           f"onnxruntime {ort.value:8.2f} ms  ratio {ort.value / eager.value:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    p0 = next((r for r in rows if r["model"] == "prunet_p0"), None)
    extra = {
        "benchmark": "benchmarks/latency_zoo.py",
        "protocol": {
            "batch": 1, "threads": args.threads, "iters": args.iters, "warmup": args.warmup,
            "interleaved": "torch eager and onnxruntime alternate which runs first every round",
            "onnxruntime": "CPU EP, ORT_ENABLE_ALL, intra_op=threads, inter_op=1, spinning off",
            "onnx_export": "dynamo exporter, static batch 1, random-input parity checked",
            "weights": "random (untrained)",
            "statistic": "min of the timed runs (medians also recorded)",
        },
        "machine_before": host_before,
        "machine_after": machine(),
        "seconds": round(time.time() - t0, 1),
        "summary": rows,
    }
    if p0:
        extra["p0_ratio_ort_over_eager"] = p0["ratio_ort_over_eager"]
        extra["p0_goal"] = {"max_ratio": GOAL_P0, "met": p0["ratio_ort_over_eager"] <= GOAL_P0}
    out = args.out_dir
    write_json(out / "latency_zoo.json", results, **extra)
    plot(out / "latency_zoo.png", results,
         title=f"CPU latency, batch 1, {args.threads} thread(s): torch eager vs onnxruntime")
    atomic_write_text(out / "latency_zoo.md", markdown(rows, extra))
    print(markdown(rows, extra))
    return 0


def markdown(rows: list[dict], extra: dict) -> str:
    p = extra["protocol"]
    m = extra["machine_before"]
    v = versions()
    lines = [
        f"CPU latency at batch 1, {p['threads']} thread(s), torch {v.get('torch')} eager vs "
        f"onnxruntime {v.get('onnxruntime')} (minimum of {p['iters']} interleaved runs after "
        f"{p['warmup']} warm-up rounds; "
        f"{m['cpu']}, {m['cpus_available']} CPUs, load average {m.get('loadavg_1m', '?')} "
        "at start; written by `benchmarks/latency_zoo.py`):",
        "",
        "| model | input | torch eager (ms) | onnxruntime (ms) | onnxruntime ÷ eager "
        "| same, on medians |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['input'][2]}×{r['input'][3]} | {r['eager_ms']:.1f} | "
                     f"{r['ort_ms']:.1f} | {r['ratio_ort_over_eager']:.2f} | "
                     f"{r['ratio_ort_over_eager_median']:.2f} |")
    if "p0_ratio_ort_over_eager" in extra:
        g = extra["p0_goal"]
        lines += ["", f"PruNet P0: onnxruntime ÷ eager = {extra['p0_ratio_ort_over_eager']:.2f} "
                      f"(goal ≤ {g['max_ratio']}: {'met' if g['met'] else 'not met'}). Weights are "
                      "untrained (latency does not depend on their values); full figures with "
                      "p10/p90 and provenance in `benchmarks/results/latency_zoo.json`, plot in "
                      "`latency_zoo.png`."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
