"""Small real COCO-format detection sets built from annotated images that PyPI packages ship.

Why: COCO itself cannot be downloaded on the build machines (only PyPI is reachable), but the
detection adapter still has to be trained and scored on real photographs with real boxes. The
``deepforest`` wheel ships aerial RGB images of forest with about 950 hand-drawn tree-crown boxes
in Pascal VOC XML; this module turns them into a two-split COCO dataset that pycocotools and
mmdet's ``CocoDataset``/``CocoMetric`` read directly.

The two large Yellowstone crops are cut into ~400 px tiles (the size of the NEON crops the
package also ships), so that a CPU can train on them at a small scale. The split is spatial, so
that no tree is seen in both splits: the bottom row of tiles of every image with more than one
row goes to ``val``, as does the whole ``SOAP_061`` crop (a different NEON site); all other tiles
are ``train``. Boxes cut by a tile border keep their clipped part; when less than half of a box's
area remains inside the tile it is kept as ``iscrowd=1`` (ignored by training and evaluation)
rather than dropped, so that a visible half-tree is neither a false negative nor a false positive.

Everything is written to a temporary folder and renamed into place, so an interrupted build never
leaves a half-written dataset behind.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path

from prunet._cache import cache_dir
from prunet._pypi import WheelSource, fetch_wheel

__all__ = [
    "CocoSplits",
    "DEEPFOREST_WHEEL",
    "WheelSource",
    "build_deepforest_trees",
    "default_data_dir",
    "fetch_wheel",
]


DEEPFOREST_WHEEL = WheelSource(
    project="deepforest",
    version="2.1.0",
    filename="deepforest-2.1.0-py3-none-any.whl",
    sha256="8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54",
    license="MIT (weecology/DeepForest)",
)

# VOC annotation files inside the wheel and the image each one describes. OSBS_029.xml names a
# GeoTIFF; the wheel also ships the same pixels as PNG (checked identical), which we use.
_DEEPFOREST_IMAGES = {
    "deepforest/data/2019_YELL_2_528000_4978000_image_crop2.xml": "deepforest/data/2019_YELL_2_528000_4978000_image_crop2.png",
    "deepforest/data/2019_YELL_2_541000_4977000_image_crop.xml": "deepforest/data/2019_YELL_2_541000_4977000_image_crop.png",
    "deepforest/data/OSBS_029.xml": "deepforest/data/OSBS_029.png",
    "deepforest/data/SOAP_061.xml": "deepforest/data/SOAP_061.png",
}
_VAL_WHOLE_IMAGES = {"SOAP_061"}
_DATASET_VERSION = 2
CATEGORY = {"id": 1, "name": "tree", "supercategory": "plant"}


@dataclass(frozen=True)
class CocoSplits:
    """Paths of a built dataset: ``img_dir`` holds the images both annotation files refer to."""

    root: Path
    img_dir: Path
    train_json: Path
    val_json: Path

    @property
    def classes(self) -> tuple[str, ...]:
        return (CATEGORY["name"],)


def default_data_dir() -> Path:
    """``$PRUNET_CACHE/data`` (``~/.cache/prunet/data``): outside the clone, shared by sessions."""
    return cache_dir() / "data"


def _parse_voc(xml_bytes: bytes, name: str) -> tuple[int, int, list[tuple[float, float, float, float, str]]]:
    root = ET.fromstring(xml_bytes)
    try:
        width = int(root.findtext("size/width"))
        height = int(root.findtext("size/height"))
        boxes = []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append((x0, y0, x1, y1, obj.findtext("name", "").strip()))
    except (TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{name}: not a Pascal VOC annotation with size and bndbox fields ({e})") from e
    return width, height, boxes


def _tile_edges(length: int, tile: int) -> list[tuple[int, int]]:
    """Non-overlapping [start, end) spans; a remainder under half a tile joins the last span."""
    edges = [(s, min(s + tile, length)) for s in range(0, length, tile)]
    if len(edges) > 1 and edges[-1][1] - edges[-1][0] < tile // 2:
        edges[-2:] = [(edges[-2][0], length)]
    return edges


def build_deepforest_trees(data_dir: str | os.PathLike | None = None, tile: int = 400,
                           wheel_path: str | os.PathLike | None = None, force: bool = False,
                           quiet: bool = False) -> CocoSplits:
    """Build (or reuse) the DeepForest tree-crown set as COCO json; see the module docstring."""
    if tile < 64:
        raise ValueError(f"tile: expected a tile size of at least 64 pixels, got {tile}")
    from PIL import Image  # noqa: PLC0415  (pillow is a runtime dep of the detection stack)

    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    root = data_dir / f"deepforest_trees_v{_DATASET_VERSION}_tile{tile}"
    splits = CocoSplits(root, root / "images", root / "annotations" / "instances_train.json",
                        root / "annotations" / "instances_val.json")
    if (root / "MANIFEST.json").is_file() and not force:
        return splits

    wheel = fetch_wheel(DEEPFOREST_WHEEL, data_dir / "sources", wheel_path=wheel_path, quiet=quiet)
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(dir=data_dir, prefix=f".{root.name}-"))
    try:
        _write_dataset(wheel, tmp_root, tile, Image, quiet)
        if force and root.exists():
            shutil.rmtree(root)
        try:
            os.replace(tmp_root, root)
        except OSError:
            # Another process finished the same (identical) build first, or a broken leftover
            # without a manifest is in the way: keep a complete one, replace a broken one.
            if not (root / "MANIFEST.json").is_file():
                shutil.rmtree(root)
                os.replace(tmp_root, root)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return splits


def _write_dataset(wheel: Path, out: Path, tile: int, Image, quiet: bool) -> None:
    from tqdm import tqdm  # noqa: PLC0415

    (out / "images").mkdir(parents=True)
    (out / "annotations").mkdir()
    coco = {s: {"images": [], "annotations": [], "categories": [dict(CATEGORY)]} for s in ("train", "val")}
    next_img, next_ann = 1, 1
    source_labels: dict[str, int] = {}
    source_boxes = 0
    with zipfile.ZipFile(wheel) as zf:
        for xml_name, img_name in tqdm(_DEEPFOREST_IMAGES.items(), desc="deepforest -> COCO",
                                       disable=quiet):
            width, height, boxes = _parse_voc(zf.read(xml_name), f"{wheel.name}:{xml_name}")
            source_boxes += len(boxes)
            image = Image.open(io.BytesIO(zf.read(img_name))).convert("RGB")
            if image.size != (width, height):
                raise ValueError(f"{wheel.name}:{img_name}: image is {image.size}, annotation says "
                                 f"{(width, height)}")
            stem = Path(img_name).stem
            rows, cols = _tile_edges(height, tile), _tile_edges(width, tile)
            for r, (y0, y1) in enumerate(rows):
                for c, (x0, x1) in enumerate(cols):
                    split = "val" if stem in _VAL_WHOLE_IMAGES or (len(rows) > 1 and r == len(rows) - 1) else "train"
                    file_name = f"{stem}_r{r}c{c}.png"
                    image.crop((x0, y0, x1, y1)).save(out / "images" / file_name)
                    coco[split]["images"].append({
                        "id": next_img, "file_name": file_name, "width": x1 - x0, "height": y1 - y0,
                        "source": f"{DEEPFOREST_WHEEL.requirement}:{img_name}", "offset_xy": [x0, y0]})
                    for bx0, by0, bx1, by1, label in boxes:
                        cx0, cy0 = max(bx0, x0), max(by0, y0)
                        cx1, cy1 = min(bx1, x1), min(by1, y1)
                        if cx1 - cx0 < 1 or cy1 - cy0 < 1:
                            continue
                        kept = (cx1 - cx0) * (cy1 - cy0) / ((bx1 - bx0) * (by1 - by0))
                        w, h = cx1 - cx0, cy1 - cy0
                        coco[split]["annotations"].append({
                            "id": next_ann, "image_id": next_img, "category_id": CATEGORY["id"],
                            "bbox": [cx0 - x0, cy0 - y0, w, h], "area": w * h,
                            "iscrowd": int(kept < 0.5), "source_label": label})
                        if kept >= 0.5:
                            source_labels[label] = source_labels.get(label, 0) + 1
                        next_ann += 1
                    next_img += 1
    counts = {}
    for split, doc in coco.items():
        doc["info"] = {"description": f"Tree crowns from {DEEPFOREST_WHEEL.requirement} package data, "
                                      f"{tile}px tiles, split '{split}'",
                       "version": str(_DATASET_VERSION)}
        doc["licenses"] = [{"id": 1, "name": DEEPFOREST_WHEEL.license}]
        _write_json(out / "annotations" / f"instances_{split}.json", doc)
        counts[split] = {"images": len(doc["images"]),
                         "boxes": sum(1 for a in doc["annotations"] if not a["iscrowd"]),
                         "ignored_boxes": sum(1 for a in doc["annotations"] if a["iscrowd"])}
    _write_json(out / "MANIFEST.json", {
        "dataset": "deepforest_trees", "version": _DATASET_VERSION, "tile": tile,
        "source": {"requirement": DEEPFOREST_WHEEL.requirement, "file": DEEPFOREST_WHEEL.filename,
                   "sha256": DEEPFOREST_WHEEL.sha256, "license": DEEPFOREST_WHEEL.license,
                   "annotations": sorted(_DEEPFOREST_IMAGES)},
        "source_boxes": source_boxes, "kept_boxes_by_source_label": source_labels, "splits": counts,
        "classes": [CATEGORY["name"]],
    })


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Build the small real COCO-format tree-crown set.")
    p.add_argument("--data-dir", default=None, help=f"output root (default: {default_data_dir()})")
    p.add_argument("--tile", type=int, default=400, help="tile size in pixels (default: 400)")
    p.add_argument("--wheel", default=None, help=f"local {DEEPFOREST_WHEEL.filename} (skips pip download)")
    p.add_argument("--force", action="store_true", help="rebuild even if the dataset exists")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    s = build_deepforest_trees(a.data_dir, tile=a.tile, wheel_path=a.wheel, force=a.force, quiet=a.quiet)
    print(json.dumps({"root": str(s.root), "img_dir": str(s.img_dir), "train_json": str(s.train_json),
                      "val_json": str(s.val_json),
                      "splits": json.loads((s.root / "MANIFEST.json").read_text())["splits"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
