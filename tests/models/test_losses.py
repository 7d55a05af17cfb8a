"""QFL, DFL and GIoU on hand-made numbers, and the whole head loss against a literal
plain-Python transcription of docs/detector.md §6–§7."""

from __future__ import annotations

import math

import pytest
import torch

from clod.models.head import NanoDetPlusHead, make_priors
from clod.models.losses import (
    dfl_targets,
    distribution_focal_loss,
    giou_loss,
    quality_focal_loss,
)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def bce(x: float, y: float) -> float:
    p = sigmoid(x)
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def focal(x: float, y: float) -> float:
    return bce(x, y) * abs(y - sigmoid(x)) ** 2


def log_softmax(values: list[float]) -> list[float]:
    top = max(values)
    log_norm = top + math.log(sum(math.exp(v - top) for v in values))
    return [v - log_norm for v in values]


# --------------------------------------------------------------------------- hand examples
def test_qfl_two_priors_by_hand() -> None:
    # Prior 0 is a positive of class 0 with IoU target 0.8; prior 1 is a negative.
    logits = [[0.5, -1.0], [2.0, 0.3]]
    targets = [[0.8, 0.0], [0.0, 0.0]]
    expected = sum(
        focal(x, y)
        for row_x, row_y in zip(logits, targets, strict=True)
        for x, y in zip(row_x, row_y, strict=True)
    )
    # Spot-check one term fully by hand: x = 2, y = 0 → softplus(2)·σ(2)².
    assert focal(2.0, 0.0) == pytest.approx(math.log1p(math.exp(2.0)) * sigmoid(2.0) ** 2)
    got = quality_focal_loss(
        torch.tensor(logits, dtype=torch.float64), torch.tensor(targets, dtype=torch.float64)
    )
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_dfl_two_rows_by_hand() -> None:
    logits = [[0.1 * k for k in range(8)], [1.0, -1.0, 0.5, 0.0, 2.0, 0.0, -0.5, 0.3]]
    targets = [2.3, 4.0]
    expected = []
    for row, t in zip(logits, targets, strict=True):
        lp = log_softmax(row)
        left = math.floor(t)
        expected.append(-(lp[left] * (left + 1 - t) + lp[left + 1] * (t - left)))
    got = distribution_focal_loss(
        torch.tensor(logits, dtype=torch.float64), torch.tensor(targets, dtype=torch.float64)
    )
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    # An integer target puts all weight on its own bin.
    assert expected[1] == pytest.approx(-log_softmax(logits[1])[4])


