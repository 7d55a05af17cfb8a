"""ILYOLOX (docs/strategies.md §8): selection methods, pseudo ground truth, routing of the old
positives, collaborative KD, task 0, the frozen teacher and the config checks.

Hand-built tensors carry their expected answers, derived in the comments."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from clod.data.types import Batch
from clod.errors import ConfigError
from clod.models.boxes import pairwise_iou
from clod.models.outputs import HeadOutput
from clod.models.targets import Assigned, Targets
from clod.strategies import ilyolox_parts
from clod.strategies.base import Step, TrainingModule
from clod.strategies.ilyolox import ILYOLOX
from clod.strategies.ilyolox_parts import (
    SelectConfig,
    ckd_losses,
    class_mean_kstd_mask,
    crs_mask,
    dynamic_weights,
    fixed_mask,
    hybrid_target,
    mean_kstd_mask,
    select_teacher_priors,
)
from tests.strategies.conftest import (
    batch,
    build_model,
    build_strategy,
    hand_step,
    level0_prior,
    logit,
    make_module,
    make_task,
)
from tests.strategies.conftest import snapshot as state_snapshot

NUM_CLASSES = 4
SIDE = 64  # 64 + 16 + 4 + 1 = 85 priors
NUM_PRIORS = 85
BINS = 8
TASK0 = make_task(0, [0, 1])
TASK1 = make_task(1, [2])  # old classes 0 and 1, new class 2, class 3 not seen yet
LN2 = math.log(2.0)


def raw_with_unit_boxes(size: int = 1, class_logit: float = -30.0) -> torch.Tensor:
    """(size, 85, 36) raw output: every class logit ``class_logit``; every side's distance
    exactly bin 1, so the level-0 prior at (x, y) predicts the box (x−8, y−8, x+8, y+8)."""
    raw = torch.full((size, NUM_PRIORS, NUM_CLASSES + 4 * BINS), class_logit)
    raw[..., NUM_CLASSES:].view(size, NUM_PRIORS, 4, BINS)[..., 1] = 30.0
    return raw


# --------------------------------------------------------------------------- selection
def test_fixed_and_mean_kstd_keep_what_their_rule_says_per_image() -> None:
    score = torch.tensor(
        [
            [0.90, 0.30, 0.29, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10],
            [0.25, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05],
        ]
    )
    # fixed 0.3: s ≥ 0.3, inclusive: image 0 keeps 0.90 and 0.30 (not 0.29), image 1 nothing.
    assert fixed_mask(score, 0.3).nonzero().tolist() == [[0, 0], [0, 1]]
    # mean_kstd, k = 2, unbiased std, per image:
    # image 0: mean 0.219, Σ(s − mean)² = 0.57449, std = √(0.57449/9) = 0.25265,
    #          τ = 0.219 + 0.5053 = 0.7243 → only 0.90 (fixed would also keep 0.30);
    # image 1: mean 0.07, Σ(s − mean)² = 0.036, std = √(0.004) = 0.06325,
    #          τ = 0.07 + 0.1265 = 0.1965 → 0.25 (which fixed 0.3 drops).
    assert mean_kstd_mask(score, 2.0).nonzero().tolist() == [[0, 0], [1, 0]]


def test_class_mean_kstd_thresholds_each_image_and_old_class_on_its_own() -> None:
    score = torch.tensor(
        [
            [0.80, 0.20, 0.20, 0.20, 0.16, 0.10, 0.10, 0.06],
            [0.40, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10, 0.05],
        ]
    )
    label = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 1]])
    # image 0, class 0: [0.8, 0.2×3]: mean 0.35, Σdev² 0.27, std √0.09 = 0.3, τ = 0.65 → 0.80.
    # image 0, class 1: [0.16, 0.10, 0.10, 0.06]: mean 0.105, Σdev² 0.0051, std 0.04123,
    #   τ = 0.1462 → 0.16 (a fixed 0.3 or the image-wide statistics would drop it).
    # image 1, class 0: [0.4, 0.1×6]: mean 0.142857, std 0.113389, τ = 0.2562 → 0.40; pooled
    #   with image 0's class 0 the threshold would be 0.4318 and drop it.
    # image 1, class 1: a single prior: std 0, τ = s → kept (the documented edge case).
    kept = class_mean_kstd_mask(score, label, 1.0, NUM_CLASSES)
    assert kept.nonzero().tolist() == [[0, 0], [0, 4], [1, 0], [1, 7]]


def crs_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two images of 8 priors; IoUs with A = (0, 0, 10, 10) are read off the box heights."""
    rest = [0.0, 0.0, 1.0, 1.0]
    entries = [
        [  # image 0: (score, label, box)
            (0.90, 0, [0, 0, 10, 10]),  # p0: class-0 centre A
            (0.20, 0, [0, 0, 10, 6.6]),  # p1: IoU 0.66 with A → neighbour, kept
            (0.20, 0, [0, 0, 10, 6.4]),  # p2: IoU 0.64 < 0.65 → dropped
            (0.20, 1, [0, 0, 10, 9]),  # p3: IoU 0.9 with A, but class 1 (no class-1 centre near)
            (0.05, 0, [0, 0, 10, 9]),  # p4: IoU 0.9 with A, but s < 0.1 → dropped
            (0.35, 1, [50, 50, 60, 60]),  # p5: class-1 centre B
            (0.12, 1, [50, 50, 60, 58]),  # p6: IoU 0.8 with B → kept
            (0.25, 0, [50, 50, 60, 59]),  # p7: IoU 0.9 with B, but class 0 → dropped
        ],
        [  # image 1
            (0.20, 0, [0, 0, 10, 9]),  # q0: IoU 0.9 with image 0's A: another image → dropped
            (0.50, 0, [30, 30, 40, 40]),  # q1: class-0 centre
            (0.15, 0, [30, 30, 40, 37]),  # q2: IoU 0.7 with q1 → kept
            *[(0.0, 0, rest)] * 5,
        ],
    ]
    score = torch.tensor([[e[0] for e in image] for image in entries])
    label = torch.tensor([[e[1] for e in image] for image in entries])
    boxes = torch.tensor([[e[2] for e in image] for image in entries], dtype=torch.float32)
    return score, label, boxes


