"""DynamicSoftLabelAssigner (docs/detector.md §7), vectorised over the batch and the GTs.

Images with different GT counts are padded to the largest count with ``gt_valid`` masking
the padding, so one call assigns the whole batch without a Python loop over images,
GTs or priors.

Conflicts (a prior among the dynamic-k picks of several GTs) are resolved by ``multi_match``:

* ``"all_gts"`` (default, upstream NanoDet-Plus): the prior goes to the argmin of its cost over
  **every** GT of the image. The cost is finite for every (candidate, GT) pair — a GT that does
  not contain the prior's centre only has a large IoU/class cost, never an infinite one — so the
  winner can be a GT that did not pick the prior at all; that GT then gains a positive and the
  GTs that picked it lose it. Only image padding has an infinite cost, so it never wins.
* ``"selecting_gts"`` (clod's earlier rule, kept for comparison and for reproducing runs made
  with it): the argmin over the GTs that picked the prior only, so a positive always belongs to
  a GT that selected it — the literal reading of docs/detector.md §7 step 4.

A prior picked by exactly one GT keeps that GT under both rules.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F

from clod.models.boxes import pairwise_iou

TOPK = 13
IOU_FACTOR = 3.0
IOU_COST_EPS = 1e-7
MultiMatch = Literal["all_gts", "selecting_gts"]
MULTI_MATCH_RULES: tuple[str, ...] = get_args(MultiMatch)
DEFAULT_MULTI_MATCH: MultiMatch = "all_gts"


def check_multi_match(rule: str) -> MultiMatch:
    """``rule`` if it names a conflict rule (see the module docstring), else ``ValueError``."""
    if rule not in MULTI_MATCH_RULES:
        raise ValueError(f"multi_match must be one of {MULTI_MATCH_RULES}, got {rule!r}")
    return rule  # type: ignore[return-value]


class Assignment(NamedTuple):
    """Per-prior result for a batch.

    positive: (B, N) bool.
    gt_index: (B, N) int64 index of the assigned GT within its image (0 where negative).
    iou: (B, N) IoU of the prior's predicted box with its assigned GT (0 where negative),
        the QFL target.
    """

    positive: torch.Tensor
    gt_index: torch.Tensor
    iou: torch.Tensor


def _focal_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (
        F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        * (target - logits.sigmoid()).square()
    )


@torch.no_grad()
def assign(
    cls_logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    centres: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_valid: torch.Tensor,
    topk: int = TOPK,
    iou_factor: float = IOU_FACTOR,
    multi_match: MultiMatch = DEFAULT_MULTI_MATCH,
) -> Assignment:
    """Assign priors to GTs by dynamic-k lowest cost.

    Args:
        cls_logits: (B, N, C) class logits (detached inside).
        pred_boxes: (B, N, 4) decoded predicted boxes.
        centres: (N, 2) prior centres (x, y).
        gt_boxes: (B, G, 4) padded GT boxes.
        gt_labels: (B, G) padded GT labels (any value where invalid).
        gt_valid: (B, G) bool, False for padding.
        multi_match: how a prior picked by several GTs chooses one (module docstring).
    """
    check_multi_match(multi_match)
    batch, num_priors, _ = cls_logits.shape
    device = cls_logits.device
    negative = Assignment(
        positive=torch.zeros(batch, num_priors, dtype=torch.bool, device=device),
        gt_index=torch.zeros(batch, num_priors, dtype=torch.long, device=device),
        iou=cls_logits.new_zeros(batch, num_priors),
    )
    if gt_boxes.shape[1] == 0 or not bool(gt_valid.any()):
        return negative
    # Costs are computed in at least float32 (half-precision logits would round the costs).
    work_dtype = torch.promote_types(cls_logits.dtype, torch.float32)
    cls_logits = cls_logits.detach().to(work_dtype)
    pred_boxes = pred_boxes.detach().to(work_dtype)
    gt_boxes = gt_boxes.to(work_dtype)
    centres = centres.to(work_dtype)

    # Candidates: centre strictly inside at least one (real) GT.  (B, N, G)
    x = centres[None, :, None, 0]
    y = centres[None, :, None, 1]
    inside = (
        (x > gt_boxes[:, None, :, 0])
        & (x < gt_boxes[:, None, :, 2])
        & (y > gt_boxes[:, None, :, 1])
        & (y < gt_boxes[:, None, :, 3])
        & gt_valid[:, None, :]
    )
    candidate = inside.any(dim=2)  # (B, N)
    if not bool(candidate.any()):
        return negative

    ious = pairwise_iou(pred_boxes, gt_boxes)  # (B, N, G), against every GT
    # Soft labels are zero except at the GT's class, so the sum over C splits into the
    # all-negative sum minus the label channel's negative term plus its soft-label term.
    # This is O(N·(C+G)) instead of materialising a (N, G, C) tensor.
    safe_labels = torch.where(gt_valid, gt_labels, 0)
    label_logits = cls_logits.gather(
        2, safe_labels[:, None, :].expand(batch, num_priors, -1)
    )  # (B, N, G)
    all_negative = _focal_bce(cls_logits, torch.zeros_like(cls_logits)).sum(dim=2, keepdim=True)
    cls_cost = (
        all_negative
        - _focal_bce(label_logits, torch.zeros_like(label_logits))
        + _focal_bce(label_logits, ious)
    )
    cost = cls_cost + iou_factor * -torch.log(ious + IOU_COST_EPS)
    usable = candidate[:, :, None] & gt_valid[:, None, :]
    cost = cost.masked_fill(~usable, float("inf"))

    # Dynamic k from the top IoUs among the candidates; zeros stand in for non-candidates,
    # which leaves the sum of the top-min(topk, |V|) IoUs unchanged.
    k_max = min(topk, num_priors)
    candidate_ious = ious.masked_fill(~usable, 0.0)
    top_ious = candidate_ious.topk(k_max, dim=1).values  # (B, k_max, G)
    dynamic_k = top_ious.sum(dim=1).floor().long().clamp(min=1)  # (B, G)
    has_candidates = candidate.any(dim=1, keepdim=True)  # (B, 1)
    dynamic_k = torch.where(gt_valid & has_candidates, dynamic_k, 0)

    # The k_g lowest-cost candidates of every GT (k_g ≤ |V|, so none of them has cost inf).
    lowest = cost.topk(k_max, dim=1, largest=False).indices  # (B, k_max, G)
    rank = torch.arange(k_max, device=device)[None, :, None]
    matched = torch.zeros_like(usable)
    matched.scatter_(1, lowest, rank < dynamic_k[:, None, :])

    # A prior matched by one GT keeps it; one matched by several keeps the cheapest GT among
    # those ("selecting_gts") or among all GTs ("all_gts"; only padding is inf for a candidate).
    num_matches = matched.sum(dim=2)
    positive = num_matches > 0
    gt_index = cost.masked_fill(~matched, float("inf")).argmin(dim=2)
    if multi_match == "all_gts":
        gt_index = torch.where(num_matches > 1, cost.argmin(dim=2), gt_index)
    gt_index = torch.where(positive, gt_index, 0)
    iou = torch.where(positive, ious.gather(2, gt_index[..., None]).squeeze(2), 0.0)
    return Assignment(positive=positive, gt_index=gt_index, iou=iou.to(negative.iou.dtype))