def test_giou_loss_two_pairs_by_hand() -> None:
    pred = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    gt = torch.tensor([[2.0, 2.0, 6.0, 6.0], [0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    # Pair 0: inter 4, union 28, hull 36 → GIoU = 1/7 − 8/36. Pair 1: identical → 0 loss.
    expected = torch.tensor([1 - (4 / 28 - 8 / 36), 0.0], dtype=torch.float64)
    torch.testing.assert_close(giou_loss(pred, gt), expected, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- literal reference
def reference_iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area = lambda r: max(0.0, r[2] - r[0]) * max(0.0, r[3] - r[1])  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def reference_giou(a: list[float], b: list[float], eps: float = 1e-7) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + eps
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1])) + eps
    return inter / union - (hull - union) / hull


def reference_assign(cls_row, boxes_row, centres, gts, gt_labels, multi_match="all_gts"):
    """Spec §7 step by step, one image, with Python loops over priors and GTs.

    A prior picked by several GTs goes to its cheapest GT over every GT (``all_gts``,
    upstream) or over the GTs that picked it (``selecting_gts``).
    """
    n = len(cls_row)
    inside = [any(g[0] < cx < g[2] and g[1] < cy < g[3] for g in gts) for cx, cy in centres]
    candidates = [i for i in range(n) if inside[i]]
    if not gts or not candidates:
        return {}
    num_classes = len(cls_row[0])
    iou = {(v, g): reference_iou(boxes_row[v], gts[g]) for v in candidates for g in range(len(gts))}
    cost = {}
    for (v, g), value in iou.items():
        cls_cost = sum(
            focal(cls_row[v][c], value if c == gt_labels[g] else 0.0) for c in range(num_classes)
        )
        cost[v, g] = cls_cost + 3.0 * -math.log(value + 1e-7)
    chosen: dict[int, list[int]] = {}
    for g in range(len(gts)):
        top = sorted((iou[v, g] for v in candidates), reverse=True)[: min(13, len(candidates))]
        k = max(1, math.floor(sum(top)))
        for v in sorted(candidates, key=lambda v: cost[v, g])[:k]:
            chosen.setdefault(v, []).append(g)
    assigned = {}
    for v, gs in chosen.items():
        pool = range(len(gts)) if multi_match == "all_gts" and len(gs) > 1 else gs
        g = min(pool, key=lambda g: cost[v, g])
        assigned[v] = (g, iou[v, g])
    return assigned


def reference_loss(
    raw,
    gts_per_image,
    labels_per_image,
    input_size,
    strides,
    num_classes,
    reg_max=7,
    multi_match="all_gts",
):
    """Spec §6 literally; the DFL target is clamped to reg_max − 0.1 (upstream's margin)."""
    bins = reg_max + 1
    priors = make_priors(input_size, strides, dtype=torch.float64)
    centres = priors.centres.tolist()
    prior_strides = priors.strides.tolist()
    qfl_sum, giou_sum, dfl_sum, weight_sum, num_pos = 0.0, 0.0, 0.0, 0.0, 0
    dfl_targets = []
    for image, (gts, gt_labels) in enumerate(zip(gts_per_image, labels_per_image, strict=True)):
        cls_row = [row[:num_classes] for row in raw[image]]
        reg_row = [row[num_classes:] for row in raw[image]]
        boxes_row = []
        for i, reg in enumerate(reg_row):
            distances = []
            for side in range(4):
                probs = [math.exp(v) for v in log_softmax(reg[bins * side : bins * (side + 1)])]
                distances.append(prior_strides[i] * sum(k * p for k, p in enumerate(probs)))
            cx, cy = centres[i]
            boxes_row.append(
                [cx - distances[0], cy - distances[1], cx + distances[2], cy + distances[3]]
            )
        assigned = reference_assign(cls_row, boxes_row, centres, gts, gt_labels, multi_match)
        for i in range(len(cls_row)):
            for c in range(num_classes):
                target = assigned[i][1] if i in assigned and gt_labels[assigned[i][0]] == c else 0.0
                qfl_sum += focal(cls_row[i][c], target)
        for i, (g, _) in assigned.items():
            num_pos += 1
            weight = max(sigmoid(x) for x in cls_row[i])
            weight_sum += weight
            giou_sum += weight * (1.0 - reference_giou(boxes_row[i], gts[g]))
            cx, cy = centres[i]
            gt = gts[g]
            sides = [cx - gt[0], cy - gt[1], gt[2] - cx, gt[3] - cy]
            for side, distance in enumerate(sides):
                t = min(max(distance / prior_strides[i], 0.0), reg_max - 0.1)
                dfl_targets.append(t)
                lp = log_softmax(reg_row[i][bins * side : bins * (side + 1)])
                left = math.floor(t)
                dfl_sum += weight * -(lp[left] * (left + 1 - t) + lp[left + 1] * (t - left))
    pos_factor = max(num_pos, 1)
    weight_factor = max(weight_sum, 1.0)
    return {
        "loss_qfl": qfl_sum / pos_factor,
        "loss_bbox": 2.0 * giou_sum / weight_factor,
        "loss_dfl": 0.25 * dfl_sum / (4 * weight_factor),
        "num_pos": num_pos,
        "dfl_targets": dfl_targets,
    }


HEAD_GTS = (
    [[5.0, 3.0, 40.0, 30.0], [30.0, 20.0, 90.0, 62.0], [60.0, 1.0, 75.0, 15.0]],
    [[10.0, 12.0, 33.0, 50.0]],
)
HEAD_LABELS = ([0, 2, 2], [1])
# Boxes spanning most of the 96×64 input: stride-8 priors reach up to ~11 bins from an edge.
LARGE_GTS = ([[0.5, 0.5, 95.5, 63.5], [2.0, 30.0, 94.0, 62.0]], [[0.5, 0.5, 95.5, 60.0]])
LARGE_LABELS = ([0, 1], [2])


def check_head_loss_against_reference(
    seed: int, reg_max: int = 7, multi_match: str = "all_gts", gts=HEAD_GTS, labels=HEAD_LABELS
) -> dict:
    gen = torch.Generator().manual_seed(seed)
    num_classes, input_size = 3, (64, 96)
    head = NanoDetPlusHead(
        num_classes,
        in_channels=8,
        feat_channels=8,
        stacked_convs=1,
        reg_max=reg_max,
        assigner={"multi_match": multi_match},
    )
    num_priors = make_priors(input_size, head.strides).centres.shape[0]
    raw = torch.randn(2, num_priors, head.num_outputs, generator=gen, dtype=torch.float64)
    raw[..., num_classes:] *= 2.0
    expected = reference_loss(
        raw.tolist(), gts, labels, input_size, head.strides, num_classes, reg_max, multi_match
    )
    assert expected["num_pos"] >= 4  # the example exercises the positive-side losses
    got = head.double().loss(
        raw,
        [torch.tensor(g, dtype=torch.float64) for g in gts],
        [torch.tensor(lab) for lab in labels],
        input_size,
    )
    for key in ("loss_qfl", "loss_bbox", "loss_dfl"):
        assert float(got[key]) == pytest.approx(expected[key], rel=1e-9), key
    assert float(got["loss"]) == pytest.approx(
        expected["loss_qfl"] + expected["loss_bbox"] + expected["loss_dfl"], rel=1e-9
    )
    return expected


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_head_loss_matches_the_literal_reference(seed: int) -> None:
    check_head_loss_against_reference(seed)


def test_head_loss_with_the_selecting_gts_rule_matches_the_reference() -> None:
    check_head_loss_against_reference(0, multi_match="selecting_gts")


@pytest.mark.parametrize("reg_max", [4, 10])
def test_dfl_target_clamp_follows_reg_max(reg_max: int) -> None:
    # The reference clamps at reg_max − 0.1; a fixed 6.9 would index past the last bin for
    # reg_max 4 and cut targets in (6.9, 9.9] short for reg_max 10.
    targets = check_head_loss_against_reference(
        0, reg_max=reg_max, gts=LARGE_GTS, labels=LARGE_LABELS
    )["dfl_targets"]
    assert max(targets) == pytest.approx(reg_max - 0.1)
    assert any(6.9 < t < reg_max - 0.1 for t in targets) == (reg_max == 10)


def test_dfl_targets_clamp_to_reg_max_minus_a_tenth() -> None:
    distances = torch.tensor([-1.0, 0.0, 3.5, 6.95, 8.5, 12.0], dtype=torch.float64)
    torch.testing.assert_close(
        dfl_targets(distances, 4),
        torch.tensor([0.0, 0.0, 3.5, 3.9, 3.9, 3.9], dtype=torch.float64),
    )
    torch.testing.assert_close(
        dfl_targets(distances, 10),
        torch.tensor([0.0, 0.0, 3.5, 6.95, 8.5, 9.9], dtype=torch.float64),
    )


def test_loss_without_positives_is_zero_but_attached() -> None:
    head = NanoDetPlusHead(2, in_channels=8, feat_channels=8, stacked_convs=1)
    raw = torch.randn(1, 85, 34, requires_grad=True)
    losses = head.loss(raw, [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)], (64, 64))
    assert float(losses["loss_bbox"].detach()) == 0.0 and float(losses["loss_dfl"].detach()) == 0.0
    assert losses["loss_bbox"].requires_grad and losses["loss_dfl"].requires_grad
    losses["loss"].backward()
    assert raw.grad is not None
    assert raw.grad[..., 2:].abs().sum() == 0  # no regression signal
    assert raw.grad[..., :2].abs().sum() > 0  # QFL pushes every class channel down


def test_class_mask_restricts_qfl_channels() -> None:
    gen = torch.Generator().manual_seed(3)
    head = NanoDetPlusHead(3, in_channels=8, feat_channels=8, stacked_convs=1)
    raw = torch.randn(1, 85, 35, generator=gen, requires_grad=True)
    boxes, labels = [torch.tensor([[4.0, 4.0, 40.0, 40.0]])], [torch.tensor([2])]
    mask = torch.tensor([False, True, True])
    head.loss(raw, boxes, labels, (64, 64), class_mask=mask)["loss"].backward()
    assert raw.grad[..., 0].abs().sum() == 0
    assert raw.grad[..., 1].abs().sum() > 0


def test_label_outside_the_head_raises() -> None:
    head = NanoDetPlusHead(2, in_channels=8, feat_channels=8, stacked_convs=1)
    with pytest.raises(ValueError, match="num_classes"):
        head.loss(
            torch.zeros(1, 85, 34),
            [torch.tensor([[4.0, 4, 40, 40]])],
            [torch.tensor([5])],
            (64, 64),
        )
