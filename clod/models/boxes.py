"""Box geometry: IoU/GIoU, format conversions, distance encoding and warp mapping.

All boxes are ``xyxy`` in pixels unless a name says otherwise.
"""

from __future__ import annotations

import torch

GIOU_EPS = 1e-7


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(
        min=0
    )


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """Top-left corner plus size (the COCO json layout)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    x, y, w, h = boxes.unbind(-1)
    return torch.stack((x, y, x + w, y + h), dim=-1)


def pairwise_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """IoU of every box in ``boxes1`` (..., N, 4) with every box in ``boxes2`` (..., M, 4).

    Returns (..., N, M). ``eps`` is added to the union; with the default 0 an empty union
    (two zero-area boxes) gives IoU 0 instead of NaN.
    """
    top_left = torch.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    bottom_right = torch.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1)[..., :, None] + box_area(boxes2)[..., None, :] - inter + eps
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)


def aligned_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = GIOU_EPS) -> torch.Tensor:
    """IoU of matching rows of two (..., 4) tensors, with ``eps`` added to the union."""
    top_left = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1) + box_area(boxes2) - inter + eps
    return inter / union


def aligned_giou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = GIOU_EPS) -> torch.Tensor:
    """Generalised IoU of matching rows, eps added to both the union and the hull (docs/detector.md §6)."""
    top_left = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1) + box_area(boxes2) - inter + eps
    hull_wh = (
        torch.maximum(boxes1[..., 2:], boxes2[..., 2:])
        - torch.minimum(boxes1[..., :2], boxes2[..., :2])
    ).clamp(min=0)
    hull = hull_wh[..., 0] * hull_wh[..., 1] + eps
    return inter / union - (hull - union) / hull


def distance_to_box(points: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """Box from a point (x, y) and its distances (left, top, right, bottom) to the four sides."""
    x, y = points[..., 0], points[..., 1]
    left, top, right, bottom = distances.unbind(-1)
    return torch.stack((x - left, y - top, x + right, y + bottom), dim=-1)


def box_to_distance(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`distance_to_box`: (left, top, right, bottom) from a point to a box."""
    x, y = points[..., 0], points[..., 1]
    return torch.stack(
        (x - boxes[..., 0], y - boxes[..., 1], boxes[..., 2] - x, boxes[..., 3] - y), dim=-1
    )


def clip_boxes(boxes: torch.Tensor, height: float, width: float) -> torch.Tensor:
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def warp_boxes(boxes: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply a 3×3 projective ``matrix`` to (n, 4) boxes: warp the 4 corners, take min/max.

    The arithmetic runs in the matrix's dtype (float64 for the data pipeline's warps) and
    the result is returned in the boxes' dtype.
    """
    if boxes.numel() == 0:
        return boxes.reshape(-1, 4)
    work = boxes.to(matrix.dtype)
    x1, y1, x2, y2 = work.unbind(-1)
    corners_x = torch.stack((x1, x2, x2, x1), dim=-1)
    corners_y = torch.stack((y1, y1, y2, y2), dim=-1)
    homogeneous = torch.stack((corners_x, corners_y, torch.ones_like(corners_x)), dim=-1)
    mapped = homogeneous @ matrix.T  # (n, 4 corners, 3)
    xy = mapped[..., :2] / mapped[..., 2:3]
    top_left = xy.amin(dim=1)
    bottom_right = xy.amax(dim=1)
    return torch.cat((top_left, bottom_right), dim=-1).to(boxes.dtype)


def to_original(
    boxes: torch.Tensor, warp: torch.Tensor, orig_size: torch.Tensor | None = None
) -> torch.Tensor:
    """Boxes in input pixels → original-image pixels through the inverse of ``warp``
    (the original→input 3×3 matrix), clipped to ``orig_size`` (height, width) if given."""
    boxes = warp_boxes(boxes, torch.linalg.inv(warp.to(torch.float64)))
    if orig_size is not None:
        orig_h, orig_w = (float(v) for v in orig_size)
        boxes = clip_boxes(boxes, orig_h, orig_w)
    return boxes
