"""Train a detector from an mmdet config (thin mmengine Runner entry point, as mmdet's tools/train.py).

    python detection/train.py detection/configs/trees/retinanet_prunet-p0_fpn_trees.py \
        --work-dir runs/det --cfg-options train_cfg.max_iters=50

Before the Runner is built, the config is prepared by ``prunet.detection.tools.prepare_config``:
a ``prunet_dataset`` is built/located and its paths filled in, and the neck's ``in_channels`` are
set from the backbone (so ``--cfg-options model.backbone.arch=<zoo name or arch JSON>`` works).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys


def parse_args(argv=None):
    from prunet.detection.tools import add_runner_args

    p = argparse.ArgumentParser(description="Train a detector with a PruNet (or any mmdet) backbone")
    p.add_argument("config", help="train config file path")
    p.add_argument("--work-dir", help="where logs and checkpoints go (default: ./work_dirs/<config name>)")
    p.add_argument("--amp", action="store_true", help="automatic mixed precision (GPU)")
    p.add_argument("--resume", nargs="?", type=str, const="auto",
                   help="resume from this checkpoint, or without a path from the latest in --work-dir")
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
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir or cfg.get("work_dir") or osp.join(
        "./work_dirs", osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.loss_scale = "dynamic"
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    prepare_config(cfg, quiet=args.quiet)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return 0


if __name__ == "__main__":
    sys.exit(main())
