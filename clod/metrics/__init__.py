"""Detection metrics (COCO through pycocotools, VOC AP50) and continual-learning aggregates."""

from __future__ import annotations

from clod.metrics.coco import CocoResult, evaluate_coco
from clod.metrics.continual import (
    ContinualSummary,
    absolute_gap,
    omega,
    relative_gap,
    seen_classes,
    summarize_continual,
)
from clod.metrics.detection import DetectionMetric, DetectionResult, evaluate_detections
from clod.metrics.files import EvaluationInputError, evaluate_coco_files
from clod.metrics.grouping import group_means, mean_over_classes
from clod.metrics.records import Detections, DifficultPolicy, GroundTruth
from clod.metrics.voc import VocResult, evaluate_voc

__all__ = [
    "CocoResult",
    "ContinualSummary",
    "DetectionMetric",
    "DetectionResult",
    "Detections",
    "DifficultPolicy",
    "EvaluationInputError",
    "GroundTruth",
    "VocResult",
    "absolute_gap",
    "evaluate_coco",
    "evaluate_coco_files",
    "evaluate_detections",
    "evaluate_voc",
    "group_means",
    "mean_over_classes",
    "omega",
    "relative_gap",
    "seen_classes",
    "summarize_continual",
]