def test_crs_keeps_centres_and_their_same_class_same_image_neighbours_above_the_floor() -> None:
    score, label, boxes = crs_case()
    kept = crs_mask(score, label, boxes, 0.3, 0.1, 0.65, NUM_CLASSES)
    assert kept.nonzero().tolist() == [[0, 0], [0, 1], [0, 5], [0, 6], [1, 1], [1, 2]]
    # the simpler rule "s ≥ 0.3" keeps only the centres
    assert fixed_mask(score, 0.3).nonzero().tolist() == [[0, 0], [0, 5], [1, 1]]
    # the same selection through the config, then NMS 0.95 (no pair above 0.95): best first
    kept = select_teacher_priors(score, label, boxes, SelectConfig(), NUM_CLASSES)
    assert list(zip(kept.image.tolist(), kept.prior.tolist(), strict=True)) == [
        (0, 0), (1, 1), (0, 5), (0, 1), (1, 2), (0, 6)
    ]  # fmt: skip


def test_nms_095_keeps_a_cluster_and_removes_a_near_duplicate() -> None:
    score = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5]])
    label = torch.tensor([[0, 0, 0, 0, 1]])
    boxes = torch.tensor(
        [
            [
                [0, 0, 100, 100],  # p0
                [0, 0, 100, 96],  # p1: IoU 0.96 with p0 → suppressed
                [0, 0, 100, 90],  # p2: IoU 0.90 with p0 → kept
                [0, 0, 100, 80],  # p3: IoU 0.80 with p0, 0.889 with p2 → kept
                [0, 0, 100, 97],  # p4: IoU 0.97 with p0, but class 1 → kept
            ]
        ],
        dtype=torch.float32,
    )
    config = SelectConfig(method="fixed", score_thr=0.3)
    assert select_teacher_priors(score, label, boxes, config, 2).prior.tolist() == [0, 2, 3, 4]
    # at the usual 0.65 the cluster collapses to one box per class
    tight = SelectConfig(method="fixed", score_thr=0.3, nms_iou=0.65)
    assert select_teacher_priors(score, label, boxes, tight, 2).prior.tolist() == [0, 4]


