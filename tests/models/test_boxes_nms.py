"""Box geometry and class-aware NMS (docs/detector.md §5, §8)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from clod.models.boxes import (
    aligned_giou,
    box_to_distance,
    cxcywh_to_xyxy,
    distance_to_box,
    pairwise_iou,
    warp_boxes,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)
from clod.models.nms import batched_nms, grouped_nms


def python_iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def random_boxes(rng: random.Random, n: int, extent: float = 100.0) -> list[list[float]]:
    boxes = []
    for _ in range(n):
        x, y = rng.uniform(0, extent), rng.uniform(0, extent)
        w, h = rng.uniform(2, 40), rng.uniform(2, 40)
        boxes.append([x, y, x + w, y + h])
    return boxes


# --------------------------------------------------------------------------- geometry
def test_pairwise_iou_matches_a_python_reference() -> None:
    rng = random.Random(0)
    a, b = random_boxes(rng, 7), random_boxes(rng, 5)
    got = pairwise_iou(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    expected = torch.tensor([[python_iou(p, q) for q in b] for p in a], dtype=torch.float64)
    torch.testing.assert_close(got, expected)


def test_giou_of_overlapping_and_disjoint_boxes() -> None:
    pred = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 2.0, 2.0]], dtype=torch.float64)
    gt = torch.tensor([[5.0, 5.0, 15.0, 15.0], [4.0, 0.0, 6.0, 2.0]], dtype=torch.float64)
    # overlap: inter 25, union 175, hull 15² = 225; disjoint: inter 0, union 8, hull 6·2 = 12.
    expected = torch.tensor([25 / 175 - (225 - 175) / 225, 0 - (12 - 8) / 12], dtype=torch.float64)
    torch.testing.assert_close(aligned_giou(pred, gt, eps=0.0), expected)
    torch.testing.assert_close(aligned_giou(pred, gt), expected, atol=1e-7, rtol=0)


def test_format_conversions_round_trip() -> None:
    boxes = torch.tensor([[1.0, 2.0, 5.0, 10.0], [-3.0, 0.5, 7.25, 1.5]])
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes)
    torch.testing.assert_close(xywh_to_xyxy(xyxy_to_xywh(boxes)), boxes)
    torch.testing.assert_close(xyxy_to_cxcywh(boxes)[0], torch.tensor([3.0, 6.0, 4.0, 8.0]))


def test_distance_encoding_round_trips() -> None:
    gen = torch.Generator().manual_seed(1)
    points = torch.rand(20, 2, generator=gen) * 100
    distances = torch.rand(20, 4, generator=gen) * 50
    boxes = distance_to_box(points, distances)
    torch.testing.assert_close(box_to_distance(points, boxes), distances)
    # left/top/right/bottom are measured from the point to each side.
    point, box = torch.tensor([10.0, 20.0]), torch.tensor([4.0, 15.0, 13.0, 30.0])
    torch.testing.assert_close(box_to_distance(point, box), torch.tensor([6.0, 5.0, 3.0, 10.0]))


def test_warp_boxes_inverse_maps_back() -> None:
    # original → input: scale 0.64, shift (10, -4); a box at (50, 40)-(150, 90) lands at
    # (42, 21.6)-(106, 53.6), computed by hand.
    warp = torch.tensor([[0.64, 0, 10.0], [0, 0.64, -4.0], [0, 0, 1]], dtype=torch.float64)
    original = torch.tensor([[50.0, 40.0, 150.0, 90.0]])
    warped = warp_boxes(original, warp)
    torch.testing.assert_close(warped, torch.tensor([[42.0, 21.6, 106.0, 53.6]]))
    torch.testing.assert_close(warp_boxes(warped, torch.linalg.inv(warp)), original)


def test_warp_boxes_with_a_flip_takes_min_and_max_of_corners() -> None:
    # Horizontal flip of a 100-wide image: x → 100 − x.
    flip = torch.tensor([[-1.0, 0, 100.0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    got = warp_boxes(torch.tensor([[10.0, 5.0, 30.0, 25.0]]), flip)
    torch.testing.assert_close(got, torch.tensor([[70.0, 5.0, 90.0, 25.0]]))


# --------------------------------------------------------------------------- NMS
def reference_nms(
    boxes: list[list[float]], scores: list[float], labels: list[int], threshold: float
) -> list[int]:
    """Textbook greedy NMS: walk in descending score (stable), drop IoU > threshold."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept: list[int] = []
    for i in order:
        if all(labels[k] != labels[i] or python_iou(boxes[k], boxes[i]) <= threshold for k in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("seed", range(12))
def test_nms_matches_the_brute_force_reference(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 300)
    boxes = random_boxes(rng, n, extent=rng.choice([30.0, 100.0]))
    scores = [rng.random() for _ in range(n)]
    labels = [rng.randint(0, 3) for _ in range(n)]
    threshold = rng.choice([0.3, 0.5, 0.6])
    # Keep the comparison away from float rounding right at the threshold.
    assert all(abs(python_iou(p, q) - threshold) > 1e-5 for p in boxes for q in boxes if p is not q)
    expected = reference_nms(boxes, scores, labels, threshold)
    got = batched_nms(
        torch.tensor(boxes), torch.tensor(scores), torch.tensor(labels), threshold, block_size=64
    )
    assert got.tolist() == expected
    grouped = grouped_nms(
        torch.tensor(boxes), torch.tensor(scores), torch.tensor(labels), threshold
    )
    assert grouped.tolist() == expected


@pytest.mark.parametrize("seed", range(6))
def test_grouped_nms_equals_batched_nms_with_ties_many_groups_and_its_fallback(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    count = 400
    corners = torch.rand(count, 2, generator=generator) * 200
    boxes = torch.cat((corners, corners + torch.rand(count, 2, generator=generator) * 60 + 1), 1)
    scores = (torch.rand(count, generator=generator) * 6).round() / 6  # many exact ties
    groups = torch.randint(0, 40, (count,), generator=generator)  # e.g. 2 images × 20 classes
    for threshold in (0.005, 0.5, 0.95):
        expected = batched_nms(boxes, scores, groups, threshold)
        assert torch.equal(grouped_nms(boxes, scores, groups, threshold), expected)
        # too many pairs for the grouped path: the dense one answers, the same way
        assert torch.equal(grouped_nms(boxes, scores, groups, threshold, max_pairs=10), expected)
    assert grouped_nms(boxes[:0], scores[:0], groups[:0], 0.5).numel() == 0


def test_nms_blocks_and_max_keep_do_not_change_the_result() -> None:
    rng = random.Random(7)
    boxes = torch.tensor(random_boxes(rng, 500, extent=60.0))
    scores = torch.rand(500, generator=torch.Generator().manual_seed(7))
    labels = torch.randint(0, 2, (500,), generator=torch.Generator().manual_seed(8))
    full = batched_nms(boxes, scores, labels, 0.5, block_size=10_000)
    assert batched_nms(boxes, scores, labels, 0.5, block_size=17).tolist() == full.tolist()
    assert batched_nms(boxes, scores, labels, 0.5, max_keep=9, block_size=5).tolist() == (
        full[:9].tolist()
    )


def test_nms_empty_input() -> None:
    got = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.6)
    assert got.shape == (0,) and got.dtype == torch.long


def test_nms_iou_exactly_at_threshold_is_kept_and_just_above_is_dropped() -> None:
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # score 0.9
            [0.0, 0.0, 10.0, 6.0],  # IoU 60/100 = 0.6 exactly: kept (drop needs > 0.6)
            [0.0, 0.0, 10.0, 6.1],  # IoU 61/100 = 0.61: dropped
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.zeros(3, dtype=torch.long)
    assert batched_nms(boxes, scores, labels, 0.6).tolist() == [0, 1]


def test_nms_ties_keep_input_order() -> None:
    box = [5.0, 5.0, 25.0, 25.0]
    boxes = torch.tensor([box, box, [100.0, 100.0, 110.0, 110.0], box])
    scores = torch.tensor([0.5, 0.5, 0.5, 0.5])
    labels = torch.zeros(4, dtype=torch.long)
    # Identical boxes with identical scores: the first one wins, the others are suppressed.
    assert batched_nms(boxes, scores, labels, 0.6).tolist() == [0, 2]


def test_nms_different_classes_never_suppress_each_other() -> None:
    box = [0.0, 0.0, 10.0, 10.0]
    boxes = torch.tensor([box, box, box, [0.0, 0.0, 10.0, 9.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([0, 1, 2, 0])
    assert batched_nms(boxes, scores, labels, 0.6).tolist() == [0, 1, 2]


def test_nms_chain_suppression_follows_greedy_order() -> None:
    # A suppresses B, B would suppress C, but B is gone, so C survives.
    boxes = torch.tensor([[0.0, 0, 10, 10], [3.0, 0, 13, 10], [6.0, 0, 16, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.zeros(3, dtype=torch.long)
    assert math.isclose(python_iou(boxes[0].tolist(), boxes[1].tolist()), 70 / 130)
    assert python_iou(boxes[0].tolist(), boxes[2].tolist()) < 0.5
    assert batched_nms(boxes, scores, labels, 0.5).tolist() == [0, 2]
