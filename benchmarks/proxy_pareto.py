"""Searched vs hand-designed networks on Fashion-MNIST at three latency targets, plus the ablation
Prunode-only / +block pruning / +layer pruning — all trained by one recipe and timed together.

Writes benchmarks/results/proxy_pareto.{json,md,png} (via prunet.pipeline). Targets default to the
measured latencies of three baselines, so every searched net has a hand-designed one at the same
measured latency. Rerunning reuses finished searches/trainings in --work.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from prunet.pipeline import PipelineConfig, run

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="runs/proxy_pareto", help="run folders (reused when rerun)")
    p.add_argument("--targets-ms", type=float, nargs="*", default=None,
                   help="latency targets (default: measured latency of the three uniform baselines)")
    p.add_argument("--search-steps", type=int, default=120)
    p.add_argument("--train-steps", type=int, default=600)
    p.add_argument("--ablation", action=argparse.BooleanOptionalAction, default=True,
                   help="also search with Prunode only and Prunode + block pruning at the middle target")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()

    work = Path(args.work)
    baselines = ["irb_uniform_w050", "irb_uniform_w075", "irb_uniform_w100", "gpunet_like_s", "gpunet_like_m"]
    cfg = PipelineConfig(targets_ms=args.targets_ms, baselines=baselines, search_steps=args.search_steps,
                         train_steps=args.train_steps)
    if not cfg.targets_ms:
        from prunet.arch import load
        from prunet.latency.lut import Measurer
        from prunet.pipeline import baseline_path

        m = Measurer(backend="onnxruntime", threads=cfg.latency_threads)
        cfg.targets_ms = [round(m.whole(load(baseline_path(b))), 4) for b in baselines[:3]]
    run(cfg, work / "main", quiet=args.quiet)
    RESULTS.mkdir(exist_ok=True)
    for src, dst in (("results.json", "proxy_pareto.json"), ("results.md", "proxy_pareto.md"),
                     ("pareto.png", "proxy_pareto.png")):
        shutil.copyfile(work / "main" / src, RESULTS / dst)
    if args.ablation:  # search wall time and peak memory per variant are in its results.json
        middle = sorted(cfg.targets_ms)[len(cfg.targets_ms) // 2]
        ab = PipelineConfig(targets_ms=[middle], baselines=[], search_steps=args.search_steps,
                            train_steps=args.train_steps, ablations=["prunode_only", "prunode_block", "full"])
        run(ab, work / "ablation", quiet=args.quiet)
        for src, dst in (("results.json", "proxy_pareto_ablation.json"), ("results.md", "proxy_pareto_ablation.md")):
            shutil.copyfile(work / "ablation" / src, RESULTS / dst)
    print((RESULTS / "proxy_pareto.md").read_text())


if __name__ == "__main__":
    main()
