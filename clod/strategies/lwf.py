"""Learning without Forgetting as the reference implements it (docs/strategies.md §4).

Everything is trainable; the teacher is the whole previous model (backbone, neck and
head), run on the student's batch. L = L_det + α·MSE(H^S, H^T) with H the whole raw head
output, B×N×(C+32): every class logit (old, new and future) and every box-distribution
logit at every prior, no temperature. ``outputs: old_cls`` restricts the term to the
old classes' logits (a variant, not the reference).
"""

from __future__ import annotations

from typing import Literal

import torch

from clod.errors import ConfigError
from clod.models.targets import Assigned
from clod.strategies.base import Step, TrainingModule
from clod.strategies.distillation import (
    FrozenBN,
    TeacherStrategy,
    old_score_logit_mse,
    whole_output_mse,
)


class LwF(TeacherStrategy):
    """Output distillation from the full previous model, weight ``alpha``."""

    name = "lwf"

    def __init__(
        self,
        name: str | None = None,
        joint: bool | None = None,
        alpha: float = 1.0,
        outputs: Literal["all", "old_cls"] = "all",
        frozen_bn: FrozenBN = "eval",
    ) -> None:
        super().__init__(name=name, joint=joint, frozen_bn=frozen_bn)
        if outputs not in ("all", "old_cls"):
            raise ConfigError(f"strategy.outputs must be all or old_cls, got {outputs!r}")
        self.alpha = float(alpha)
        self.outputs = outputs

    def training_loss(
        self, module: TrainingModule, step: Step, assigned: Assigned
    ) -> dict[str, torch.Tensor]:
        output, teacher = step.student, step.teacher
        if teacher is None:
            return {}
        if self.outputs == "all":
            term = whole_output_mse(output.raw, teacher.raw)
        else:
            term = old_score_logit_mse(step.head, output, teacher, self.old_classes)
        return {"distill_output": self.alpha * term}
