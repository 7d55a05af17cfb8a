"""YOLOX losses (/work/shared/spec/yolox.md §4.4, §5) on hand-worked numbers.

BCE-with-logits by hand: BCE(x, y) = −y·ln σ(x) − (1 − y)·ln(1 − σ(x)) = softplus(x) − x·y, so
BCE(0, y) = ln 2 for every y, and with σ(ln 3) = ¾: BCE(ln 3, 0) = ln 4, BCE(ln 3, 1) = ln(4/3).
The loss function takes the raw box logits and the decoded boxes as separate inputs, so the
cases below set each one directly rather than decoding one from the other.
"""

from __future__ import annotations

import math

import pytest
import torch

from clod.models.assigner import Assignment
from clod.models.yolox.losses import iou_loss_squared, l1_targets, yolox_losses

LN2, LN3 = math.log(2.0), math.log(3.0)


def test_iou_loss_squared_by_hand() -> None:
    pred = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    target = torch.tensor([[2.0, 2.0, 6.0, 6.0], [0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 6.0, 6.0]])
    # Row 0: inter 2·2 = 4, union 16 + 16 − 4 = 28, IoU 1/7 → 1 − 1/49 = 48/49.
    # Row 1: identical → 0. Row 2: disjoint → intersection 0 → 1.
    torch.testing.assert_close(iou_loss_squared(pred, target), torch.tensor([48 / 49, 0.0, 1.0]))


def test_l1_targets_by_hand() -> None:
    # GT [10, 20, 30, 60]: centre (20, 40), size 20 × 40; cell (2, 4) at stride 8:
    # 20/8 − 2 = 0.5, 40/8 − 4 = 1, ln(20/8) = ln 2.5, ln(40/8) = ln 5.
    got = l1_targets(
        torch.tensor([[10.0, 20.0, 30.0, 60.0]]), torch.tensor([[2.0, 4.0]]), torch.tensor([8.0])
    )
    torch.testing.assert_close(got, torch.tensor([[0.5, 1.0, math.log(2.5), math.log(5.0)]]))


def one_positive_case(**overrides) -> dict:
    """One image, 3 priors, 2 classes, one GT [2, 2, 6, 6] of class 1; prior 1 is its positive.

    Prior 1 predicts [0, 0, 4, 4]: IoU 1/7 (above), which the assignment carries.
    """
    case = {
        "box_logits": torch.tensor([[[9.0, 9, 9, 9], [0.5, 1.5, 0.2, -0.3], [9.0, 9, 9, 9]]]),
        "pred_boxes": torch.tensor([[[0.0, 0, 1, 1], [0.0, 0, 4, 4], [0.0, 0, 1, 1]]]),
        "obj_logits": torch.tensor([[0.0, 0.0, LN3]]),
        "cls_logits": torch.tensor([[[5.0, -5.0], [0.0, LN3], [-5.0, 5.0]]]),
        "assignment": Assignment(
            positive=torch.tensor([[False, True, False]]),
            gt_index=torch.zeros(1, 3, dtype=torch.long),
            iou=torch.tensor([[0.0, 1 / 7, 0.0]]),
        ),
        "gt_boxes": torch.tensor([[[2.0, 2.0, 6.0, 6.0]]]),
        "gt_labels": torch.tensor([[1]]),
        # Prior 1 is cell (0, 0) at stride 4.
        "grid": torch.tensor([[3.0, 3.0], [0.0, 0.0], [1.0, 1.0]]),
        "strides": torch.tensor([8.0, 4.0, 8.0]),
        "use_l1": False,
    }
    case.update(overrides)
    return case


# Expected values of one_positive_case, num_fg = 1:
IOU_ONE = 5 * 48 / 49  # 5·(1 − (1/7)²)
OBJ_ONE = 4 * LN2  # BCE(0, 0) + BCE(0, 1) + BCE(ln 3, 0) = ln 2 + ln 2 + ln 4
CLS_ONE = LN2 + 2 * LN2 - LN3 / 7  # BCE(0, 0) + BCE(ln 3, 1/7) = ln 2 + (ln 4 − ln 3 / 7)
# L1 target at cell (0, 0), stride 4: [4/4 − 0, 4/4 − 0, ln(4/4 + 1e-8), same] ≈ [1, 1, 0, 0];
# |0.5 − 1| + |1.5 − 1| + |0.2 − 0| + |−0.3 − 0| = 1.5.
L1_ONE = 1.5