def test_pseudo_ground_truth_is_old_classes_only_with_the_teacher_prior_as_id() -> None:
    strategy = ILYOLOX(ignore_confident_old=True, distill_keep_quality=True)
    module = make_module(build_model(), strategy, TASK1)
    a, b = level0_prior(16, 16), level0_prior(48, 48)
    teacher = raw_with_unit_boxes(size=2)
    teacher[0, a, 3] = logit(0.95)  # class 3 is not old: ignored even though it is the max
    teacher[0, a, 1] = logit(0.60)  # → s = 0.60, c* = 1: a crs centre
    teacher[0, b, 2] = logit(0.99)  # class 2 is new at task 1: never a pseudo box
    step = hand_step(raw_with_unit_boxes(size=2), teacher, batch(size=2, side=SIDE))
    supervision = strategy.supervision(module, step)
    assert supervision is not None and supervision.extra_route == "distill_keep_quality"
    assert supervision.extra_boxes is not None and supervision.extra_labels is not None
    assert [len(x) for x in supervision.extra_boxes] == [1, 0]
    assert torch.allclose(supervision.extra_boxes[0], torch.tensor([[8.0, 8.0, 24.0, 24.0]]))
    assert supervision.extra_labels[0].tolist() == [1]
    assert supervision.extra_ids is not None and supervision.extra_ids[0].tolist() == [a]
    assert strategy.last_counts["pseudo_per_image"] == 0.5
    # ignore_confident_old: the old channels (0, 1) at the one prior with s ≥ 0.3
    ignore = supervision.ignore_negatives
    assert ignore is not None and ignore.shape == (2, NUM_PRIORS, NUM_CLASSES)
    assert ignore.nonzero().tolist() == [[0, a, 0], [0, a, 1]]


# --------------------------------------------------------------------------- routing
class RecordingILYOLOX(ILYOLOX):
    """ILYOLOX unchanged, remembering the assignment the engine handed to it."""

    assigned: Assigned | None = None

    def training_loss(
        self, module: TrainingModule, step: Step, assigned: Assigned
    ) -> dict[str, torch.Tensor]:
        self.assigned = assigned
        return super().training_loss(module, step, assigned)


def confident_task1_module(**options: Any) -> tuple[Any, RecordingILYOLOX]:
    """Task 1 with a teacher that scores old class 0 at σ(3) ≈ 0.95 at every prior, so a
    fixed 0.3 selection turns many of its boxes (7 strides wide) into pseudo ground truth.

    The student's boxes are then shrunk to about 2 strides, so its predictions no longer
    coincide with the pseudo boxes and the annotated box (:func:`one_new_object`) still
    wins some priors in the assignment."""
    detector = build_model()
    with torch.no_grad():
        for conv in detector.head.gfl_cls:
            conv.bias[0] = 3.0
    strategy = RecordingILYOLOX(select={"method": "fixed"}, **options)
    module = make_module(detector, strategy, TASK1)
    with torch.no_grad():
        for conv in module.head.gfl_cls:
            conv.bias[NUM_CLASSES:].view(4, BINS)[:, 1] = 5.0
    return module, strategy


def one_new_object(size: int = 2) -> Batch:
    """Each image: one annotated box of the new class 2."""
    images = batch(size=size, side=SIDE)
    images.boxes = [torch.tensor([[36.0, 36.0, 60.0, 60.0]]) for _ in range(size)]
    images.labels = [torch.tensor([2]) for _ in range(size)]
    return images


def student_raw_grads(module: Any, images: Batch) -> tuple[dict[str, torch.Tensor], Any]:
    """The step's terms, with a hook keeping the student's raw output (what the losses read)."""
    captured: dict[str, torch.Tensor] = {}

    def keep_raw(_module: Any, _inputs: Any, output: HeadOutput) -> None:
        captured["raw"] = output.raw

    handle = module.student.register_forward_hook(keep_raw)
    try:
        total, terms = module.training_losses(images)
    finally:
        handle.remove()
    return {"total": total, **terms}, captured["raw"]


