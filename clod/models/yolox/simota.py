"""SimOTA label assignment of YOLOX (docs/yolox.md §4), batched over images.

Upstream assigns one image at a time, on the candidate priors only, with a Python loop over
the GTs. Here the whole batch is assigned at once on dense (B, G, N) tensors — G is the
largest GT count of the batch, N the number of priors — and masks stand in for the loops:

* image padding (``gt_valid`` False) and non-candidate priors get cost +inf and IoU 0, so they
  are never among a GT's lowest-cost picks and add nothing to its top-IoU sum (zeros leave the
  sum of the top-min(10, M) IoUs over the M candidates unchanged);
* each GT's dynamic-k picks come from one ``topk`` over the priors with the largest k any GT
  can have (the dynamic k never exceeds ``topk_iou``: it is the floor of a sum of at most
  ``topk_iou`` IoUs ≤ 1), keeping only the first dynamic_k ranks;
* a GT with no candidate (padding, or an image without candidates) gets dynamic_k = 0.

There is no host synchronisation (no ``.item()``, no data-dependent branch) except the early
exit on a batch without GT columns, which depends on shapes only. Memory is O(B·G·N + B·N·C).

Two versions of the geometric filter exist (docs/yolox.md §4.1, §8.1):

* ``"legacy"`` (v0.1–v0.3.0, the paper and the released weights): candidates are the priors
  whose centre lies strictly inside some GT box **or** strictly within 2.5 strides of some GT
  centre on both axes; a (GT, candidate) pair that is not both inside that GT's box and
  within its 2.5-stride square costs an extra 1e5.
* ``"current"`` (upstream HEAD since 2023-01): candidates are the priors within 1.5 strides
  of some GT centre; a pair outside that GT's square costs an extra 1e6. No box test.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from clod.models.assigner import Assignment
from clod.models.boxes import pairwise_iou

SimOTAVersion = Literal["legacy", "current"]
SIMOTA_VERSIONS: tuple[str, ...] = get_args(SimOTAVersion)
TOPK_IOU = 10
IOU_COST_WEIGHT = 3.0
IOU_COST_EPS = 1e-8
# PyTorch's binary_cross_entropy clamps each log at −100 so that p = 0 or 1 stays finite.
BCE_LOG_FLOOR = -100.0
# version → (centre radius in strides, cost added to a pair outside the geometry)
GEOMETRY: dict[str, tuple[float, float]] = {"legacy": (2.5, 1e5), "current": (1.5, 1e6)}


def check_version(version: str) -> SimOTAVersion:
    """``version`` if it names a SimOTA version (module docstring), else ``ValueError``."""
    if version not in SIMOTA_VERSIONS:
        raise ValueError(f"SimOTA version must be one of {SIMOTA_VERSIONS}, got {version!r}")
    return version  # type: ignore[return-value]


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    # At least float32: half-precision logits would round the costs (docs/yolox.md §4.2 turns autocast
    # off). float64 inputs stay float64, which lets tests compare against exact references.
    return torch.promote_types(dtype, torch.float32)


def _neg_log(x: Tensor) -> Tensor:
    """−max(log x, −100): one BCE term with PyTorch's clamp."""
    return -torch.log(x).clamp(min=BCE_LOG_FLOOR)


def simota_cls_cost(cls_logits: Tensor, obj_logits: Tensor, gt_labels: Tensor) -> Tensor:
    """Classification cost of every (GT, prior) pair, (B, G, N), in at least float32.

    cost[b, g, n] = Σ_c BCE(p[b, n, c], onehot(gt_labels[b, g])_c) with
    p = sqrt(σ(cls)·σ(obj)), summed over **all** C classes (docs/yolox.md §4.2).

    The one-hot target is 1 on a single channel, so the sum over C splits into the sum of the
    all-negative terms −log(1 − p) (one (B, N) tensor shared by every GT), minus the label
    channel's negative term, plus its positive term −log p. That is O(B·N·(C + G)) instead of
    materialising the (B, N, G, C) tensor upstream builds per image.

    Args:
        cls_logits: (B, N, C). obj_logits: (B, N).
        gt_labels: (B, G) int64 in [0, C) (the caller replaces padding labels by a valid one).
    """
    work = _work_dtype(cls_logits.dtype)
    prob = (cls_logits.to(work).sigmoid() * obj_logits.to(work).sigmoid()[..., None]).sqrt()
    negative_terms = _neg_log(1.0 - prob)  # (B, N, C): BCE(p, 0) per class
    all_negative = negative_terms.sum(dim=2)  # (B, N)
    index = gt_labels[:, :, None].expand(-1, -1, prob.shape[1])  # (B, G, N)
    # Gathering the very values summed above makes the subtraction cancel them exactly.
    label_negative = negative_terms.transpose(1, 2).gather(1, index)
    label_positive = _neg_log(prob.transpose(1, 2).gather(1, index))
    return all_negative[:, None, :] - label_negative + label_positive


