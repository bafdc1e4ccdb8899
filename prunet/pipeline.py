"""Search → train → export → measure, side by side with hand-designed baselines.

This is the project's main job (``make demo`` runs it at a small scale; ``benchmarks/proxy_pareto.py``
at three latency targets with an ablation). Every network — searched or baseline — is trained by
the same recipe (:mod:`prunet.train`), exported the same way, and timed in one interleaved
onnxruntime run, so the comparison is at *measured* latency on this machine.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from prunet.arch import atomic_write_text, load


@dataclass
class PipelineConfig:
    """What the demo and the Pareto benchmark vary; everything else is the modules' defaults."""

    space: str = "proxy-small"
    data: str = "fashion-mnist"
    targets_ms: list[float] | None = None  # None: the measured latency of `target_from`
    target_from: str = "irb_uniform_w075"
    baselines: list[str] = field(default_factory=lambda: ["irb_uniform_w050", "irb_uniform_w075", "gpunet_like_s"])
    search_steps: int = 120
    search_overrides: dict[str, Any] = field(default_factory=dict)  # LoopConfig and PruNetConfig fields
    ablations: list[str] = field(default_factory=list)  # extra variants: prunode_only, prunode_block
    ablation_target_ms: float | None = None  # where the extra variants are searched (None: middle target)
    train_steps: int = 300
    train_batch: int = 128
    train_limit: int | None = 20000
    eval_limit: int | None = 5000
    latency_threads: int = 1
    measure_iters: int = 30   # interleaved rounds; each runs every net `measure_burst` times back to back
    measure_burst: int = 10
    measure_cold_iters: int = 100  # also: rounds of one run per net (caches hold the other nets' weights)
    seed: int = 0
    train_seeds: list[int] | None = None  # train every net once per seed (None: [seed]); top-1 is their mean


# Searches of a few dozen steps: the logits must move faster and decisions come sooner than in
# the default 300-step schedule, or finalisation (not the search) ends up choosing the widths.
SHORT_SEARCH = dict(arch_lr=0.1, prunode_window=3, block_window=6, layer_window=6)

# `make demo`: small enough for a few minutes on 2 CPU cores once the latency table exists.
DEMO = PipelineConfig(
    search_steps=24,
    search_overrides=dict(warmup_steps=6, batch_size=16, train_limit=4000, eval_images=500, checkpoint_every=12,
                          **SHORT_SEARCH),
    train_steps=80, train_batch=64, train_limit=10000, eval_limit=2000, measure_iters=20,
    baselines=["irb_uniform_w050", "irb_uniform_w075"],
)

ABLATIONS = {
    # PruNet's pruning tiers switched off explicitly: 2 = block pruning, 3 = layer pruning.
    "prunode_only": {"prune_blocks": False, "prune_layers": False},
    "prunode_block": {"prune_layers": False},
    "full": {},
}


def baseline_path(name: str) -> Path:
    """A hand-designed proxy baseline shipped in zoo/proxy/ (or any arch JSON path)."""
    p = Path(name)
    if p.suffix == ".json" and p.is_file():
        return p
    return Path(str(resources.files("prunet.zoo_data").joinpath("proxy", f"{name}.json")))


