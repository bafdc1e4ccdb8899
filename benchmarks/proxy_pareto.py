"""Searched vs hand-designed vs random networks on Fashion-MNIST at three latency targets (v2).

At every target: PruNet searched with several search seeds, `random`-strategy controls predicted
at the same latency, and the hand baselines, every net trained by one recipe with several training
seeds and all timed together in one interleaved onnxruntime run; optionally ablations at the
middle target (the other latency loss, the other execution mode, pruning tiers off) and the
inherited-weight accuracy of one search at several step counts.

Writes benchmarks/results/proxy_pareto.{json,md,png} (via prunet.pipeline; paths in them are
relative to --work). Targets default to the measured latencies of the three uniform-width
baselines. Rerunning reuses finished searches/trainings in --work (``benchmarks/strategies.py``
shares the folder and adds the other strategies).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from prunet.pipeline import PipelineConfig, run

RESULTS = Path(__file__).resolve().parent / "results"
BASELINES = ["irb_uniform_w050", "irb_uniform_w075", "irb_uniform_w100", "gpunet_like_s", "gpunet_like_m"]
UNIFORM = BASELINES[:3]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The settings this benchmark and benchmarks/strategies.py share (one recipe for both)."""
    p.add_argument("--work", default="runs/proxy_pareto", help="run folders (reused when rerun)")
    p.add_argument("--targets-ms", type=float, nargs="*", default=None,
                   help="latency targets (default: measured latency of the three uniform baselines)")
    p.add_argument("--baselines", nargs="*", default=BASELINES)
    p.add_argument("--mode", choices=("sampled", "mixture"), default="sampled",
                   help="PruNet's supernet execution: one candidate per layer per step, or all of them")
    p.add_argument("--latency-loss", choices=("hinge", "multiplicative"), default="hinge")
    p.add_argument("--search-steps", type=int, default=200)
    p.add_argument("--search-seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--random-nets", type=int, default=3, help="`random` controls per target")
    p.add_argument("--random-steps", type=int, default=50,
                   help="steps that train a control's inherited weights (only its inherited accuracy uses them: "
                        "every net's training starts from scratch)")
    # Batch 32 × 200 steps, not v2's 64 × 150: a step of batch 64 costs 1.5x per image what one of
    # 32 does here (cache), and the three-seed comparison must fit in 2 h on 2 cores.
    p.add_argument("--train-steps", type=int, default=200)
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--train-seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--workers", type=int, default=2,
                   help="searches/trainings side by side, one torch thread each (timing is always alone); "
                        "1: torch's default thread count, so run two such invocations at once only with "
                        "OMP_NUM_THREADS=1 (oversubscribed, each stepped ~15x slower here)")
    p.add_argument("--quiet", action="store_true")


