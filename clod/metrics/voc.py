"""Pascal VOC AP50: greedy matching by score, VOC07 11-point and all-point (VOC2010+) AP.

Matching follows the VOC devkit (docs/protocol.md §5):
- detections of a class are processed in descending score order over the whole dataset (stable
  sort: equal scores keep their input order);
- each detection looks at the ground truth of its image and class with the highest IoU, whether or
  not that box is already matched (lowest index wins an IoU tie);
- if that IoU reaches the threshold (≥ 0.5, or > 0.5 with ``legacy_voc``) and the box is an ignore
  region (``difficult`` under the ``ignore`` policy, or a crowd region), the detection is neither a
  TP nor an FP, even when another detection already landed on that box, as in the devkit;
- otherwise the first detection on a box is a TP, later ones are FPs (duplicates), and a detection
  without a box at the threshold is an FP;
- there is no cap on detections per image.
Ignore regions never count towards the number of positives. A class without positives has AP −1.

Crowd boxes (COCO's ``iscrowd``) do not exist in VOC; here they act as ignore regions under plain
IoU, whichever difficult policy is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from clod.metrics.records import (
    Detections,
    DifficultPolicy,
    GroundTruth,
    check_difficult_policy,
    paired_iou,
)

FALSE_POSITIVE: Final = 0
TRUE_POSITIVE: Final = 1
IGNORED: Final = -1

VOC_IOU_THRESHOLD: Final = 0.5
# Recall levels of the VOC07 metric. i/10 (not a running 0.1 step) keeps 0.3 equal to 3/10, so a
# recall of exactly 0.3 reaches the 0.3 level.
VOC07_RECALL_LEVELS: Final = np.arange(11) / 10.0


@dataclass(frozen=True)
class VocResult:
    """Per-class VOC AP50, indexed by class; −1 where a class has no positives or is not evaluated."""

    ap_voc07: np.ndarray  # (num_classes,) float64
    ap_all_point: np.ndarray  # (num_classes,) float64
    num_positives: np.ndarray  # (num_classes,) int64, over the evaluated classes only


def match_detections(
    detections: Detections,
    ground_truth: GroundTruth,
    difficult: DifficultPolicy = "ignore",
    legacy_voc: bool = False,
    iou_threshold: float = VOC_IOU_THRESHOLD,
) -> np.ndarray:
    """Outcome of every detection: ``TRUE_POSITIVE``, ``FALSE_POSITIVE`` or ``IGNORED``.

    Returns an int8 array aligned with ``detections``. All classes are matched at once: a detection
    only ever competes with ground truth of its own image and class.
    """
    check_difficult_policy(difficult)
    num_dets = len(detections)
    outcome = np.full(num_dets, FALSE_POSITIVE, dtype=np.int8)
    if num_dets == 0 or len(ground_truth) == 0:
        return outcome

    # One integer key per (image, class) pair, so that the GT of a detection's image and class
    # is one contiguous slice of the key-sorted GT table.
    label_span = int(max(detections.labels.max(), ground_truth.labels.max())) + 1
    det_keys = detections.image * label_span + detections.labels
    gt_keys = ground_truth.image * label_span + ground_truth.labels
    gt_order = np.argsort(gt_keys, kind="stable")
    sorted_gt_keys = gt_keys[gt_order]
    slice_start = np.searchsorted(sorted_gt_keys, det_keys, side="left")
    slice_count = np.searchsorted(sorted_gt_keys, det_keys, side="right") - slice_start

    # Every (detection, candidate GT) pair, flattened: pair p belongs to detection pair_det[p].
    pair_det = np.repeat(np.arange(num_dets), slice_count)
    offset_in_slice = np.arange(len(pair_det)) - np.repeat(
        np.cumsum(slice_count) - slice_count, slice_count
    )
    pair_gt = gt_order[slice_start[pair_det] + offset_in_slice]
    pair_iou = paired_iou(detections.boxes[pair_det], ground_truth.boxes[pair_gt], legacy_voc)

    # Best GT per detection: sort pairs by detection, then IoU descending, then GT index.
    pair_order = np.lexsort((pair_gt, -pair_iou, pair_det))
    first_of_det = np.ones(len(pair_order), dtype=bool)
    first_of_det[1:] = pair_det[pair_order][1:] != pair_det[pair_order][:-1]
    best_pairs = pair_order[first_of_det]
    best_gt = np.full(num_dets, -1, dtype=np.int64)
    best_iou = np.zeros(num_dets, dtype=np.float64)
    best_gt[pair_det[best_pairs]] = pair_gt[best_pairs]
    best_iou[pair_det[best_pairs]] = pair_iou[best_pairs]

    reaches = best_iou > iou_threshold if legacy_voc else best_iou >= iou_threshold
    reaches &= best_gt >= 0
    ignored_gt = ground_truth.ignored(difficult)
    on_ignore_region = reaches & ignored_gt[np.where(best_gt >= 0, best_gt, 0)]
    outcome[on_ignore_region] = IGNORED

    # Among detections that reach a positive GT, only the highest-scoring one per GT is a TP.
    # Detections compete only within a class, so a dataset-wide score order is enough.
    candidates = np.flatnonzero(reaches & ~on_ignore_region)
    by_score = candidates[np.argsort(-detections.scores[candidates], kind="stable")]
    _, first_hit = np.unique(best_gt[by_score], return_index=True)
    outcome[by_score[first_hit]] = TRUE_POSITIVE
    return outcome


def precision_recall(
    scores: np.ndarray, outcome: np.ndarray, num_positives: int
) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision after each non-ignored detection, in descending score order."""
    counted = outcome != IGNORED
    order = np.argsort(-scores[counted], kind="stable")
    is_tp = outcome[counted][order] == TRUE_POSITIVE
    tp_cumulative = np.cumsum(is_tp)
    fp_cumulative = np.cumsum(~is_tp)
    recall = tp_cumulative / max(num_positives, 1)
    precision = tp_cumulative / np.maximum(tp_cumulative + fp_cumulative, 1)
    return recall, precision


