"""DynamicSoftLabelAssigner on hand-checkable cases (docs/detector.md §7)."""

from __future__ import annotations

import math

import pytest
import torch

from clod.models.assigner import assign
from clod.models.head import NanoDetPlusHead, make_priors
from tests.models.helpers import build_model
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


@pytest.mark.parametrize("multi_match", ["all_gts", "selecting_gts"])
def test_batched_assignment_matches_the_literal_reference_per_image(multi_match: str) -> None:
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
    result = assign(
        cls_logits,
        pred,
        priors.centres.double(),
        gt_boxes,
        gt_labels,
        valid,
        multi_match=multi_match,
    )
    for image in range(3):
        expected = reference_assign(
            cls_logits[image].tolist(),
            pred[image].tolist(),
            priors.centres.tolist(),
            gts[image],
            labels[image],
            multi_match,
        )
        positives = result.positive[image].nonzero().squeeze(1).tolist()
        assert positives == sorted(expected)
        for prior in positives:
            assert int(result.gt_index[image, prior]) == expected[prior][0]
            assert float(result.iou[image, prior]) == pytest.approx(expected[prior][1], rel=1e-9)
    assert result.positive[0].sum() > 5


def cost_at(iou: float) -> float:
    """The cost of a prior with one class, logit 0 (σ = ½), against a GT it overlaps by ``iou``.

    cls_cost = BCE(0, iou)·(iou − ½)² = ln 2·(iou − ½)², iou_cost = −ln(iou + 1e-7); the total
    ln 2·(iou − ½)² − 3·ln(iou + 1e-7) falls as the IoU rises, so cheaper means higher IoU.
    """
    return math.log(2.0) * (iou - 0.5) ** 2 - 3.0 * math.log(iou + 1e-7)


def test_the_two_conflict_rules_on_a_hand_built_case() -> None:
    # Four priors, GTs A, B, C (one class, every logit 0) and one padding slot:
    #   A = [0, 0, 10, 5], B = [0, 0, 4, 10], C = [2, 0, 12, 10].
    # p0: centre (3, 3), inside A, B and C, predicts [0, 0, 10, 10]:
    #     IoU A = 50/100 = 0.5, B = 40/100 = 0.4, C = 80/120 = 2/3.
    # p1: centre (8, 8), inside C only, predicts C itself:
    #     IoU A = 40/110 = 4/11, B = 20/120 = 1/6, C = 1.
    # p2: centre (11, 9), inside C only, predicts [30, 30, 40, 40]: IoU 0 with every GT.
    # p3: centre (20, 20), inside no GT: not a candidate, although it predicts [0, 0, 10, 10].
    # Costs (cost_at): p0: A 2.079, B 2.756, C 1.236; p1: A 3.048, B 5.452, C 0.173;
    #     p2: 48.5 for all. The padding slot is p0's own box (IoU 1, cost 0.173) but invalid.
    # Dynamic k = max(1, ⌊Σ IoU over candidates⌋): A ⌊0.5 + 0.364⌋, B ⌊0.4 + 0.167⌋,
    #     C ⌊2/3 + 1⌋, all 1. A picks p0 (2.079 < 3.048), B picks p0 (2.756 < 5.452),
    #     C picks p1 (0.173 < 1.236).
    # p0 is picked by A and B:
    #   selecting_gts: argmin over {A, B} → A (2.079 < 2.756); p1 → C.
    #   all_gts: argmin over {A, B, C} → C (1.236), which did not pick p0; p1 → C. A and B
    #     are left without a positive, as upstream leaves them.
    assert cost_at(2 / 3) < cost_at(0.5) < cost_at(0.4) < cost_at(4 / 11) < cost_at(1 / 6)
    centres = torch.tensor([[3.0, 3.0], [8.0, 8.0], [11.0, 9.0], [20.0, 20.0]])
    pred = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [2.0, 0.0, 12.0, 10.0], [30.0, 30.0, 40.0, 40.0], [0, 0, 10, 10]]
    )
    gts = torch.tensor(
        [[0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 4.0, 10.0], [2.0, 0.0, 12.0, 10.0], [0, 0, 10, 10]]
    )
    valid = torch.tensor([[True, True, True, False]])
    labels = torch.zeros(1, 4, dtype=torch.long)
    expected = {"selecting_gts": ([0, 2], [0.5, 1.0]), "all_gts": ([2, 2], [2 / 3, 1.0])}
    for rule, (gt_index, iou) in expected.items():
        result = assign(
            torch.zeros(1, 4, 1), pred[None], centres, gts[None], labels, valid, multi_match=rule
        )
        assert result.positive[0].tolist() == [True, True, False, False], rule
        assert result.gt_index[0, :2].tolist() == gt_index, rule
        torch.testing.assert_close(result.iou[0, :2], torch.tensor(iou))
    # The default is upstream's rule.
    default = assign(torch.zeros(1, 4, 1), pred[None], centres, gts[None], labels, valid)
    assert default.gt_index[0, :2].tolist() == expected["all_gts"][0]


