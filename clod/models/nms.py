"""Greedy, class-aware non-maximum suppression in plain PyTorch (docs/detector.md §8).

Greedy NMS walks the boxes in descending score order and drops a box whose IoU with an
already kept box of the same class is strictly greater than the threshold. The walk is
sequential by definition; here it is computed with whole-tensor operations instead:

* the sorted boxes are processed in blocks; a block first loses every box suppressed by
  the boxes kept in earlier blocks (one IoU matrix against them);
* inside a block, with ``S[i, j]`` = "box i would suppress box j" (i before j, same class,
  IoU > threshold), the greedy result is the unique fixed point of
  ``keep[j] = alive[j] and not any_i(keep[i] and S[i, j])``. Iterating this from
  ``keep = alive`` fixes at least one more leading position per round, and it stops as soon
  as nothing changes, which in practice takes a few rounds (the longest suppression chain).

Classes are kept apart with an explicit same-label mask rather than upstream's coordinate
offset trick: offsetting by ``label * (max_coord + 1)`` adds large numbers to the coordinates
and can move an IoU that sits exactly on the threshold across it in float32.
"""

from __future__ import annotations

import torch

from clod.models.boxes import pairwise_iou

DEFAULT_BLOCK = 1024


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    iou_threshold: float,
    max_keep: int | None = None,
    block_size: int = DEFAULT_BLOCK,
) -> torch.Tensor:
    """Indices of the boxes that survive class-aware greedy NMS, highest score first.

    Args:
        boxes: (K, 4) xyxy.
        scores: (K,).
        labels: (K,) integer class of each box; boxes of different classes never suppress
            each other.
        iou_threshold: a box is dropped when its IoU with a kept box is ``> iou_threshold``.
        max_keep: stop once this many boxes are kept (the result equals the first
            ``max_keep`` entries of the full result).
        block_size: number of sorted boxes handled per vectorised step (bounds memory).

    Ties in score are broken by input order (earlier first), like a stable sort.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    sorted_boxes = boxes[order]
    sorted_labels = labels[order]
    kept_chunks: list[torch.Tensor] = []
    kept_boxes = sorted_boxes.new_zeros((0, 4))
    kept_labels = sorted_labels.new_zeros((0,))
    num_kept = 0
    for start in range(0, order.numel(), block_size):
        block_boxes = sorted_boxes[start : start + block_size]
        block_labels = sorted_labels[start : start + block_size]
        alive = torch.ones(block_boxes.shape[0], dtype=torch.bool, device=boxes.device)
        if kept_boxes.shape[0] > 0:
            overlap = pairwise_iou(kept_boxes, block_boxes) > iou_threshold
            overlap &= kept_labels[:, None] == block_labels[None, :]
            alive &= ~overlap.any(dim=0)
        keep = _greedy_within_block(block_boxes, block_labels, alive, iou_threshold)
        block_kept = keep.nonzero().squeeze(1)
        kept_chunks.append(order[start + block_kept])
        kept_boxes = torch.cat((kept_boxes, block_boxes[block_kept]))
        kept_labels = torch.cat((kept_labels, block_labels[block_kept]))
        num_kept += int(block_kept.numel())
        if max_keep is not None and num_kept >= max_keep:
            break
    kept = torch.cat(kept_chunks)
    return kept if max_keep is None else kept[:max_keep]


def _greedy_within_block(
    boxes: torch.Tensor, labels: torch.Tensor, alive: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Greedy NMS over boxes already in score order, restricted to the ``alive`` ones."""
    suppresses = pairwise_iou(boxes, boxes) > iou_threshold
    suppresses &= labels[:, None] == labels[None, :]
    # Only an earlier (higher-ranked) box can suppress a later one.
    suppresses = torch.triu(suppresses, diagonal=1)
    suppresses &= alive[:, None]
    if not bool(suppresses.any()):
        return alive
    suppress_matrix = suppresses.to(torch.float32)
    keep = alive
    for _ in range(boxes.shape[0]):
        hit = (keep.to(torch.float32) @ suppress_matrix) > 0
        new_keep = alive & ~hit
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return keep
