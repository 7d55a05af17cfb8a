"""YOLOX training losses (docs/yolox.md §4.4 and §5), batched over images.

The functions here know nothing of the head: they take the head's outputs laid out per prior,
the :class:`~clod.models.assigner.Assignment` of :func:`clod.models.yolox.simota.simota_assign`,
the padded GTs and the prior grid, and return the loss terms.

Normalisation follows upstream: every term is a sum divided by num_fg = max(number of
positives in the local batch, 1). num_fg is **not** averaged over DDP ranks — each process
normalises by its own count and DDP averages the gradients (docs/yolox.md §5).

The positive-side terms (IoU, cls, L1) are computed on the positives only, selected by boolean
indexing as upstream does. A dense form (every prior, masked) would avoid that host sync but
would let an overflowing ``exp`` in some negative prior's box turn the masked sum into NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from clod.models.assigner import Assignment
from clod.models.boxes import aligned_iou

REG_WEIGHT = 5.0  # the IoU loss weight; the other terms have weight 1
IOU_LOSS_EPS = 1e-16  # added to the union
L1_EPS = 1e-8  # inside log(w / s + eps)


def iou_loss_squared(pred_xyxy: Tensor, target_xyxy: Tensor) -> Tensor:
    """Per-row 1 − IoU² (upstream's ``loss_type="iou"``), (K, 4) × (K, 4) → (K,).

    IoU = inter / (union + 1e-16), the intersection 0 when the boxes do not overlap.
    """
    return 1.0 - aligned_iou(pred_xyxy, target_xyxy, eps=IOU_LOSS_EPS).square()


def l1_targets(gt_xyxy: Tensor, grid: Tensor, strides: Tensor) -> Tensor:
    """The raw (t_x, t_y, t_w, t_h) that decodes exactly to ``gt_xyxy`` at a prior.

    [cx/s − x, cy/s − y, log(w/s + 1e-8), log(h/s + 1e-8)], with (x, y) the integer grid
    indices (the decode uses the cell corner x·s, not the centre; docs/yolox.md §2.4, §4.4).

    Args:
        gt_xyxy: (..., 4) boxes. grid: (..., 2) cell indices (x = column, y = row).
        strides: (...) stride of each prior. Leading shapes broadcast.
    """
    x1, y1, x2, y2 = gt_xyxy.unbind(-1)
    s = strides
    return torch.stack(
        (
            (x1 + x2) / 2 / s - grid[..., 0],
            (y1 + y2) / 2 / s - grid[..., 1],
            torch.log((x2 - x1) / s + L1_EPS),
            torch.log((y2 - y1) / s + L1_EPS),
        ),
        dim=-1,
    )


def _graph_zero(tensor: Tensor, dtype: torch.dtype) -> Tensor:
    """A 0 attached to ``tensor``'s graph (DDP wants a gradient for every parameter).

    Summing an empty slice, rather than ``tensor.sum() * 0``, stays 0 even if ``tensor``
    holds inf or NaN somewhere.
    """
    return tensor.to(dtype).reshape(-1)[:0].sum()


def yolox_losses(
    box_logits: Tensor,
    pred_boxes: Tensor,
    obj_logits: Tensor,
    cls_logits: Tensor,
    assignment: Assignment,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    grid: Tensor,
    strides: Tensor,
    use_l1: bool,
    class_mask: Tensor | None = None,
    cls_weight: Tensor | None = None,
    box_mask: Tensor | None = None,
    obj_weight: Tensor | None = None,
) -> dict[str, Tensor]:
    """YOLOX losses of one process's batch (docs/yolox.md §5), computed in at least float32.

    Args:
        box_logits: (B, N, 4) raw (t_x, t_y, t_w, t_h), the L1 loss's input.
        pred_boxes: (B, N, 4) decoded boxes, xyxy, input pixels, the IoU loss's input.
        obj_logits: (B, N). cls_logits: (B, N, C).
        assignment: the SimOTA result; ``iou`` scales the cls target (detached here).
        gt_boxes: (B, G, 4) padded GT boxes, xyxy. gt_labels: (B, G) int64.
        grid: (N, 2) integer cell indices. strides: (N,). Both only build the L1 targets.
        use_l1: the L1 term is on (upstream: from the no-augmentation epochs on).
        class_mask: (C,) bool; the cls loss covers only these channels (e.g. the classes a
            continual-learning task trains), on every positive.
        cls_weight: (B, N) or (B, N, C) multiplier of each cls BCE element; only positives'
            entries matter (the cls loss has no negatives); 0 leaves an element out.
        box_mask: (B, N) bool; positives outside it get no IoU and no L1 loss.
        obj_weight: (B, N) multiplier of each obj BCE element; 0 leaves a prior out.

    The controls never renormalise: num_fg stays the number of positives, so leaving
    elements out lowers a term rather than re-weighting the rest, and a strategy that wants a
    different normaliser can rescale the returned terms itself.

    Returns:
        ``loss`` = loss_iou + loss_obj + loss_cls + loss_l1, ``loss_iou`` (already × 5),
        ``loss_obj``, ``loss_cls``, ``loss_l1`` and ``num_fg`` (the normaliser, detached).
        With no positive, the IoU / cls / L1 terms are zeros attached to the graph.
    """
    work = torch.promote_types(cls_logits.dtype, torch.float32)
    batch, num_priors, num_classes = cls_logits.shape
    positive = assignment.positive
    num_fg = positive.sum().to(work).clamp(min=1.0)

    # Each prior's GT (garbage but harmless where negative: only positives are read).
    if gt_boxes.shape[1] == 0:  # no GT column: nothing can be positive
        matched_boxes = gt_boxes.new_zeros(batch, num_priors, 4)
        matched_labels = gt_labels.new_zeros(batch, num_priors)
    else:
        index = assignment.gt_index
        matched_boxes = gt_boxes.gather(1, index[..., None].expand(-1, -1, 4))
        matched_labels = gt_labels.gather(1, index)

    # Box terms: the positives inside box_mask.
    box_positive = positive if box_mask is None else positive & box_mask
    target_boxes = matched_boxes[box_positive].to(work)
    loss_iou = (
        REG_WEIGHT
        * iou_loss_squared(pred_boxes[box_positive].to(work), target_boxes).sum()
        / num_fg
    )
    if use_l1:
        prior_grid = grid.to(box_logits.device, work).expand(batch, num_priors, 2)[box_positive]
        prior_strides = strides.to(box_logits.device, work).expand(batch, num_priors)[box_positive]
        targets = l1_targets(target_boxes, prior_grid, prior_strides)
        loss_l1 = (box_logits[box_positive].to(work) - targets).abs().sum() / num_fg
    else:
        loss_l1 = _graph_zero(box_logits, work)

    # Objectness: every prior, target 1 on positives and 0 elsewhere.
    obj_elements = F.binary_cross_entropy_with_logits(
        obj_logits.to(work), positive.to(work), reduction="none"
    )
    if obj_weight is not None:
        obj_elements = obj_elements * obj_weight.to(work)
    loss_obj = obj_elements.sum() / num_fg

    # Classification: positives only, one-hot scaled by the prediction's IoU with its GT.
    soft_label = assignment.iou[positive].detach().to(work)
    cls_target = F.one_hot(matched_labels[positive], num_classes).to(work) * soft_label[:, None]
    cls_elements = F.binary_cross_entropy_with_logits(
        cls_logits[positive].to(work), cls_target, reduction="none"
    )  # (K, C)
    if cls_weight is not None:
        weight = cls_weight[positive].to(work)
        cls_elements = cls_elements * (weight[:, None] if weight.dim() == 1 else weight)
    if class_mask is not None:
        if class_mask.shape != (num_classes,):
            raise ValueError(f"class_mask must have shape ({num_classes},), got {class_mask.shape}")
        # where, not a product: a left-out channel stays out even if its element is inf.
        cls_elements = torch.where(
            class_mask.to(cls_elements.device, torch.bool), cls_elements, 0.0
        )
    loss_cls = cls_elements.sum() / num_fg

    return {
        "loss": loss_iou + loss_obj + loss_cls + loss_l1,
        "loss_iou": loss_iou,
        "loss_obj": loss_obj,
        "loss_cls": loss_cls,
        "loss_l1": loss_l1,
        "num_fg": num_fg.detach(),
    }