def test_unknown_conflict_rule_is_rejected() -> None:
    n = make_priors(INPUT, STRIDES).centres.shape[0]
    with pytest.raises(ValueError, match="multi_match"):
        assign(
            torch.zeros(1, n, 1),
            boxes_around_centres(torch.full((n,), 4.0))[None],
            make_priors(INPUT, STRIDES).centres,
            torch.tensor([[[8.0, 8.0, 40.0, 40.0]]]),
            torch.zeros(1, 1, dtype=torch.long),
            torch.ones(1, 1, dtype=torch.bool),
            multi_match="cheapest",
        )
    with pytest.raises(ValueError, match="multi_match"):
        NanoDetPlusHead(2, assigner={"multi_match": "cheapest"})
    with pytest.raises(ValueError, match="unknown assigner options"):
        NanoDetPlusHead(2, assigner={"multimatch": "all_gts"})


def test_the_model_config_reaches_the_assigner(monkeypatch: pytest.MonkeyPatch) -> None:
    import clod.models.head as head_module

    detector = build_model("nanodet_tiny", 2)
    assert detector.head.assigner_cfg == {"multi_match": "all_gts"}
    head = NanoDetPlusHead(2, in_channels=8, feat_channels=8, stacked_convs=1)
    head.assigner_cfg = {"multi_match": "selecting_gts", "topk": 5}
    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return assign(*args, **kwargs)

    monkeypatch.setattr(head_module, "assign", spy)
    head.loss(
        torch.zeros(1, 85, 34), [torch.tensor([[4.0, 4, 40, 40]])], [torch.tensor([1])], INPUT
    )
    assert seen == {"multi_match": "selecting_gts", "topk": 5}


def test_a_crowded_image_matches_the_reference_under_both_rules_and_they_differ() -> None:
    # Eight random GTs on a 64×64 input (seed 1 makes one contested prior change hands).
    gen = torch.Generator().manual_seed(1)
    centres = make_priors(INPUT, STRIDES).centres.double()
    n = centres.shape[0]
    cls_logits = torch.randn(1, n, 3, generator=gen, dtype=torch.float64)
    half = 2.0 + 14.0 * torch.rand(1, n, 2, generator=gen, dtype=torch.float64)
    pred = torch.cat((centres - half, centres + half), dim=2)
    corner = torch.randint(0, 48, (8, 2), generator=gen).double()
    size = torch.randint(6, 33, (8, 2), generator=gen).double()
    gts = torch.cat((corner, (corner + size).clamp(max=64.0)), dim=1)[None]
    labels = torch.randint(0, 3, (1, 8), generator=gen)
    valid = torch.ones(1, 8, dtype=torch.bool)
    gt_index = {}
    for rule in ("all_gts", "selecting_gts"):
        result = assign(cls_logits, pred, centres, gts, labels, valid, multi_match=rule)
        expected = reference_assign(
            cls_logits[0].tolist(), pred[0].tolist(), centres.tolist(), gts[0].tolist(),
            labels[0].tolist(), rule,
        )  # fmt: skip
        positives = result.positive[0].nonzero().squeeze(1).tolist()
        assert positives == sorted(expected)
        assert [int(result.gt_index[0, p]) for p in positives] == [
            expected[p][0] for p in positives
        ]
        gt_index[rule] = result.gt_index[0, positives]
    assert int((gt_index["all_gts"] != gt_index["selecting_gts"]).sum()) == 1
