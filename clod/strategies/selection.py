"""Selecting teacher predictions, batched over the images of a batch.

What ERD, ILYOLOX and pseudo-labelling share (docs/strategies.md §7–§8): the teacher's
score and label restricted to the old classes, per-image elastic thresholds
(mean + k·std over an image's priors), class-aware NMS over every image of a batch in
one call, and turning a flat selection back into per-image lists.

Selections are flat index tensors ``(image, prior)`` over the whole batch, so no step
loops over images, priors or boxes in Python.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from clod.models.boxes import pairwise_iou
from clod.models.nms import grouped_nms
from clod.models.targets import Targets


class OldClassScores(NamedTuple):
    """score: (B, N) max over the old classes of σ(teacher logit); label: (B, N) its global class."""

    score: torch.Tensor
    label: torch.Tensor


def old_class_scores(scores: torch.Tensor, old_classes: torch.Tensor) -> OldClassScores:
    """Max and argmax over the old classes only (global labels) of (B, N, C) scores.

    Any increasing function of the scores gives the same argmax: passing logits and taking
    the sigmoid of the max afterwards saves a sigmoid over every channel.
    """
    if old_classes.numel() == 0:
        raise ValueError("there are no old classes to select teacher predictions of")
    index = old_classes.to(scores.device)
    old = scores.index_select(-1, index)
    score, position = old.max(dim=-1)
    return OldClassScores(score, index[position])


def elastic_threshold(values: torch.Tensor, k_std: float) -> torch.Tensor:
    """(B, 1) mean + k·std of each image's values over its priors (std unbiased, as torch's).

    An image whose values are all equal has no outlier to select: its threshold is +inf
    (its float32 mean can round below the common value, which would select every prior).
    """
    std = values.std(dim=1, keepdim=True)
    threshold = values.mean(dim=1, keepdim=True) + k_std * std
    return threshold.masked_fill(std == 0, float("inf"))


class Selection(NamedTuple):
    """Flat selection over a batch: ``image`` and ``prior`` indices, (K,) each."""

    image: torch.Tensor
    prior: torch.Tensor

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> Selection:
        image, prior = mask.nonzero(as_tuple=True)
        return cls(image, prior)

    def subset(self, keep: torch.Tensor) -> Selection:
        return Selection(self.image[keep], self.prior[keep])

    def __len__(self) -> int:
        return int(self.image.numel())


def nms_per_image(
    selection: Selection,
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    iou_threshold: float,
) -> Selection:
    """Class-aware greedy NMS inside each image, all images in one call.

    ``boxes`` (B, N, 4), ``scores`` (B, N) and ``labels`` (B, N) are read at the selection.
    Boxes of different images never suppress each other: each (image, class) pair is its
    own NMS group. The survivors are returned in descending score order.
    """
    if len(selection) == 0:
        return selection
    image, prior = selection
    num_labels = int(labels.max()) + 1
    groups = image * num_labels + labels[image, prior]
    keep = grouped_nms(boxes[image, prior], scores[image, prior], groups, iou_threshold)
    return selection.subset(keep)


def per_image(
    selection: Selection, num_images: int, *values: torch.Tensor
) -> list[list[torch.Tensor]]:
    """For each of ``values`` ((B, N, ...) tensors), its entries at the selection, split by image.

    Returns one list per value, each holding ``num_images`` tensors (empty where an image
    has no selected prior), in the selection's order within an image.
    """
    order = torch.sort(selection.image, stable=True).indices
    image, prior = selection.image[order], selection.prior[order]
    counts = torch.bincount(image, minlength=num_images).tolist()
    return [list(torch.split(value[image, prior], counts)) for value in values]


def pseudo_ground_truth(
    selection: Selection, boxes: torch.Tensor, labels: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Per-image extra targets of the selected priors: their boxes (B, N, 4), their labels
    (B, N), and as each target's id the teacher prior it came from (for a
    :class:`~clod.strategies.base.Supervision`)."""
    num_images, num_priors = labels.shape
    prior_ids = torch.arange(num_priors, device=labels.device).expand(num_images, num_priors)
    extra_boxes, extra_labels, extra_ids = per_image(
        selection, num_images, boxes, labels, prior_ids
    )
    return extra_boxes, extra_labels, extra_ids


def drop_overlapping(
    selection: Selection, boxes: torch.Tensor, annotated: Targets, max_iou: float | None
) -> Selection:
    """The selected priors whose box has IoU ≤ ``max_iou`` with every annotated box of its
    image (None: all of them)."""
    if max_iou is None:
        return selection
    return selection.subset(max_iou_with_targets(selection, boxes, annotated) <= max_iou)


def max_iou_with_targets(
    selection: Selection, boxes: torch.Tensor, targets: Targets
) -> torch.Tensor:
    """(K,) for each selected prior, the largest IoU of its box with an annotated box of
    its own image (0 where the image has none).

    ``boxes`` (B, N, 4); ``targets`` the batch's padded annotated boxes. One (K, G) IoU
    matrix against each selected box's own image's targets, padding masked.
    """
    if len(selection) == 0 or targets.boxes.shape[1] == 0:
        return boxes.new_zeros(len(selection))
    selected = boxes[selection.image, selection.prior]  # (K, 4)
    own_targets = targets.boxes[selection.image].to(selected.dtype)  # (K, G, 4)
    ious = pairwise_iou(selected[:, None, :], own_targets).squeeze(1)  # (K, G)
    ious = ious.masked_fill(~targets.valid[selection.image], 0.0)
    return ious.amax(dim=1)