def _train(arch_path: Path, cfg: PipelineConfig, out: Path, quiet: bool, seed: int) -> dict[str, Any]:
    from prunet.train import TrainConfig, train

    tc = TrainConfig(model=str(arch_path), data=cfg.data, steps=cfg.train_steps, batch_size=cfg.train_batch,
                     train_limit=cfg.train_limit, eval_limit=cfg.eval_limit, seed=seed,
                     warmup_steps=min(50, cfg.train_steps // 10), checkpoint_every=max(cfg.train_steps, 1))
    if (out / "summary.json").is_file():  # finished earlier: reuse (the demo can be rerun cheaply)
        if json.loads((out / "train_config.json").read_text()) != tc.to_json():
            raise ValueError(f"{out}: holds a training with other settings than this run asks for; "
                             "remove it or choose another output folder")
        done = json.loads((out / "summary.json").read_text())
        return {k: done[k] for k in ("top1", "steps", "wall_s")}
    result = train(tc, out, resume=(out / "checkpoint.pt").is_file(), quiet=quiet)
    return {"top1": result.top1, "steps": result.steps, "wall_s": result.wall_s}


def _export(arch_path: Path, weights: Path, onnx_path: Path) -> dict[str, Any]:
    from prunet.export import to_onnx
    from prunet.zoo import create_model, load_checkpoint

    model = load_checkpoint(create_model(str(arch_path)), weights).eval()
    report = to_onnx(model, onnx_path, batch=1, exporter="torchscript", images=False, check_tensorrt=False)
    return {"onnx": str(onnx_path), "max_rel_err": report.max_rel}


def _search(spec: Any, run_dir: Path, quiet: bool) -> dict[str, Any]:
    """One search in a fresh process, so its wall time and peak memory are its own (``ru_maxrss``
    of a process that ran earlier searches or trainings would report theirs); a finished run is
    reused, an interrupted one resumed."""
    import multiprocessing

    asked = json.loads(json.dumps(spec.to_dict()))
    if (run_dir / "run.json").is_file() and json.loads((run_dir / "run.json").read_text()) != asked:
        raise ValueError(f"{run_dir}: holds a search with other settings than this run asks for; "
                         "remove it or choose another output folder")
    if not (run_dir / "summary.json").is_file():
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=_search_child, args=(spec.to_dict(), str(run_dir), quiet))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"search for {run_dir.name} failed (exit code {proc.exitcode}); "
                               f"its log is {run_dir / 'log.jsonl'}")
    return json.loads((run_dir / "summary.json").read_text())


def _search_child(spec: dict[str, Any], run_dir: str, quiet: bool) -> None:
    from prunet.search import RunSpec
    from prunet.search.loop import resume_search, run_search

    if (Path(run_dir) / "run.json").is_file():
        resume_search(run_dir, quiet=quiet)
    else:
        run_search(RunSpec.from_dict(spec), run_dir, quiet=quiet)