@pytest.mark.parametrize(
    ("route", "ckd"), [("distill", False), ("distill", True), ("standard", False)]
)
def test_old_positives_leave_the_detection_loss_only_under_distill(route: str, ckd: bool) -> None:
    torch.manual_seed(0)
    module, strategy = confident_task1_module(route=route, ckd=ckd)
    terms, raw = student_raw_grads(module, one_new_object())
    assigned = strategy.assigned
    assert assigned is not None
    old = assigned.extra_positive
    new = assigned.positive & ~old
    assert bool(old.any()) and bool(new.any())
    assert strategy.last_counts["old_positives"] == float(old.sum())
    (det_grad,) = torch.autograd.grad(terms["loss"], raw, retain_graph=True)
    per_prior = det_grad.abs().sum(dim=-1)
    assert per_prior[new].gt(0).all()  # annotated positives always learn
    if route == "distill":
        assert not per_prior[old].any()  # no QFL, GIoU or DFL at the old positives
    else:
        assert per_prior[old].gt(0).all()
    assert ("ckd_cls" in terms) == ckd
    if ckd:  # CKD alone trains the old positives: their class and box logits move
        (total_grad,) = torch.autograd.grad(terms["total"], raw)
        cls_part, box_part = total_grad[..., :NUM_CLASSES], total_grad[..., NUM_CLASSES:]
        assert cls_part[old].abs().sum(dim=-1).gt(0).all()
        assert box_part[old].abs().sum(dim=-1).gt(0).all()
        assert terms["ckd_cls"].item() > 0 and terms["ckd_loc"].item() > 0


def test_ckd_under_route_standard_is_an_attached_zero() -> None:
    module, strategy = confident_task1_module(route="standard", ckd=True)
    terms, _ = student_raw_grads(module, one_new_object())
    assert strategy.last_counts["old_positives"] > 0  # there are old positives, yet
    for key in ("ckd_cls", "ckd_loc"):
        assert terms[key].item() == 0.0 and terms[key].requires_grad


# --------------------------------------------------------------------------- CKD
def test_ckd_weights_are_detached_in_0_2_and_sum_to_2() -> None:
    generator = torch.Generator().manual_seed(0)
    cls_error = torch.rand(6, generator=generator).requires_grad_(True) * 3
    loc_error = torch.rand(6, generator=generator).requires_grad_(True)
    w_cls, w_loc = dynamic_weights(cls_error, loc_error)
    assert not w_cls.requires_grad and not w_loc.requires_grad
    assert bool(((w_cls >= 0) & (w_cls <= 2) & (w_loc >= 0) & (w_loc <= 2)).all())
    assert torch.allclose(w_cls + w_loc, torch.full((6,), 2.0), atol=1e-5)
    # both errors 0: ε keeps the weights finite (0, 0) instead of NaN
    w_cls, w_loc = dynamic_weights(torch.zeros(1), torch.zeros(1))
    assert w_cls.item() == 0.0 and w_loc.item() == 0.0


def test_ckd_losses_match_hand_values_and_the_weights_carry_no_gradient() -> None:
    # One old positive: student logit 0 (σ = 0.5), teacher logit 30 (target ≈ 1), so
    # e_cls = BCE(0, 1) = ln 2 and ∂e_cls/∂z = σ(0) − 1 = −0.5. Boxes (0,0,10,10) vs
    # (0,0,10,5): IoU 0.5, hull = union, GIoU 0.5, e_loc = 0.5.
    student = torch.zeros(1, 1, requires_grad=True)
    teacher = torch.full((1, 1), 30.0)
    student_box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    teacher_box = torch.tensor([[0.0, 0.0, 10.0, 5.0]])
    terms = ckd_losses(student, teacher, student_box, teacher_box)
    w_cls = 2 * LN2 / (LN2 + 0.5 + 1e-6)  # 1.161880
    w_loc = 2 * 0.5 / (LN2 + 0.5 + 1e-6)  # 0.838120
    assert terms.cls_weight.item() == pytest.approx(w_cls, rel=1e-5)
    assert terms.cls.item() == pytest.approx(1.0 * w_cls * LN2, rel=1e-5)  # 0.805350
    assert terms.loc.item() == pytest.approx(5.0 * w_loc * (1 - 0.5**2), rel=1e-5)  # 3.142950
    # Detached weights: ∂L_cls/∂z = w_cls·(−0.5) = −0.580940. Through attached weights it
    # would add e_cls·∂w_cls/∂z = ln2 · 2e_loc/(e_cls+e_loc)² · (−0.5) ≈ −0.243.
    (grad,) = torch.autograd.grad(terms.cls, student)
    assert grad.item() == pytest.approx(-0.5 * w_cls, rel=1e-5)
    # GFL's form: 2·(1 − GIoU)
    giou = ckd_losses(student, teacher, student_box, teacher_box, loc_loss="giou", loc_weight=2.0)
    assert giou.loc.item() == pytest.approx(2.0 * w_loc * 0.5, rel=1e-5)


