"""COCO AP through pycocotools' COCOeval, built from in-memory tables.

What is handed to COCOeval (docs/engineering.md §6):
- one COCO image per evaluated image, whose id is the dataset-global image index;
- one category per class, whose id is the class index itself;
- ground truth with xywh boxes, ``area`` and ``iscrowd`` (1-based annotation ids: COCOeval reads
  an id of 0 as "unmatched");
- detections with xywh boxes, scores and ``area = w·h``, as ``COCO.loadRes`` would make them;
- ``params.catIds`` restricted to the evaluated classes and ``params.maxDets = [1, 10, max_det]``
  (``[1, max_det, max_det]`` below 10: COCOeval sorts maxDets and caps at the last entry, so
  ``[1, 10, 2]`` would become ``[1, 2, 10]`` and evaluate 10 detections).
  COCOeval applies that cap per image *and class*; the detector's post-processing applies the
  per-image cap of ``eval.max_det``.

Every number clod reports with ``max_det = M`` is COCO's figure at maxDets = M: AP (and AP50,
AP75, the area APs, the per-class APs) from COCOeval's precision at the last maxDets index, the
recalls at maxDets 1, min(10, M) and M. ``COCOeval.summarize`` cannot be used for that: it reads
the headline AP at a hard-coded maxDets of 100 (−1 for any other M), so the twelve summary numbers
are computed here from ``eval["precision"]`` and ``eval["recall"]`` the way summarize averages
them. With M = 100 they equal ``COCOeval.stats``.

Difficult boxes under the ``ignore`` policy: COCOeval's ``_prepare`` overwrites every GT's
``ignore`` flag with ``iscrowd``, so the flag cannot be passed in the annotations. ``_DifficultAwareCOCOeval``
sets ``ignore`` on difficult GT right after ``_prepare``. COCOeval then treats them as ignore regions
under plain IoU: they are not positives, a detection matched to one is neither TP nor FP, and
detections prefer a positive GT when both reach the threshold. Marking them ``iscrowd`` was
rejected: crowd regions use intersection over the detection's area, so a small detection inside a
large difficult box would match it, and a crowd region absorbs any number of detections. Unlike
the VOC devkit, a difficult box absorbs one detection per IoU threshold; a second detection on it is
an FP, as for any already-matched COCO box.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from clod.metrics.records import (
    Detections,
    DifficultPolicy,
    GroundTruth,
    check_difficult_policy,
    xyxy_to_xywh,
)

# Indices into COCOeval.stats (see COCOeval.summarize).
STATS_NAMES: Final = (
    "map",
    "map50",
    "map75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",  # recall at maxDets[1] = min(10, max_det)
    "mar_max_det",  # recall at maxDets[-1] = max_det
    "mar_small",
    "mar_medium",
    "mar_large",
)


@dataclass(frozen=True)
class CocoResult:
    """COCOeval's summary and per-class AP, indexed by class; −1 where a class has no positives."""

    stats: dict[str, float]  # STATS_NAMES -> value, as COCOeval.summarize averages, at max_det
    ap: np.ndarray  # (num_classes,) AP@[.5:.95]
    ap50: np.ndarray  # (num_classes,) AP@.5 (101-point)
    ap75: np.ndarray  # (num_classes,) AP@.75


class _DifficultAwareCOCOeval(COCOeval):
    """COCOeval that can turn GT marked ``difficult`` into ignore regions (see module docstring)."""

    def __init__(self, coco_gt: COCO, coco_dt: COCO, ignore_difficult: bool) -> None:
        super().__init__(coco_gt, coco_dt, iouType="bbox")
        self.ignore_difficult = ignore_difficult

    def _prepare(self) -> None:
        super()._prepare()
        if not self.ignore_difficult:
            return
        for image_class_gts in self._gts.values():
            for annotation in image_class_gts:
                if annotation.get("difficult", False):
                    annotation["ignore"] = 1


