"""Pseudo-labelling (docs/strategies.md §10): the teacher's old-class detections become ground truth.

The baseline most class-incremental detection papers run, the first seed's notebooks
included. From task 1 on, the frozen previous model (the teacher) runs on the student's
augmented batch; at each prior its best old class is a detection with that score; the
detections above ``score_thr`` that survive class-aware NMS at ``nms_iou`` (at most
``max_per_image`` per image, highest scores first) are added to the task's ground truth
before the assigner runs. A pseudo box whose IoU with one of the image's annotated boxes is
above ``gt_overlap_iou`` is dropped: the teacher has never seen the new classes and often
calls a new object by an old name, and that box would take the new object's priors. Training is otherwise the plain detection loss: the old objects
are supervised as positives again instead of being pushed to background.

Task 0 has no teacher and trains exactly as ``naive``.
"""

from __future__ import annotations

import torch

from clod.errors import ConfigError
from clod.models.boxes import clip_boxes
from clod.models.targets import Targets
from clod.strategies.base import Step, Supervision, TrainingModule
from clod.strategies.distillation import FrozenBN, TeacherStrategy
from clod.strategies.selection import (
    Selection,
    drop_overlapping,
    nms_per_image,
    old_class_scores,
    pseudo_ground_truth,
)


def rank_within_image(selection: Selection) -> tuple[Selection, torch.Tensor]:
    """The selection grouped by image (order inside an image kept) and each entry's rank there."""
    order = torch.sort(selection.image, stable=True).indices
    grouped = selection.subset(order)
    position = torch.arange(len(grouped), device=grouped.image.device)
    counts = torch.bincount(grouped.image)
    starts = torch.cumsum(counts, 0) - counts
    return grouped, position - starts[grouped.image]


def select_detections(
    scores: torch.Tensor,
    labels: torch.Tensor,
    boxes: torch.Tensor,
    score_thr: float,
    nms_iou: float,
    max_per_image: int,
    annotated: Targets | None = None,
    gt_overlap_iou: float | None = None,
) -> Selection:
    """Priors whose detection (score, label, box) is kept, per image, all images at once.

    ``scores``/``labels`` (B, N): each prior's best old class and its σ; ``boxes`` (B, N, 4).
    Kept: score > ``score_thr``, then class-aware NMS at ``nms_iou`` inside each image, then
    (with ``annotated`` and ``gt_overlap_iou``) only boxes whose IoU with every annotated
    box of their image is ≤ ``gt_overlap_iou``, then the ``max_per_image`` best of each
    image. Grouped by image, best first within one.
    """
    selection = Selection.from_mask(scores > score_thr)
    selection = nms_per_image(selection, boxes, scores, labels, nms_iou)  # best first
    if annotated is not None:
        selection = drop_overlapping(selection, boxes, annotated, gt_overlap_iou)
    if len(selection) == 0:
        return selection
    grouped, rank = rank_within_image(selection)
    return grouped.subset(rank < max_per_image)


class PseudoLabel(TeacherStrategy):
    """The previous model's confident old-class detections are added to each batch's GT."""

    name = "pseudo_label"

    def __init__(
        self,
        name: str | None = None,
        joint: bool | None = None,
        score_thr: float = 0.5,
        nms_iou: float = 0.6,
        max_per_image: int = 100,
        gt_overlap_iou: float | None = 0.5,
        frozen_bn: FrozenBN = "eval",
    ) -> None:
        super().__init__(name=name, joint=joint, frozen_bn=frozen_bn)
        if not 0.0 <= float(score_thr) < 1.0:
            raise ConfigError(f"strategy.score_thr must be in [0, 1), got {score_thr}")
        if not 0.0 < float(nms_iou) <= 1.0:
            raise ConfigError(f"strategy.nms_iou must be in (0, 1], got {nms_iou}")
        if int(max_per_image) < 1:
            raise ConfigError(f"strategy.max_per_image must be at least 1, got {max_per_image}")
        if gt_overlap_iou is not None and not 0.0 <= float(gt_overlap_iou) <= 1.0:
            raise ConfigError(
                f"strategy.gt_overlap_iou must be in [0, 1] or null, got {gt_overlap_iou}"
            )
        self.gt_overlap_iou = None if gt_overlap_iou is None else float(gt_overlap_iou)
        self.score_thr = float(score_thr)
        self.nms_iou = float(nms_iou)
        self.max_per_image = int(max_per_image)
        # Pseudo boxes added per image in the last step (for logging and tests).
        self.last_pseudo_per_image = 0.0

    def diagnostics(self) -> dict[str, float]:
        return {"pseudo_per_image": self.last_pseudo_per_image}

    def supervision(self, module: TrainingModule, step: Step) -> Supervision | None:
        teacher = step.teacher
        if teacher is None or self.old_classes.numel() == 0:
            return None
        best = old_class_scores(step.head.scores(teacher), self.old_classes)
        height, width = step.input_size
        boxes = clip_boxes(step.head.boxes(teacher, step.input_size), height, width)
        kept = select_detections(
            best.score,
            best.label,
            boxes,
            self.score_thr,
            self.nms_iou,
            self.max_per_image,
            step.annotated,
            self.gt_overlap_iou,
        )
        num_images = len(step.batch)
        self.last_pseudo_per_image = len(kept) / max(num_images, 1)
        extra_boxes, extra_labels, extra_ids = pseudo_ground_truth(kept, boxes, best.label)
        return Supervision(extra_boxes=extra_boxes, extra_labels=extra_labels, extra_ids=extra_ids)
