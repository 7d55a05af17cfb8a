"""The detection loss of a training step under a strategy's :class:`Supervision`.

The engine calls :func:`supervised_detection_loss` for every strategy, plain training
included (no supervision: the head's ordinary loss). With a supervision it:

1. merges the strategy's extra (pseudo) targets with the batch's annotated ones, extra
   targets first (docs/strategies.md §8 step 3), so the assigner sees them together;
2. assigns every prior over the merged targets;
3. turns the supervision into the head's loss controls: a class mask, per-element QFL
   weights (negatives left out; the priors of positives routed to ``distill`` left out
   entirely), and the positives that get GIoU/DFL;
4. computes QFL + GIoU + DFL and returns the assignment for the strategy's own terms.
"""

from __future__ import annotations

import torch

from clod.models.head_protocol import DetectionHead
from clod.models.targets import Assigned, Targets, merge_targets, pad_targets
from clod.strategies.base import Step, Supervision


def batch_targets(step: Step, supervision: Supervision | None) -> Targets:
    """The step's annotated targets, after the supervision's extra targets if any."""
    annotated = step.annotated
    device, dtype = annotated.boxes.device, annotated.boxes.dtype
    if supervision is None or supervision.extra_boxes is None:
        return annotated
    extra_labels = supervision.extra_labels
    assert extra_labels is not None  # checked by Supervision
    ids = supervision.extra_ids or [
        torch.arange(len(labels), device=device) for labels in extra_labels
    ]
    extra = pad_targets(supervision.extra_boxes, extra_labels, device, dtype, ids=ids)
    return merge_targets(extra, annotated)


def loss_controls(supervision: Supervision, assigned: Assigned) -> dict[str, torch.Tensor | None]:
    """The head's ``class_mask``, ``qfl_weight`` and ``box_mask`` for this supervision."""
    positive = assigned.positive
    qfl_weight: torch.Tensor | None = None
    box_mask: torch.Tensor | None = None
    if supervision.ignore_negatives is not None:
        ignore = supervision.ignore_negatives.clone()
        # A positive's own target element is not a negative: it stays in.
        batch_idx, prior_idx = positive.nonzero(as_tuple=True)
        ignore[batch_idx, prior_idx, assigned.labels[batch_idx, prior_idx]] = False
        qfl_weight = (~ignore).float()
    if supervision.extra_route != "standard":
        routed = assigned.extra_positive
        box_mask = positive & ~routed
        if supervision.extra_route == "distill":
            keep_prior = (~routed).float()
            qfl_weight = keep_prior if qfl_weight is None else qfl_weight * keep_prior[..., None]
    return {"class_mask": supervision.class_mask, "qfl_weight": qfl_weight, "box_mask": box_mask}


def supervised_detection_loss(
    head: DetectionHead, step: Step, supervision: Supervision | None
) -> tuple[dict[str, torch.Tensor], Assigned]:
    """QFL + GIoU + DFL of ``step`` under ``supervision`` (None: plain), and its assignment."""
    raw = step.student.raw
    targets = batch_targets(step, supervision)
    assigned = head.assign_targets(raw, targets, step.input_size)
    controls = loss_controls(supervision, assigned) if supervision is not None else {}
    losses = head.loss_from_assignment(raw, assigned, step.input_size, **controls)
    return losses, assigned
