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

from clod.models.boxes import box_area, pairwise_iou, to_original

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


def grouped_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    groups: torch.Tensor,
    iou_threshold: float,
    max_pairs: int = 4_000_000,
) -> torch.Tensor:
    """:func:`batched_nms` for many small groups: IoUs only between boxes of one group.

    ``groups`` (K,) integer group of each box (e.g. image × classes + class): boxes of
    different groups never suppress each other. Instead of a K×K IoU matrix, only the
    Σ n_g·(n_g − 1)/2 pairs inside each group are formed, each pair (i, j) with i before j
    in score order. The greedy result is the fixed point of ``keep[j] = not any(keep[i]
    for the pairs (i, j) where i suppresses j)``, found by iterating from "keep all" as in
    :func:`batched_nms`, with scatter operations over the pairs. Falls back to
    :func:`batched_nms` when the pairs would exceed ``max_pairs`` (one huge group).

    Returns the indices of the survivors, highest score first (ties: input order).
    """
    count = boxes.shape[0]
    device = boxes.device
    if count == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    by_score = torch.sort(scores, descending=True, stable=True).indices
    # Grouped, score order kept inside a group (stable sort on the group).
    order = by_score[torch.sort(groups[by_score], stable=True).indices]
    sorted_groups = groups[order]
    _, group_sizes = torch.unique_consecutive(sorted_groups, return_counts=True)
    group_starts = torch.cumsum(group_sizes, 0) - group_sizes
    starts = torch.repeat_interleave(group_starts, group_sizes)  # per box: its group's start
    earlier = torch.arange(count, device=device) - starts  # boxes before it in its group
    num_pairs = int(earlier.sum())
    if num_pairs > max_pairs:
        return batched_nms(boxes, scores, groups, iou_threshold)
    later = torch.repeat_interleave(torch.arange(count, device=device), earlier)
    first_pair = torch.cumsum(earlier, 0) - earlier
    before = starts[later] + torch.arange(num_pairs, device=device) - first_pair[later]
    sorted_boxes = boxes[order]
    overlaps = aligned_iou_plain(sorted_boxes[before], sorted_boxes[later]) > iou_threshold
    suppressor, suppressed = before[overlaps], later[overlaps]
    keep = torch.ones(count, dtype=torch.bool, device=device)
    for _ in range(count):
        hit = torch.zeros(count, dtype=torch.bool, device=device)
        hit[suppressed[keep[suppressor]]] = True
        new_keep = ~hit
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    kept = torch.sort(order[keep]).values  # input order, so that ties stay in it
    # Highest score first across groups, as batched_nms returns them.
    return kept[torch.sort(scores[kept], descending=True, stable=True).indices]


def aligned_iou_plain(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of matching rows, exactly as :func:`~clod.models.boxes.pairwise_iou` computes it
    (no eps; an empty union gives 0), so both NMS functions agree on threshold ties."""
    top_left = torch.maximum(boxes1[:, :2], boxes2[:, :2])
    bottom_right = torch.minimum(boxes1[:, 2:], boxes2[:, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = box_area(boxes1) + box_area(boxes2) - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)


def nms_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    nms_iou: float,
    max_det: int,
    warp: torch.Tensor | None = None,
    orig_size: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """One image's candidates after class-aware NMS, best first, at most ``max_det``, boxes
    mapped back through ``warp`` (original→input) and clipped to ``orig_size`` if given."""
    keep = batched_nms(boxes, scores, labels, nms_iou, max_keep=max_det)
    kept_boxes = boxes[keep]
    if warp is not None:
        kept_boxes = to_original(kept_boxes, warp, orig_size)
    return {
        "boxes": kept_boxes.float(),
        "scores": scores[keep].float(),
        "labels": labels[keep].long(),
    }