# The COCOeval implementation: faster-coco-eval (C++ matching and accumulation, the same
# numbers) by default; pycocotools, the reference, as an option (eval.coco_backend).
CocoBackend = Literal["faster", "pycocotools"]
COCO_BACKENDS: Final = ("faster", "pycocotools")


def check_coco_backend(backend: str) -> CocoBackend:
    if backend not in COCO_BACKENDS:
        raise ValueError(f"coco backend must be one of {', '.join(COCO_BACKENDS)}, got {backend!r}")
    return backend  # type: ignore[return-value]


def _coco_from_dataset(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
        coco.createIndex()
    return coco


def _evaluator(backend: CocoBackend, gt: dict, dt: dict, ignore_difficult: bool) -> Any:
    """A bbox COCOeval of ``backend`` over the two in-memory datasets."""
    if backend == "pycocotools":
        return _DifficultAwareCOCOeval(
            _coco_from_dataset(gt), _coco_from_dataset(dt), ignore_difficult
        )
    check_coco_backend(backend)
    from faster_coco_eval import COCO as FasterCOCO
    from faster_coco_eval.core.faster_eval_api import COCOeval_faster

    class DifficultAware(COCOeval_faster):
        """As ``_DifficultAwareCOCOeval``: the evaluation reads the prepared annotation
        dicts themselves, so ``ignore`` is set on them after ``_prepare``."""

        def _prepare(self) -> None:
            super()._prepare()
            if ignore_difficult:
                for annotation in self.cocoGt.anns.values():
                    if annotation.get("difficult", False):
                        annotation["ignore"] = 1

    quiet = lambda *args, **kwargs: None  # noqa: E731  (it logs progress at INFO)
    coco_gt = FasterCOCO(gt, print_function=quiet)
    coco_dt = FasterCOCO(dt, print_function=quiet)
    return DifficultAware(coco_gt, coco_dt, iouType="bbox", print_function=quiet)


def _per_class_ap(precision: np.ndarray, iou_index: slice | int) -> np.ndarray:
    """Mean of COCOeval's precision over IoU thresholds and recall levels, per category.

    ``precision`` is COCOeval's [T, R, K, A, M] array; area range "all" and the largest maxDets are
    read. Entries of −1 mark a category without positives; such a category gives −1.
    """
    selected = precision[iou_index, :, :, 0, -1].reshape(-1, precision.shape[2])
    valid = selected > -1
    counts = valid.sum(axis=0)
    sums = np.where(valid, selected, 0.0).sum(axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), -1.0)


def _iou_index(iou_thresholds: np.ndarray, value: float) -> int:
    return int(np.flatnonzero(np.isclose(iou_thresholds, value))[0])


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else -1.0


def _summary_stats(evaluator: COCOeval) -> dict[str, float]:
    """COCOeval's twelve summary numbers, each read at a maxDets *index* (see module docstring).

    AP entries use the last maxDets (max_det); the recalls use maxDets[0], [1] and [2].
    """
    params = evaluator.params
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]
    recall = evaluator.eval["recall"]  # [T, K, A, M]
    area = {label: index for index, label in enumerate(params.areaRngLbl)}
    index_50, index_75 = _iou_index(params.iouThrs, 0.5), _iou_index(params.iouThrs, 0.75)
    last = len(params.maxDets) - 1

    def ap(iou: slice | int = slice(None), area_label: str = "all") -> float:
        return _mean_valid(precision[iou, :, :, area[area_label], last])

    def ar(max_dets_index: int, area_label: str = "all") -> float:
        return _mean_valid(recall[:, :, area[area_label], max_dets_index])

    values = (
        ap(),
        ap(index_50),
        ap(index_75),
        ap(area_label="small"),
        ap(area_label="medium"),
        ap(area_label="large"),
        ar(0),
        ar(1),
        ar(last),
        ar(last, "small"),
        ar(last, "medium"),
        ar(last, "large"),
    )
    return dict(zip(STATS_NAMES, values, strict=True))