def test_one_positive_by_hand() -> None:
    out = yolox_losses(**one_positive_case())
    assert float(out["num_fg"]) == 1.0
    assert float(out["loss_iou"]) == pytest.approx(IOU_ONE, rel=1e-6)
    assert float(out["loss_obj"]) == pytest.approx(OBJ_ONE, rel=1e-6)
    assert float(out["loss_cls"]) == pytest.approx(CLS_ONE, rel=1e-6)
    assert float(out["loss_l1"]) == 0.0  # L1 off
    assert float(out["loss"]) == pytest.approx(IOU_ONE + OBJ_ONE + CLS_ONE, rel=1e-6)
    with_l1 = yolox_losses(**one_positive_case(use_l1=True))
    assert float(with_l1["loss_l1"]) == pytest.approx(L1_ONE, abs=1e-6)
    assert float(with_l1["loss"]) == pytest.approx(IOU_ONE + OBJ_ONE + CLS_ONE + L1_ONE, rel=1e-6)
    assert all(v.dtype == torch.float32 for v in with_l1.values())


def test_targets_through_the_gradients() -> None:
    # d BCE(x, y) / dx = σ(x) − y, so the gradients read the targets back.
    case = one_positive_case(use_l1=True)
    for key in ("box_logits", "pred_boxes", "obj_logits", "cls_logits"):
        case[key] = case[key].clone().requires_grad_()
    iou = case["assignment"].iou.clone().requires_grad_()
    case["assignment"] = case["assignment"]._replace(iou=iou)
    out = yolox_losses(**case)
    out["loss"].backward()
    # obj target 1 on the positive, 0 elsewhere: σ − t = [½ − 0, ½ − 1, ¾ − 0].
    torch.testing.assert_close(case["obj_logits"].grad, torch.tensor([[0.5, -0.5, 0.75]]))
    # cls target on the positive = one-hot(1) × IoU = [0, 1/7]: [½ − 0, ¾ − 1/7]; the
    # negatives get no cls gradient at all.
    torch.testing.assert_close(
        case["cls_logits"].grad, torch.tensor([[[0, 0], [0.5, 0.75 - 1 / 7], [0, 0]]])
    )
    assert iou.grad is None  # the soft label is detached
    # L1: sign(t − target) = sign([−0.5, 0.5, 0.2, −0.3]), on the positive only.
    torch.testing.assert_close(
        case["box_logits"].grad, torch.tensor([[[0.0] * 4, [-1.0, 1.0, 1.0, -1.0], [0.0] * 4]])
    )


def two_image_case(**overrides) -> dict:
    """Two images, 3 priors, 2 classes, all logits 0 (every BCE element is ln 2).

    Image 0: GT [2, 2, 6, 6] (class 0); priors 0 and 1 are its positives, predicting
        [0, 0, 4, 4] (IoU 1/7 each). Image 1: GT [8, 8, 24, 24] (class 1); prior 2 is its
        positive, predicting the GT (IoU 1). Priors: cell (0, 0) s 4, (1, 0) s 4, (1, 1) s 8.
    """
    box = [0.0, 0.0, 4.0, 4.0]
    case = {
        "box_logits": torch.zeros(2, 3, 4),
        "pred_boxes": torch.tensor([[box, box, box], [box, box, [8.0, 8.0, 24.0, 24.0]]]),
        "obj_logits": torch.zeros(2, 3),
        "cls_logits": torch.zeros(2, 3, 2),
        "assignment": Assignment(
            positive=torch.tensor([[True, True, False], [False, False, True]]),
            gt_index=torch.zeros(2, 3, dtype=torch.long),
            iou=torch.tensor([[1 / 7, 1 / 7, 0.0], [0.0, 0.0, 1.0]]),
        ),
        "gt_boxes": torch.tensor([[[2.0, 2.0, 6.0, 6.0]], [[8.0, 8.0, 24.0, 24.0]]]),
        "gt_labels": torch.tensor([[0], [1]]),
        "grid": torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]),
        "strides": torch.tensor([4.0, 4.0, 8.0]),
        "use_l1": True,
    }
    case.update(overrides)
    return case