def average_precision_voc07(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC07 11-point AP: mean over r ∈ {0, 0.1, …, 1} of the best precision at recall ≥ r."""
    if len(recall) == 0:
        return 0.0
    # Best precision at this or any later point (recall never decreases along the list).
    precision_from_here = np.maximum.accumulate(precision[::-1])[::-1]
    first_reaching = np.searchsorted(recall, VOC07_RECALL_LEVELS, side="left")
    reached = first_reaching < len(recall)
    level_precision = np.zeros(len(VOC07_RECALL_LEVELS))
    level_precision[reached] = precision_from_here[first_reaching[reached]]
    return float(level_precision.mean())


def average_precision_all_point(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point AP (VOC2010+): area under the precision envelope, summed where recall changes."""
    if len(recall) == 0:
        return 0.0
    padded_recall = np.concatenate([[0.0], recall, [1.0]])
    envelope = np.concatenate([[0.0], precision, [0.0]])
    envelope = np.maximum.accumulate(envelope[::-1])[::-1]
    steps = np.flatnonzero(padded_recall[1:] != padded_recall[:-1])
    return float(np.sum((padded_recall[steps + 1] - padded_recall[steps]) * envelope[steps + 1]))


def evaluate_voc(
    detections: Detections,
    ground_truth: GroundTruth,
    classes: np.ndarray | list[int],
    num_classes: int,
    difficult: DifficultPolicy = "ignore",
    legacy_voc: bool = False,
) -> VocResult:
    """VOC07 11-point and all-point AP50 for each class in ``classes``."""
    check_difficult_policy(difficult)
    evaluated = np.unique(np.asarray(classes, dtype=np.int64))
    if len(evaluated) and (evaluated.min() < 0 or evaluated.max() >= num_classes):
        raise ValueError(f"classes must lie in [0, {num_classes}), got {evaluated.tolist()}")
    detections = detections.select(np.isin(detections.labels, evaluated))
    ground_truth = ground_truth.select(np.isin(ground_truth.labels, evaluated))
    num_positives = ground_truth.positives_per_class(num_classes, difficult)
    outcome = match_detections(detections, ground_truth, difficult, legacy_voc)

    ap_voc07 = np.full(num_classes, -1.0)
    ap_all_point = np.full(num_classes, -1.0)
    for class_index in evaluated:
        if num_positives[class_index] == 0:
            continue
        of_class = detections.labels == class_index
        recall, precision = precision_recall(
            detections.scores[of_class], outcome[of_class], int(num_positives[class_index])
        )
        ap_voc07[class_index] = average_precision_voc07(recall, precision)
        ap_all_point[class_index] = average_precision_all_point(recall, precision)
    return VocResult(ap_voc07=ap_voc07, ap_all_point=ap_all_point, num_positives=num_positives)
