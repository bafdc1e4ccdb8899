"""Searched vs hand-designed networks on Fashion-MNIST at three latency targets, plus the ablation
Prunode only / + block pruning / + layer pruning at the middle target — every network trained by
one recipe and all timed together in one interleaved onnxruntime run.

Writes benchmarks/results/proxy_pareto.{json,md,png} (via prunet.pipeline). Targets default to the
measured latencies of the three uniform-width baselines, so each searched net has a hand-designed
one at the same measured latency. Rerunning reuses finished searches/trainings in --work.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from prunet.pipeline import SHORT_SEARCH, PipelineConfig, run

RESULTS = Path(__file__).resolve().parent / "results"
BASELINES = ["irb_uniform_w050", "irb_uniform_w075", "irb_uniform_w100", "gpunet_like_s", "gpunet_like_m"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="runs/proxy_pareto", help="run folders (reused when rerun)")
    p.add_argument("--targets-ms", type=float, nargs="*", default=None,
                   help="latency targets (default: measured latency of the three uniform baselines)")
    p.add_argument("--search-steps", type=int, default=50)
    p.add_argument("--train-steps", type=int, default=150)
    p.add_argument("--seed", type=int, default=0, help="search seed (and first training seed)")
    p.add_argument("--train-seeds", type=int, nargs="*", default=None,
                   help="train every net once per seed and report mean ± SD (default: just --seed; each extra "
                        "seed adds ~15 min on 2 CPU cores)")
    p.add_argument("--ablation", action=argparse.BooleanOptionalAction, default=True,
                   help="also search with Prunode only and Prunode + block pruning at the middle target")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()

    cfg = PipelineConfig(
        targets_ms=args.targets_ms, baselines=BASELINES, seed=args.seed, train_seeds=args.train_seeds,
        search_steps=args.search_steps,
        search_overrides=dict(warmup_steps=max(args.search_steps // 4, 1), batch_size=16, train_limit=6000,
                              eval_images=500, checkpoint_every=20, **SHORT_SEARCH),
        train_steps=args.train_steps, train_batch=64, train_limit=20000, eval_limit=5000,
        ablations=["prunode_only", "prunode_block"] if args.ablation else [],
    )
    if not cfg.targets_ms:
        from prunet.arch import load
        from prunet.latency.lut import Measurer
        from prunet.pipeline import baseline_path

        m = Measurer(backend="onnxruntime", threads=cfg.latency_threads)
        cfg.targets_ms = [round(m.whole(load(baseline_path(b))), 4) for b in BASELINES[:3]]
    work = Path(args.work)
    run(cfg, work, quiet=args.quiet)
    RESULTS.mkdir(exist_ok=True)
    for src, dst in (("results.json", "proxy_pareto.json"), ("results.md", "proxy_pareto.md"),
                     ("pareto.png", "proxy_pareto.png")):
        shutil.copyfile(work / src, RESULTS / dst)
    print((RESULTS / "proxy_pareto.md").read_text())


if __name__ == "__main__":
    main()