# Expected values of two_image_case: num_fg = 2 + 1 = 3 over the whole batch.
IOU_TWO = [5 * 48 / 49, 5 * 48 / 49, 0.0]  # per positive, before / num_fg
OBJ_TWO = 6 * LN2  # six priors, each BCE(0, ·) = ln 2
CLS_TWO = 3 * 2 * LN2  # three positives × two channels
# L1 targets with zero logits, |target| summed:
#   image 0 prior 0, cell (0, 0) s 4, GT centre (4, 4) size 4: [1, 1, ~0, ~0] → 2;
#   image 0 prior 1, cell (1, 0) s 4: [1 − 1, 1 − 0, ~0, ~0] → 1;
#   image 1 prior 2, cell (1, 1) s 8, GT centre (16, 16) size 16: [2 − 1, 2 − 1, ln 2, ln 2].
L1_TWO = [2.0, 1.0, 2 + 2 * LN2]


def test_two_images_normalise_by_the_batch_positive_count() -> None:
    out = yolox_losses(**two_image_case())
    assert float(out["num_fg"]) == 3.0
    # Not the mean of per-image means, which would be 5·(48/49 + 0)/2 for the IoU term.
    assert float(out["loss_iou"]) == pytest.approx(sum(IOU_TWO) / 3, rel=1e-6)
    assert float(out["loss_obj"]) == pytest.approx(OBJ_TWO / 3, rel=1e-6)
    assert float(out["loss_cls"]) == pytest.approx(CLS_TWO / 3, rel=1e-6)
    assert float(out["loss_l1"]) == pytest.approx(sum(L1_TWO) / 3, abs=1e-6)


def test_class_mask_keeps_only_its_channels() -> None:
    base = yolox_losses(**one_positive_case())
    case = one_positive_case(class_mask=torch.tensor([True, False]))
    case["cls_logits"] = case["cls_logits"].clone().requires_grad_()
    out = yolox_losses(**case)
    # Only channel 0 of the positive: BCE(0, 0) = ln 2 (the label channel 1 is left out).
    assert float(out["loss_cls"]) == pytest.approx(LN2, rel=1e-6)
    for key in ("loss_iou", "loss_obj", "loss_l1", "num_fg"):
        assert torch.equal(out[key], base[key]), key
    out["loss"].backward()
    assert case["cls_logits"].grad[..., 1].abs().sum() == 0
    with pytest.raises(ValueError, match="class_mask"):
        yolox_losses(**one_positive_case(class_mask=torch.tensor([True, False, True])))


def test_cls_weight_scales_each_element() -> None:
    base = yolox_losses(**one_positive_case())
    # (B, N): weight 2 on the positive; 100 on the negatives, which have no cls elements.
    doubled = yolox_losses(**one_positive_case(cls_weight=torch.tensor([[100.0, 2.0, 100.0]])))
    assert float(doubled["loss_cls"]) == pytest.approx(2 * CLS_ONE, rel=1e-6)
    dropped = yolox_losses(**one_positive_case(cls_weight=torch.tensor([[1.0, 0.0, 1.0]])))
    assert float(dropped["loss_cls"]) == 0.0
    # (B, N, C): 3 × BCE(0, 0) + 0 × BCE(ln 3, 1/7).
    per_element = torch.ones(1, 3, 2)
    per_element[0, 1] = torch.tensor([3.0, 0.0])
    out = yolox_losses(**one_positive_case(cls_weight=per_element))
    assert float(out["loss_cls"]) == pytest.approx(3 * LN2, rel=1e-6)
    for result in (doubled, dropped, out):
        for key in ("loss_iou", "loss_obj", "loss_l1", "num_fg"):
            assert torch.equal(result[key], base[key]), key