def evaluate_coco(
    detections: Detections,
    ground_truth: GroundTruth,
    image_ids: np.ndarray | list[int],
    classes: np.ndarray | list[int],
    num_classes: int,
    difficult: DifficultPolicy = "gt",
    max_det: int = 100,
    backend: CocoBackend = "faster",
) -> CocoResult:
    """Run COCOeval (bbox) on the evaluated images and classes, with ``backend``'s
    implementation (faster-coco-eval or pycocotools: the same numbers).

    ``image_ids`` is the set of evaluated images; detections and GT on other images are dropped.
    Images without GT still count: their detections are false positives.
    """
    check_difficult_policy(difficult)
    if max_det < 1:
        raise ValueError(f"max_det must be positive, got {max_det}")
    evaluated = np.unique(np.asarray(classes, dtype=np.int64))
    if len(evaluated) and (evaluated.min() < 0 or evaluated.max() >= num_classes):
        raise ValueError(f"classes must lie in [0, {num_classes}), got {evaluated.tolist()}")
    images = np.unique(np.asarray(image_ids, dtype=np.int64))
    detections = detections.select(
        np.isin(detections.labels, evaluated) & np.isin(detections.image, images)
    )
    ground_truth = ground_truth.select(
        np.isin(ground_truth.labels, evaluated) & np.isin(ground_truth.image, images)
    )

    no_result = np.full(num_classes, -1.0)
    positives = ground_truth.positives_per_class(num_classes, difficult)
    if positives.sum() == 0:
        # Nothing to find: COCOeval would report −1 everywhere (and trips over empty inputs).
        stats = dict.fromkeys(STATS_NAMES, -1.0)
        return CocoResult(stats=stats, ap=no_result, ap50=no_result.copy(), ap75=no_result.copy())

    categories = [{"id": int(c), "name": str(int(c))} for c in range(num_classes)]
    coco_images = [{"id": int(i)} for i in images]
    gt_xywh = xyxy_to_xywh(ground_truth.boxes)
    gt_annotations = [
        {
            "id": row + 1,
            "image_id": int(ground_truth.image[row]),
            "category_id": int(ground_truth.labels[row]),
            "bbox": gt_xywh[row].tolist(),
            "area": float(ground_truth.area[row]),
            "iscrowd": int(ground_truth.iscrowd[row]),
            "difficult": bool(ground_truth.difficult[row]),
        }
        for row in range(len(ground_truth))
    ]
    dt_xywh = xyxy_to_xywh(detections.boxes)
    dt_annotations = [
        {
            "id": row + 1,
            "image_id": int(detections.image[row]),
            "category_id": int(detections.labels[row]),
            "bbox": dt_xywh[row].tolist(),
            "score": float(detections.scores[row]),
            "area": float(dt_xywh[row, 2] * dt_xywh[row, 3]),
            "iscrowd": 0,
        }
        for row in range(len(detections))
    ]
    evaluator = _evaluator(
        backend,
        {"images": coco_images, "categories": categories, "annotations": gt_annotations},
        {"images": coco_images, "categories": categories, "annotations": dt_annotations},
        ignore_difficult=difficult == "ignore",
    )
    evaluator.params.catIds = [int(c) for c in evaluated]
    # COCOeval sorts maxDets and caps each image and class at the last entry; keep max_det last
    # even when it is below 10.
    evaluator.params.maxDets = [1, min(10, int(max_det)), int(max_det)]
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints progress
        evaluator.evaluate()
        evaluator.accumulate()

    precision = evaluator.eval["precision"]
    iou_thresholds = evaluator.params.iouThrs
    index_50, index_75 = _iou_index(iou_thresholds, 0.5), _iou_index(iou_thresholds, 0.75)
    ap, ap50, ap75 = no_result, no_result.copy(), no_result.copy()
    ap[evaluated] = _per_class_ap(precision, slice(None))
    ap50[evaluated] = _per_class_ap(precision, index_50)
    ap75[evaluated] = _per_class_ap(precision, index_75)
    return CocoResult(stats=_summary_stats(evaluator), ap=ap, ap50=ap50, ap75=ap75)
