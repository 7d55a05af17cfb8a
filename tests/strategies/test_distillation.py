"""LwF, SID and Latent Distillation: what each term reads, the teacher, frozen parts and BN."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from clod.errors import ConfigError
from clod.models.detector import Detector
from clod.strategies.distillation import class_logit_mse, tower_feature_mse
from clod.strategies.latent import LatentDistillation
from tests.strategies.conftest import (
    batch,
    build_model,
    build_strategy,
    make_module,
    make_task,
    perturb_,
    snapshot,
)

TASK0 = make_task(0, [0, 1])
TASK1 = make_task(1, [2])  # old classes 0 and 1; class 3 is a future class
DISTILLERS = ["lwf", "sid", "latent", "erd", "ilyolox", "ilyolox_shipped", "pseudo_label"]
# The mechanisms every teacher strategy shares hold on both head families.
FAMILIES = ["nanodet_tiny", "yolox_nano"]


# --------------------------------------------------------------------------- the terms
def test_old_class_term_reads_only_the_old_columns_and_is_attached_when_empty() -> None:
    student = torch.randn(2, 5, 6, requires_grad=True)
    teacher = student.detach().clone()
    teacher[..., 4:] += 3.0  # only non-old columns differ
    old = torch.tensor([0, 2])
    assert class_logit_mse(student, teacher, old).item() == 0.0
    teacher[..., 2] += 1.0
    assert class_logit_mse(student, teacher, old).item() == pytest.approx(0.5)  # mean over 2 cols
    empty = class_logit_mse(student, teacher, torch.zeros(0, dtype=torch.long))
    assert empty.item() == 0.0 and empty.requires_grad  # DDP: still part of the graph
    empty.backward()
    assert student.grad is not None and not student.grad.any()


def test_feature_term_sums_the_dense_mse_of_every_level() -> None:
    student = [torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, 2)]
    teacher = [torch.ones(1, 2, 4, 4), torch.full((1, 2, 2, 2), 2.0)]
    assert tower_feature_mse(student, teacher).item() == pytest.approx(1.0 + 4.0)
    with pytest.raises(ValueError, match="tower outputs"):
        tower_feature_mse(student, teacher[:1])


# --------------------------------------------------------------------------- task 0
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", DISTILLERS)
def test_task_zero_is_plain_training(name: str, family: str) -> None:
    module = make_module(build_model(family), build_strategy(name), TASK0)
    assert module.teacher is None and not module.backbone_frozen
    total, terms = module.training_losses(batch())
    assert not any(k.startswith("distill") for k in terms)
    assert torch.equal(total, terms["loss"])


# --------------------------------------------------------------------------- LwF
def test_lwf_term_is_zero_for_the_teacher_itself_and_alpha_mse_of_the_whole_output() -> None:
    torch.manual_seed(0)
    module = make_module(build_model(), build_strategy("lwf", alpha=2.5), TASK1)
    assert isinstance(module.teacher, Detector)  # the whole previous model
    images = batch()
    module.eval()  # BN uses running statistics in both, so equal weights give equal outputs
    _, terms = module.training_losses(images)
    assert terms["distill_output"].item() == 0.0

    with torch.no_grad():
        before = module.teacher(images.images).raw
    perturb_(module.student.head)
    _, terms = module.training_losses(images)
    after = module(images.images).raw
    # every logit counts: classes old, new and future, and the box distributions
    assert terms["distill_output"].item() > 0
    assert terms["distill_output"].item() == pytest.approx(
        2.5 * F.mse_loss(after, before).item(), rel=1e-5
    )


def test_lwf_gradient_reaches_the_student_only() -> None:
    module = make_module(build_model(), build_strategy("lwf"), TASK1)
    perturb_(module.student.neck)
    _, terms = module.training_losses(batch())
    terms["distill_output"].backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    assert any(p.grad is not None and p.grad.any() for p in module.student.parameters())
    assert any(p.grad is not None and p.grad.any() for p in module.backbone.parameters())


def test_lwf_old_class_variant_ignores_new_class_and_box_logits() -> None:
    module = make_module(build_model(), build_strategy("lwf", outputs="old_cls"), TASK1)
    module.eval()
    images = batch()
    with torch.no_grad():  # shift the new class's and the box logits of the student only
        module.head.gfl_cls[0].bias[2:] += 1.0
    _, terms = module.training_losses(images)
    assert terms["distill_output"].item() == 0.0
    with torch.no_grad():
        module.head.gfl_cls[0].bias[1] += 1.0  # an old class
    _, terms = module.training_losses(images)
    assert terms["distill_output"].item() > 0


# --------------------------------------------------------------------------- SID and latent
@pytest.mark.parametrize("name", ["sid", "latent"])
def test_feature_term_reads_the_head_tower_outputs(name: str) -> None:
    module = make_module(build_model(), build_strategy(name, alpha=0.0, beta=3.0), TASK1)
    module.eval()
    images = batch()
    _, terms = module.training_losses(images)
    assert terms["distill_feat"].item() == 0.0

    # Shift one tower output of the student by +0.5 everywhere: the feature term must be
    # β·0.5² for that level alone (only levels' MSEs are summed), whatever the logits do.
    level = 2
    hook = module.head.cls_convs[level].register_forward_hook(lambda m, i, out: out + 0.5)
    _, terms = module.training_losses(images)
    hook.remove()
    assert terms["distill_feat"].item() == pytest.approx(3.0 * 0.25, rel=1e-5)
    assert terms["distill_cls"].item() == 0.0  # alpha = 0 switches the class term off


@pytest.mark.parametrize("name", ["sid", "latent"])
def test_class_term_is_alpha_mse_of_old_class_logits_only(name: str) -> None:
    module = make_module(build_model(), build_strategy(name, alpha=2.0, beta=0.0), TASK1)
    module.eval()
    images = batch()
    with torch.no_grad():  # the new class (2) and the future class (3) move: no effect
        for conv in module.head.gfl_cls:
            conv.bias[2:4] += 1.0
    _, terms = module.training_losses(images)
    assert terms["distill_cls"].item() == 0.0 and terms["distill_feat"].item() == 0.0
    with torch.no_grad():  # old class 0 moves by exactly 1 at every prior
        for conv in module.head.gfl_cls:
            conv.bias[0] += 1.0
    _, terms = module.training_losses(images)
    assert terms["distill_cls"].item() == pytest.approx(2.0 * 0.5, rel=1e-5)  # 2 old columns


def test_sid_teacher_is_the_whole_model_and_latent_teacher_only_neck_and_head() -> None:
    sid = make_module(build_model(), build_strategy("sid"), TASK1)
    latent = make_module(build_model(), build_strategy("latent"), TASK1)
    assert isinstance(sid.teacher, Detector) and not sid.backbone_frozen
    assert not hasattr(latent.teacher, "backbone") and latent.backbone_frozen
    assert set(dict(latent.teacher.named_children())) == {"neck", "head"}


def test_latent_runs_the_backbone_once_per_step() -> None:
    module = make_module(build_model(), build_strategy("latent"), TASK1)
    calls = {"backbone": 0, "student_neck": 0, "teacher_neck": 0}

    def counter(name: str):
        def hook(*_: object) -> None:
            calls[name] += 1

        return hook

    module.backbone.register_forward_hook(counter("backbone"))
    module.student.neck.register_forward_hook(counter("student_neck"))
    module.teacher.neck.register_forward_hook(counter("teacher_neck"))
    total, _ = module.training_losses(batch())
    total.backward()
    assert calls == {"backbone": 1, "student_neck": 1, "teacher_neck": 1}
    # the frozen backbone took part without gradients
    assert all(p.grad is None for p in module.backbone.parameters())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", DISTILLERS)
def test_the_teacher_runs_once_per_step_whatever_its_terms_read(name: str, family: str) -> None:
    # erd, ilyolox and pseudo_label read the teacher in the supervision and in the terms:
    # both must share one teacher pass (Step.teacher).
    module = make_module(build_model(family), build_strategy(name), TASK1)
    calls = {"teacher_head": 0, "student_head": 0}
    module.teacher.head.register_forward_hook(
        lambda *_: calls.__setitem__("teacher_head", calls["teacher_head"] + 1)
    )
    module.student.head.register_forward_hook(
        lambda *_: calls.__setitem__("student_head", calls["student_head"] + 1)
    )
    module.training_losses(batch())[0].backward()
    assert calls == {"teacher_head": 1, "student_head": 1}


def test_latent_freezes_from_the_configured_task() -> None:
    default = build_strategy("latent")
    module = make_module(build_model(), default, TASK0)
    assert not module.backbone_frozen and default.base_training_signature() == {}
    early = build_strategy("latent", freeze_from_task=0)
    module = make_module(build_model(), early, TASK0)
    assert module.backbone_frozen and module.teacher is None
    assert early.base_training_signature() == {"frozen_backbone": True, "frozen_bn": "eval"}
    with pytest.raises(ConfigError, match="freeze_from_task must be 0 or 1"):
        LatentDistillation(freeze_from_task=2)


# --------------------------------------------------------------------------- BN and frozen parts
def frozen_parts(module) -> dict[str, torch.nn.Module]:
    parts = {"teacher": module.teacher}
    if module.backbone_frozen:
        parts["backbone"] = module.backbone
    return parts


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", DISTILLERS)
def test_one_step_leaves_teacher_and_frozen_backbone_bn_statistics_unchanged(
    name: str, family: str
) -> None:
    module = make_module(build_model(family), build_strategy(name), TASK1)
    parts = frozen_parts(module)
    before = {part: snapshot(m) for part, m in parts.items()}
    student_before = snapshot(module.student)
    module.train()  # as Lightning does before fitting
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1)
    total, _ = module.training_losses(batch())
    total.backward()
    optimizer.step()
    for part, m in parts.items():
        assert not m.training, part
        for key, value in snapshot(m).items():
            assert torch.equal(value, before[part][key]), f"{part}.{key}"
    # ... while the student's BN statistics and weights did move
    changed = [
        k for k, v in snapshot(module.student).items() if not torch.equal(v, student_before[k])
    ]
    assert any("running_mean" in k for k in changed) and any("weight" in k for k in changed)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", DISTILLERS)
def test_reference_bn_option_lets_frozen_statistics_drift(name: str, family: str) -> None:
    module = make_module(build_model(family), build_strategy(name, frozen_bn="train"), TASK1)
    parts = frozen_parts(module)
    before = {part: snapshot(m) for part, m in parts.items()}
    module.train()
    with torch.no_grad():
        module.training_losses(batch())
    for part, m in parts.items():
        assert m.training
        moved = [k for k, v in snapshot(m).items() if not torch.equal(v, before[part][k])]
        assert moved and all("running" in k or "num_batches" in k for k in moved), part
    module.eval()
    assert not any(m.training for m in parts.values())


# --------------------------------------------------------------------------- a whole task
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", DISTILLERS)
def test_after_a_task_teacher_and_frozen_backbone_are_bit_identical_and_the_student_moved(
    name: str, family: str, tmp_path
) -> None:
    torch.manual_seed(0)
    module = make_module(build_model(family), build_strategy(name), TASK1)
    parts = frozen_parts(module)
    before = {part: snapshot(m) for part, m in parts.items()}
    student_before = snapshot(module.student)
    batches = [batch(seed=s) for s in range(3)]
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(batches, batch_size=None))
    assert trainer.global_step == 3
    for part, m in parts.items():
        for key, value in snapshot(m).items():
            assert torch.equal(value, before[part][key]), f"{part}.{key}"
    after = snapshot(module.student)
    assert any(not torch.equal(after[k], student_before[k]) for k in after)
    # the teacher never reached a checkpoint
    checkpoint: dict = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert not any(k.startswith("teacher.") for k in checkpoint["state_dict"])
