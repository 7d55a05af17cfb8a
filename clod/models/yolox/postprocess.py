"""YOLOX post-processing (docs/yolox.md §6): decoded priors → per-image detections."""

from __future__ import annotations

import torch

from clod.models.nms import nms_detections


def detections(
    boxes: torch.Tensor,
    obj_logits: torch.Tensor,
    cls_logits: torch.Tensor,
    warps: torch.Tensor | None,
    orig_sizes: torch.Tensor | None,
    score_thr: float,
    nms_iou: float,
    max_det: int,
    class_mask: torch.Tensor | None,
) -> list[dict[str, torch.Tensor]]:
    """One label per prior, its best class (among ``class_mask``); kept when σ(obj) × σ(cls)
    ≥ ``score_thr``; class-aware NMS, at most ``max_det`` per image.

    ``boxes``: (B, N, 4) decoded xyxy in input pixels (not clipped, as upstream);
    ``obj_logits``: (B, N); ``cls_logits``: (B, N, C). Mapped back through ``warps``, boxes
    are clipped to ``orig_sizes``.
    """
    class_scores = cls_logits.sigmoid()
    if class_mask is not None:
        class_scores = class_scores * class_mask.to(class_scores)
    best, label = class_scores.max(dim=-1)
    scores = obj_logits.sigmoid() * best
    results: list[dict[str, torch.Tensor]] = []
    for image in range(boxes.shape[0]):
        prior_idx = (scores[image] >= score_thr).nonzero().squeeze(1)  # ≥, as upstream
        results.append(
            nms_detections(
                boxes[image, prior_idx],
                scores[image, prior_idx],
                label[image, prior_idx],
                nms_iou,
                max_det,
                None if warps is None else warps[image],
                None if orig_sizes is None else orig_sizes[image],
            )
        )
    return results
