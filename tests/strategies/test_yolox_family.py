"""Every strategy's mechanism on the second head family, YOLOX-Nano (docs/yolox.md §9).

The family-independent mechanisms (teacher once per step, frozen statistics, task 0 plain)
run on both families in test_distillation.py; this file checks what differs on YOLOX: the
class term matches the objectness next to the old class logits, the feature term reads the
decoupled towers, ERD's counterparts and the loss controls.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clod.errors import ConfigError
from clod.models.yolox.head import CLS_OFFSET, OBJ_CHANNEL
from clod.strategies.supervision import supervised_detection_loss
from tests.strategies.conftest import batch, build_model, build_strategy, make_module, make_task

TASK1 = make_task(1, [2])  # old classes 0 and 1; class 3 is a future class
ALL = ["naive", "joint", "replay", "lwf", "sid", "latent", "erd", "ilyolox", "ilyolox_shipped"]
ALL += ["pseudo_label"]


def calibrated_yolox() -> torch.nn.Module:
    """YOLOX-Nano whose BatchNorm statistics are those of the test batch. At initialisation
    the running statistics (mean 0, var 1) make an eval-mode YOLOX's deeper features vanish
    (std ~1e-9 at the head towers), so every prior would score the same."""
    detector = build_model("yolox_nano")
    norms = [m for m in detector.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: one pass sets the batch's statistics
    detector.train()
    with torch.no_grad():
        detector(batch().images)
    for norm in norms:
        norm.momentum = 0.03
    return detector


def yolox_module(name: str, **overrides):
    return make_module(calibrated_yolox(), build_strategy(name, **overrides), TASK1)


@pytest.mark.parametrize("name", ALL)
def test_every_strategy_trains_a_step_on_yolox(name: str) -> None:
    torch.manual_seed(0)
    module = yolox_module(name)
    total, terms = module.training_losses(batch())
    assert torch.isfinite(total)
    assert {"loss_iou", "loss_obj", "loss_cls"} <= set(terms)
    total.backward()
    grads = [p.grad for p in module.student.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(("name", "key"), [("lwf", "distill_output"), ("sid", "distill_cls")])
def test_class_term_matches_old_class_logits_and_the_objectness(name: str, key: str) -> None:
    options = {"outputs": "old_cls"} if name == "lwf" else {"beta": 0.0}
    module = yolox_module(name, alpha=3.0, **options)
    module.eval()
    images = batch()
    head = module.head
    with torch.no_grad():  # the new and the future class, and the boxes: no effect
        for conv in head.cls_preds:
            conv.bias[2:4] += 1.0
        for conv in head.reg_preds:
            conv.bias += 1.0
    _, terms = module.training_losses(images)
    assert terms[key].item() == 0.0
    with torch.no_grad():  # the objectness moves by 1 at every prior: 1 of 3 channels
        for conv in head.obj_preds:
            conv.bias += 1.0
    _, terms = module.training_losses(images)
    assert terms[key].item() == pytest.approx(3.0 / 3, rel=1e-5)
    with torch.no_grad():  # and old class 0 too: 2 of 3 channels
        for conv in head.cls_preds:
            conv.bias[0] += 1.0
    _, terms = module.training_losses(images)
    assert terms[key].item() == pytest.approx(3.0 * 2 / 3, rel=1e-5)


@pytest.mark.parametrize("name", ["sid", "latent"])
def test_feature_term_reads_both_branches_of_every_level(name: str) -> None:
    module = yolox_module(name, alpha=0.0, beta=2.0)
    module.eval()
    images = batch()
    assert len(module(images.images).towers) == 6  # cls and reg towers of 3 levels
    _, terms = module.training_losses(images)
    assert terms["distill_feat"].item() == 0.0
    for branch in (module.head.cls_convs, module.head.reg_convs):
        hook = branch[1].register_forward_hook(lambda m, i, out: out + 0.5)
        _, terms = module.training_losses(images)
        hook.remove()
        assert terms["distill_feat"].item() == pytest.approx(2.0 * 0.25, rel=1e-5)


def test_erd_selects_by_score_and_objectness_and_distils_raw_offsets() -> None:
    torch.manual_seed(0)
    module = yolox_module("erd")
    module.eval()
    images = batch()
    _, terms = module.training_losses(images)
    assert terms["distill_cls"].item() == 0.0 and terms["distill_reg"].item() == 0.0
    strategy = module.strategy
    # The teacher's selections: classification by σ(obj)·σ(cls) over the old classes,
    # regression by the objectness logit.
    with torch.no_grad():
        teacher = module.teacher(images.images)
    assert strategy.last_selection["erd_reg_kept_per_image"] > 0
    with torch.no_grad():  # the student's boxes move by 0.1 in t_x at every prior
        for conv in module.head.reg_preds:
            conv.bias[0] += 0.1
    _, terms = module.training_losses(images)
    student = module(images.images)
    assert terms["distill_cls"].item() == 0.0
    # L1 over the kept priors: 0.1 each, weighted by the student's old-class score and 0.25,
    # summed per image and averaged over images.
    from clod.strategies.erd import regression_selection
    from clod.strategies.selection import old_class_scores

    old = old_class_scores(module.head.scores(teacher), strategy.old_classes)
    kept = regression_selection(
        module.head, teacher, old, tuple(images.images.shape[-2:]), strategy.k_std, strategy.nms_iou
    )
    weights = module.head.scores(student)[kept.image, kept.prior][:, :2].amax(-1)
    per_image = torch.zeros(len(images)).index_add(0, kept.image, 0.25 * 0.1 * weights)
    expected = strategy.reg_weight * per_image.mean()
    assert terms["distill_reg"].item() == pytest.approx(expected.item(), rel=1e-4)
    # The regression candidates are the objectness outliers.
    obj = teacher.obj_logits
    threshold = obj.mean(dim=1, keepdim=True) + strategy.k_std * obj.std(dim=1, keepdim=True)
    assert bool((obj[kept.image, kept.prior] > threshold[kept.image, 0]).all())


def test_erd_reference_decoding_is_refused_on_yolox() -> None:
    module = yolox_module("erd", reference_decoding=True)
    with pytest.raises(ConfigError, match="reference_decoding"):
        module.training_losses(batch())


def test_ilyolox_pseudo_boxes_come_from_the_objectness_times_class_score() -> None:
    module = yolox_module("pseudo_label")
    module.eval()
    images = batch()
    with torch.no_grad():  # a teacher that is sure of old class 1 everywhere but has no
        for conv in module.teacher.head.cls_preds:  # object anywhere: no pseudo box
            conv.bias[1] = 20.0
        for conv in module.teacher.head.obj_preds:
            conv.bias.fill_(-20.0)
    teacher = module.teacher(images.images)
    step_supervision = module.strategy.supervision(module, _step(module, images, teacher))
    assert step_supervision is None or all(len(b) == 0 for b in step_supervision.extra_boxes)
    with torch.no_grad():
        for conv in module.teacher.head.obj_preds:
            conv.bias.fill_(20.0)
    teacher = module.teacher(images.images)
    step_supervision = module.strategy.supervision(module, _step(module, images, teacher))
    assert sum(len(b) for b in step_supervision.extra_boxes) > 0
    assert all(bool((labels == 1).all()) for labels in step_supervision.extra_labels)


def _step(module, images, teacher):
    from clod.models.targets import pad_targets
    from clod.strategies.base import Step

    return Step(
        batch=images,
        features=(),
        student=module(images.images),
        teacher=teacher,
        head=module.head,
        input_size=tuple(images.images.shape[-2:]),
        annotated=pad_targets(images.boxes, images.labels, "cpu", torch.float32),
    )


def test_class_mask_keeps_the_class_loss_off_the_old_rows_on_yolox() -> None:
    module = yolox_module("erd")  # ERD trains the new classes only on their own channels
    images = batch()
    step = _step(module, images, None)
    mask = torch.tensor([False, False, True, True])
    from clod.strategies.base import Supervision

    losses, _ = supervised_detection_loss(module.head, step, Supervision(class_mask=mask))
    losses["loss_cls"].backward()
    for conv in module.head.cls_preds:
        assert not conv.weight.grad[:2].any() and conv.weight.grad[2:].any()


def test_raw_layout_names_match_the_head_channels() -> None:
    module = yolox_module("naive")
    output = module(batch().images)
    torch.testing.assert_close(output.obj_logits, output.raw[..., OBJ_CHANNEL])
    torch.testing.assert_close(output.cls_logits, output.raw[..., CLS_OFFSET:])
    channels = module.head.score_channels(torch.tensor([0, 1]))
    assert channels.tolist() == [CLS_OFFSET, CLS_OFFSET + 1, OBJ_CHANNEL]
    assert F.mse_loss(output.raw[..., channels], output.raw[..., channels]).item() == 0.0
