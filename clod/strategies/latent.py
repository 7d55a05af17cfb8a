"""Latent Distillation (docs/strategies.md §6).

From task ``freeze_from_task`` on, the backbone is frozen (eval mode, no gradients) and
shared: it runs **once** per batch, under ``no_grad``, and its features feed both the
frozen teacher neck+head and the trainable student neck+head. Both neck+heads start
from the previous task's weights. L = L_det + α·L_cls + β·L_feat, with the same terms
and the same meaning of ``alpha`` (old-class logits) and ``beta`` (head-tower features)
as ``sid``.

``freeze_from_task: 1`` (default) trains task 0 as plain training, so it shares the base
model with the other strategies; ``0`` freezes the (pretrained) backbone from task 0, as
the reference's HEAD driver does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from clod.data.tasks import Task
from clod.data.types import Batch
from clod.errors import ConfigError
from clod.models.outputs import HeadOutput
from clod.models.targets import Assigned
from clod.strategies.base import Step, TrainingModule
from clod.strategies.distillation import FrozenBN, TeacherStrategy, class_and_feature_terms


class LatentDistillation(TeacherStrategy):
    """Frozen shared backbone; teacher = the previous neck+head on the same features."""

    name = "latent"

    def __init__(
        self,
        name: str | None = None,
        joint: bool | None = None,
        alpha: float = 1.0,
        beta: float = 1.0,
        freeze_from_task: int = 1,
        frozen_bn: FrozenBN = "eval",
    ) -> None:
        super().__init__(name=name, joint=joint, frozen_bn=frozen_bn)
        if freeze_from_task not in (0, 1):
            # The teacher shares the student's backbone features, which is only the previous
            # model's backbone if the backbone is frozen whenever there is a teacher.
            raise ConfigError(f"strategy.freeze_from_task must be 0 or 1, got {freeze_from_task}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.freeze_from_task = int(freeze_from_task)

    def on_task_start(self, module: TrainingModule, task: Task) -> None:
        if task.index >= self.freeze_from_task:
            module.freeze_backbone()
        super().on_task_start(module, task)

    def build_teacher(self, module: TrainingModule) -> nn.Module:
        return module.student

    def teacher_forward(
        self, teacher: nn.Module, batch: Batch, features: Sequence[torch.Tensor]
    ) -> HeadOutput:
        return teacher(features)  # the shared backbone's features: no second backbone pass

    def training_loss(
        self, module: TrainingModule, step: Step, assigned: Assigned
    ) -> dict[str, torch.Tensor]:
        output, teacher = step.student, step.teacher
        if teacher is None:
            return {}
        return class_and_feature_terms(
            step.head, output, teacher, self.old_classes, self.alpha, self.beta
        )

    def base_training_signature(self) -> dict[str, Any] | None:
        if self.freeze_from_task == 0:  # task 0 trains only neck and head
            return {"frozen_backbone": True, "frozen_bn": self.frozen_bn}
        return {}