def pipeline_config(args: argparse.Namespace, strategies: list[str], ablations: list[str],
                    ablation_all_seeds: bool = False) -> PipelineConfig:
    search = dict(warmup_steps=max(args.search_steps // 4, 1), batch_size=16, train_limit=6000, eval_images=500,
                  checkpoint_every=50, mode=args.mode, latency_loss=args.latency_loss,
                  prune_waits_for_budget=True)
    if args.search_steps < 100:  # a few dozen steps: logits must move faster, decisions come sooner
        from prunet.pipeline import SHORT_SEARCH

        search.update(SHORT_SEARCH)
    cfg = PipelineConfig(
        targets_ms=args.targets_ms, baselines=list(args.baselines), seed=args.search_seeds[0],
        train_seeds=args.train_seeds, search_seeds=args.search_seeds, search_steps=args.search_steps,
        search_overrides=search, strategies=strategies, random_nets=args.random_nets, random_steps=args.random_steps,
        train_steps=args.train_steps, train_batch=args.train_batch, train_limit=20000, eval_limit=5000,
        ablations=ablations, ablation_all_seeds=ablation_all_seeds, workers=args.workers,
    )
    if not cfg.targets_ms:
        from prunet.arch import load
        from prunet.latency.lut import Measurer
        from prunet.pipeline import baseline_path

        m = Measurer(backend="onnxruntime", threads=cfg.latency_threads)
        cfg.targets_ms = [round(m.whole(load(baseline_path(b))), 4) for b in UNIFORM]
    return cfg


def copy_results(work: Path, stem: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    for src, suffix in (("results.json", "json"), ("results.md", "md"), ("pareto.png", "png")):
        tmp = RESULTS / f".{stem}.{suffix}.tmp"
        shutil.copyfile(work / src, tmp)
        tmp.replace(RESULTS / f"{stem}.{suffix}")


def steps_sweep(cfg: PipelineConfig, work: Path, steps: list[int], target: float,
                quiet: bool, train: bool = False) -> list[dict[str, Any]]:
    """Inherited-weight accuracy of the first seed's search at one target vs its length: is the
    supernet trained by the time the search ends? (Searches only, unless ``train``: then each
    derived net is also trained with the first training seed by the comparison's recipe and timed,
    to see whether a better-trained supernet also chooses a better net.)"""
    from dataclasses import replace

    rows = []
    for n in steps:
        overrides = {**cfg.search_overrides, "warmup_steps": max(n // 4, 1)}
        sub = replace(cfg, targets_ms=[target], search_steps=n, search_overrides=overrides, search_seeds=None,
                      random_nets=0, ablations=[], strategies=["prunet"], baselines=[],
                      train_seeds=cfg.training_seeds[:1])
        res = run(sub, work / f"steps_{n}_at_{target}ms", quiet=quiet, train=train)
        (net,) = res["nets"].values()
        row = {"steps": n, "target_ms": target, "inherited_top1": net["inherited_top1"],
               "search_wall_s": net["search_wall_s"], "predicted_ms": net["predicted_ms"],
               "depth": net.get("depth"), "layers_removed": net.get("layers_removed")}
        if train:
            row.update(top1=net["train"]["top1"], train_seed=net["train"]["runs"][0]["seed"],
                       measured_ms=net["measured_ms"])
        rows.append(row)
    return rows


def write_sweep(rows: list[dict[str, Any]], cfg: PipelineConfig, stem: str) -> None:
    from prunet.arch import atomic_write_text

    RESULTS.mkdir(exist_ok=True)
    doc = {"search_overrides": cfg.search_overrides, "seed": cfg.seed, "workers": cfg.workers, "rows": rows}
    atomic_write_text(RESULTS / f"{stem}.json", json.dumps(doc, indent=1) + "\n")
    lines = [f"Inherited-weight accuracy vs search steps (first search seed {cfg.seed}, "
             f"{cfg.search_overrides.get('mode')} mode, batch {cfg.search_overrides.get('batch_size')}, "
             f"warm-up a quarter of the steps, one search at a time):", "",
             "| target (ms) | steps | inherited top-1 (%) | predicted (ms) | search wall (s) |",
             "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['target_ms']} | {r['steps']} | {r['inherited_top1']} | {r['predicted_ms']:.3f} | "
              f"{r['search_wall_s']} |" for r in rows]
    trained = [r for r in rows if "top1" in r]
    if trained:
        lines += ["", f"Trained by the comparison's recipe (training seed {trained[0]['train_seed']} only; each net "
                  "timed alone, so its ms is not comparable to the comparison's interleaved timing):", "",
                  "| steps | top-1 (%) | measured (ms) |", "|---:|---:|---:|"]
        lines += [f"| {r['steps']} | {r['top1']:.2f} | {r['measured_ms']:.3f} |" for r in trained]
    atomic_write_text(RESULTS / f"{stem}.md", "\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    p.add_argument("--ablations", nargs="*", default=[],
                   help="PruNet variants also searched at the middle target (prunet.pipeline.ABLATIONS: "
                        "prune_acts multiplicative mixture prunode_only; Pareto v2 ran all four, ~50 min of "
                        "process time more, the mixture search alone ~18)")
    p.add_argument("--ablation-all-seeds", action="store_true",
                   help="ablations with every search and training seed (default: the first of each)")
    p.add_argument("--steps-sweep", type=int, nargs="*", default=[],
                   help="also search one target (first seed, no training) at these step counts and report "
                        "inherited-weight accuracy vs steps in RESULTS/{out}_steps.{json,md}")
    p.add_argument("--sweep-target-ms", type=float, default=None,
                   help="where the steps sweep searches (default: the middle target)")
    p.add_argument("--sweep-train", action="store_true",
                   help="also train each sweep net (first training seed, the comparison's recipe) and time it")
    p.add_argument("--sweep-only", action="store_true",
                   help="run only the steps sweep (the comparison is neither rerun nor re-timed)")
    p.add_argument("--out", default="proxy_pareto", help="results file stem in benchmarks/results/")
    args = p.parse_args()
    for flag, given in (("--sweep-only", args.sweep_only), ("--sweep-train", args.sweep_train)):
        if given and not args.steps_sweep:
            p.error(f"{flag}: give the step counts to sweep with --steps-sweep N [N ...]")

    cfg = pipeline_config(args, ["prunet"], args.ablations, args.ablation_all_seeds)
    work = Path(args.work)
    if not args.sweep_only:
        run(cfg, work, quiet=args.quiet)
        copy_results(work, args.out)
        print((RESULTS / f"{args.out}.md").read_text())
    if args.steps_sweep:
        targets = sorted(cfg.targets_ms)
        target = args.sweep_target_ms or targets[len(targets) // 2]
        rows = steps_sweep(cfg, work / "sweep", args.steps_sweep, target, args.quiet, train=args.sweep_train)
        write_sweep(rows, cfg, f"{args.out}_steps")
        print((RESULTS / f"{args.out}_steps.md").read_text())


if __name__ == "__main__":
    main()
