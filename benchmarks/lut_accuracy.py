#!/usr/bin/env python3
"""Latency-table accuracy on nets the table and its calibration never saw, beside the A/A floor.

Per (space, backend): build a table (every block the nets below need, or the whole space with
``--full-table``), calibrate it on ``--calib-nets`` whole nets (the model is chosen by
cross-validation on those alone), then validate on ``--samples`` other random nets, each measured
twice interleaved (``validate_table``): within ±10 %, MAPE, Spearman and the worst error of the
prediction against the first measurement, and the same figures for the second measurement against
the first (the A/A floor: what this machine allows right now). For the error study every
validation net's features are recorded with the prediction of every candidate model (each fitted
on the calibration nets only). Measure with one thread on a core of its own:

    taskset -c 1 python benchmarks/lut_accuracy.py --out benchmarks/results/lut_accuracy.json

Writes FILE (JSON) and FILE with .md (a table), after each (space, backend), atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from prunet._io import atomic_write_text, check_output
from prunet.latency.features import CANDIDATE_MODELS, FEATURES
from prunet.latency.lut import (Measurer, agreement, arch_parts, build_table, calibration_nets, needed_keys, net_id,
                                spearman, validate_table, validation_nets)
from prunet.latency.model import fit_candidate
from prunet.latency.provenance import machine, versions
from prunet.search.space import load_space

REPO = Path(__file__).resolve().parents[1]


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(REPO))
    except ValueError:
        return str(p)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def net_row(table: Any, arch: Any) -> dict[str, Any]:
    """What the error study plots against: depth, bytes, stride-2 blocks, width changes."""
    blocks = [spec for path, _, spec, _ in arch_parts(arch) if path.startswith("blocks")]
    return {"depth": len(blocks), "plain_sum_ms": table.plain_sum(arch), **table.feature_totals(arch),
            "first_block": f"{blocks[0].type}:h{blocks[0].hidden_chs}" if blocks else "",
            "last_block": f"{blocks[-1].type}:h{blocks[-1].hidden_chs}" if blocks else ""}


def candidate_scores(table: Any, space: Any, val: list[Any], measured: list[float]) -> dict[str, Any]:
    """Every candidate model refitted on the calibration nets (never on ``val``), scored on ``val``."""
    calib = calibration_nets(space, table.calibration["nets"], table.calibration.get("seed", 0),
                             table.calibration.get("sampler", "uniform"))
    cal_meas = table.calibration["measured_ms"]
    sums = [table.plain_sum(a) for a in calib]
    tot = [table.feature_totals(a) for a in calib]
    totals = {f: [t[f] for t in tot] for f in FEATURES}
    out = {}
    for name, feats in CANDIDATE_MODELS.items():
        if len(calib) < len(feats) + 5:
            continue
        fit = fit_candidate(name, sums, totals, cal_meas)
        preds = []
        for a in val:
            t = table.feature_totals(a)
            preds.append(fit.a * table.plain_sum(a) + fit.c + sum(w * t[f] for f, w in fit.weights.items()))
        out[name] = {**agreement(measured, preds), "spearman": spearman(preds, measured),
                     "cv_mape": table.calibration["cv_mape"].get(name), "predicted_ms": preds,
                     "a": fit.a, "c": fit.c, "weights": fit.weights}
    return out


def run_one(space_name: str, backend: str, args: argparse.Namespace, samples: int, calib: int,
            iters: int) -> dict[str, Any]:
    space = load_space(space_name)
    m = Measurer(backend=backend, threads=1, iters=iters, warmup=args.warmup)
    calib_nets = calibration_nets(space, calib, args.seed)
    val = validation_nets(space, samples, args.seed + 1, {net_id(a) for a in calib_nets})
    keys = None if args.full_table else needed_keys(space, val)
    load0, t0 = _load(), time.time()
    table = build_table(space, m, calib_nets=calib, seed=args.seed, progress=not args.quiet, keys=keys)
    build_s = time.time() - t0
    t1 = time.time()
    res = validate_table(table, space, m, samples=samples, seed=args.seed + 1, progress=not args.quiet)
    val_s = time.time() - t1
    rows = [{**net_row(table, a), "predicted_ms": p, "measured_ms": x, "measured_again_ms": y}
            for a, p, x, y in zip(val, res["predicted_ms"], res["measured_ms"], res["measured_again_ms"])]
    return {
        "space": space_name, "backend": backend, "threads": 1, "statistic": table.statistic, "iters": iters,
        "table": {"entries": len(table.entries), "full": keys is None, "build_seconds": round(build_s, 1),
                  "model": table.model, "a": table.a, "c": table.c, "weights": table.weights,
                  "calibration_nets": calib, "cv_mape": table.calibration["cv_mape"],
                  "fit_mape": table.calibration["fit_mape"], "raw_sum_mape_calibration": table.calibration["raw_sum_mape"],
                  "lut_id": table.id},
        "validation": {k: res[k] for k in ("samples", "within_10pct", "mape", "spearman", "max_error",
                                           "aa_within_10pct", "aa_mape", "aa_max_error", "drift",
                                           "calibration_nets_excluded")},
        "validation_seconds": round(val_s, 1),
        "plain_sum": {**agreement(res["measured_ms"], [r["plain_sum_ms"] for r in rows])},
        "candidates": candidate_scores(table, space, val, res["measured_ms"]),
        "nets": rows, "loadavg_1m": {"start": load0, "end": _load()},
    }


def markdown(doc: dict[str, Any]) -> str:
    lines = [f"# Latency-table accuracy (`{doc['command']}`)", "",
             f"{doc['machine']['cpu']}, {doc['date']}; one thread, affinity {doc['affinity']}; "
             "statistic: minimum of the timed runs. Validation nets were never seen by the table's calibration.", "",
             "| space | backend | table entries (build s) | model | nets | within ±10 % | MAPE | Spearman | worst | "
             "A/A within ±10 % | A/A MAPE | plain sum within ±10 % | drift | load 1m start→end |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["runs"]:
        v, t = r["validation"], r["table"]
        lines.append(
            f"| {r['space']} | {r['backend']} | {t['entries']}{'' if t['full'] else ' (partial)'} ({t['build_seconds']:.0f}) | "
            f"{t['model']} | {v['samples']} | {100 * v['within_10pct']:.0f} % | {100 * v['mape']:.1f} % | "
            f"{v['spearman']:.3f} | {100 * v['max_error']:.1f} % | {100 * v['aa_within_10pct']:.0f} % | "
            f"{100 * v['aa_mape']:.1f} % | {100 * r['plain_sum']['within_10pct']:.0f} % | ×{v['drift']['ratio']:.3f} | "
            f"{r['loadavg_1m']['start']}→{r['loadavg_1m']['end']} |")
    lines += ["", "Every candidate model, fitted on the calibration nets, scored on the validation nets:", "",
              "| space | backend | model | LOO-CV MAPE (calibration) | within ±10 % | MAPE | worst |", "|---|---|---|---|---|---|---|"]
    for r in doc["runs"]:
        for name, c in r["candidates"].items():
            cv = c["cv_mape"]
            lines.append(f"| {r['space']} | {r['backend']} | {name} | {'' if cv is None else f'{100 * cv:.1f} %'} | "
                         f"{100 * c['within_10pct']:.0f} % | {100 * c['mape']:.1f} % | {100 * c['max_error']:.1f} % |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="results JSON (a .md is written beside it)")
    ap.add_argument("--spaces", default="proxy-small,gpunet-like")
    ap.add_argument("--backends", default="onnxruntime,torch")
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--calib-nets", type=int, default=24)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--large-samples", type=int, default=8, help="validation nets for gpunet-like")
    ap.add_argument("--large-calib-nets", type=int, default=12)
    ap.add_argument("--large-iters", type=int, default=60, help="timed runs per gpunet-like net (~50 ms each)")
    ap.add_argument("--large-backends", default="onnxruntime", help="backends for gpunet-like")
    ap.add_argument("--full-table", action="store_true",
                    help="measure every block of the space (default: the blocks the sampled nets need)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    md = args.out.with_suffix(".md")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        check_output(args.out, args.overwrite)
        check_output(md, args.overwrite)
    except Exception as e:  # noqa: BLE001 - one line, exit 2
        print(f"lut_accuracy: error: {e}", file=sys.stderr)
        return 2
    doc: dict[str, Any] = {"command": "python benchmarks/lut_accuracy.py " + " ".join(argv or sys.argv[1:]),
                           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
                           "versions": versions(), "affinity": sorted(os.sched_getaffinity(0)),
                           "out": _rel(args.out), "runs": []}
    plan = []
    for sp in [s for s in args.spaces.split(",") if s]:
        large = sp != "proxy-small"
        for b in [b for b in (args.large_backends if large else args.backends).split(",") if b]:
            plan.append((sp, b, args.large_samples if large else args.samples,
                         args.large_calib_nets if large else args.calib_nets, args.large_iters if large else args.iters))
    for sp, b, n, c, it in tqdm(plan, desc="lut_accuracy", disable=args.quiet):
        doc["runs"].append(run_one(sp, b, args, n, c, it))
        atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
        atomic_write_text(md, markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
