"""Training targets as the head's loss consumes them, and what the assigner made of them.

:class:`Targets` pads the per-image ground-truth lists of a batch to (B, G) so one call
assigns the whole batch. Targets may also come from elsewhere than the annotations: a
continual-learning strategy can add *extra* targets (pseudo ground truth made from a
teacher's predictions, docs/strategies.md §8), marked ``extra`` and carrying an ``extra_id``
the strategy chose (e.g. the teacher prior a pseudo box came from). They are merged
*before* the assigner runs, so they compete with the annotated boxes for priors.

:class:`Assigned` is the assigner's result together with the targets it saw: a strategy
reads it to find which positive matched which target.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch


class Targets(NamedTuple):
    """Padded targets of a batch.

    boxes: (B, G, 4) xyxy in input pixels; labels: (B, G) int64 global labels (0 where
    invalid); valid: (B, G) bool, False for padding; extra: (B, G) bool, True for targets a
    strategy added; extra_id: (B, G) int64, the strategy's id of an extra target (−1 for an
    annotated one and for padding).
    """

    boxes: torch.Tensor
    labels: torch.Tensor
    valid: torch.Tensor
    extra: torch.Tensor
    extra_id: torch.Tensor

    @property
    def num_images(self) -> int:
        return int(self.boxes.shape[0])


def pad_targets(
    boxes: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    device: torch.device | str,
    dtype: torch.dtype,
    ids: Sequence[torch.Tensor] | None = None,
) -> Targets:
    """Stack per-image lists into padded :class:`Targets`.

    With ``ids`` (one (n_i,) int64 tensor per image) the targets are *extra* targets with
    those ids; without, annotated ones.
    """
    batch = len(boxes)
    if len(labels) != batch or (ids is not None and len(ids) != batch):
        raise ValueError("boxes, labels (and ids) must have one entry per image")
    counts = [int(b.shape[0]) for b in boxes]
    max_count = max(counts, default=0)
    gt_boxes = torch.zeros(batch, max_count, 4, device=device, dtype=dtype)
    gt_labels = torch.zeros(batch, max_count, device=device, dtype=torch.long)
    valid = torch.zeros(batch, max_count, device=device, dtype=torch.bool)
    extra_id = torch.full((batch, max_count), -1, device=device, dtype=torch.long)
    for image in range(batch):
        n = counts[image]
        if n == 0:
            continue
        gt_boxes[image, :n] = boxes[image].to(device=device, dtype=dtype)
        gt_labels[image, :n] = labels[image].to(device=device, dtype=torch.long)
        valid[image, :n] = True
        if ids is not None:
            extra_id[image, :n] = ids[image].to(device=device, dtype=torch.long)
    extra = valid if ids is not None else torch.zeros_like(valid)
    return Targets(gt_boxes, gt_labels, valid, extra, extra_id)


def check_labels(targets: Targets, num_classes: int) -> None:
    """``ValueError`` if a real target's label has no class channel in a head of
    ``num_classes``."""
    valid = targets.valid
    if valid.any() and int(targets.labels[valid].max()) >= num_classes:
        raise ValueError(
            f"a GT label is >= num_classes={num_classes}; allocate every class of the scenario"
        )


def merge_targets(first: Targets, second: Targets) -> Targets:
    """Both target sets of each image, ``first``'s before ``second``'s (concatenated on G).

    Padding may then sit between real targets; the assigner masks it wherever it is. The
    order matters only for exact cost ties, which go to the earlier target.
    """
    if first.num_images != second.num_images:
        raise ValueError(f"{first.num_images} images against {second.num_images}")
    return Targets(*(torch.cat((a, b), dim=1) for a, b in zip(first, second, strict=True)))


class Assigned(NamedTuple):
    """The assignment of one batch over :class:`Targets`.

    positive: (B, N) bool; gt_index: (B, N) index into the image's targets (0 where
    negative); iou: (B, N) IoU of the prior's predicted box with its target (the QFL
    target; 0 where negative).
    """

    targets: Targets
    positive: torch.Tensor
    gt_index: torch.Tensor
    iou: torch.Tensor

    def matched(self, values: torch.Tensor) -> torch.Tensor:
        """(B, N, ...) per-prior gather of a per-target tensor (B, G, ...) at ``gt_index``."""
        index = self.gt_index
        if values.shape[1] == 0:  # no target at all: nothing is positive
            return values.new_zeros((*index.shape, *values.shape[2:]))
        for _ in values.shape[2:]:
            index = index[..., None]
        index = index.expand(*self.gt_index.shape, *values.shape[2:])
        return values.gather(1, index)

    @property
    def labels(self) -> torch.Tensor:
        """(B, N) label of each prior's target (meaningful where ``positive``)."""
        return self.matched(self.targets.labels)

    @property
    def extra_positive(self) -> torch.Tensor:
        """(B, N) positives whose target is an extra (strategy-added) one."""
        return self.positive & self.matched(self.targets.extra)