def test_each_hybrid_variant_and_onehot_make_the_target_they_name() -> None:
    probability = torch.tensor([[0.6, 0.3, 0.1]])
    target, weight = hybrid_target(probability, "none", onehot=False)
    assert torch.equal(target, probability) and weight is None
    target, weight = hybrid_target(probability, "hy1", onehot=False)
    assert torch.allclose(target, torch.tensor([[1.0, 0.3, 0.1]])) and weight is None
    target, weight = hybrid_target(probability, "hy2", onehot=False)  # + (1 − 0.6)
    assert torch.allclose(target, torch.tensor([[1.0, 0.7, 0.5]])) and weight is None
    target, weight = hybrid_target(probability, "hy3", onehot=False)  # weight (1 − 0.6)²
    assert torch.equal(target, probability) and weight is not None
    assert weight.tolist() == pytest.approx([0.16])
    target, _ = hybrid_target(torch.tensor([[0.2, 0.7, 0.1]]), "none", onehot=True)
    assert target.tolist() == [[0.0, 1.0, 0.0]]
    target, _ = hybrid_target(probability, "hy2", onehot=True)  # one-hot after hy2's shift
    assert target.tolist() == [[1.0, 0.0, 0.0]]
    # hy3 replaces the dynamic class weight; the box weight stays dynamic
    logits = torch.logit(probability)
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    terms = ckd_losses(logits, logits, box, box, hybrid="hy3")
    assert terms.cls_weight.tolist() == pytest.approx([0.16])
    assert terms.loc_weight.item() == pytest.approx(0.0, abs=1e-5)  # e_loc = 0
    entropy = F.binary_cross_entropy(probability, probability, reduction="sum").item()
    assert terms.cls.item() == pytest.approx(0.16 * entropy, rel=1e-5)


@pytest.mark.parametrize("channels", ["old", "all"])
def test_training_loss_reads_the_teacher_at_q_and_the_student_at_p(channels: str) -> None:
    strategy = ILYOLOX(ckd_cls_channels=channels)
    module = make_module(build_model(), strategy, TASK1)
    q, p = level0_prior(16, 16), level0_prior(24, 16)
    teacher = raw_with_unit_boxes()
    teacher[0, q, :NUM_CLASSES] = torch.tensor([30.0, -30.0, 30.0, 30.0])  # targets 1, 0, 1, 1
    student = raw_with_unit_boxes(class_logit=0.0)
    student[0, p, :2] = torch.tensor([2.0, -2.0])
    student.requires_grad_(True)
    # The pseudo box is the teacher's box at q; p (one prior to the right) matched it.
    targets = Targets(
        boxes=torch.tensor([[[8.0, 8.0, 24.0, 24.0]]]),
        labels=torch.tensor([[0]]),
        valid=torch.tensor([[True]]),
        extra=torch.tensor([[True]]),
        extra_id=torch.tensor([[q]]),
    )
    positive = torch.zeros(1, NUM_PRIORS, dtype=torch.bool)
    positive[0, p] = True
    zeros = torch.zeros(1, NUM_PRIORS)
    assigned = Assigned(targets, positive, zeros.long(), zeros)
    terms = strategy.training_loss(module, hand_step(student, teacher, batch(1, SIDE)), assigned)
    # Student box at p: (16, 8, 32, 24); teacher box (8, 8, 24, 24): IoU 128/384 = 1/3, the
    # hull is the union, so GIoU = 1/3 and e_loc = 2/3.
    # e_cls over old channels at q: BCE(2, 1) + BCE(−2, 0) = 2·softplus(−2) = 0.253856
    # (at p the teacher's targets are 0, which would give softplus(2) + softplus(−2));
    # all channels add BCE(0, 1) twice: + 2 ln 2.
    softplus = math.log1p(math.exp(-2.0))
    e_cls = 2 * softplus + (2 * LN2 if channels == "all" else 0.0)
    e_loc = 2.0 / 3.0
    w_cls, w_loc = 2 * e_cls / (e_cls + e_loc + 1e-6), 2 * e_loc / (e_cls + e_loc + 1e-6)
    assert terms["ckd_cls"].item() == pytest.approx(w_cls * e_cls, rel=1e-5)
    assert terms["ckd_loc"].item() == pytest.approx(5.0 * w_loc * (1 - 1 / 9), rel=1e-5)
    assert strategy.last_counts["old_positives"] == 1.0


