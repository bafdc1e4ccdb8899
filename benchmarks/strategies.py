"""Every search strategy side by side at the same measured latency targets (issue 15).

PruNet, GrowEfficient, RepNAS, PR-DARTS and the `random` control are searched on proxy-small at the
targets of benchmarks/proxy_pareto.py (the measured latencies of the uniform baselines), with the
same loop settings; every result and the hand baselines are trained by one recipe with the same
seeds and timed together in one interleaved onnxruntime run. Writes
benchmarks/results/strategies.{json,md,png}: the pipeline's results (each net has `strategy`) plus
one row per strategy and target — top-1 mean ± SD, measured latency, search wall time, saved
activations, inherited-weight accuracy. Shares --work with proxy_pareto.py: finished runs are reused.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy_pareto import add_arguments, copy_results, pipeline_config  # noqa: E402

from prunet.arch import atomic_write_text  # noqa: E402
from prunet.pipeline import run  # noqa: E402

STRATEGIES = ["prunet", "growefficient", "repnas", "prdarts"]

# PR-DARTS runs every candidate op on every edge of every cell at every step (DARTS' mixture), so the
# shared budget does not fit it here: at 3 nodes (7 mixed edges per cell), batch 16, one step saved
# 9.3 GB of activations and took about a minute and a half. Its own budget (docs/search.md, PR-DARTS):
# one node per cell (2 mixed edges), batch 8, 80 steps — about the others' search wall time, not their
# step count. Its search wall time and saved activations are reported beside the others.
PRDARTS_BUDGET = {"nodes": 1, "batch_size": 8, "steps": 80, "warmup_steps": 20}


def strategy_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per target and strategy (ablations left out): what each method bought at that latency."""
    rows = []
    for target in results["targets_ms"]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for n in results["nets"].values():
            if n["kind"] != "baseline" and n.get("target_ms") == target and n.get("ablation", "full") == "full":
                groups.setdefault(n.get("strategy", "prunet"), []).append(n)
        for strategy, nets in sorted(groups.items()):
            top1 = [r["top1"] for n in nets for r in n["train"]["runs"]]
            inherited = [n["inherited_top1"] for n in nets if n.get("inherited_top1") is not None]
            act = [n["search_activation_mb"]["mean"] for n in nets if n.get("search_activation_mb")]
            rows.append({
                "target_ms": target, "strategy": strategy, "nets": len(nets), "runs": len(top1),
                "top1_mean": round(statistics.fmean(top1), 3),
                "top1_sd": round(statistics.stdev(top1), 3) if len(top1) > 1 else None,
                "measured_ms_mean": round(statistics.fmean(n["measured_ms"] for n in nets), 4),
                "measured_over_target_max": round(max(n["measured_ms"] for n in nets) / target - 1, 4),
                "search_wall_s_mean": round(statistics.fmean(n["search_wall_s"] for n in nets), 1),
                "activation_mb_mean": round(statistics.fmean(act), 1) if act else None,
                "inherited_top1_mean": round(statistics.fmean(inherited), 2) if inherited else None,
            })
    return rows


def rows_markdown(rows: list[dict[str, Any]], failed: dict[str, str]) -> str:
    lines = ["", "Per strategy and target (searched nets and `random` controls; mean over nets and training seeds):",
             "", "| target (ms) | strategy | nets × seeds | top-1 (%) | measured (ms) | worst vs target | "
             "search wall (s) | saved activations (MB) | inherited top-1 (%) |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        sd = f" ± {r['top1_sd']:.2f}" if r["top1_sd"] is not None else ""
        act = "" if r["activation_mb_mean"] is None else f"{r['activation_mb_mean']:.0f}"
        inh = "" if r["inherited_top1_mean"] is None else f"{r['inherited_top1_mean']:.1f}"
        lines.append(f"| {r['target_ms']:g} | {r['strategy']} | {r['nets']} × {r['runs'] // max(r['nets'], 1)} | "
                     f"{r['top1_mean']:.2f}{sd} | {r['measured_ms_mean']:.3f} | "
                     f"{r['measured_over_target_max']:+.1%} | {r['search_wall_s_mean']:.0f} | {act} | {inh} |")
    lines += [f"| {label} | failed: {why} | | | | | | | |" for label, why in sorted(failed.items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    p.add_argument("--strategies", nargs="*", default=STRATEGIES)
    p.add_argument("--no-prdarts-budget", dest="prdarts_budget", action="store_false",
                   help="search PR-DARTS with the shared settings instead of its own smaller budget")
    p.add_argument("--out", default="strategies", help="results file stem in benchmarks/results/")
    p.set_defaults(search_seeds=[0], baselines=["irb_uniform_w050", "irb_uniform_w075", "irb_uniform_w100",
                                                "gpunet_like_s"])
    args = p.parse_args()

    cfg = pipeline_config(args, list(args.strategies), ablations=[])
    cfg.keep_going = True  # a method that cannot reach a target is a result, not a crash
    if args.prdarts_budget:
        cfg.strategy_overrides["prdarts"] = dict(PRDARTS_BUDGET)  # beside any other strategy's overrides
    work = Path(args.work)
    results = run(cfg, work, quiet=args.quiet)
    results["strategies"] = strategy_rows(results)
    atomic_write_text(work / "results.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(work / "results.md", (work / "results.md").read_text() + rows_markdown(results["strategies"], results["failed"]))
    copy_results(work, args.out)
    print((Path(__file__).resolve().parent / "results" / f"{args.out}.md").read_text())


if __name__ == "__main__":
    main()
