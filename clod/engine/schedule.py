"""Learning-rate schedule: linear warm-up, then a per-epoch decay (docs/protocol.md §6).

During warm-up (step < W) the factor is ``1 - (1 - step/W)(1 - ratio)``, overriding
the decay, as the reference does. After it, the factor for epoch ``e`` is one of:

- ``cosine`` (the reference's and clod's AdamW): ``eta_min/lr0 + (1 - eta_min/lr0)(1 +
  cos(pi e / T_max)) / 2``;
- ``multistep`` (the SGD step schedules of ILYOLOX and ERD): ``gamma`` to the number of
  milestones ``<= e``.

The warm-up is capped at ``max_fraction`` of the task's steps: with the reference's
fixed 500 steps, a short task (15p1's sheep: 100 steps at batch 64) would train
entirely inside the warm-up and never reach the base learning rate.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clod.errors import ConfigError


def warmup_steps(configured: int, total_steps: int, max_fraction: float | None) -> int:
    """The warm-up length for a task of ``total_steps`` steps."""
    steps = int(configured)
    if max_fraction is not None:
        steps = min(steps, int(max_fraction * total_steps))
    return max(0, steps)


@dataclass
class WarmupCosine:
    """A picklable LR factor for ``LambdaLR``, stepped once per optimiser step."""

    steps_per_epoch: int
    warmup: int
    warmup_ratio: float
    t_max: float  # epochs
    eta_min_ratio: float  # eta_min / lr0

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return _warmup(step, self.warmup, self.warmup_ratio)
        epoch = step // max(1, self.steps_per_epoch)
        cosine = (1.0 + math.cos(math.pi * epoch / self.t_max)) / 2.0
        return self.eta_min_ratio + (1.0 - self.eta_min_ratio) * cosine


@dataclass
class WarmupMultiStep:
    """Warm-up, then the factor ``gamma ** (number of milestones <= epoch)``."""

    steps_per_epoch: int
    warmup: int
    warmup_ratio: float
    milestones: Sequence[int]  # epochs, sorted
    gamma: float

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return _warmup(step, self.warmup, self.warmup_ratio)
        epoch = step // max(1, self.steps_per_epoch)
        return self.gamma ** bisect.bisect_right(list(self.milestones), epoch)


def _warmup(step: int, length: int, ratio: float) -> float:
    return 1.0 - (1.0 - step / length) * (1.0 - ratio)


def lr_factor(
    cfg: Mapping[str, Any], total_steps: int, epochs: int
) -> WarmupCosine | WarmupMultiStep:
    """The LR factor of one task from the resolved ``optimizer`` group (conf/optimizer/):
    its ``warmup`` and either ``multistep`` or ``cosine`` (the default when neither is set)."""
    epochs = max(1, int(epochs))
    steps_per_epoch = max(1, int(total_steps) // epochs)
    warmup_cfg = cfg.get("warmup") or {}
    warmup = warmup_steps(
        int(warmup_cfg.get("steps", 0)), int(total_steps), warmup_cfg.get("max_fraction")
    )
    ratio = float(warmup_cfg.get("ratio", 1.0))
    cosine, multistep = cfg.get("cosine"), cfg.get("multistep")
    if cosine is not None and multistep is not None:
        raise ConfigError(
            "optimizer: set exactly one of cosine and multistep (the other to null), "
            f"got cosine={cosine} multistep={multistep}"
        )
    if multistep is not None:
        milestones = sorted(int(m) for m in multistep.get("milestones") or [])
        return WarmupMultiStep(
            steps_per_epoch, warmup, ratio, milestones, float(multistep.get("gamma", 0.1))
        )
    cosine = cosine or {}  # neither: a cosine over the task's epochs, to eta_min 0
    lr0 = float(cfg["optimizer"]["lr"])
    return WarmupCosine(
        steps_per_epoch,
        warmup,
        ratio,
        t_max=float(cosine.get("t_max") or epochs),
        eta_min_ratio=float(cosine.get("eta_min", 0.0)) / lr0,
    )
