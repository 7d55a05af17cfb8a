"""Evaluation of COCO-format files: a ground-truth annotation file and a detection result file.

Ground truth: a COCO ``instances`` file (``images``, ``annotations``, ``categories``). Boxes are
``[x, y, w, h]``; ``iscrowd`` (default 0), ``area`` (default w·h) and a clod extension,
``difficult`` (default false), are read. Category ids are mapped to contiguous class indices in
sorted-id order (COCO-80: the label is the rank of the id, docs/protocol.md §1). Image ids are used as
image indices.

Detections: a COCO result file, a JSON list of ``{image_id, category_id, bbox: [x, y, w, h],
score}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clod.errors import DataError
from clod.metrics.coco import CocoBackend
from clod.metrics.detection import SCALAR_NAMES, DetectionResult, evaluate_detections
from clod.metrics.records import (
    Detections,
    DifficultPolicy,
    GroundTruth,
    check_difficult_policy,
    xywh_to_xyxy,
)


class EvaluationInputError(DataError, ValueError):
    """An evaluation input file is missing or malformed; the message names the file."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


@dataclass(frozen=True)
class CocoGroundTruthFile:
    """A COCO annotation file read into a GT table and its id mappings."""

    path: Path
    category_ids: tuple[int, ...]  # sorted; class index = position
    category_names: tuple[str, ...]  # aligned with category_ids
    image_ids: np.ndarray  # (N,) int64, every image of the file
    ground_truth: GroundTruth

    def class_index(self, category_id: int) -> int | None:
        position = int(np.searchsorted(self.category_ids, category_id))
        if position < len(self.category_ids) and self.category_ids[position] == category_id:
            return position
        return None


