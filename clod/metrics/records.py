"""Flat, dataset-wide tables of detections and ground truth, and box overlap helpers.

Both evaluators (COCO in ``coco.py``, VOC in ``voc.py``) read these tables. One row is one box;
the ``image`` column holds the dataset-global image index the box belongs to. Boxes are ``xyxy``
in pixels, labels are global 0-based class indices (see docs/detector.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

DifficultPolicy = Literal["gt", "ignore"]
"""How ground truth flagged ``difficult`` is evaluated.

``gt``: an ordinary ground-truth box (the reference's behaviour).
``ignore``: neither a positive nor a source of false positives (the VOC devkit's behaviour).
"""

DIFFICULT_POLICIES: tuple[str, ...] = ("gt", "ignore")


def check_difficult_policy(policy: str) -> DifficultPolicy:
    """Return ``policy`` if it is a known difficult policy, else raise ``ValueError``."""
    if policy not in DIFFICULT_POLICIES:
        raise ValueError(f"difficult policy must be one of {DIFFICULT_POLICIES}, got {policy!r}")
    return policy  # type: ignore[return-value]


def _as_column(values: object, dtype: type | np.dtype, name: str, length: int | None) -> np.ndarray:
    array = np.asarray(values, dtype=dtype).reshape(-1)
    if length is not None and len(array) != length:
        raise ValueError(f"{name} has {len(array)} entries, expected {length}")
    return array


def _as_boxes(values: object, name: str) -> np.ndarray:
    boxes = np.asarray(values, dtype=np.float64)
    if boxes.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (n, 4), got {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError(f"{name} contains non-finite coordinates")
    return boxes


@dataclass(frozen=True)
class Detections:
    """All detections of an evaluation: one row per box."""

    image: np.ndarray  # (D,) int64 dataset-global image index
    boxes: np.ndarray  # (D, 4) float64 xyxy
    scores: np.ndarray  # (D,) float64
    labels: np.ndarray  # (D,) int64

    def __post_init__(self) -> None:
        boxes = _as_boxes(self.boxes, "detection boxes")
        count = len(boxes)
        # Frozen dataclass: normalise the columns once so every consumer sees the same dtypes.
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(
            self, "image", _as_column(self.image, np.int64, "detection image", count)
        )
        object.__setattr__(
            self, "scores", _as_column(self.scores, np.float64, "detection scores", count)
        )
        object.__setattr__(
            self, "labels", _as_column(self.labels, np.int64, "detection labels", count)
        )
        if not np.isfinite(self.scores).all():
            raise ValueError("detection scores contain non-finite values")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> Detections:
        return cls(image=[], boxes=np.zeros((0, 4)), scores=[], labels=[])

    def select(self, keep: np.ndarray) -> Detections:
        """The rows selected by a boolean mask or an index array."""
        return Detections(self.image[keep], self.boxes[keep], self.scores[keep], self.labels[keep])


@dataclass(frozen=True)
class GroundTruth:
    """All ground-truth boxes of an evaluation: one row per box.

    ``area`` is what COCO's small/medium/large ranges are measured on. COCO annotation files carry
    the segmentation area there; without it the box area is used (as torchmetrics does).
    """

    image: np.ndarray  # (G,) int64 dataset-global image index
    boxes: np.ndarray  # (G, 4) float64 xyxy
    labels: np.ndarray  # (G,) int64
    difficult: np.ndarray | None = None  # (G,) bool; None means no box is difficult
    iscrowd: np.ndarray | None = None  # (G,) bool; None means no box is a crowd region
    area: np.ndarray | None = None  # (G,) float64; None means the box area

    def __post_init__(self) -> None:
        boxes = _as_boxes(self.boxes, "ground-truth boxes")
        count = len(boxes)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(
            self, "image", _as_column(self.image, np.int64, "ground-truth image", count)
        )
        object.__setattr__(
            self, "labels", _as_column(self.labels, np.int64, "ground-truth labels", count)
        )
        for flag in ("difficult", "iscrowd"):
            values = getattr(self, flag)
            column = np.zeros(count, dtype=bool) if values is None else values
            object.__setattr__(self, flag, _as_column(column, bool, f"ground-truth {flag}", count))
        area = box_area(boxes) if self.area is None else self.area
        object.__setattr__(self, "area", _as_column(area, np.float64, "ground-truth area", count))

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> GroundTruth:
        return cls(image=[], boxes=np.zeros((0, 4)), labels=[])

    def select(self, keep: np.ndarray) -> GroundTruth:
        """The rows selected by a boolean mask or an index array."""
        return GroundTruth(
            image=self.image[keep],
            boxes=self.boxes[keep],
            labels=self.labels[keep],
            difficult=self.difficult[keep],
            iscrowd=self.iscrowd[keep],
            area=self.area[keep],
        )

    def ignored(self, difficult: DifficultPolicy) -> np.ndarray:
        """Which boxes are ignore regions rather than positives under the difficult policy."""
        check_difficult_policy(difficult)
        if difficult == "ignore":
            return self.iscrowd | self.difficult
        return self.iscrowd.copy()

    def positives_per_class(self, num_classes: int, difficult: DifficultPolicy) -> np.ndarray:
        """Number of positive (non-ignored) boxes per class index, shape (num_classes,)."""
        positive_labels = self.labels[~self.ignored(difficult)]
        in_range = (positive_labels >= 0) & (positive_labels < num_classes)
        return np.bincount(positive_labels[in_range], minlength=num_classes).astype(np.int64)


def box_area(boxes: np.ndarray, legacy_voc: bool = False) -> np.ndarray:
    """Area of xyxy boxes; ``legacy_voc`` counts both end pixels (+1), as the VOC devkit does."""
    extra = 1.0 if legacy_voc else 0.0
    widths = np.clip(boxes[:, 2] - boxes[:, 0] + extra, 0.0, None)
    heights = np.clip(boxes[:, 3] - boxes[:, 1] + extra, 0.0, None)
    return widths * heights


def paired_iou(boxes_a: np.ndarray, boxes_b: np.ndarray, legacy_voc: bool = False) -> np.ndarray:
    """IoU of row i of ``boxes_a`` with row i of ``boxes_b`` (both (n, 4) xyxy)."""
    extra = 1.0 if legacy_voc else 0.0
    inter_w = np.minimum(boxes_a[:, 2], boxes_b[:, 2]) - np.maximum(boxes_a[:, 0], boxes_b[:, 0])
    inter_h = np.minimum(boxes_a[:, 3], boxes_b[:, 3]) - np.maximum(boxes_a[:, 1], boxes_b[:, 1])
    intersection = np.clip(inter_w + extra, 0.0, None) * np.clip(inter_h + extra, 0.0, None)
    union = box_area(boxes_a, legacy_voc) + box_area(boxes_b, legacy_voc) - intersection
    # A zero union only happens for two degenerate boxes; they do not overlap.
    safe_union = np.where(union > 0, union, 1.0)
    return np.where(union > 0, intersection / safe_union, 0.0)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
