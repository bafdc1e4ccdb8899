"""RetinaNet with ResNet-18 vs PruNet-P0 backbones on the small real tree-crown set (CPU).

Both detectors use the same config (detection/configs/trees/), data, schedule and seed, starting
from random weights; each is trained and evaluated (COCO bbox mAP on the val split) with
detection/train.py and detection/test.py in a subprocess, then CPU inference latency of the whole
detector (preprocessing excluded, postprocessing included) is measured in this process, the two
models interleaved so that machine load affects both alike.

    python benchmarks/detection_smoke.py                 # 200 iterations each, ~1 h on 2 busy cores
    python benchmarks/detection_smoke.py --iters 50      # quicker, noisier

Writes benchmarks/results/detection_smoke.json (atomically) with the provenance of the run.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "detection" / "configs" / "trees"
MODELS = {
    "resnet18": CONFIG_DIR / "retinanet_r18_fpn_trees.py",
    "prunet_p0": CONFIG_DIR / "retinanet_prunet-p0_fpn_trees.py",
}


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _schedule_opts(iters: int, scale: int, seed: int) -> list[str]:
    warm = max(1, iters // 6)
    return [f"train_cfg.max_iters={iters}", f"train_cfg.val_interval={iters}",
            f"default_hooks.checkpoint.interval={iters}", f"param_scheduler.0.end={warm}",
            f"param_scheduler.1.begin={warm}", f"param_scheduler.1.end={iters}",
            f"train_dataloader.dataset.pipeline.2.scale=({scale},{scale})",
            f"val_dataloader.dataset.pipeline.1.scale=({scale},{scale})",
            f"test_dataloader.dataset.pipeline.1.scale=({scale},{scale})",
            f"randomness.seed={seed}"]


def _run(cmd: list[str], log: Path, quiet: bool) -> None:
    if not quiet:
        print("$", " ".join(cmd), flush=True)
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=log.parent,
                              env=dict(os.environ, PYTHONHASHSEED="0"))
    if proc.returncode != 0:
        tail = log.read_text()[-4000:]
        raise RuntimeError(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


def _train_losses(work: Path) -> list[float]:
    files = sorted(work.glob("*/vis_data/scalars.json"))
    rows = [json.loads(x) for x in files[-1].read_text().splitlines() if x.strip()] if files else []
    return [r["loss"] for r in rows if "loss" in r]


def _build_for_timing(config: Path, ckpt: Path, scale: int):
    """The trained detector in eval mode and a list of preprocessed val batches (batch size 1)."""
    import torch
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.runner import load_checkpoint

    import prunet.detection  # noqa: F401
    from mmdet.registry import DATASETS, MODELS
    from mmdet.utils import register_all_modules
    from prunet.detection.tools import prepare_config

    register_all_modules()
    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict({"test_dataloader.dataset.pipeline.1.scale": (scale, scale)})
    if cfg.model.backbone.type == "PruNetBackbone":
        cfg.model.backbone.pretrained = None
    prepare_config(cfg, quiet=True)
    model = MODELS.build(cfg.model)
    load_checkpoint(model, str(ckpt), map_location="cpu", logger="silent")
    model.eval()
    ds = DATASETS.build(cfg.test_dataloader.dataset)
    with torch.no_grad():
        batches = [model.data_preprocessor(pseudo_collate([ds[i]]), False) for i in range(len(ds))]
    n_backbone = sum(p.numel() for p in model.backbone.parameters())
    n_total = sum(p.numel() for p in model.parameters())
    return model, batches, n_backbone, n_total


def _time_interleaved(models: dict, rounds: int, threads: int) -> dict[str, dict]:
    import torch

    torch.set_num_threads(threads)
    per_image = {name: [] for name in models}
    with torch.no_grad():
        for name, (model, batches) in models.items():  # warm-up
            for b in batches[:2]:
                model(**b, mode="predict")
        for _ in range(rounds):
            for name, (model, batches) in models.items():
                for b in batches:
                    t0 = time.perf_counter()
                    model(**b, mode="predict")
                    per_image[name].append((time.perf_counter() - t0) * 1000.0)
    return {name: {"median_ms": statistics.median(v), "mean_ms": statistics.fmean(v),
                   "p90_ms": sorted(v)[int(0.9 * (len(v) - 1))], "n": len(v)} for name, v in per_image.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=200, help="training iterations per model (default 200)")
    p.add_argument("--scale", type=int, default=320, help="image scale for train/val/timing (default 320)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timing-rounds", type=int, default=3, help="passes over the val images when timing")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads for timing (default 2)")
    p.add_argument("--work-dir", default=None, help="keep logs/checkpoints here (default: a temp dir)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "detection_smoke.json"))
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.iters < 6:
        p.error("--iters: at least 6")

    started = dt.datetime.now(dt.timezone.utc)
    work_root = Path(a.work_dir) if a.work_dir else Path(tempfile.mkdtemp(prefix="prunet-detsmoke-"))
    work_root.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    ckpts: dict[str, Path] = {}
    for name, config in MODELS.items():
        work = work_root / name
        work.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        _run([sys.executable, str(REPO / "detection" / "train.py"), str(config), "--quiet", "--work-dir", str(work),
              "--cfg-options", *_schedule_opts(a.iters, a.scale, a.seed)], work / "train.log", a.quiet)
        train_s = time.perf_counter() - t0
        ckpts[name] = work / f"iter_{a.iters}.pth"
        metrics_file = work / "metrics.json"
        _run([sys.executable, str(REPO / "detection" / "test.py"), str(config), str(ckpts[name]), "--quiet",
              "--work-dir", str(work), "--out-json", str(metrics_file), "--cfg-options",
              f"test_dataloader.dataset.pipeline.1.scale=({a.scale},{a.scale})"], work / "test.log", a.quiet)
        losses = _train_losses(work)
        results[name] = {
            "config": str(config.relative_to(REPO)),
            "metrics": json.loads(metrics_file.read_text())["metrics"],
            "train_wall_s": round(train_s, 1),
            "train_loss_first": losses[0] if losses else None,
            "train_loss_last": losses[-1] if losses else None,
        }
        if not a.quiet:
            print(f"{name}: bbox_mAP={results[name]['metrics'].get('coco/bbox_mAP')} "
                  f"mAP_50={results[name]['metrics'].get('coco/bbox_mAP_50')} train {train_s:.0f}s", flush=True)

    built = {}
    for name, config in MODELS.items():
        model, batches, n_bb, n_all = _build_for_timing(config, ckpts[name], a.scale)
        built[name] = (model, batches)
        results[name]["params_backbone_m"] = round(n_bb / 1e6, 3)
        results[name]["params_detector_m"] = round(n_all / 1e6, 3)
    timing = _time_interleaved(built, a.timing_rounds, a.threads)
    for name in MODELS:
        results[name]["cpu_inference"] = timing[name]

    import mmcv
    import mmdet
    import mmengine
    import torch

    from prunet.data.coco_sources import build_deepforest_trees

    manifest = json.loads((build_deepforest_trees(quiet=True).root / "MANIFEST.json").read_text())
    doc = {
        "benchmark": "detection_smoke",
        "what": "RetinaNet, ResNet-18 vs PruNet-P0 backbone, same data/schedule/seed, random init, CPU",
        "results": results,
        "ratios": {
            "map_prunet_p0_over_resnet18": (results["prunet_p0"]["metrics"]["coco/bbox_mAP"] /
                                            results["resnet18"]["metrics"]["coco/bbox_mAP"])
            if results["resnet18"]["metrics"].get("coco/bbox_mAP") else None,
            "cpu_latency_prunet_p0_over_resnet18": timing["prunet_p0"]["median_ms"] / timing["resnet18"]["median_ms"],
        },
        "settings": {"iters": a.iters, "scale": a.scale, "seed": a.seed, "batch_size_train": 4,
                     "timing": {"batch_size": 1, "threads": a.threads, "rounds": a.timing_rounds,
                                "interleaved": True, "includes": "model forward + postprocessing (NMS); "
                                                                 "not image decoding/resizing"}},
        "dataset": {"name": manifest["dataset"], "version": manifest["version"], "tile": manifest["tile"],
                    "source": manifest["source"], "splits": manifest["splits"]},
        "provenance": {
            "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "git_commit": _git_commit(),
            "started_utc": started.isoformat(timespec="seconds"),
            "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "host": {"cpu": _cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
                     "load_avg_at_end": os.getloadavg()},
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "mmcv": mmcv.__version__, "mmdet": mmdet.__version__, "mmengine": mmengine.__version__},
            "note": "Shared 2-core machine: other processes may have run during the measurement; the two "
                    "models were timed interleaved so that load affects both alike.",
        },
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, out)
    if not a.quiet:
        print(json.dumps({n: {"bbox_mAP": r["metrics"].get("coco/bbox_mAP"),
                              "cpu_median_ms": r["cpu_inference"]["median_ms"]} for n, r in results.items()},
                         indent=1))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
