"""The learning-rate factor against values worked out by hand (docs/protocol.md §6)."""

from __future__ import annotations

import math

import pytest

from clod.engine.schedule import WarmupCosine, warmup_steps


def test_reference_warmup_values() -> None:
    # The reference's 15p1 'sheep' task: 1 step per epoch, 100 steps, warm-up 500 at ratio 1e-4:
    # the last step (99) has lr = lr0 * (1 - (1 - 99/500)(1 - 1e-4)) = 0.19808... * lr0.
    factor = WarmupCosine(
        steps_per_epoch=1, warmup=500, warmup_ratio=1e-4, t_max=300, eta_min_ratio=0.05
    )
    assert factor(0) == pytest.approx(1e-4)
    assert factor(99) == pytest.approx(1 - (1 - 99 / 500) * (1 - 1e-4))
    assert factor(250) == pytest.approx(0.50005)


def test_cosine_after_warmup_steps_per_epoch() -> None:
    factor = WarmupCosine(
        steps_per_epoch=10, warmup=5, warmup_ratio=0.1, t_max=4, eta_min_ratio=0.05
    )
    assert factor(5) == pytest.approx(1.0)  # epoch 0: cos(0) = 1
    assert factor(9) == pytest.approx(1.0)  # last step of epoch 0
    # epoch 1 of T_max 4: 0.05 + 0.95 * (1 + cos(pi/4)) / 2
    epoch_1 = 0.05 + 0.95 * (1 + math.cos(math.pi / 4)) / 2
    assert factor(10) == pytest.approx(epoch_1) and factor(19) == pytest.approx(epoch_1)
    assert factor(40) == pytest.approx(0.05)  # epoch 4 = T_max: eta_min


def test_warmup_is_capped_by_the_task_length() -> None:
    assert warmup_steps(500, total_steps=100, max_fraction=0.1) == 10
    assert warmup_steps(500, total_steps=100_000, max_fraction=0.1) == 500
    assert warmup_steps(500, total_steps=100, max_fraction=None) == 500
