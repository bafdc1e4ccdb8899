"""Evaluate a trained detector checkpoint (thin mmengine Runner entry point, as mmdet's tools/test.py).

    python detection/test.py detection/configs/trees/retinanet_prunet-p0_fpn_trees.py \
        work_dirs/retinanet_prunet-p0_fpn_trees/iter_300.pth

Prints the evaluator's metrics (COCO bbox mAP for the shipped configs) and, with ``--out-json``,
writes them to a JSON file (atomically).
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys


def parse_args(argv=None):
    from prunet.detection.tools import add_runner_args

    p = argparse.ArgumentParser(description="Test (and evaluate) a detector checkpoint")
    p.add_argument("config", help="test config file path")
    p.add_argument("checkpoint", help="checkpoint file (local path or hf-hub:org/repo[/file])")
    p.add_argument("--work-dir", help="where logs go (default: ./work_dirs/<config name>)")
    p.add_argument("--out-json", help="also write the metrics to this JSON file")
    add_runner_args(p)
    args = p.parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmengine.config import Config
    from mmengine.runner import Runner

    import prunet.detection  # noqa: F401  (registers PruNetBackbone and the hf-hub: scheme)
    from prunet.detection.tools import prepare_config

    if not osp.isfile(args.config):
        sys.exit(f"config: {args.config} does not exist")
    if not args.checkpoint.startswith("hf-hub:") and not osp.isfile(args.checkpoint):
        sys.exit(f"checkpoint: {args.checkpoint} does not exist")
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir or cfg.get("work_dir") or osp.join(
        "./work_dirs", osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    # The detector checkpoint holds the backbone too: do not fetch backbone weights first.
    if cfg.model.get("backbone", {}).get("type") == "PruNetBackbone":
        cfg.model.backbone.pretrained = None
        cfg.model.backbone.init_cfg = None
    prepare_config(cfg, quiet=args.quiet)
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    print(json.dumps({k: float(v) for k, v in metrics.items()}, indent=1))
    if args.out_json:
        tmp = f"{args.out_json}.tmp"
        with open(tmp, "w") as f:
            json.dump({"config": args.config, "checkpoint": args.checkpoint,
                       "metrics": {k: float(v) for k, v in metrics.items()}}, f, indent=1)
        os.replace(tmp, args.out_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