def run(cfg: PipelineConfig, out: str | Path, quiet: bool = False) -> dict[str, Any]:
    """Run the whole comparison; writes results.json, results.md and pareto.png into ``out``."""
    from prunet.latency import Candidate, measure_interleaved
    from prunet.latency.lut import Measurer
    from prunet.search import LoopConfig, RunSpec, load_space
    from prunet.search.config import dataclass_from_dict, split_settings
    from prunet.search.tables import ensure_table

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    space = load_space(cfg.space)
    nets: dict[str, dict[str, Any]] = {}
    for name in cfg.baselines:
        path = baseline_path(name)
        spec = load(path)
        if tuple(spec.input_size) != tuple(space.input_size):
            raise ValueError(f"baseline {name}: input {spec.input_size} differs from space {space.input_size}")
        nets[name] = {"kind": "baseline", "arch": str(path)}

    measurer = Measurer(backend="onnxruntime", threads=cfg.latency_threads)
    targets = cfg.targets_ms
    if not targets:
        ref = load(baseline_path(cfg.target_from))
        targets = [round(measurer.whole(ref), 4)]
    lut = ensure_table(space, "onnxruntime", cfg.latency_threads, quiet=quiet)
    ablation_at = cfg.ablation_target_ms or sorted(targets)[len(targets) // 2]
    if cfg.ablations and ablation_at not in targets:
        raise ValueError(f"ablation_target_ms: {ablation_at} is not one of the targets {targets}")
    unknown = sorted(set(cfg.ablations) - set(ABLATIONS))
    if unknown:
        raise ValueError(f"ablations: unknown variant {unknown[0]!r} (known: {sorted(ABLATIONS)})")
    for target in targets:
        variants = ["full"] + (list(cfg.ablations) if target == ablation_at else [])
        for variant in variants:
            label = f"searched@{target:g}ms" + ("" if variant == "full" else f"[{variant}]")
            run_dir = out / "search" / _slug(label)
            loop, strategy = split_settings({"steps": cfg.search_steps, **cfg.search_overrides, **ABLATIONS[variant]})
            spec = RunSpec(space=cfg.space, data=cfg.data, target_ms=float(target), seed=cfg.seed, lut=str(lut),
                           latency_threads=cfg.latency_threads, loop=dataclass_from_dict(LoopConfig, loop, "search"),
                           strategy_config=strategy)
            summary = _search(spec, run_dir, quiet)
            nets[label] = {"kind": "searched", "arch": str(run_dir / "arch.json"), "target_ms": target,
                           "ablation": variant, "predicted_ms": summary.get("predicted_ms"),
                           "search_wall_s": summary.get("wall_s"), "search_peak_rss_mb": summary.get("peak_rss_mb"),
                           "search_activation_mb": summary.get("activation_mb"),
                           **depth_fields(summary, len(space.layers()))}

    seeds = cfg.train_seeds or [cfg.seed]
    jobs = [(label, seed) for seed in seeds for label in nets]  # seed by seed: a cut-short run has whole seeds
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in nets}
    for label, seed in tqdm(jobs, desc="train", disable=quiet):
        run_dir = out / "train" / (_slug(label) + ("" if seed == cfg.seed else f"_seed{seed}"))
        runs[label].append({"seed": seed, "dir": str(run_dir),
                            **_train(Path(nets[label]["arch"]), cfg, run_dir, quiet=True, seed=seed)})
    for label, net in nets.items():
        top1 = [r["top1"] for r in runs[label]]
        sd = statistics.stdev(top1) if len(top1) > 1 else None
        net["train"] = {**runs[label][0], "top1": statistics.fmean(top1), "top1_sd": sd, "runs": runs[label]}
        weights = Path(runs[label][0]["dir"]) / "model.safetensors"
        net["export"] = _export(Path(net["arch"]), weights, out / "onnx" / f"{_slug(label)}.onnx")
        net["params_m"] = _params(Path(net["arch"])) / 1e6

    shape = (1, *space.input_size)
    cands = [Candidate(label, net["export"]["onnx"], shape) for label, net in nets.items()]
    stats = measure_interleaved(cands, iters=cfg.measure_iters, burst=cfg.measure_burst,
                                threads=cfg.latency_threads, progress=not quiet)
    cold = measure_interleaved(cands, iters=cfg.measure_cold_iters, threads=cfg.latency_threads, progress=not quiet)
    for label, net in nets.items():
        net["measured_ms"] = stats[label].value
        net["measured_statistic"] = stats[label].headline
        net["measured_cold_ms"] = cold[label].value
    results = {
        "config": asdict(cfg), "targets_ms": targets, "nets": nets, "wall_s": round(time.time() - t_start, 1),
        "provenance": {"backend": "onnxruntime", "threads": cfg.latency_threads,
                       "statistic": next(iter(stats.values())).headline,
                       "iters": cfg.measure_iters * cfg.measure_burst, "rounds": cfg.measure_iters,
                       "burst": cfg.measure_burst, "cold_iters": cfg.measure_cold_iters,
                       "device": next(iter(stats.values())).device, "versions": next(iter(stats.values())).versions,
                       "date": next(iter(stats.values())).date},
    }
    atomic_write_text(out / "results.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(out / "results.md", results_markdown(results))
    plot_pareto(results, out / "pareto.png")
    return results


def depth_fields(summary: dict[str, Any], space_layers: int) -> dict[str, int]:
    """How a search used depth, from its ``summary.json``: ``layers_removed`` by layer pruning
    during the search (tier 3), ``layers_skipped_final`` by finalisation (argmax Skip or the
    latency fix-up), and ``depth`` of the result out of ``space_layers`` — so an ablation shows
    whether layer pruning acted at each target."""
    events = summary.get("events") or {}
    blocks = int(summary["blocks"])
    return {"layers_removed": int(events.get("remove_layer", 0)),
            "layers_skipped_final": space_layers - blocks - int(events.get("remove_layer", 0)),
            "depth": blocks, "space_depth": space_layers}


def _slug(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in label)


def _params(arch_path: Path) -> int:
    import torch

    from prunet.zoo import build

    with torch.device("meta"):
        model = build(load(arch_path))
    return sum(p.numel() for p in model.parameters())


def results_markdown(results: dict[str, Any]) -> str:
    prov = results["provenance"]
    lines = [f"onnxruntime CPU, batch 1, {prov['threads']} thread(s). *measured*: {prov['statistic']} of "
             f"{prov['rounds']} interleaved rounds × {prov['burst']} back-to-back runs per net (warm caches, as "
             f"the latency table and targets are measured); *cold*: {prov['statistic']} of {prov['cold_iters']} "
             f"rounds of one run per net (each run follows another net). Top-1 on Fashion-MNIST test images "
             f"after the same training recipe ({results['config']['train_steps']} steps; mean ± sample SD over "
             f"training seeds {results['config']['train_seeds'] or [results['config']['seed']]}); "
             f"{prov['device']}, {prov['date']}.", "",
             "| " + " | ".join(ROW_COLUMNS) + " |", "|---|---|" + "---:|" * (len(ROW_COLUMNS) - 2)]
    lines += ["| " + " | ".join(row) + " |" for row in result_rows(results)]
    return "\n".join(lines) + "\n"


ROW_COLUMNS = ("network", "kind", "params (M)", "predicted (ms)", "measured (ms)", "cold (ms)", "top-1 (%)",
               "depth (layers removed in search)", "search wall (s)", "search activations mean / last (MB)",
               "search peak RSS (MB)")


def result_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    """One formatted row per net (columns :data:`ROW_COLUMNS`), fastest first: the results file
    and the demo's console table show the same cells."""
    rows = []
    for label, n in sorted(results["nets"].items(), key=lambda kv: kv[1]["measured_ms"]):
        pred = f"{n['predicted_ms']:.3f}" if n.get("predicted_ms") else ""
        rows.append((label, n["kind"], f"{n['params_m']:.2f}", pred, f"{n['measured_ms']:.3f}",
                     f"{n['measured_cold_ms']:.3f}", _top1(n), _depth(n), str(n.get("search_wall_s") or ""),
                     _activations(n),
                     str(n.get("search_peak_rss_mb") or "")))
    return rows


def _depth(net: dict[str, Any]) -> str:
    if net.get("depth") is None:  # baselines, and results written before depth was recorded
        return ""
    return f"{net['depth']}/{net['space_depth']} ({net['layers_removed']})"


def _activations(net: dict[str, Any]) -> str:
    act = net.get("search_activation_mb") or {}
    return f"{act['mean']:.0f} / {act['last']:.0f}" if act else ""


def _top1(net: dict[str, Any]) -> str:
    sd = net["train"].get("top1_sd")
    return f"{net['train']['top1']:.2f}" + (f" ± {sd:.2f}" if sd is not None else "")


def plot_pareto(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    def group(n: dict[str, Any]) -> str:
        return n["kind"] if n.get("ablation", "full") == "full" else "searched, ablation"

    for kind, marker, color in (("baseline", "o", "tab:gray"), ("searched", "*", "tab:red"),
                                ("searched, ablation", "x", "tab:blue")):
        pts = [(n["measured_ms"], n["train"]["top1"], label, n["train"].get("top1_sd") or 0.0)
               for label, n in results["nets"].items() if group(n) == kind]
        if pts:
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[3] for p in pts], fmt="none",
                        ecolor=color, elinewidth=0.8, capsize=3)
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, s=90, color=color, label=kind)
            for x, y, label, _ in pts:
                ax.annotate(label, (x, y), fontsize=7, xytext=(4, 2), textcoords="offset points")
    for t in results["targets_ms"]:
        ax.axvline(t, color="tab:red", lw=0.6, ls="--")
    prov = results["provenance"]
    ax.set_xlabel(f"measured latency (ms, onnxruntime CPU, {prov['threads']} thread, {prov['statistic']})")
    ax.set_ylabel("Fashion-MNIST top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
