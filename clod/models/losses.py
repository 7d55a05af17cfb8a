"""Quality Focal, Distribution Focal and GIoU losses (docs/detector.md §6).

The functions return *unnormalised sums* (or per-element values); the head divides by the
avg factors, which :func:`mean_over_ranks` averages over DDP ranks first.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F

from clod.models.boxes import aligned_giou

QFL_BETA = 2.0
QFL_WEIGHT = 1.0
GIOU_WEIGHT = 2.0
DFL_WEIGHT = 0.25
# Upstream clamps the DFL target to reg_max − 0.1 bins, so ⌊t⌋ + 1 ≤ reg_max is a real bin.
DFL_TARGET_MARGIN = 0.1


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """All-reduce mean of a scalar tensor over DDP ranks (identity without a process group)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value = value / dist.get_world_size()
    return value


def avg_factor(value: torch.Tensor) -> torch.Tensor:
    """The rank-averaged value floored at 1, as every normaliser in docs/detector.md §6 uses."""
    value = value.detach()
    if not value.is_floating_point():
        value = value.float()
    return mean_over_ranks(value).clamp(min=1.0)


def quality_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    beta: float = QFL_BETA,
    reduction: Literal["sum", "none"] = "sum",
) -> torch.Tensor:
    """Σ BCEwithLogits(x, y)·|y − σ(x)|^β over every element (sum, not mean).

    ``targets`` holds the soft IoU label at a positive's class and 0 elsewhere.
    ``reduction="none"`` returns the elements instead of their sum.
    """
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    gap = targets - logits.sigmoid()
    modulator = gap.square() if beta == 2.0 else gap.abs().pow(beta)
    elements = bce * modulator
    return elements if reduction == "none" else elements.sum()


def dfl_targets(distances: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Distances in bin units (distance / stride) clamped to [0, reg_max − 0.1], the DFL target."""
    return distances.clamp(0.0, reg_max - DFL_TARGET_MARGIN)


def distribution_focal_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row DFL: CE at ⌊t⌋ weighted (⌊t⌋+1−t) plus CE at ⌊t⌋+1 weighted (t−⌊t⌋).

    Args:
        logits: (M, reg_max + 1) bin logits.
        targets: (M,) continuous targets in bin units, already clamped below reg_max
            (:func:`dfl_targets`).
    Returns:
        (M,) losses.
    """
    left = targets.floor().long()
    right = left + 1
    weight_left = right.to(targets.dtype) - targets
    weight_right = targets - left.to(targets.dtype)
    log_probs = F.log_softmax(logits, dim=-1)
    picked = log_probs.gather(1, torch.stack((left, right), dim=1))
    return -(picked[:, 0] * weight_left + picked[:, 1] * weight_right)


def giou_loss(pred_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
    """Per-row 1 − GIoU (eps 1e-7 on union and hull)."""
    return 1.0 - aligned_giou(pred_boxes, target_boxes)


def box_bin_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """(K,) T²·Σ_sides KL(softmax(r^T/T) ‖ softmax(r^S/T)) / 4 of K priors' box-bin logits.

    The logits are (K, 4·bins) (sides l, t, r, b); each side's KL is averaged over its bins
    and the 4 sides summed then divided by 4: ERD's distance between box distributions
    (docs/strategies.md §7).
    """
    student = (student_logits / temperature).unflatten(-1, (4, -1)).log_softmax(dim=-1)
    teacher = (teacher_logits / temperature).unflatten(-1, (4, -1)).log_softmax(dim=-1)
    kl = (teacher.exp() * (teacher - student)).mean(dim=-1)  # (K, 4)
    return temperature**2 * kl.sum(dim=-1) / 4.0
