"""ERD (docs/strategies.md §7): selections, NMS, the two terms, reductions and the engine path.

Hand-built outputs use a tiny head with 4 classes at a 64×64 input: 8×8 + 4×4 + 2×2 + 1×1 = 85
priors; stride-8 prior p = 8·i + j has its centre at (8·j, 8·i); stride-16 priors start at 64.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from clod.data.types import Batch
from clod.errors import ConfigError
from clod.models.outputs import HeadOutput
from clod.models.targets import Targets, pad_targets
from clod.strategies.base import Step, Strategy
from clod.strategies.erd import (
    ERD,
    box_distillation,
    box_distillation_per_prior,
    class_distillation,
    decode_teacher_boxes,
    elastic_selection,
    regression_selection,
)
from clod.strategies.selection import OldClassScores, Selection, old_class_scores
from tests.strategies.conftest import (
    batch,
    build_model,
    build_strategy,
    make_module,
    make_task,
    perturb_,
    snapshot,
    tiny_head,
)


def annotated_of(images: Batch) -> Targets:
    """The padded annotated targets a training step would build for ``images``."""
    return pad_targets(images.boxes, images.labels, "cpu", torch.float32)


TASK0 = make_task(0, [0, 1])
TASK1 = make_task(1, [2])  # old classes 0 and 1, new class 2, future class 3
OLD = torch.tensor([0, 1])
SIDE = 64
NUM_PRIORS = 85
BINS = 8  # reg_max 7
BACKGROUND = -10.0  # class logit of every prior that is not an object
PEAK = 30.0  # a bin logit this high makes a side's expected distance that bin, to ~1e-12

# Stride-8 priors used below: A centre (16, 16), D centre (40, 16), C centre (56, 56).
A, D, C = 8 * 2 + 2, 8 * 2 + 5, 8 * 7 + 7


def side_logits(distance_bins: int) -> torch.Tensor:
    """Box logits of one prior whose four sides all sit ``distance_bins`` bins away."""
    one_side = torch.zeros(BINS)
    one_side[distance_bins] = PEAK
    return one_side.repeat(4)


def hand_output(images: list[list[tuple[int, int, float, int]]]) -> HeadOutput:
    """Outputs whose image b has objects (prior, class, class logit, side distance in bins);
    every other class logit is BACKGROUND and every other box logit 0."""
    cls = torch.full((len(images), NUM_PRIORS, 4), BACKGROUND)
    box = torch.zeros(len(images), NUM_PRIORS, 4 * BINS)
    for b, objects in enumerate(images):
        for prior, label, logit, bins in objects:
            cls[b, prior, label] = logit
            box[b, prior] = side_logits(bins)
    return HeadOutput.from_raw(torch.cat((cls, box), dim=-1), (), 4)


def teacher_scores(output: HeadOutput) -> OldClassScores:
    best = old_class_scores(output.cls_logits, OLD)
    return OldClassScores(best.score.sigmoid(), best.label)


def pairs(selection: Selection) -> set[tuple[int, int]]:
    return set(zip(selection.image.tolist(), selection.prior.tolist(), strict=True))


# --------------------------------------------------------------------------- selection
def test_elastic_selection_is_strictly_above_mean_plus_k_std() -> None:
    values = torch.tensor([[0.0, 0, 0, 0, 1, 5], [0.0, 0, 0, 0, 0, 6]])
    # image 0: mean 1, unbiased var (1+1+1+1+0+16)/5 = 4, std 2, threshold 1 + 2·2 = 5 = its max
    # image 1: mean 1, var (5·1 + 25)/5 = 6, threshold 1 + 2·√6 ≈ 5.90 < 6
    selected = elastic_selection(values, 2.0)
    assert pairs(selected) == {(1, 5)}  # `>=` would also take (0, 5)
    assert int((values >= torch.tensor([[5.0], [1 + 2 * math.sqrt(6)]])).sum()) == 2
    # k = 1: thresholds 3 and 1 + √6 ≈ 3.45: still only the 5 and the 6
    assert pairs(elastic_selection(values, 1.0)) == {(0, 5), (1, 5)}
    # equal values have std 0: nothing is above the mean
    assert len(elastic_selection(torch.full((2, 6), 0.3), 2.0)) == 0


def test_decoding_scales_distances_by_the_stride_unless_reference_decoding() -> None:
    head = tiny_head()
    prior = 64 + 4 * 1 + 1  # stride-16 prior at row 1, column 1: centre (16, 16)
    output = hand_output([[(prior, 0, 3.0, 2)]])
    at = Selection(torch.tensor([0]), torch.tensor([prior]))
    correct = decode_teacher_boxes(head, output.box_logits, at, (SIDE, SIDE))
    reference = decode_teacher_boxes(
        head, output.box_logits, at, (SIDE, SIDE), reference_decoding=True
    )
    # 2 bins · 16 px = 32 px per side; the reference's 2 "pixels" per side
    torch.testing.assert_close(correct, torch.tensor([[-16.0, -16, 48, 48]]))
    torch.testing.assert_close(reference, torch.tensor([[14.0, 14, 18, 18]]))
    centre = torch.tensor([16.0, 16, 16, 16])
    torch.testing.assert_close(correct - centre, 16 * (reference - centre))


def test_nms_at_0005_keeps_one_box_per_object_and_class() -> None:
    head = tiny_head()
    # A: [0, 0, 32, 32]; D: [24, 0, 56, 32] (IoU 8·32 / (2·32² − 8·32) = 1/7); C: [48, 48, 64, 64].
    # Image 0: A and D are both old class 0 -> D (lower score) goes. Image 1: D is class 1 -> kept.
    teacher = hand_output(
        [
            [(A, 0, 3.0, 2), (D, 0, 2.0, 2), (C, 1, 1.0, 1)],
            [(A, 0, 3.0, 2), (D, 1, 2.0, 2), (C, 1, 1.0, 1)],
        ]
    )
    # ρ: three priors at 30, 82 at 0: mean ≈ 1.06, std ≈ 5.57, threshold ≈ 12.2: exactly those three

    def kept(nms_iou: float, reference: bool = False) -> set[tuple[int, int]]:
        scores = teacher_scores(teacher)
        return pairs(
            regression_selection(head, teacher, scores, (SIDE, SIDE), 2.0, nms_iou, reference)
        )

    assert kept(0.005) == {(0, A), (0, C), (1, A), (1, D), (1, C)}
    assert kept(0.5) == {(0, A), (0, D), (0, C), (1, A), (1, D), (1, C)}  # 1/7 < 0.5
    # Reference decoding shrinks A to [14, 14, 18, 18] and D to [38, 14, 42, 18]: no overlap.
    assert kept(0.005, reference=True) == {(0, A), (0, D), (0, C), (1, A), (1, D), (1, C)}


# --------------------------------------------------------------------------- the terms
def test_box_kl_term_equals_the_hand_computed_value() -> None:
    # Two bins per side. Teacher [0, 0] -> p = (1/2, 1/2). Student [10·ln 3, 0] at T = 10 ->
    # q = (3/4, 1/4). KL(p‖q) = ½·ln(⅔) + ½·ln 2 = ½·ln(4/3); averaged over 2 bins: ¼·ln(4/3).
    # × T² = 25·ln(4/3); Σ 4 sides = 100·ln(4/3); / 4 = 25·ln(4/3); × w = ½ and × 0.25:
    # 3.125·ln(4/3) ≈ 0.8990. A second prior with equal logits contributes 0.
    student = torch.tensor([[10 * math.log(3), 0.0] * 4, [1.0, 2.0] * 4])
    teacher = torch.tensor([[0.0, 0.0] * 4, [1.0, 2.0] * 4])
    value = box_distillation_per_prior(
        tiny_head(), student, teacher, torch.tensor([0.5, 0.9]), 10.0, 0.25
    )
    torch.testing.assert_close(value, torch.tensor([3.125 * math.log(4 / 3), 0.0]))


def test_class_term_is_the_mean_over_images_of_each_images_mse_on_its_selection() -> None:
    student = torch.zeros(3, 4, 4, requires_grad=True)
    teacher = torch.zeros(3, 4, 4)
    teacher[..., 2:] = 7.0  # the new and future channels never count
    teacher[0, 0, :2] = torch.tensor([1.0, 1.0])  # squared errors 1, 1
    teacher[0, 2, :2] = torch.tensor([3.0, 1.0])  # 9, 1
    teacher[1, 1, :2] = torch.tensor([2.0, 0.0])  # 4, 0
    teacher[1, 3, :2] = 100.0  # not selected
    selected = Selection(torch.tensor([0, 0, 1]), torch.tensor([0, 2, 1]))
    # image 0: (1 + 1 + 9 + 1) / 4 = 3; image 1: (4 + 0) / 2 = 2; image 2: nothing selected -> 0
    image_mean = class_distillation(student, teacher, selected, OLD, "image_mean")
    reference = class_distillation(student, teacher, selected, OLD, "reference_sum")
    assert image_mean.item() == pytest.approx(5 / 3)  # the empty image counts in the mean
    assert reference.item() == pytest.approx(5.0)  # = 3 · image_mean, the batch size
    image_mean.backward()
    assert student.grad is not None and not student.grad[2].any() and student.grad[0, 0, 0] != 0


def test_box_term_sums_over_kept_priors_and_reduces_over_images() -> None:
    # Two images, two priors; image 0 keeps both, image 1 none. Each kept prior has the hand
    # case above (w = σ(0) = ½ from old class 0; the larger new-class logit 5 does not count).
    student_cls = torch.zeros(2, 2, 4, requires_grad=True)
    with torch.no_grad():
        student_cls[..., 1] = -1.0
        student_cls[..., 2] = 5.0
    student_box = torch.tensor([10 * math.log(3), 0.0] * 4).repeat(2, 2, 1).requires_grad_()
    teacher_box = torch.zeros(2, 2, 8)
    kept = Selection(torch.tensor([0, 0]), torch.tensor([0, 1]))
    one = 3.125 * math.log(4 / 3)

    def term(reduction: str) -> torch.Tensor:
        return box_distillation(
            tiny_head(),
            student_cls.sigmoid(),
            student_box,
            teacher_box,
            kept,
            OLD,
            10.0,
            0.25,
            reduction,
        )

    assert term("reference_sum").item() == pytest.approx(2 * one)  # per image: a sum, not /|K|
    image_mean = term("image_mean")
    assert image_mean.item() == pytest.approx(one)  # (2·one + 0) / 2 images
    image_mean.backward()
    assert student_cls.grad is None  # the weights w are detached
    assert student_box.grad is not None and not student_box.grad[1].any()


def test_every_term_is_an_attached_zero_when_nothing_is_selected() -> None:
    student = hand_output([[(A, 0, 3.0, 2)], []])
    raw = student.raw.clone().requires_grad_()
    student = HeadOutput.from_raw(raw, (), 4)
    empty = Selection(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    terms = {
        "cls": class_distillation(student.cls_logits, student.cls_logits.detach(), empty, OLD),
        "reg": box_distillation(
            tiny_head(),
            student.cls_logits.sigmoid(),
            student.box_logits,
            student.box_logits.detach(),
            empty,
            OLD,
            10.0,
        ),
    }
    # Through the strategy: a teacher with equal outputs everywhere (std 0) selects nothing.
    flat_teacher = HeadOutput.from_raw(torch.zeros(2, NUM_PRIORS, 4 + 4 * BINS), (), 4)
    strategy = ERD()
    strategy.old_classes = OLD
    terms |= strategy.terms(student, flat_teacher, tiny_head(), (SIDE, SIDE))
    assert set(terms) == {"cls", "reg", "distill_cls", "distill_reg"}
    for name, value in terms.items():
        assert value.item() == 0.0 and value.requires_grad, name
    sum(terms.values()).backward()
    assert raw.grad is not None and not raw.grad.any()


def test_terms_distil_logits_on_s_cls_and_boxes_on_k_only() -> None:
    teacher = hand_output([[(A, 0, 3.0, 2), (D, 0, 2.0, 2), (C, 1, 1.0, 1)]])
    # S_cls: m = σ(3) ≈ .953, σ(2) ≈ .881, σ(1) ≈ .731 and 82 × σ(−10) ≈ 4.5e-5: mean ≈ .030,
    # std ≈ .160, threshold ≈ .349: S_cls = {A, D, C}. K = {A, C} (D suppressed by A).
    raw = teacher.raw.clone()
    raw[0, A, 0] += 2.0  # the only old-logit error on S_cls: image MSE = (2² + 0) / 2 / 3 = 2/3
    raw[0, 0, 0] += 5.0  # prior 0 is not in S_cls
    raw[0, A, 3] += 10.0  # future-class channel: not distilled
    raw[0, A, 4:] = 0.0  # student boxes at A: uniform bins
    raw[0, D, 4:] = 0.0  # ... and at D, which is not in K
    student = HeadOutput.from_raw(raw, (), 4)
    strategy = ERD()
    strategy.old_classes = OLD
    terms = strategy.terms(student, teacher, tiny_head(), (SIDE, SIDE))
    assert terms["distill_cls"].item() == pytest.approx(2 / 3, rel=1e-5)
    assert strategy.diagnostics() == {
        "erd_cls_selected_per_image": 3.0,
        "erd_reg_kept_per_image": 2.0,
    }
    # K = {A}'s share: p = softmax((0, 0, 3, 0, …)) over 8 bins (the teacher's 30 / T),
    # KL(p‖uniform) = ln 8 + Σ p ln p, averaged over 8 bins, the same on all 4 sides, so
    # 0.25 · T² · w · KL/8 with w = σ(3 + 2), the student's own max old-class score at A.
    p = torch.softmax(torch.tensor([0.0, 0, 3, 0, 0, 0, 0, 0], dtype=torch.float64), 0)
    kl = math.log(8) + float((p * p.log()).sum())
    expected = 0.25 * 100 * torch.sigmoid(torch.tensor(5.0)).item() * kl / 8
    assert terms["distill_reg"].item() == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------- the strategy
def new_class_batch():
    """The synthetic batch with every box of the task's new class 2 (what task 1 annotates)."""
    images = batch()
    return dataclasses.replace(images, labels=[torch.full_like(x, 2) for x in images.labels])