def test_box_mask_removes_iou_and_l1_of_the_masked_positives_only() -> None:
    base = yolox_losses(**two_image_case())
    # Mask out image 0's prior 0 (and a negative, which changes nothing).
    mask = torch.tensor([[False, True, False], [True, False, True]])
    out = yolox_losses(**two_image_case(box_mask=mask))
    assert float(out["loss_iou"]) == pytest.approx((IOU_TWO[1] + IOU_TWO[2]) / 3, rel=1e-6)
    assert float(out["loss_l1"]) == pytest.approx((L1_TWO[1] + L1_TWO[2]) / 3, abs=1e-6)
    for key in ("loss_obj", "loss_cls", "num_fg"):  # no renormalisation: num_fg stays 3
        assert torch.equal(out[key], base[key]), key


def test_obj_weight_scales_each_prior() -> None:
    base = yolox_losses(**two_image_case())
    weight = torch.tensor([[0.0, 1.0, 1.0], [1.0, 2.0, 1.0]])
    out = yolox_losses(**two_image_case(obj_weight=weight))
    # (0 + 1 + 1 + 1 + 2 + 1)·ln 2 / 3: one positive prior left out, one negative doubled.
    assert float(out["loss_obj"]) == pytest.approx(6 * LN2 / 3, rel=1e-6)
    weight[1, 1] = 1.0
    out = yolox_losses(**two_image_case(obj_weight=weight))
    assert float(out["loss_obj"]) == pytest.approx(5 * LN2 / 3, rel=1e-6)
    for key in ("loss_iou", "loss_cls", "loss_l1", "num_fg"):
        assert torch.equal(out[key], base[key]), key


@pytest.mark.parametrize("use_l1", [False, True])
@pytest.mark.parametrize("num_gts", [0, 1])
def test_no_positive_gives_finite_zeros_attached_to_the_graph(num_gts: int, use_l1: bool) -> None:
    case = two_image_case(
        use_l1=use_l1,
        assignment=Assignment(
            positive=torch.zeros(2, 3, dtype=torch.bool),
            gt_index=torch.zeros(2, 3, dtype=torch.long),
            iou=torch.zeros(2, 3),
        ),
    )
    case["gt_boxes"] = case["gt_boxes"][:, :num_gts]
    case["gt_labels"] = case["gt_labels"][:, :num_gts]
    inputs = ("box_logits", "pred_boxes", "obj_logits", "cls_logits")
    for key in inputs:
        case[key] = case[key].clone().requires_grad_()
    out = yolox_losses(**case)
    assert float(out["num_fg"]) == 1.0  # max(0, 1)
    for key in ("loss_iou", "loss_cls", "loss_l1"):
        assert float(out[key]) == 0.0 and out[key].requires_grad, key
    assert float(out["loss_obj"]) == pytest.approx(OBJ_TWO, rel=1e-6)  # six BCE(0, 0) / 1
    out["loss"].backward()
    for key in inputs:
        assert case[key].grad is not None, key
    assert case["obj_logits"].grad.abs().sum() > 0
    assert case["cls_logits"].grad.abs().sum() == 0


@pytest.mark.parametrize("use_l1", [False, True])
def test_an_overflowing_negative_prior_does_not_poison_the_loss(use_l1: bool) -> None:
    # A negative prior whose exp() overflowed: the box terms read positives only.
    case = one_positive_case(use_l1=use_l1)
    case["box_logits"] = case["box_logits"].clone()
    case["pred_boxes"] = case["pred_boxes"].clone()
    case["box_logits"][0, 0, 2] = math.inf
    case["pred_boxes"][0, 2] = torch.tensor([0.0, 0.0, math.inf, math.nan])
    out = yolox_losses(**case)
    assert all(bool(torch.isfinite(v)) for v in out.values())
    assert float(out["loss_l1"]) == pytest.approx(L1_ONE if use_l1 else 0.0, abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_float32_losses(dtype: torch.dtype) -> None:
    case = one_positive_case(use_l1=True)
    for key in ("box_logits", "pred_boxes", "obj_logits", "cls_logits"):
        case[key] = case[key].to(dtype)
    out = yolox_losses(**case)
    assert all(v.dtype == torch.float32 for v in out.values())
    # The inputs were rounded to `dtype` (ln 3, −0.3), not the arithmetic: close to float32.
    assert float(out["loss"]) == pytest.approx(IOU_ONE + OBJ_ONE + CLS_ONE + L1_ONE, rel=1e-2)
