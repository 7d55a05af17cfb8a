"""ILYOLOX: centre re-sampling + collaborative knowledge distillation (docs/strategies.md §8).

Everything is trainable; the teacher is the whole previous model, run once per batch on
the student's augmented images. From task 1 on, at every step:

1. the teacher's score s = max over the old classes of σ(z^T) and its label c* (the
   argmax over the old classes only) at every prior, and its decoded boxes clipped to
   the input;
2. a selection (``select.method``: fixed, mean_kstd, class_mean_kstd or crs) and
   class-wise NMS at the loose IoU 0.95 turn teacher priors into pseudo ground truth
   (box, label c*, teacher prior q), added before the assigner runs;
3. the positives matched to pseudo boxes (the *old positives*) are routed: ``distill``
   (the paper) takes them out of the detection loss and trains them only with CKD;
   ``standard`` (the repository's shipped config) trains them like annotated positives;
4. collaborative KD over the N_old old positives: a class term (soft BCE towards
   σ(z^T_q), old channels) and a box term (1 − IoU² towards b^T_q), each weighted by the
   detached dynamic weights w = 2e/(e_cls + e_loc + ε).

Task 0 has no teacher and trains exactly as ``naive``. The pure mechanisms live in
:mod:`clod.strategies.ilyolox_parts`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from clod.errors import ConfigError
from clod.models.boxes import clip_boxes
from clod.models.targets import Assigned
from clod.strategies.base import ExtraRoute, Step, Supervision, TrainingModule
from clod.strategies.distillation import FrozenBN, TeacherStrategy, attached_zero
from clod.strategies.ilyolox_parts import (
    DEFAULT_LOC_WEIGHTS,
    HYBRID_TARGETS,
    LOC_LOSSES,
    SelectConfig,
    ckd_losses,
    confident_old_negatives,
    select_teacher_priors,
)
from clod.strategies.selection import drop_overlapping, old_class_scores, pseudo_ground_truth

log = logging.getLogger(__name__)

ROUTES: tuple[str, ...] = ("standard", "distill")
CLS_CHANNELS: tuple[str, ...] = ("old", "all")


class ILYOLOX(TeacherStrategy):
    """Pseudo ground truth from re-sampled teacher priors, plus collaborative KD on them.

    Args:
        select: the selection (:class:`~clod.strategies.ilyolox_parts.SelectConfig` keys).
        route: ``distill`` (old positives leave the detection loss; CKD trains them) or
            ``standard`` (they get QFL/GIoU/DFL against their pseudo box; no CKD).
        distill_keep_quality: with ``distill``, QFL keeps the pseudo box's soft IoU target
            at the old positives (the analogue of YOLOX's objectness target there).
        ckd: whether the CKD terms run (only meaningful with ``distill``: under
            ``standard`` the old-positive set is empty, as in the reference, and the terms
            are attached zeros).
        ckd_cls_channels: ``old`` (clod) or ``all`` (the reference) class channels in e_cls.
        cls_weight: weight of L_ckd_cls.
        loc_loss: ``iou2`` (1 − IoU², the reference) or ``giou`` (1 − GIoU, GFL's form).
        loc_weight: weight of L_ckd_loc; None: 5.0 for iou2, 2.0 for giou.
        hybrid: CKD class-target variant ``none``, ``hy1``, ``hy2`` or ``hy3``.
        onehot: replace the class target by its one-hot argmax (after ``hybrid``).
        ignore_confident_old: leave the old-channel QFL negatives out where s ≥
            ``ignore_score_thr`` (a clod extension).
        frozen_bn: the teacher's BatchNorm mode (docs/strategies.md §0).
    """

    name = "ilyolox"

    def __init__(
        self,
        name: str | None = None,
        joint: bool | None = None,
        select: Mapping[str, Any] | None = None,
        route: str = "distill",
        distill_keep_quality: bool = False,
        ckd: bool = True,
        ckd_cls_channels: str = "old",
        cls_weight: float = 1.0,
        loc_loss: str = "iou2",
        loc_weight: float | None = None,
        hybrid: str = "none",
        onehot: bool = False,
        ignore_confident_old: bool = False,
        ignore_score_thr: float = 0.3,
        frozen_bn: FrozenBN = "eval",
    ) -> None:
        super().__init__(name=name, joint=joint, frozen_bn=frozen_bn)
        self.select = SelectConfig.from_mapping(select)
        choices = {
            "route": (route, ROUTES),
            "ckd_cls_channels": (ckd_cls_channels, CLS_CHANNELS),
            "loc_loss": (loc_loss, LOC_LOSSES),
            "hybrid": (hybrid, HYBRID_TARGETS),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"strategy.{key} must be one of {allowed}, got {value!r}")
        if distill_keep_quality and route != "distill":
            raise ConfigError("strategy.distill_keep_quality needs strategy.route: distill")
        if loc_weight is None:
            loc_weight = DEFAULT_LOC_WEIGHTS[loc_loss]
        for key, value in (("cls_weight", cls_weight), ("loc_weight", loc_weight)):
            if float(value) < 0.0:
                raise ConfigError(f"strategy.{key} must be non-negative, got {value}")
        if not 0.0 <= float(ignore_score_thr) <= 1.0:
            raise ConfigError(
                f"strategy.ignore_score_thr must be in [0, 1], got {ignore_score_thr}"
            )
        self.route = route
        self.extra_route: ExtraRoute = (
            "distill_keep_quality" if distill_keep_quality else route  # type: ignore[assignment]
        )
        self.ckd = bool(ckd)
        if self.ckd and route == "standard":
            log.warning(
                "strategy.ckd is on but strategy.route is standard: there are no old positives "
                "to distil (docs/strategies.md §8), so ckd_cls and ckd_loc stay zero"
            )
        self.ckd_cls_channels = ckd_cls_channels
        self.cls_weight = float(cls_weight)
        self.loc_loss = loc_loss
        self.loc_weight = float(loc_weight)
        self.hybrid = hybrid
        self.onehot = bool(onehot)
        self.ignore_confident_old = bool(ignore_confident_old)
        self.ignore_score_thr = float(ignore_score_thr)
        # The last step's selection statistics, for logging (loss terms cannot carry them:
        # every value training_loss returns is summed into the loss).
        self.last_counts: dict[str, float] = {"pseudo_per_image": 0.0, "old_positives": 0.0}

    def diagnostics(self) -> dict[str, float]:
        return dict(self.last_counts)

    # ------------------------------------------------------------------ steps 1–3
    def supervision(self, module: TrainingModule, step: Step) -> Supervision | None:
        teacher = step.teacher
        if teacher is None or self.old_classes.numel() == 0:
            return None  # task 0: plain training
        with torch.no_grad():
            num_classes = step.head.num_classes
            best = old_class_scores(step.head.scores(teacher), self.old_classes)
            height, width = step.input_size
            boxes = clip_boxes(step.head.boxes(teacher, step.input_size), height, width)
            kept = select_teacher_priors(best.score, best.label, boxes, self.select, num_classes)
            kept = drop_overlapping(kept, boxes, step.annotated, self.select.gt_overlap_iou)
            num_images = best.score.shape[0]
            extra_boxes, extra_labels, extra_ids = pseudo_ground_truth(kept, boxes, best.label)
            ignore = None
            if self.ignore_confident_old:
                ignore = confident_old_negatives(
                    best.score, self.old_classes, num_classes, self.ignore_score_thr
                )
        self.last_counts["pseudo_per_image"] = len(kept) / max(num_images, 1)
        return Supervision(
            extra_boxes=extra_boxes,
            extra_labels=extra_labels,
            extra_ids=extra_ids,
            ignore_negatives=ignore,
            extra_route=self.extra_route,
        )

    # ------------------------------------------------------------------ step 5
    def training_loss(
        self, module: TrainingModule, step: Step, assigned: Assigned
    ) -> dict[str, torch.Tensor]:
        teacher = step.teacher
        if teacher is None:
            return {}
        # Pseudo labels are old and the task's annotations new, so the positives matched to
        # pseudo boxes are exactly the positives with an old label.
        old_positive = assigned.extra_positive
        image, prior = old_positive.nonzero(as_tuple=True)
        self.last_counts["old_positives"] = float(image.numel())
        if not self.ckd:
            return {}
        zero = attached_zero(step.student.raw)
        if self.route == "standard" or image.numel() == 0:
            return {"ckd_cls": zero, "ckd_loc": zero}
        teacher_prior = assigned.matched(assigned.targets.extra_id)[image, prior]
        channels = (
            self.old_classes.to(image.device)
            if self.ckd_cls_channels == "old"
            else torch.arange(step.head.num_classes, device=image.device)
        )
        student_logits = step.student.cls_logits[image, prior].index_select(-1, channels)
        teacher_logits = teacher.cls_logits[image, teacher_prior].index_select(-1, channels)
        student_boxes = step.head.boxes_at(
            step.student.box_logits[image, prior], prior, step.input_size
        )
        # The pseudo box each old positive matched is the teacher's (clipped) box at q.
        teacher_boxes = assigned.matched(assigned.targets.boxes)[image, prior]
        terms = ckd_losses(
            student_logits,
            teacher_logits,
            student_boxes,
            teacher_boxes,
            hybrid=self.hybrid,
            onehot=self.onehot,
            loc_loss=self.loc_loss,
            cls_weight=self.cls_weight,
            loc_weight=self.loc_weight,
        )
        return {"ckd_cls": terms.cls, "ckd_loc": terms.loc}