def test_task_zero_is_plain_training() -> None:
    detector = build_model()
    strategy = build_strategy("erd")
    module = make_module(detector, strategy, TASK0)
    naive = make_module(copy.deepcopy(detector), Strategy(), TASK0)
    assert module.teacher is None and strategy.base_training_signature() == {}
    images = batch()
    total, terms = module.training_losses(images)
    naive_total, _ = naive.training_losses(images)
    assert not any(k.startswith("distill") for k in terms)
    assert torch.equal(total, terms["loss"]) and torch.equal(total, naive_total)
    output = module.head.forward(module.student.neck(module.features(images.images)))
    step = Step(images, (), output, None, module.head, (SIDE, SIDE), annotated_of(images))
    assert strategy.supervision(module, step) is None
    assert strategy.diagnostics() == {}


def test_class_mask_keeps_qfl_gradient_off_the_old_class_rows() -> None:
    def old_row_gradients(strategy: Strategy, task=TASK1) -> list[torch.Tensor]:
        torch.manual_seed(0)
        module = make_module(build_model(), strategy, task)
        perturb_(module.student.head)  # the student differs from its teacher
        total, _ = module.training_losses(new_class_batch())
        total.backward()
        convs = module.head.gfl_cls
        assert all(conv.bias.grad[2].abs() > 0 for conv in convs)  # the new class learns
        return [g for conv in convs for g in (conv.bias.grad[:2], conv.weight.grad[:2])]

    silent = build_strategy("erd", cls_weight=0.0, reg_weight=0.0)
    module = make_module(build_model(), silent, TASK1)
    output = module.head.forward(module.student.neck(module.features(batch().images)))
    supervision = silent.supervision(
        module, Step(batch(), (), output, output, module.head, (64, 64), annotated_of(batch()))
    )
    assert supervision is not None
    assert supervision.class_mask.tolist() == [False, False, True, True]
    # Only the QFL/GIoU/DFL of the new-class GT: nothing reaches the old classes' rows.
    assert all(not g.any() for g in old_row_gradients(silent))
    # The class term does reach them, and so does plain QFL without the mask.
    assert any(g.any() for g in old_row_gradients(build_strategy("erd", reg_weight=0.0)))
    assert any(g.any() for g in old_row_gradients(Strategy()))


