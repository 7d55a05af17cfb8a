"""Memory and compute accounting for the mAP-vs-memory comparison (docs/strategies.md §0 "Costs")."""

from __future__ import annotations

import copy

import pytest
import torch

from clod.engine.cost import training_step_conv_macs
from clod.models.detector import Detector
from tests.strategies.conftest import build_model, build_strategy, make_module, make_task

# NanoDet-Plus-m with 20 classes: (params held, trainable, teacher) at an incremental task.
PINS = {
    "naive": (1_174_644, 1_174_644, 0),
    "replay": (1_174_644, 1_174_644, 0),
    "lwf": (2_349_288, 1_174_644, 1_174_644),
    "sid": (2_349_288, 1_174_644, 1_174_644),
    "latent": (1_572_868, 398_224, 398_224),
}
# The spec's forward conv MACs per image at 320²: the whole model and the neck+head.
MODEL_MACS = 438.47e6
NECK_HEAD_MACS = 192.35e6


@pytest.fixture(scope="module")
def nanodet_m() -> Detector:
    return build_model("nanodet_plus_m", num_classes=20)


def at_task_one(detector: Detector, name: str):
    task = make_task(1, [19], num_classes=20, num_tasks=2)
    return make_module(detector, build_strategy(name), task)


@pytest.mark.parametrize("name", sorted(PINS))
def test_parameter_counts_of_nanodet_plus_m(nanodet_m: Detector, name: str) -> None:
    module = at_task_one(copy.deepcopy(nanodet_m), name)
    counts = module.parameter_counts()
    held, trainable, teacher = PINS[name]
    assert counts == {"params_held": held, "params_trainable": trainable, "params_teacher": teacher}
    # what the optimiser gets is what is reported trainable
    assert sum(p.numel() for p in module.parameters() if p.requires_grad) == trainable


def test_conv_macs_per_training_step(nanodet_m: Detector) -> None:
    macs = {
        name: training_step_conv_macs(at_task_one(copy.deepcopy(nanodet_m), name), [320, 320])
        for name in ("naive", "lwf", "latent")
    }
    assert macs["naive"] == pytest.approx(MODEL_MACS, rel=2e-3)
    assert macs["lwf"] == 2 * macs["naive"]  # student and a whole teacher
    # latent: the backbone once, then the student's and the teacher's neck+head
    assert macs["latent"] - macs["naive"] == pytest.approx(NECK_HEAD_MACS, rel=2e-3)
    assert macs["latent"] == pytest.approx(631e6, rel=2e-3)


def test_measuring_macs_changes_nothing(nanodet_m: Detector) -> None:
    module = at_task_one(copy.deepcopy(nanodet_m), "latent")
    before = {k: v.clone() for k, v in module.state_dict().items()}
    rng = torch.get_rng_state()
    training_step_conv_macs(module, [96, 96])
    assert module.training and module.teacher is not None and not module.teacher.training
    assert not module.backbone.training  # still frozen
    assert torch.equal(rng, torch.get_rng_state())
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key]), key
