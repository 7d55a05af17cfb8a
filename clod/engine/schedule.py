"""Learning-rate schedule: linear warm-up, then cosine per epoch (docs/protocol.md §6).

During warm-up (step < W) the factor is ``1 - (1 - step/W)(1 - ratio)``, overriding
the cosine, as the reference does. After it, the factor for epoch ``e`` is
``eta_min/lr0 + (1 - eta_min/lr0)(1 + cos(pi e / T_max)) / 2``.

The warm-up is capped at ``max_fraction`` of the task's steps: with the reference's
fixed 500 steps, a short task (15p1's sheep: 100 steps at batch 64) would train
entirely inside the warm-up and never reach the base learning rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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
            return 1.0 - (1.0 - step / self.warmup) * (1.0 - self.warmup_ratio)
        epoch = step // max(1, self.steps_per_epoch)
        cosine = (1.0 + math.cos(math.pi * epoch / self.t_max)) / 2.0
        return self.eta_min_ratio + (1.0 - self.eta_min_ratio) * cosine
