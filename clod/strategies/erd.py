"""ERD, Elastic Response Distillation (docs/strategies.md §7).

Everything is trainable; the teacher is the whole previous model, run on the student's
batch. On the teacher's detached outputs, image by image over every prior of every level:

- S_cls, the priors whose max old-class score σ(z^T) is above the image's
  mean + ``k_std``·std (unbiased std, strict ``>``);
- K, the priors whose max raw box logit is above its own mean + ``k_std``·std, thinned by
  class-aware NMS at ``nms_iou`` on the teacher's decoded boxes (scored by the max
  old-class σ, labelled by the argmax over the old classes).

L = L_new + ``cls_weight``·L_dcls + ``reg_weight``·L_dreg, where L_dcls is the MSE of the
old classes' raw logits on S_cls, L_dreg = ``box_weight``·Σ_{i∈K} Σ_sides w_i·T²·KL / 4
(KL of the temperature-softened bin distributions, averaged over the bins; w_i the
student's detached max old-class σ), and L_new is the detection loss with QFL restricted
to the channels that are not old (:meth:`ERD.supervision`).

Selections are flat ``(image, prior)`` index tensors over the whole batch and per-image
reductions are segment sums, so nothing loops over images, priors or boxes in Python.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from clod.errors import ConfigError
from clod.models.head_protocol import DetectionHead
from clod.models.outputs import HeadOutput
from clod.models.targets import Assigned
from clod.strategies.base import Step, Supervision, TrainingModule
from clod.strategies.distillation import FrozenBN, TeacherStrategy, attached_zero
from clod.strategies.selection import (
    OldClassScores,
    Selection,
    elastic_threshold,
    nms_per_image,
    old_class_scores,
)

# image_mean (clod): the mean over the batch's images of each image's term, so the weight of
# the term does not depend on the batch size. reference_sum: the sum over the images, what
# ERD's code computes (about 2× image_mean at its 2 images per GPU).
Reduction = Literal["image_mean", "reference_sum"]
REDUCTIONS: tuple[str, ...] = ("image_mean", "reference_sum")


# --------------------------------------------------------------------------- selection
def elastic_selection(values: torch.Tensor, k_std: float) -> Selection:
    """The (image, prior) pairs whose value is strictly above the image's mean + k·std.

    ``values``: (B, N). An image whose values are all equal selects nothing
    (:func:`~clod.strategies.selection.elastic_threshold`).
    """
    return Selection.from_mask(values > elastic_threshold(values, k_std))


def decode_teacher_boxes(
    head: DetectionHead,
    box_logits: torch.Tensor,
    selection: Selection,
    input_size: tuple[int, int],
    reference_decoding: bool = False,
) -> torch.Tensor:
    """(K, 4) xyxy boxes in input pixels of ``box_logits`` (B, N, D) at the selection.

    ``reference_decoding`` reproduces ERD's defect on NanoDet-Plus: the expected distances
    stay in stride units (no ×stride) while the prior centres are in pixels, so every box
    shrinks by 1/stride around its centre. A head without box bins has no such defect.
    """
    selected = box_logits[selection.image, selection.prior]
    if not reference_decoding:
        return head.boxes_at(selected, selection.prior, input_size)
    stride_free = getattr(head, "stride_free_boxes_at", None)
    if stride_free is None:
        raise ConfigError(
            f"strategy.reference_decoding=true reproduces a defect of box-bin decoding, which "
            f"{type(head).__name__} does not have: set it to false"
        )
    return stride_free(selected, selection.prior, input_size)


def regression_selection(
    head: DetectionHead,
    teacher: HeadOutput,
    old: OldClassScores,
    input_size: tuple[int, int],
    k_std: float,
    nms_iou: float,
    reference_decoding: bool = False,
) -> Selection:
    """K: priors whose box confidence (:meth:`box_confidence`: the max raw box-bin logit on
    NanoDet-Plus) passes the elastic threshold, after per-image class-aware NMS of their
    decoded teacher boxes (scored and labelled by ``old``)."""
    candidates = elastic_selection(head.box_confidence(teacher), k_std)
    if len(candidates) == 0:
        return candidates
    # nms_per_image reads (B, N, 4) boxes at the selection; only the candidates are decoded.
    boxes = teacher.box_logits.new_zeros((*old.score.shape, 4))
    boxes[candidates.image, candidates.prior] = decode_teacher_boxes(
        head, teacher.box_logits, candidates, input_size, reference_decoding
    )
    return nms_per_image(candidates, boxes, old.score, old.label, nms_iou)


# --------------------------------------------------------------------------- losses
def reduce_over_images(
    values: torch.Tensor, image: torch.Tensor, num_images: int, reduction: Reduction
) -> torch.Tensor:
    """Sum ``values`` (K,) into their images, then the mean (image_mean) or the sum
    (reference_sum) over all ``num_images`` images; an image with no entry counts as 0."""
    per_image = values.new_zeros(num_images).index_add(0, image, values)
    return per_image.mean() if reduction == "image_mean" else per_image.sum()


def class_distillation(
    student_cls: torch.Tensor,
    teacher_cls: torch.Tensor,
    selection: Selection,
    old_classes: torch.Tensor,
    reduction: Reduction = "image_mean",
) -> torch.Tensor:
    """L_dcls: per image, the MSE of the old classes' raw logits over its selected priors.

    ``student_cls``/``teacher_cls``: (B, N, K) logits and ``old_classes`` the channels
    of the old classes' scores among the K (the head's ``score_channels``: the class logits
    on NanoDet-Plus, plus the objectness on YOLOX). Each image's MSE is a mean over its own
    |S_cls|·|channels| elements; an image with an empty S_cls contributes 0 (where ERD's
    code gives NaN) and still counts in image_mean's denominator, so image_mean is exactly
    reference_sum / B.
    """
    if len(selection) == 0:
        return attached_zero(student_cls)
    image, prior = selection
    old = old_classes.to(student_cls.device)
    student_old = student_cls[image, prior].index_select(-1, old)
    teacher_old = teacher_cls[image, prior].index_select(-1, old)
    # Every prior has |Old| elements, so the mean of the per-prior means is the image's MSE.
    per_prior = (student_old - teacher_old).square().mean(dim=-1)
    count = torch.bincount(image, minlength=student_cls.shape[0]).clamp(min=1)
    return reduce_over_images(per_prior / count[image], image, student_cls.shape[0], reduction)


def box_distillation_per_prior(
    head: DetectionHead,
    student_box: torch.Tensor,
    teacher_box: torch.Tensor,
    weights: torch.Tensor,
    temperature: float,
    box_weight: float = 0.25,
) -> torch.Tensor:
    """(K,) box_weight · w · the head's box distance per prior.

    On NanoDet-Plus the distance is ERD's T²·Σ_sides KL(softmax(r^T/T) ‖ softmax(r^S/T)) / 4
    of the (K, 4·bins) logits (each side's KL averaged over its bins; the constant 4, not
    |K|, is ERD's divisor); a head family without bins supplies its counterpart
    (docs/strategies.md §7).
    """
    return box_weight * weights * head.box_distillation(student_box, teacher_box, temperature)


def box_distillation(
    head: DetectionHead,
    student_scores: torch.Tensor,
    student_box: torch.Tensor,
    teacher_box: torch.Tensor,
    kept: Selection,
    old_classes: torch.Tensor,
    temperature: float,
    box_weight: float = 0.25,
    reduction: Reduction = "image_mean",
) -> torch.Tensor:
    """L_dreg over the kept priors K, weighted by the student's detached max old-class score.

    ``student_scores``: (B, N, C) the head's scores; ``student_box``/``teacher_box``: (B, N,
    D) box channels. Each image's term is the sum over its kept priors (ERD divides by 4,
    not by |K|).
    """
    if len(kept) == 0:
        return attached_zero(student_box)
    image, prior = kept
    old = old_classes.to(student_scores.device)
    weights = student_scores.detach()[image, prior].index_select(-1, old).amax(-1)
    per_prior = box_distillation_per_prior(
        head, student_box[image, prior], teacher_box[image, prior], weights, temperature, box_weight
    )
    return reduce_over_images(per_prior, image, student_box.shape[0], reduction)


def non_old_class_mask(
    num_classes: int, old_classes: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """bool (C,): True on the channels that are not old (new and not-yet-seen classes)."""
    mask = torch.ones(num_classes, dtype=torch.bool, device=device)
    mask[old_classes.to(device)] = False
    return mask


# --------------------------------------------------------------------------- strategy
def _check_number(key: str, value: float, low: float, high: float = math.inf) -> float:
    number = float(value)
    if not (math.isfinite(number) and low <= number <= high):
        raise ConfigError(f"strategy.{key} must be a number in [{low}, {high}], got {value!r}")
    return number


def _check_reduction(key: str, value: str) -> Reduction:
    if value not in REDUCTIONS:
        raise ConfigError(f"strategy.{key} must be image_mean or reference_sum, got {value!r}")
    return value  # type: ignore[return-value]


class ERD(TeacherStrategy):
    """Elastic response distillation of old-class logits and box distributions, full teacher.

    Args (defaults from ERD; docs/strategies.md §7): ``k_std`` the k of mean + k·std in
    both selections; ``temperature`` T of the box KL; ``nms_iou`` the IoU of the NMS on
    the regression candidates; ``cls_reduction`` / ``reg_reduction`` how the per-image
    terms combine (:data:`Reduction`); ``cls_weight`` / ``reg_weight`` the weights of
    L_dcls / L_dreg; ``box_weight`` the factor inside L_dreg; ``reference_decoding`` ERD's
    stride-less box decoding before NMS (fidelity only); ``frozen_bn`` see TeacherStrategy.
    """

    name = "erd"

    def __init__(
        self,
        name: str | None = None,
        joint: bool | None = None,
        k_std: float = 2.0,
        temperature: float = 10.0,
        nms_iou: float = 0.005,
        cls_reduction: Reduction = "image_mean",
        reg_reduction: Reduction = "image_mean",
        cls_weight: float = 1.0,
        reg_weight: float = 1.0,
        box_weight: float = 0.25,
        reference_decoding: bool = False,
        frozen_bn: FrozenBN = "eval",
    ) -> None:
        super().__init__(name=name, joint=joint, frozen_bn=frozen_bn)
        self.k_std = _check_number("k_std", k_std, 0.0)
        self.temperature = _check_number("temperature", temperature, 0.0)
        if self.temperature == 0.0:
            raise ConfigError(f"strategy.temperature must be positive, got {temperature!r}")
        self.nms_iou = _check_number("nms_iou", nms_iou, 0.0, 1.0)
        self.cls_reduction = _check_reduction("cls_reduction", cls_reduction)
        self.reg_reduction = _check_reduction("reg_reduction", reg_reduction)
        self.cls_weight = _check_number("cls_weight", cls_weight, 0.0)
        self.reg_weight = _check_number("reg_weight", reg_weight, 0.0)
        self.box_weight = _check_number("box_weight", box_weight, 0.0)
        if not isinstance(reference_decoding, bool):
            raise ConfigError(
                f"strategy.reference_decoding must be true or false, got {reference_decoding!r}"
            )
        self.reference_decoding = reference_decoding
        # Selection sizes of the last step, per image, for the training log (diagnostics).
        self.last_selection: dict[str, float] = {}

    def supervision(self, module: TrainingModule, step: Step) -> Supervision | None:
        """QFL (and the box-loss weights) on the non-old channels only, from task 1 on."""
        if step.teacher is None:
            return None  # task 0: plain training
        mask = non_old_class_mask(step.head.num_classes, self.old_classes, step.student.raw.device)
        return Supervision(class_mask=mask)

    def diagnostics(self) -> dict[str, float]:
        """|S_cls| and |K| per image at the last step (none at task 0)."""
        return dict(self.last_selection)

    def training_loss(
        self, module: TrainingModule, step: Step, assigned: Assigned
    ) -> dict[str, torch.Tensor]:
        if step.teacher is None:
            return {}
        return self.terms(step.student, step.teacher, step.head, step.input_size)

    def terms(
        self,
        student: HeadOutput,
        teacher: HeadOutput,
        head: DetectionHead,
        input_size: tuple[int, int],
    ) -> dict[str, torch.Tensor]:
        """The weighted terms ``distill_cls`` and ``distill_reg`` of one batch."""
        teacher_box = teacher.box_logits.detach()
        # The head's own scores (σ(cls) on NanoDet-Plus, σ(obj)·σ(cls) on YOLOX, whose class
        # logits alone say nothing about background).
        old = old_class_scores(head.scores(teacher), self.old_classes)
        cls_selected = elastic_selection(old.score, self.k_std)
        kept = regression_selection(
            head, teacher, old, input_size, self.k_std, self.nms_iou, self.reference_decoding
        )
        num_images = student.raw.shape[0]
        self.last_selection = {
            "erd_cls_selected_per_image": len(cls_selected) / num_images,
            "erd_reg_kept_per_image": len(kept) / num_images,
        }
        distill_cls = class_distillation(
            student.raw,
            teacher.raw.detach(),
            cls_selected,
            head.score_channels(self.old_classes.to(student.raw.device)),
            self.cls_reduction,
        )
        distill_reg = box_distillation(
            head,
            head.scores(student).detach(),
            student.box_logits,
            teacher_box,
            kept,
            self.old_classes,
            self.temperature,
            self.box_weight,
            self.reg_reduction,
        )
        return {
            "distill_cls": self.cls_weight * distill_cls,
            "distill_reg": self.reg_weight * distill_reg,
        }
