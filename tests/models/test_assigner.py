"""DynamicSoftLabelAssigner on hand-checkable cases (nanodet_plus.md §7)."""

from __future__ import annotations

import math

import pytest
import torch

from clod.models.assigner import assign
from clod.models.head import make_priors
from tests.models.test_losses import reference_assign, reference_iou

INPUT = (64, 64)
STRIDES = (8, 16, 32, 64)


def run(cls_logits, pred_boxes, gts, labels):
    priors = make_priors(INPUT, STRIDES)
    gt_boxes = torch.tensor([gts], dtype=torch.float32).reshape(1, -1, 4)
    gt_labels = torch.tensor([labels], dtype=torch.long).reshape(1, -1)
    valid = torch.ones_like(gt_labels, dtype=torch.bool)
    return assign(cls_logits[None], pred_boxes[None], priors.centres, gt_boxes, gt_labels, valid)


def boxes_around_centres(half_size: torch.Tensor) -> torch.Tensor:
    centres = make_priors(INPUT, STRIDES).centres
    return torch.cat((centres - half_size[:, None], centres + half_size[:, None]), dim=1)


def test_one_gt_gets_floor_of_summed_top_ious_positives_all_inside() -> None:
    centres = make_priors(INPUT, STRIDES).centres
    n = centres.shape[0]
    # Every prior predicts a 24×24 box around its own centre; the GT is the 24×24 box at
    # (20..44, 20..44). Class logits are equal, so the cost order follows the IoU.
    pred = boxes_around_centres(torch.full((n,), 12.0))
    gt = [20.0, 20.0, 44.0, 44.0]
    result = run(torch.zeros(n, 2), pred, [gt], [1])

    inside = [i for i, (x, y) in enumerate(centres.tolist()) if 20 < x < 44 and 20 < y < 44]
    ious = sorted((reference_iou(pred[i].tolist(), gt) for i in inside), reverse=True)
    expected_k = max(1, math.floor(sum(ious[:13])))
    positives = result.positive[0].nonzero().squeeze(1).tolist()
    assert len(positives) == expected_k
    assert set(positives) <= set(inside)
    # The positives are the highest-IoU candidates (lowest cost at equal logits).
    chosen_ious = sorted((reference_iou(pred[i].tolist(), gt) for i in positives), reverse=True)
    assert chosen_ious == ious[:expected_k]
    torch.testing.assert_close(
        result.iou[0, positives],
        torch.tensor([reference_iou(pred[i].tolist(), gt) for i in positives]),
    )


def test_centres_on_the_gt_border_are_not_candidates() -> None:
    centres = make_priors(INPUT, STRIDES).centres
    n = centres.shape[0]
    pred = boxes_around_centres(torch.full((n,), 8.0))
    # Edges pass through stride-8 centres; only (16, 16) lies strictly inside, at the
    # stride-8 and stride-16 levels. Both predict the GT itself (IoU 1), so k = ⌊1 + 1⌋ = 2.
    result = run(torch.zeros(n, 1), pred, [[8.0, 8.0, 24.0, 24.0]], [0])
    positives = result.positive[0].nonzero().squeeze(1).tolist()
    assert len(positives) == 2
    assert [centres[i].tolist() for i in positives] == [[16.0, 16.0], [16.0, 16.0]]
    assert make_priors(INPUT, STRIDES).strides[positives].tolist() == [8.0, 16.0]


def test_a_prior_claimed_by_two_gts_keeps_the_cheaper_one() -> None:
    centres = make_priors(INPUT, STRIDES).centres
    n = centres.shape[0]
    target = next(i for i, c in enumerate(centres.tolist()) if c == [40.0, 40.0])
    pred = boxes_around_centres(torch.full((n,), 1.0))
    pred[target] = torch.tensor([30.0, 30.0, 50.0, 50.0])
    # Both GTs contain only the centre (40, 40) of the grid, so both must take it (k ≥ 1).
    gt_close = [33.0, 33.0, 47.0, 47.0]  # IoU with the prediction 196/400
    gt_far = [38.0, 38.0, 41.0, 41.0]  # IoU 9/400
    for order in ([gt_close, gt_far], [gt_far, gt_close]):
        result = run(torch.zeros(n, 1), pred, order, [0, 0])
        assert result.positive[0].nonzero().squeeze(1).tolist() == [target]
        assert order[int(result.gt_index[0, target])] == gt_close
        assert float(result.iou[0, target]) == pytest.approx(196 / 400)


def test_no_gt_or_no_candidate_means_all_negative() -> None:
    n = make_priors(INPUT, STRIDES).centres.shape[0]
    pred = boxes_around_centres(torch.full((n,), 4.0))
    empty = run(torch.zeros(n, 2), pred, [], [])
    assert not empty.positive.any()
    # A GT between grid centres contains none of them.
    between = run(torch.zeros(n, 2), pred, [[1.0, 1.0, 7.0, 7.0]], [0])
    assert not between.positive.any()


def test_batched_assignment_matches_the_literal_reference_per_image() -> None:
    gen = torch.Generator().manual_seed(11)
    priors = make_priors(INPUT, STRIDES)
    n = priors.centres.shape[0]
    cls_logits = torch.randn(3, n, 4, generator=gen, dtype=torch.float64)
    half = 4.0 + 20.0 * torch.rand(3, n, 2, generator=gen, dtype=torch.float64)
    pred = torch.cat((priors.centres - half, priors.centres + half), dim=2)
    gts = [
        [[2.0, 3.0, 30.0, 41.0], [20.0, 18.0, 60.0, 50.0], [25.0, 25.0, 45.0, 45.0]],
        [],
        [[10.0, 5.0, 50.0, 30.0]],
    ]
    labels = [[0, 3, 3], [], [2]]
    gt_boxes = torch.zeros(3, 3, 4, dtype=torch.float64)
    gt_labels = torch.zeros(3, 3, dtype=torch.long)
    valid = torch.zeros(3, 3, dtype=torch.bool)
    for image, (boxes, image_labels) in enumerate(zip(gts, labels, strict=True)):
        gt_boxes[image, : len(boxes)] = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)
        gt_labels[image, : len(boxes)] = torch.tensor(image_labels, dtype=torch.long)
        valid[image, : len(boxes)] = True
    result = assign(cls_logits, pred, priors.centres.double(), gt_boxes, gt_labels, valid)
    for image in range(3):
        expected = reference_assign(
            cls_logits[image].tolist(),
            pred[image].tolist(),
            priors.centres.tolist(),
            gts[image],
            labels[image],
        )
        positives = result.positive[image].nonzero().squeeze(1).tolist()
        assert positives == sorted(expected)
        for prior in positives:
            assert int(result.gt_index[image, prior]) == expected[prior][0]
            assert float(result.iou[image, prior]) == pytest.approx(expected[prior][1], rel=1e-9)
    assert result.positive[0].sum() > 5