def _load_json(path: Path | str, what: str) -> Any:
    path = Path(path)
    if not path.exists():
        raise EvaluationInputError(path, f"{what} file does not exist")
    if not path.is_file():
        raise EvaluationInputError(path, f"{what} path is not a file")
    try:
        with path.open("r", encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise EvaluationInputError(
            path,
            f"malformed JSON in {what} file (line {error.lineno}, column {error.colno}: {error.msg})",
        ) from error
    except UnicodeDecodeError as error:
        raise EvaluationInputError(path, f"{what} file is not UTF-8 text") from error


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _xywh(path: Path, where: str, bbox: Any) -> list[float]:
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        raise EvaluationInputError(
            path, f"{where}: bbox must be a list of 4 finite numbers [x, y, w, h], got {bbox!r}"
        )
    if bbox[2] < 0 or bbox[3] < 0:
        raise EvaluationInputError(
            path, f"{where}: bbox width and height must not be negative, got {bbox!r}"
        )
    return [float(v) for v in bbox]


def _entries(path: Path, data: Any, key: str) -> list[dict[str, Any]]:
    entries = data.get(key)
    if not isinstance(entries, list):
        raise EvaluationInputError(path, f"ground truth needs a list under {key!r}")
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise EvaluationInputError(path, f"{key}[{position}] is not an object")
    return entries


def read_coco_ground_truth(path: Path | str) -> CocoGroundTruthFile:
    """Read and validate a COCO annotation file."""
    path = Path(path)
    data = _load_json(path, "ground-truth")
    if not isinstance(data, dict):
        raise EvaluationInputError(
            path, "ground truth must be a JSON object with images, annotations, categories"
        )

    categories = _entries(path, data, "categories")
    names_by_id: dict[int, str] = {}
    for position, category in enumerate(categories):
        if not _is_integer(category.get("id")):
            raise EvaluationInputError(path, f"categories[{position}]: id must be an integer")
        if category["id"] in names_by_id:
            raise EvaluationInputError(
                path, f"categories[{position}]: duplicate category id {category['id']}"
            )
        names_by_id[category["id"]] = str(category.get("name", category["id"]))
    if not names_by_id:
        raise EvaluationInputError(path, "ground truth has no categories")
    category_ids = tuple(sorted(names_by_id))

    images = _entries(path, data, "images")
    image_ids: list[int] = []
    for position, image in enumerate(images):
        if not _is_integer(image.get("id")):
            raise EvaluationInputError(path, f"images[{position}]: id must be an integer")
        image_ids.append(image["id"])
    known_images = set(image_ids)
    if len(known_images) != len(image_ids):
        raise EvaluationInputError(path, "ground truth lists an image id more than once")

    annotations = _entries(path, data, "annotations")
    class_of = {category_id: index for index, category_id in enumerate(category_ids)}
    rows_image, rows_box, rows_label, rows_difficult, rows_crowd, rows_area = [], [], [], [], [], []
    for position, annotation in enumerate(annotations):
        where = f"annotations[{position}]"
        image_id = annotation.get("image_id")
        if not _is_integer(image_id) or image_id not in known_images:
            raise EvaluationInputError(path, f"{where}: image_id {image_id!r} is not in images")
        category_id = annotation.get("category_id")
        if not _is_integer(category_id) or category_id not in class_of:
            raise EvaluationInputError(
                path, f"{where}: category_id {category_id!r} is not in categories"
            )
        box = _xywh(path, where, annotation.get("bbox"))
        area = annotation.get("area", box[2] * box[3])
        if not _is_number(area):
            raise EvaluationInputError(path, f"{where}: area must be a finite number, got {area!r}")
        rows_image.append(image_id)
        rows_box.append(box)
        rows_label.append(class_of[category_id])
        rows_difficult.append(bool(annotation.get("difficult", False)))
        rows_crowd.append(bool(annotation.get("iscrowd", 0)))
        rows_area.append(float(area))

    ground_truth = GroundTruth(
        image=np.asarray(rows_image, dtype=np.int64),
        boxes=xywh_to_xyxy(np.asarray(rows_box, dtype=np.float64).reshape(-1, 4)),
        labels=np.asarray(rows_label, dtype=np.int64),
        difficult=np.asarray(rows_difficult, dtype=bool),
        iscrowd=np.asarray(rows_crowd, dtype=bool),
        area=np.asarray(rows_area, dtype=np.float64),
    )
    return CocoGroundTruthFile(
        path=path,
        category_ids=category_ids,
        category_names=tuple(names_by_id[i] for i in category_ids),
        image_ids=np.asarray(image_ids, dtype=np.int64),
        ground_truth=ground_truth,
    )


def read_coco_detections(path: Path | str, ground_truth: CocoGroundTruthFile) -> Detections:
    """Read and validate a COCO result file against the ground truth it will be scored on."""
    path = Path(path)
    data = _load_json(path, "detection")
    if not isinstance(data, list):
        raise EvaluationInputError(
            path, "detections must be a JSON list of {image_id, category_id, bbox, score}"
        )
    known_images = set(ground_truth.image_ids.tolist())
    rows_image, rows_box, rows_score, rows_label = [], [], [], []
    for position, detection in enumerate(data):
        where = f"detection {position}"
        if not isinstance(detection, dict):
            raise EvaluationInputError(path, f"{where} is not an object")
        image_id = detection.get("image_id")
        if not _is_integer(image_id) or image_id not in known_images:
            raise EvaluationInputError(
                path, f"{where}: image_id {image_id!r} is not in the ground truth"
            )
        category_id = detection.get("category_id")
        class_index = ground_truth.class_index(category_id) if _is_integer(category_id) else None
        if class_index is None:
            raise EvaluationInputError(
                path, f"{where}: category_id {category_id!r} is not in the ground truth"
            )
        score = detection.get("score")
        if not _is_number(score):
            raise EvaluationInputError(
                path, f"{where}: score must be a finite number, got {score!r}"
            )
        rows_image.append(image_id)
        rows_box.append(_xywh(path, where, detection.get("bbox")))
        rows_score.append(float(score))
        rows_label.append(class_index)
    return Detections(
        image=np.asarray(rows_image, dtype=np.int64),
        boxes=xywh_to_xyxy(np.asarray(rows_box, dtype=np.float64).reshape(-1, 4)),
        scores=np.asarray(rows_score, dtype=np.float64),
        labels=np.asarray(rows_label, dtype=np.int64),
    )


def _unique_keys(names: Sequence[str], ids: Sequence[int]) -> list[str]:
    """Category names as dict keys; a repeated name gets its id appended so none is lost."""
    repeated = {name for name in names if names.count(name) > 1}
    return [
        f"{name} (id {cid})" if name in repeated else name
        for name, cid in zip(names, ids, strict=True)
    ]


def evaluate_coco_files(
    gt_json: Path | str,
    dets_json: Path | str,
    difficult: DifficultPolicy = "gt",
    max_det: int = 100,
    legacy_voc: bool = False,
    coco_backend: CocoBackend = "faster",
) -> dict[str, Any]:
    """Evaluate a COCO result file against a COCO annotation file on every category and image.

    Returns a JSON-able dict: the scalars of ``DetectionResult`` (``map``, ``map50``, ``map75``,
    ``map_small``, ``map_medium``, ``map_large``, ``map50_voc07``, ``map50_voc``), counts,
    ``per_class_ap50`` (COCO AP50 by category name) and ``per_class`` (every per-class value by
    category name). Raises ``EvaluationInputError`` (a ``ValueError``) on a bad input file.
    """
    check_difficult_policy(difficult)
    ground_truth = read_coco_ground_truth(gt_json)
    detections = read_coco_detections(dets_json, ground_truth)
    num_classes = len(ground_truth.category_ids)
    result = evaluate_detections(
        detections,
        ground_truth.ground_truth,
        classes=None,
        num_classes=num_classes,
        image_ids=ground_truth.image_ids,
        difficult=difficult,
        max_det=max_det,
        legacy_voc=legacy_voc,
        coco_backend=coco_backend,
    )
    keys = _unique_keys(ground_truth.category_names, ground_truth.category_ids)
    output = result_to_json(result, keys, ground_truth.category_ids)
    output.update(difficult=difficult, num_detections=len(detections))
    return output


def result_to_json(
    result: DetectionResult, names: Sequence[str], category_ids: Sequence[int] | None = None
) -> dict[str, Any]:
    """A result as the JSON ``clod.evaluate`` prints: scalars, counts, per-class values by name.

    Classes that were not evaluated (−1 everywhere and no GT) are left out of the tables.
    """
    per_class = {}
    for index, name in enumerate(names):
        if result.classes and index not in result.classes:
            continue
        entry: dict[str, Any] = {"class_index": index}
        if category_ids is not None:
            entry["category_id"] = int(category_ids[index])
        entry.update(
            ap=float(result.ap[index]),
            ap50=float(result.ap50[index]),
            ap75=float(result.ap75[index]),
            ap50_voc07=float(result.ap50_voc07[index]),
            ap50_voc=float(result.ap50_voc[index]),
            num_gt=int(result.num_gt[index]),
        )
        per_class[name] = entry
    output: dict[str, Any] = {name: float(getattr(result, name)) for name in SCALAR_NAMES}
    output.update(
        num_images=int(result.num_images),
        num_gt=int(sum(v["num_gt"] for v in per_class.values())),
        per_class_ap50={key: values["ap50"] for key, values in per_class.items()},
        per_class=per_class,
    )
    return output
