"""SID as the reference implements it (docs/strategies.md §5).

Everything is trainable; the teacher is the whole previous model, run on the student's
batch. L = L_det + α·L_cls + β·L_feat:

- ``alpha`` weights L_cls, the MSE of the **old classes'** raw logits at every prior;
- ``beta`` weights L_feat, Σ over the four levels of the dense MSE of the head-tower
  outputs (every pixel and channel).

The reference's CLI swaps the two (its ``--alpha`` multiplies the feature term); clod
gives ``alpha`` and ``beta`` the same meaning here and in ``latent``.
"""

from __future__ import annotations

import torch

from clod.models.targets import Assigned
from clod.strategies.base import Step, TrainingModule
from clod.strategies.distillation import FrozenBN, TeacherStrategy, class_and_feature_terms


class SID(TeacherStrategy):
    """Old-class logit (``alpha``) and head-tower feature (``beta``) distillation, full teacher."""

    name = "sid"

    def __init__(
        self,
        name: str | None = None,
        joint: bool | None = None,
        alpha: float = 1.0,
        beta: float = 1.0,
        frozen_bn: FrozenBN = "eval",
    ) -> None:
        super().__init__(name=name, joint=joint, frozen_bn=frozen_bn)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def training_loss(
        self, module: TrainingModule, step: Step, assigned: Assigned
    ) -> dict[str, torch.Tensor]:
        output, teacher = step.student, step.teacher
        if teacher is None:
            return {}
        return class_and_feature_terms(
            step.head, output, teacher, self.old_classes, self.alpha, self.beta
        )