@torch.no_grad()
def simota_assign(
    cls_logits: Tensor,
    obj_logits: Tensor,
    pred_boxes: Tensor,
    grid: Tensor,
    strides: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    gt_valid: Tensor,
    version: SimOTAVersion = "legacy",
    topk_iou: int = TOPK_IOU,
) -> Assignment:
    """Assign priors to GTs by SimOTA (docs/yolox.md §4), for a whole padded batch.

    Args:
        cls_logits: (B, N, C) class logits.
        obj_logits: (B, N) objectness logits.
        pred_boxes: (B, N, 4) decoded predicted boxes, xyxy, input pixels.
        grid: (N, 2) integer cell indices (x = column, y = row), as floats. The prior centre
            used here is ((x + 0.5)·s, (y + 0.5)·s), not the decode's x·s (docs/yolox.md §2.4).
        strides: (N,) stride of each prior.
        gt_boxes: (B, G, 4) padded GT boxes, xyxy, input pixels.
        gt_labels: (B, G) int64 (any value where invalid).
        gt_valid: (B, G) bool, False for padding (which may sit anywhere along G).
        version: ``"legacy"`` or ``"current"`` geometric filter (module docstring).
        topk_iou: how many of a GT's largest candidate IoUs are summed for its dynamic k.

    Returns:
        :class:`Assignment` with positive (B, N), gt_index (B, N) into the image's G slots
        (0 where negative) and iou (B, N): the IoU of the prior's predicted box with its GT
        (0 where negative), the cls target's scale. iou is in at least float32.
    """
    radius, penalty = GEOMETRY[check_version(version)]
    batch, num_priors, _ = cls_logits.shape
    num_gts = gt_boxes.shape[1]
    device = cls_logits.device
    work = _work_dtype(cls_logits.dtype)
    negative = Assignment(
        positive=torch.zeros(batch, num_priors, dtype=torch.bool, device=device),
        gt_index=torch.zeros(batch, num_priors, dtype=torch.long, device=device),
        iou=torch.zeros(batch, num_priors, dtype=work, device=device),
    )
    if num_gts == 0 or num_priors == 0:
        return negative  # shapes only: no host sync

    pred_boxes = pred_boxes.detach().to(work)
    gt_boxes = gt_boxes.detach().to(work)
    strides = strides.to(device=device, dtype=work)
    grid = grid.to(device=device, dtype=work)

    # Geometry on (B, G, N): priors along the last axis, GTs along the middle one.
    prior_x = ((grid[:, 0] + 0.5) * strides)[None, None, :]
    prior_y = ((grid[:, 1] + 0.5) * strides)[None, None, :]
    half_side = (radius * strides)[None, None, :]
    x1, y1, x2, y2 = (gt_boxes[..., i, None] for i in range(4))  # each (B, G, 1)
    centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
    valid = gt_valid[:, :, None]
    # Written as upstream's four margins (> 0) around the GT centre, all strict.
    in_centre = (
        (prior_x > centre_x - half_side)
        & (prior_x < centre_x + half_side)
        & (prior_y > centre_y - half_side)
        & (prior_y < centre_y + half_side)
        & valid
    )
    if version == "legacy":
        in_box = (prior_x > x1) & (prior_x < x2) & (prior_y > y1) & (prior_y < y2) & valid
        candidate = (in_box | in_centre).any(dim=1)  # (B, N)
        geometry = in_box & in_centre
    else:
        candidate = in_centre.any(dim=1)
        geometry = in_centre
    usable = candidate[:, None, :] & valid  # (B, G, N): a real GT and a candidate prior

    ious = pairwise_iou(gt_boxes, pred_boxes)  # (B, G, N), no eps; 0 without overlap
    safe_labels = torch.where(gt_valid, gt_labels, 0)
    cost = (
        simota_cls_cost(cls_logits.detach(), obj_logits.detach(), safe_labels)
        + IOU_COST_WEIGHT * -torch.log(ious + IOU_COST_EPS)
        + penalty * (~geometry).to(work)
    )
    # Finite for every (real GT, candidate) pair — the penalty is finite — so the conflict
    # argmin below can only land on a real GT; +inf marks padding and non-candidates.
    cost = cost.masked_fill(~usable, float("inf"))

    # Dynamic k: trunc of the sum of the top-min(topk_iou, M) candidate IoUs, at least 1.
    k_max = min(topk_iou, num_priors)
    top_ious = ious.masked_fill(~usable, 0.0).topk(k_max, dim=2).values  # (B, G, k_max)
    dynamic_k = top_ious.sum(dim=2).to(torch.long).clamp(min=1)  # .long() truncates
    dynamic_k = torch.where(usable.any(dim=2), dynamic_k, 0)  # padding / no candidates

    # Each GT takes its dynamic_k lowest-cost candidates. dynamic_k ≤ min(k_max, M), so the
    # kept ranks all have a finite cost; `& usable` guards against IoUs rounded above 1.
    lowest = cost.topk(k_max, dim=2, largest=False).indices  # (B, G, k_max)
    rank = torch.arange(k_max, device=device)
    taken = torch.zeros_like(usable)
    taken.scatter_(2, lowest, rank[None, None, :] < dynamic_k[:, :, None])
    taken &= usable

    # A prior taken by one GT keeps it; one taken by several goes to the argmin of its cost
    # over all the image's real GTs, which may be a GT that did not take it (docs/yolox.md §4.3).
    num_takers = taken.sum(dim=1)  # (B, N)
    positive = num_takers > 0
    # min(dim=1).indices, not argmin(dim=1): the same first index of the minimum, but
    # argmin over a middle axis takes a slow path (8x slower at B=16, G=6, N=3549).
    only_taker = cost.masked_fill(~taken, float("inf")).min(dim=1).indices
    gt_index = torch.where(num_takers > 1, cost.min(dim=1).indices, only_taker)
    gt_index = torch.where(positive, gt_index, 0)
    iou = torch.where(positive, ious.gather(1, gt_index[:, None, :]).squeeze(1), 0.0)
    return Assignment(positive=positive, gt_index=gt_index, iou=iou)
