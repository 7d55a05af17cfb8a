"""The supervision interface: extra targets before assignment, class mask, ignored negatives,
routing of the positives matched to extra targets, and the pseudo-label strategy on it."""

from __future__ import annotations

import pytest
import torch

from clod.data.types import Batch
from clod.errors import ConfigError
from clod.models.outputs import HeadOutput
from clod.strategies.base import Supervision
from clod.strategies.pseudo_label import PseudoLabel, select_detections
from clod.strategies.supervision import supervised_detection_loss
from tests.strategies.conftest import (
    batch,
    build_model,
    build_strategy,
    hand_step,
    level0_prior,
    logit,
    make_module,
    make_task,
    tiny_head,
)

NUM_CLASSES = 4
SIDE = 64  # 64 + 16 + 4 + 1 = 85 priors
BINS = 8


def student_raw(seed: int = 0, size: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randn(size, 85, NUM_CLASSES + 4 * BINS, generator=generator)
    return raw.requires_grad_(True)


def one_object_batch(size: int = 2) -> Batch:
    """Each image: one class-2 box (the annotated, new-class object)."""
    images = batch(size=size, side=SIDE)
    images.boxes = [torch.tensor([[36.0, 36.0, 60.0, 60.0]]) for _ in range(size)]
    images.labels = [torch.tensor([2]) for _ in range(size)]
    return images


def pseudo(size: int = 2) -> Supervision:
    """One class-0 pseudo box per image, away from the annotated one; ids 7 and 8."""
    return Supervision(
        extra_boxes=[torch.tensor([[2.0, 2.0, 30.0, 30.0]]) for _ in range(size)],
        extra_labels=[torch.tensor([0]) for _ in range(size)],
        extra_ids=[torch.tensor([7 + i]) for i in range(size)],
    )


def gradient(raw: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(loss, raw)
    return grad


def test_without_supervision_the_loss_is_the_heads_plain_loss() -> None:
    raw, images = student_raw(), one_object_batch()
    losses, assigned = supervised_detection_loss(tiny_head(), hand_step(raw, None, images), None)
    plain = tiny_head().loss(raw, images.boxes, images.labels, (SIDE, SIDE))
    for key, value in plain.items():
        assert torch.equal(losses[key], value), key
    assert not bool(assigned.targets.extra.any())


def test_extra_targets_are_merged_before_assignment_and_keep_their_ids() -> None:
    raw, images = student_raw(), one_object_batch()
    _, assigned = supervised_detection_loss(tiny_head(), hand_step(raw, None, images), pseudo())
    targets = assigned.targets
    # extra first, then annotated: [pseudo class 0, annotated class 2] in each image
    assert targets.labels.tolist() == [[0, 2], [0, 2]]
    assert targets.extra.tolist() == [[True, False], [True, False]]
    assert targets.extra_id.tolist() == [[7, -1], [8, -1]]
    routed = assigned.extra_positive
    assert bool(routed.any()) and bool((assigned.positive & ~routed).any())
    # every positive matched to the pseudo box learns class 0 and carries its id
    assert set(assigned.labels[routed].tolist()) == {0}
    ids = assigned.matched(targets.extra_id)[routed]
    image = routed.nonzero()[:, 0]
    assert torch.equal(ids, 7 + image)


def test_class_mask_sends_no_qfl_gradient_to_the_masked_channels() -> None:
    raw, images = student_raw(), one_object_batch()
    mask = torch.tensor([False, False, True, True])  # classes 0 and 1 are "old"
    losses, _ = supervised_detection_loss(
        tiny_head(), hand_step(raw, None, images), Supervision(class_mask=mask)
    )
    grad = gradient(raw, losses["loss_qfl"])
    assert not grad[..., :2].any()
    assert grad[..., 2:NUM_CLASSES].abs().sum() > 0


def test_ignored_negatives_get_no_gradient_but_a_positives_target_stays() -> None:
    raw, images = student_raw(), one_object_batch()
    ignore = torch.zeros(2, 85, NUM_CLASSES, dtype=torch.bool)
    ignore[..., 2] = True  # would also cover the annotated class-2 positives' targets
    losses, assigned = supervised_detection_loss(
        tiny_head(), hand_step(raw, None, images), Supervision(ignore_negatives=ignore)
    )
    grad = gradient(raw, losses["loss_qfl"])[..., 2]
    positive = assigned.positive
    assert not grad[~positive].any()  # ignored negatives
    assert bool((grad[positive] != 0).all())  # the positives' own targets are not negatives


@pytest.mark.parametrize("route", ["standard", "distill", "distill_keep_quality"])
def test_routing_of_the_positives_matched_to_extra_targets(route: str) -> None:
    raw, images = student_raw(), one_object_batch()
    base = pseudo()
    supervision = Supervision(
        extra_boxes=base.extra_boxes, extra_labels=base.extra_labels, extra_route=route
    )
    losses, assigned = supervised_detection_loss(
        tiny_head(), hand_step(raw, None, images), supervision
    )
    grad = gradient(raw, losses["loss"])
    routed, kept = assigned.extra_positive, assigned.positive & ~assigned.extra_positive
    cls_grad, box_grad = grad[..., :NUM_CLASSES], grad[..., NUM_CLASSES:]
    assert box_grad[kept].abs().sum(dim=-1).gt(0).all()  # annotated positives always learn
    if route == "standard":
        assert box_grad[routed].abs().sum(dim=-1).gt(0).all()
        assert cls_grad[routed].abs().sum(dim=-1).gt(0).all()
    else:
        assert not box_grad[routed].any()
        if route == "distill":  # left out of QFL entirely: no target, no background push
            assert not cls_grad[routed].any()
        else:  # QFL keeps the soft target at the pseudo box's class
            assert cls_grad[routed][:, 0].ne(0).all()
    # QFL is normalised by the positives it supervises
    expected_pos = int(kept.sum()) + (0 if route == "distill" else int(routed.sum()))
    assert expected_pos > 0
    rebuilt, _ = supervised_detection_loss(tiny_head(), hand_step(raw, None, images), supervision)
    assert torch.equal(rebuilt["loss_qfl"], losses["loss_qfl"])


def test_supervision_rejects_a_half_given_extra_target_and_an_unknown_route() -> None:
    with pytest.raises(ValueError, match="come together"):
        Supervision(extra_boxes=[torch.zeros(0, 4)])
    with pytest.raises(ValueError, match="extra_route"):
        Supervision(extra_route="sideways")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- pseudo_label


def teacher_with_detections(entries: list[tuple[int, int, int, float]]) -> torch.Tensor:
    """Teacher raw (1 image): every class σ ≈ 0 except ``(prior, class, score)`` entries;
    every box has all four distances at exactly bin 1 (8 px at stride 8), so the level-0
    prior at (x, y) predicts the 16×16 box (x−8, y−8, x+8, y+8)."""
    raw = torch.full((1, 85, NUM_CLASSES + 4 * BINS), -20.0)
    box = raw[0, :, NUM_CLASSES:].view(85, 4, BINS)
    box[:, :, 1] = 30.0
    for _, prior, cls, score in entries:
        raw[0, prior, cls] = logit(score)
    return raw


def test_pseudo_labels_are_the_old_class_detections_above_the_threshold() -> None:
    a, b, c, d = (
        level0_prior(16, 16),
        level0_prior(48, 16),
        level0_prior(16, 48),
        level0_prior(48, 48),
    )
    duplicate = level0_prior(24, 16)  # its box overlaps a's by IoU 8·16 / (2·256 − 128) = 1/3
    raw = teacher_with_detections(
        [
            (0, a, 0, 0.90),  # old class 0: kept
            (0, b, 1, 0.55),  # old class 1, just above 0.5: kept
            (0, c, 1, 0.45),  # below the threshold: dropped
            (0, d, 2, 0.95),  # class 2 is new at this task: never a pseudo box
            (0, duplicate, 0, 0.80),  # same class as a, lower score, IoU 1/3 with a
        ]
    )
    head = tiny_head()
    teacher = HeadOutput.from_raw(raw, (), NUM_CLASSES)
    scores = head.scores(teacher)[..., :2].max(dim=-1)  # old classes 0 and 1
    boxes = head.boxes(teacher, (SIDE, SIDE))
    kept = select_detections(scores.values, scores.indices, boxes, 0.5, 0.3, 100)
    # NMS 0.3: the duplicate (IoU 1/3 > 0.3 with a, same class, lower score) is suppressed.
    assert kept.prior.tolist() == [a, b] and kept.image.tolist() == [0, 0]
    assert torch.allclose(boxes[0, a], torch.tensor([8.0, 8.0, 24.0, 24.0]), atol=1e-4)
    loose = select_detections(scores.values, scores.indices, boxes, 0.5, 0.5, 100)
    assert loose.prior.tolist() == [a, duplicate, b]  # IoU 1/3 ≤ 0.5: both kept, best first
    assert select_detections(scores.values, scores.indices, boxes, 0.5, 0.5, 2).prior.tolist() == [
        a,
        duplicate,
    ]


def test_pseudo_label_strategy_adds_exactly_those_boxes_to_the_targets() -> None:
    strategy = build_strategy("pseudo_label", score_thr=0.5, nms_iou=0.6)
    task = make_task(1, [2])  # old classes 0 and 1
    module = make_module(build_model(), strategy, task)
    a, b = level0_prior(16, 16), level0_prior(48, 48)
    teacher = teacher_with_detections([(0, a, 0, 0.9), (0, b, 2, 0.99)])
    teacher = torch.cat((teacher, teacher_with_detections([])))  # image 2: nothing confident
    step = hand_step(student_raw(size=2), teacher, one_object_batch())
    supervision = strategy.supervision(module, step)
    assert supervision is not None and supervision.extra_route == "standard"
    assert [len(b) for b in supervision.extra_boxes] == [1, 0]
    assert supervision.extra_labels[0].tolist() == [0]
    assert torch.allclose(supervision.extra_boxes[0], torch.tensor([[8.0, 8.0, 24.0, 24.0]]))
    assert supervision.extra_ids[0].tolist() == [a]
    assert strategy.last_pseudo_per_image == 0.5


def test_pseudo_label_task_zero_is_plain_and_bad_values_are_named() -> None:
    strategy = build_strategy("pseudo_label")
    module = make_module(build_model(), strategy, make_task(0, [0, 1]))
    total, terms = module.training_losses(batch())
    assert module.teacher is None and torch.equal(total, terms["loss"])
    with pytest.raises(ConfigError, match=r"strategy\.score_thr"):
        PseudoLabel(score_thr=1.5)
    with pytest.raises(ConfigError, match=r"strategy\.max_per_image"):
        PseudoLabel(max_per_image=0)


@pytest.mark.parametrize("strategy_name", ["pseudo_label", "ilyolox_shipped"])
def test_a_pseudo_box_on_an_annotated_new_object_is_dropped_when_asked(strategy_name: str) -> None:
    task = make_task(1, [2])  # old classes 0 and 1
    images = one_object_batch(size=1)
    images.boxes = [torch.tensor([[40.0, 40.0, 56.0, 56.0]])]  # the new (class 2) object
    on_new, elsewhere = level0_prior(48, 48), level0_prior(16, 16)
    # The teacher calls the new object "class 0" (its box is the annotated box: IoU 1).
    teacher = teacher_with_detections([(0, on_new, 0, 0.9), (0, elsewhere, 0, 0.8)])
    step = hand_step(student_raw(size=1), teacher, images)
    kept = {}
    for overlap in (None, 0.5):
        options = (
            {"gt_overlap_iou": overlap}
            if strategy_name == "pseudo_label"
            else {"select": {"gt_overlap_iou": overlap}}
        )
        strategy = build_strategy(strategy_name, **options)
        module = make_module(build_model(), strategy, task)
        supervision = strategy.supervision(module, step)
        assert supervision is not None and supervision.extra_ids is not None
        kept[overlap] = sorted(supervision.extra_ids[0].tolist())
    assert kept[None] == sorted([on_new, elsewhere])
    assert kept[0.5] == [elsewhere]
