"""Weight initialisation before vs after issue 12 (item 14), on the proxy training.

Before: PyTorch's default init (``weight_init="torch"``, what every prunet net had until then).
After: timm's EfficientNet init (``weight_init="efficientnet"``, now the default). Every net is
trained by the recipe ``benchmarks/proxy_pareto.py`` used until Pareto v2 (prunet.pipeline's training step: 150
steps, batch 64, 20000 Fashion-MNIST training images, top-1 on 5000 test images) once per init
and seed; the two inits of one (net, seed) run back to back, so a run cut short still leaves
paired results. Results are rewritten after every training:
benchmarks/results/init_effect.{json,md}. Rerunning reuses finished trainings in --work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from prunet.arch import atomic_write_text
from prunet.pipeline import PipelineConfig, baseline_path, train_net

RESULTS = Path(__file__).resolve().parent / "results"
BASELINES = ["irb_uniform_w050", "irb_uniform_w075", "irb_uniform_w100", "gpunet_like_s", "gpunet_like_m"]
INITS = ("torch", "efficientnet")


def proxy_recipe(seed: int) -> PipelineConfig:
    """The training settings benchmarks/proxy_pareto.py passed to the pipeline up to Pareto v2 (v3
    trains at batch 32 × 200 steps to fit its 2 h budget)."""
    return PipelineConfig(seed=seed, train_steps=150, train_batch=64, train_limit=20000, eval_limit=5000)


@contextmanager
def weight_init(kind: str) -> Iterator[None]:
    """Make prunet.train build its model with ``weight_init=kind`` (the recipe has no such field)."""
    import prunet.train as tr
    from prunet.zoo import create_model

    original = tr.build_model

    def build(cfg: Any, num_classes: int, in_chans: int) -> Any:
        return create_model(cfg.model, num_classes=num_classes, in_chans=in_chans, weight_init=kind)

    tr.build_model = build
    try:
        yield
    finally:
        tr.build_model = original


def summarise(runs: dict[str, dict[str, dict[int, float]]], seeds: list[int]) -> dict[str, Any]:
    """Per net and init: top-1 per seed, mean, sample SD; and the paired after − before difference."""
    out: dict[str, Any] = {}
    for net, by_init in runs.items():
        row: dict[str, Any] = {}
        for init, tops in by_init.items():
            vals = [tops[s] for s in seeds if s in tops]
            row[init] = {"top1": {str(s): tops[s] for s in seeds if s in tops},
                         "mean": statistics.mean(vals) if vals else None,
                         "sd": statistics.stdev(vals) if len(vals) > 1 else None}
        paired = [by_init["efficientnet"][s] - by_init["torch"][s] for s in seeds
                  if s in by_init.get("torch", {}) and s in by_init.get("efficientnet", {})]
        row["paired_seeds"] = len(paired)
        row["diff_mean"] = statistics.mean(paired) if paired else None
        out[net] = row
    return out


def fmt(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return ""
    return f"{mean:.2f}" + (f" ± {sd:.2f}" if sd is not None else "")


def write(summary: dict[str, Any], meta: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / "init_effect.json", json.dumps({**meta, "nets": summary}, indent=1) + "\n")
    lines = [
        f"Top-1 (%) on {meta['recipe']['eval_limit']} Fashion-MNIST test images after the proxy_pareto (v2) training "
        f"recipe ({meta['recipe']['train_steps']} steps, batch {meta['recipe']['train_batch']}, "
        f"{meta['recipe']['train_limit']} training images); mean ± sample SD over the seeds that finished "
        f"(asked: {meta['seeds']}). *before*: PyTorch's default init; *after*: timm's EfficientNet init. "
        f"{meta['when']}.",
        "",
        "| network | seeds | before (%) | after (%) | after − before, paired (pp) |",
        "|---|---:|---:|---:|---:|",
    ]
    for net, row in summary.items():
        b, a = row.get("torch", {}), row.get("efficientnet", {})
        diff = "" if row["diff_mean"] is None else f"{row['diff_mean']:+.2f}"
        lines.append(f"| {net} | {row['paired_seeds']} | {fmt(b.get('mean'), b.get('sd'))} | "
                     f"{fmt(a.get('mean'), a.get('sd'))} | {diff} |")
    atomic_write_text(RESULTS / "init_effect.md", "\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="runs/init_effect", help="run folders (reused when rerun)")
    p.add_argument("--nets", nargs="*", default=BASELINES, help="proxy baselines (zoo/proxy) or arch JSON paths")
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()

    work = Path(args.work)
    runs: dict[str, dict[str, dict[int, float]]] = {}
    recipe = proxy_recipe(0)
    meta = {"seeds": args.seeds, "inits": list(INITS),
            "recipe": {k: getattr(recipe, k) for k in ("data", "train_steps", "train_batch", "train_limit",
                                                       "eval_limit")},
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for seed in args.seeds:
        for net in args.nets:
            arch = baseline_path(net)
            name = arch.stem
            for init in INITS:
                with weight_init(init):
                    r = train_net(arch, proxy_recipe(seed), work / init / f"{name}_seed{seed}", args.quiet, seed)
                runs.setdefault(name, {}).setdefault(init, {})[seed] = r["top1"]
                print(f"{name} seed {seed} init {init}: top-1 {r['top1']:.2f} ({r['wall_s']:.0f} s)", flush=True)
                write(summarise(runs, args.seeds), meta)
    print((RESULTS / "init_effect.md").read_text())


if __name__ == "__main__":
    main()