def test_every_term_is_an_attached_zero_when_nothing_is_selected() -> None:
    # An untrained teacher scores every class at σ(−4.595) ≈ 0.01: no crs centre at all.
    module = make_module(build_model(), build_strategy("ilyolox"), TASK1)
    _, terms = module.training_losses(batch(size=2, side=SIDE))
    assert module.strategy.last_counts == {"pseudo_per_image": 0.0, "old_positives": 0.0}
    for key in ("ckd_cls", "ckd_loc"):
        assert terms[key].item() == 0.0 and terms[key].requires_grad
        terms[key].backward(retain_graph=True)  # still part of the graph (DDP)


# --------------------------------------------------------------------------- engine
@pytest.mark.parametrize("name", ["ilyolox", "ilyolox_shipped"])
def test_task_zero_has_no_supervision_and_no_terms(name: str) -> None:
    strategy = build_strategy(name)
    assert strategy.base_training_signature() == {}
    module = make_module(build_model(), strategy, TASK0)
    assert module.teacher is None
    images = batch(size=2, side=SIDE)
    output = module(images.images)
    assert strategy.supervision(module, hand_step(output.raw.detach(), None, images)) is None
    total, terms = module.training_losses(images)
    assert not any(k.startswith("ckd") for k in terms)
    assert torch.equal(total, terms["loss"])


def test_a_training_step_leaves_the_teacher_and_its_bn_statistics_unchanged() -> None:
    module, strategy = confident_task1_module()
    teacher = module.teacher
    assert teacher is not None
    before = state_snapshot(teacher)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    total, _ = module.training_losses(one_new_object())
    total.backward()
    optimizer.step()
    assert strategy.last_counts["old_positives"] > 0  # CKD did run
    assert not teacher.training
    after = state_snapshot(teacher)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"select": {"method": "topk"}}, r"strategy\.select\.method"),
        ({"select": {"centre_thr": 0.3}}, r"strategy\.select has unknown keys"),
        ({"select": {"low_thr": 0.5}}, r"strategy\.select\.low_thr"),
        ({"select": {"nms_iou": 0.0}}, r"strategy\.select\.nms_iou"),
        ({"select": {"score_thr": "high"}}, r"strategy\.select\.score_thr"),
        ({"route": "posnoprev"}, r"strategy\.route"),
        ({"route": "standard", "distill_keep_quality": True}, r"strategy\.distill_keep_quality"),
        ({"ckd_cls_channels": "new"}, r"strategy\.ckd_cls_channels"),
        ({"loc_loss": "l1"}, r"strategy\.loc_loss"),
        ({"hybrid": "hy4"}, r"strategy\.hybrid"),
        ({"loc_weight": -1.0}, r"strategy\.loc_weight"),
        ({"ignore_score_thr": 2.0}, r"strategy\.ignore_score_thr"),
    ],
)
def test_a_bad_config_value_names_its_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        ILYOLOX(**options)


def test_crs_equals_a_brute_force_per_image_loop_in_one_pass_and_in_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    generator = torch.Generator().manual_seed(1)
    images, priors, classes = 2, 120, 3
    score = torch.rand(images, priors, generator=generator) * 0.6
    label = torch.randint(classes, (images, priors), generator=generator)
    corner = torch.rand(images, priors, 2, generator=generator) * 40
    boxes = torch.cat(
        (corner, corner + 5 + torch.rand(images, priors, 2, generator=generator) * 20), -1
    )
    expected = torch.zeros(images, priors, dtype=torch.bool)
    for b in range(images):  # the rule read literally, one prior at a time
        iou = pairwise_iou(boxes[b], boxes[b])
        for j in range(priors):
            centres = (score[b] >= 0.3) & (label[b] == label[b, j])
            near = bool((iou[j][centres] >= 0.65).any())
            expected[b, j] = bool(score[b, j] >= 0.3) or (bool(score[b, j] >= 0.1) and near)
    assert int(expected.sum()) - int((score >= 0.3).sum()) > 0  # some neighbours exist
    assert torch.equal(crs_mask(score, label, boxes, 0.3, 0.1, 0.65, classes), expected)
    monkeypatch.setattr(ilyolox_parts, "MAX_PAIRS", 37)  # many small chunks
    assert torch.equal(crs_mask(score, label, boxes, 0.3, 0.1, 0.65, classes), expected)
