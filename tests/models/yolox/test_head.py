"""The YOLOX head through clod's head interface: scores, decoding to detections, the loss
controls strategies use, and an overfit run on a handful of images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clod.models.head_protocol import DetectionHead
from clod.models.targets import pad_targets
from clod.models.yolox.head import CLS_OFFSET, OBJ_CHANNEL, YOLOXHead
from clod.models.yolox.losses import yolox_losses
from tests.models.helpers import build_model
from tests.models.test_overfit import CLASSES, SCENES, overfit, paint_scene

SIDE = 64  # priors: 8×8 + 4×4 + 2×2 = 84


def head(num_classes: int = 3) -> YOLOXHead:
    return YOLOXHead(num_classes, width=0.25, in_channels=(64, 64, 64))


def raw_with(values: dict[tuple[int, int], list[float]], num_classes: int = 3) -> torch.Tensor:
    """(1, 84, 5+C) raw output: every prior far below any threshold (obj logit −20, box
    t = 0.5, log-size 0) except the priors given as {(image, prior): channels}."""
    raw = torch.zeros(1, 84, CLS_OFFSET + num_classes)
    raw[..., :2] = 0.5
    raw[..., OBJ_CHANNEL] = -20.0
    raw[..., CLS_OFFSET:] = -20.0
    for (image, prior), channels in values.items():
        raw[image, prior] = torch.tensor(channels)
    return raw


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_the_head_implements_the_interface() -> None:
    assert isinstance(head(), DetectionHead)
    assert head().num_priors((SIDE, SIDE)) == 84
    assert head().num_priors((416, 416)) == 3549


def test_scores_are_objectness_times_class_and_boxes_agree_with_boxes_at() -> None:
    torch.manual_seed(0)
    yolox = head()
    output = yolox([torch.randn(2, 16, SIDE // s, SIDE // s) for s in (8, 16, 32)])
    scores = yolox.scores(output)
    expected = output.raw[..., CLS_OFFSET:].sigmoid() * output.raw[..., OBJ_CHANNEL, None].sigmoid()
    torch.testing.assert_close(scores, expected)
    torch.testing.assert_close(yolox.box_confidence(output), output.raw[..., OBJ_CHANNEL])
    boxes = yolox.boxes(output, (SIDE, SIDE))
    prior = torch.tensor([0, 63, 64, 83])
    torch.testing.assert_close(
        yolox.boxes_at(output.box_logits[1, prior], prior, (SIDE, SIDE)), boxes[1, prior]
    )
    # Prior 9 is cell (x=1, y=1) of stride 8: t = (0.5, 0.5, 0, 0) is the 8-px cell itself.
    raw = raw_with({(0, 9): [0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]})
    cell = yolox.boxes_at(raw[0, [9], :4], torch.tensor([9]), (SIDE, SIDE))
    torch.testing.assert_close(cell, torch.tensor([[8.0, 8.0, 16.0, 16.0]]))


def test_decode_keeps_one_label_per_prior_at_the_threshold_with_class_aware_nms() -> None:
    yolox = head()
    box = [0.5, 0.5, math.log(2.0), math.log(2.0)]  # a 16-px box centred on its cell
    raw = raw_with(
        {
            # obj 0.8, classes 0.5 / 0.9 / 0.1: one detection, class 1, score 0.72.
            (0, 9): [*box, logit(0.8), logit(0.5), logit(0.9), logit(0.1)],
            # The next cell's box, 4 px to the right (IoU 0.6 > 0.5): class 1 is suppressed…
            (0, 10): [0.0, 0.5, *box[2:], logit(0.5), -20.0, logit(0.9), -20.0],
            # …but the same overlap as class 0 survives (NMS per class).
            (0, 17): [0.5, 0.0, *box[2:], logit(0.5), logit(0.9), -20.0, -20.0],
            # obj × class exactly at the threshold is kept (≥, as upstream).
            (0, 50): [*box, logit(0.5), logit(0.5), -20.0, -20.0],
        }
    )
    (found,) = yolox.decode(raw, (SIDE, SIDE), score_thr=0.25, nms_iou=0.5)
    assert found["labels"].tolist() == [1, 0, 0]
    torch.testing.assert_close(found["scores"], torch.tensor([0.72, 0.45, 0.25]))
    torch.testing.assert_close(found["boxes"][0], torch.tensor([4.0, 4.0, 20.0, 20.0]))
    # A class outside the mask is never detected; the prior's best allowed class is taken.
    mask = torch.tensor([True, False, True])
    (masked,) = yolox.decode(raw, (SIDE, SIDE), score_thr=0.05, nms_iou=0.5, class_mask=mask)
    assert 1 not in masked["labels"].tolist()
    assert masked["scores"][0].item() == pytest.approx(0.45)  # prior 17 (obj .5 × .9)
    assert masked["scores"].tolist() == sorted(masked["scores"].tolist(), reverse=True)
    (capped,) = yolox.decode(raw, (SIDE, SIDE), score_thr=0.01, nms_iou=0.5, max_det=2)
    assert len(capped["scores"]) == 2


def test_loss_controls_map_onto_the_objectness_and_class_terms() -> None:
    torch.manual_seed(1)
    yolox = head()
    raw = torch.randn(2, 84, CLS_OFFSET + 3) * 0.5
    targets = pad_targets(
        [torch.tensor([[8.0, 8.0, 30.0, 34.0]]), torch.tensor([[30.0, 20.0, 60.0, 60.0]])],
        [torch.tensor([2]), torch.tensor([0])],
        "cpu",
        torch.float32,
    )
    assigned = yolox.assign_targets(raw, targets, (SIDE, SIDE))
    assert assigned.positive.sum() > 0
    # Ignore class 1 on a handful of negative priors and class 2 on the first positive.
    weight = torch.ones(2, 84, 3)
    negatives = (~assigned.positive).nonzero()[:5]
    weight[negatives[:, 0], negatives[:, 1], 1] = 0.0
    first = assigned.positive.nonzero()[0]
    weight[first[0], first[1], 2] = 0.0
    box_mask = torch.ones(2, 84, dtype=torch.bool)
    box_mask[first[0], first[1]] = False
    losses = yolox.loss_from_assignment(raw, assigned, (SIDE, SIDE), None, weight, box_mask)
    # The same terms with explicit per-prior objectness weights: negatives with an ignored
    # class leave the obj loss; the positive keeps its own target element's weight (0 here).
    obj_weight = torch.ones(2, 84)
    obj_weight[negatives[:, 0], negatives[:, 1]] = 0.0
    obj_weight[first[0], first[1]] = 0.0
    priors = yolox.priors((SIDE, SIDE), "cpu", torch.float32)
    expected = yolox_losses(
        raw[..., :4],
        yolox.decode_boxes(raw[..., :4], priors.grid, priors.strides),
        raw[..., 4],
        raw[..., 5:],
        assigned,
        targets.boxes,
        targets.labels,
        priors.grid,
        priors.strides,
        use_l1=False,
        cls_weight=weight,
        box_mask=box_mask,
        obj_weight=obj_weight,
    )
    for name in ("loss", "loss_iou", "loss_obj", "loss_cls"):
        torch.testing.assert_close(losses[name], expected[name])
    # Without controls the obj term is larger: the ignored priors count again.
    plain = yolox.loss_from_assignment(raw, assigned, (SIDE, SIDE))
    assert plain["loss_obj"] > losses["loss_obj"]
    assert plain["loss_iou"] > losses["loss_iou"]
    with pytest.raises(ValueError, match="selects no class"):
        yolox.loss_from_assignment(raw, assigned, (SIDE, SIDE), torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="num_classes=3"):
        bad = pad_targets(
            [torch.tensor([[8.0, 8, 30, 34]])] * 2, [torch.tensor([3])] * 2, "cpu", torch.float32
        )
        yolox.assign_targets(raw, bad, (SIDE, SIDE))
    with pytest.raises(ValueError, match="gives 84"):
        yolox.assign_targets(raw[:, :80], targets, (SIDE, SIDE))


def test_box_distillation_is_the_l1_between_raw_offsets() -> None:
    student = torch.tensor([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.2, -0.2]])
    teacher = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.5, 0.0, 0.0]])
    distance = head().box_distillation(student, teacher, temperature=10.0)
    torch.testing.assert_close(distance, torch.tensor([0.0, 1.9]))


def raw_pixel_batch() -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """The overfit scenes as YOLOX takes them: BGR 0–255, no normalisation."""
    rng = np.random.default_rng(0)
    images, boxes, labels = [], [], []
    for objects in SCENES:
        pixels = paint_scene(objects, rng).astype(np.float32)
        images.append(torch.from_numpy(pixels).permute(2, 0, 1))
        boxes.append(torch.tensor([box for _, box in objects], dtype=torch.float32))
        labels.append(torch.tensor([label for label, _ in objects], dtype=torch.long))
    return torch.stack(images), boxes, labels


@pytest.mark.slow
def test_yolox_nano_overfits_a_few_synthetic_images() -> None:
    torch.manual_seed(0)
    images, boxes, labels = raw_pixel_batch()
    model = build_model("yolox_nano", num_classes=len(CLASSES))
    first_loss, loss, score, step = overfit(model, images, boxes, labels, 500, 25)
    assert loss < 0.3 * first_loss
    assert score > 0.9, f"mAP50 {score:.3f} after {step} steps"