def test_terms_are_zero_for_the_teacher_itself_and_positive_once_the_student_moves() -> None:
    torch.manual_seed(0)
    module = make_module(build_model(), build_strategy("erd"), TASK1)
    module.eval()  # BN on running statistics in both, so equal weights give equal outputs
    images = new_class_batch()
    _, terms = module.training_losses(images)
    assert terms["distill_cls"].item() == 0.0 and terms["distill_reg"].item() == 0.0
    perturb_(module.student.head)
    _, terms = module.training_losses(images)
    assert terms["distill_cls"].item() > 0 and terms["distill_reg"].item() > 0


def test_one_step_leaves_the_teacher_and_its_bn_statistics_unchanged() -> None:
    module = make_module(build_model(), build_strategy("erd"), TASK1)
    teacher_before = snapshot(module.teacher)
    student_before = snapshot(module.student)
    module.train()  # as Lightning does before fitting
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1)
    total, terms = module.training_losses(new_class_batch())
    assert {"distill_cls", "distill_reg"} <= set(terms)
    total.backward()
    optimizer.step()
    assert not module.teacher.training
    assert all(p.grad is None for p in module.teacher.parameters())
    for key, value in snapshot(module.teacher).items():
        assert torch.equal(value, teacher_before[key]), key
    changed = [
        k for k, v in snapshot(module.student).items() if not torch.equal(v, student_before[k])
    ]
    assert any("running_mean" in k for k in changed) and any("weight" in k for k in changed)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("cls_reduction", "sum"),
        ("reg_reduction", "mean"),
        ("k_std", -1.0),
        ("temperature", 0.0),
        ("nms_iou", 1.5),
        ("cls_weight", float("nan")),
        ("reg_weight", -0.1),
        ("box_weight", float("inf")),
        ("reference_decoding", "yes"),
        ("frozen_bn", "frozen"),
    ],
)
def test_bad_config_values_name_their_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"strategy.{key}"):
        ERD(**{key: value})
