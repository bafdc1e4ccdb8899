"""Config preparation shared by ``detection/train.py``, ``detection/test.py`` and the benchmark.

Two things a plain mmdet config cannot express on its own:

* the neck's ``in_channels`` must equal the backbone's feature channels, which depend on the
  architecture; :func:`sync_neck_channels` fills them in, so ``--cfg-options
  model.backbone.arch=gpunet_1`` (or an arch JSON) works with any of the shipped configs;
* the small real dataset lives in a per-user cache, built on first use; a config names it with
  ``prunet_dataset = dict(name='deepforest_trees', tile=400)`` and :func:`resolve_dataset` builds
  it and writes its paths into the dataloaders and evaluators.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["prepare_config", "resolve_dataset", "sync_neck_channels"]


def _neck_cfgs(model_cfg: Any) -> list:
    neck = model_cfg.get("neck")
    if neck is None:
        return []
    return list(neck) if isinstance(neck, (list, tuple)) else [neck]


def sync_neck_channels(cfg: Any, quiet: bool = False) -> list[int] | None:
    """Set the first neck's ``in_channels`` to the PruNetBackbone's channels; return them."""
    model = cfg.get("model", {})
    backbone = model.get("backbone", {})
    if backbone.get("type") not in ("PruNetBackbone", "mmdet.PruNetBackbone"):
        return None
    from prunet.detection.backbone import backbone_channels  # noqa: PLC0415

    channels = backbone_channels(backbone.get("arch", "prunet_p0"), backbone.get("out_indices", (2, 3, 4)))
    necks = _neck_cfgs(model)
    if necks and "in_channels" in necks[0]:
        old = list(necks[0]["in_channels"])
        if old != channels:
            necks[0]["in_channels"] = channels
            if not quiet:
                print(f"prunet: neck in_channels {old} -> {channels} for backbone arch "
                      f"{backbone.get('arch')!r}, out_indices {tuple(backbone.get('out_indices', (2, 3, 4)))}")
    return channels


def _dataloaders(cfg: Any):
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg.get(key)
        if loader:
            ds = loader["dataset"]
            while "dataset" in ds:  # RepeatDataset / ClassBalancedDataset wrappers
                ds = ds["dataset"]
            yield key, ds


def resolve_dataset(cfg: Any, data_dir: str | None = None, quiet: bool = False) -> Path | None:
    """Build the dataset named by ``cfg.prunet_dataset`` (if any) and point the config at it."""
    spec = cfg.get("prunet_dataset")
    if not spec:
        return None
    name = spec.get("name")
    if name != "deepforest_trees":
        raise ValueError(f"prunet_dataset.name: expected 'deepforest_trees', got {name!r}")
    from prunet.data.coco_sources import build_deepforest_trees  # noqa: PLC0415

    splits = build_deepforest_trees(data_dir or spec.get("data_dir"), tile=int(spec.get("tile", 400)),
                                    quiet=quiet)
    ann = {"train": splits.train_json, "val": splits.val_json}
    for key, ds in _dataloaders(cfg):
        split = "train" if key == "train_dataloader" else "val"
        ds["data_root"] = str(splits.root)
        ds["ann_file"] = str(ann[split])
        ds["data_prefix"] = dict(img=splits.img_dir.name + "/")
        ds.setdefault("metainfo", dict(classes=splits.classes))
    for key in ("val_evaluator", "test_evaluator"):
        ev = cfg.get(key)
        if ev:
            for one in (ev if isinstance(ev, (list, tuple)) else [ev]):
                if one.get("type", "").endswith("CocoMetric"):
                    one["ann_file"] = str(splits.val_json)
    return splits.root


def prepare_config(cfg: Any, quiet: bool = False) -> Any:
    """Everything train/test need before ``Runner.from_cfg``: dataset paths and neck channels."""
    resolve_dataset(cfg, quiet=quiet)
    sync_neck_channels(cfg, quiet=quiet)
    return cfg


def add_runner_args(parser: Any) -> None:
    """Options detection/train.py and detection/test.py share (as mmdet's own tools do)."""
    from mmengine.config import DictAction

    parser.add_argument("--cfg-options", nargs="+", action=DictAction,
                        help="override config settings, key=value (e.g. train_cfg.max_iters=20)")
    parser.add_argument("--quiet", action="store_true", help="no dataset-build progress bars")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
