"""Reader for datasets in the COCO json format (``instances_*.json``), via pycocotools.

Class order: categories sorted by their numeric id; a category's global label is its
rank in that order (COCO ids 1..90 with gaps become labels 0..79). This order is
fixed for the whole experiment (docs/protocol.md §1).

Boxes: COCO ``[x, y, w, h]`` become ``xyxy``; boxes beyond the image are clipped and
degenerate ones dropped, counted as in the VOC reader. ``iscrowd`` is kept (training
drops crowd boxes; evaluation passes them to COCOeval as crowd regions). A
non-standard per-annotation ``difficult`` field (0/1) is read when present.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from clod.data.repairs import BadBoxPolicy, BoxRepairs
from clod.data.types import ImageRecord, Split
from clod.errors import DataError


def load_coco_json(ann_file: str | Path) -> COCO:
    """Load and index a COCO annotation file, with clear errors for bad files."""
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise DataError(f"COCO annotation file {ann_file} does not exist")
    try:
        data = json.loads(ann_file.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{ann_file}: malformed JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{ann_file}: not a text file ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{ann_file}: top level must be a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{ann_file}: missing list {key!r}")
    _check_entries(ann_file, data)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    return coco


def _check_entries(ann_file: Path, data: dict[str, Any]) -> None:
    def need(entry: dict, keys: tuple[str, ...], what: str, k: int) -> None:
        if not isinstance(entry, dict):
            raise DataError(f"{ann_file}: {what}[{k}] is not an object")
        missing = [key for key in keys if key not in entry]
        if missing:
            raise DataError(f"{ann_file}: {what}[{k}] lacks key(s) {missing}")

    for k, image in enumerate(data["images"]):
        need(image, ("id", "file_name", "width", "height"), "images", k)
    for k, category in enumerate(data["categories"]):
        need(category, ("id", "name"), "categories", k)
    image_ids = {image["id"] for image in data["images"]}
    if len(image_ids) != len(data["images"]):
        raise DataError(f"{ann_file}: image ids are not unique")
    category_ids = {category["id"] for category in data["categories"]}
    if len(category_ids) != len(data["categories"]):
        raise DataError(f"{ann_file}: category ids are not unique")
    for k, ann in enumerate(data["annotations"]):
        need(ann, ("id", "image_id", "category_id", "bbox"), "annotations", k)
        if ann["image_id"] not in image_ids:
            raise DataError(
                f"{ann_file}: annotations[{k}] (id {ann['id']}) refers to unknown image_id {ann['image_id']}"
            )
        if ann["category_id"] not in category_ids:
            raise DataError(
                f"{ann_file}: annotations[{k}] (id {ann['id']}) has unknown category_id "
                f"{ann['category_id']}; known ids: {sorted(category_ids)}"
            )
        bbox = ann["bbox"]
        if not (
            isinstance(bbox, list)
            and len(bbox) == 4
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox)
        ):
            raise DataError(
                f"{ann_file}: annotations[{k}] (id {ann['id']}) bbox must be 4 numbers, got {bbox!r}"
            )


def read_coco(
    ann_file: str | Path,
    image_dir: str | Path,
    class_names: Sequence[str] | None = None,
    *,
    on_bad_box: BadBoxPolicy = "repair",
) -> Split:
    """Read every image of a COCO annotation file, with labels in sorted-category-id order.

    If ``class_names`` is given, the file's categories (in sorted-id order) must carry
    exactly these names; this catches a config naming the wrong dataset.
    """
    ann_file, image_dir = Path(ann_file), Path(image_dir)
    if not image_dir.is_dir():
        raise DataError(f"COCO image directory {image_dir} does not exist")
    coco = load_coco_json(ann_file)
    category_ids = sorted(coco.cats)
    names = tuple(coco.cats[cid]["name"] for cid in category_ids)
    if class_names is not None and tuple(class_names) != names:
        raise DataError(
            f"{ann_file}: categories in id order are {list(names)}, "
            f"but the config expects {list(class_names)}"
        )
    label_of = {cid: rank for rank, cid in enumerate(category_ids)}

    annotations_of: dict[int, list[dict]] = defaultdict(list)
    for ann in coco.dataset["annotations"]:
        annotations_of[ann["image_id"]].append(ann)

    repairs = BoxRepairs(source=f"COCO {ann_file}", policy=on_bad_box)
    records = []
    seen_ids: set[str] = set()
    for image in sorted(coco.dataset["images"], key=lambda im: im["id"]):
        path = image_dir / image["file_name"]
        image_id = Path(image["file_name"]).stem
        if image_id in seen_ids:
            raise DataError(f"{ann_file}: two images share the file name stem {image_id!r}")
        seen_ids.add(image_id)
        if not path.is_file():
            raise DataError(
                f"image {path} does not exist (referenced by {ann_file}, image id {image['id']})"
            )
        width, height = int(image["width"]), int(image["height"])
        if width <= 0 or height <= 0:
            raise DataError(
                f"{ann_file}: image id {image['id']} has non-positive size {width}x{height}"
            )
        anns = annotations_of.get(image["id"], [])
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        boxes, keep = repairs.sanitize(
            xyxy, width, height, f"{ann_file} image {image['file_name']}"
        )
        records.append(
            ImageRecord(
                image_id=image_id,
                path=path,
                width=width,
                height=height,
                boxes=boxes[keep],
                labels=np.array([label_of[a["category_id"]] for a in anns], dtype=np.int64)[keep],
                difficult=np.array([bool(a.get("difficult", 0)) for a in anns], dtype=bool)[keep],
                iscrowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)[keep],
            )
        )
    repairs.report()
    return Split(class_names=names, records=tuple(records), source=str(ann_file))
