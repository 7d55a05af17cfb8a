"""What the distillation strategies share: a frozen teacher and the distillation terms.

Teacher rules (docs/strategies.md §0): a copy of the student's weights at task start, never
updated, ``requires_grad=False``, outside the optimiser, its forward under ``no_grad``,
in eval mode (the module's ``train()`` keeps it there), run on the student's augmented
batch. ``frozen_bn: train`` is the reference's habit of leaving it in train mode; it is
offered only for reference fidelity.

Loss terms (docs/strategies.md notation): ``z`` the raw class logits, ``f_l`` the head-tower
outputs; "MSE" is the mean over every element. A term over an empty selection is a zero
still attached to the student's graph, so every DDP rank backpropagates the same graph.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clod.data.tasks import Task
from clod.data.types import Batch
from clod.errors import ConfigError
from clod.models.head_protocol import DetectionHead
from clod.models.outputs import HeadOutput
from clod.strategies.base import FrozenBN, Strategy, TrainingModule
from clod.utils.signals import deferred_signals


def attached_zero(prediction: torch.Tensor) -> torch.Tensor:
    """A zero that keeps ``prediction`` in the graph (DDP needs every rank to use it)."""
    return prediction.sum() * 0.0


def whole_output_mse(student_raw: torch.Tensor, teacher_raw: torch.Tensor) -> torch.Tensor:
    """MSE over every class and regression logit at every prior (LwF as the reference has it)."""
    return F.mse_loss(student_raw, teacher_raw)


def class_logit_mse(
    student_raw: torch.Tensor, teacher_raw: torch.Tensor, channels: torch.Tensor
) -> torch.Tensor:
    """MSE of the raw logits at ``channels`` (indices into the last axis, e.g. the head's
    ``score_channels`` of the old classes) at every prior."""
    if channels.numel() == 0:
        return attached_zero(student_raw)
    index = channels.to(student_raw.device)
    return F.mse_loss(
        student_raw.index_select(-1, index),
        teacher_raw.index_select(-1, index.to(teacher_raw.device)),
    )


def tower_feature_mse(
    student_towers: Sequence[torch.Tensor], teacher_towers: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Σ over levels of the dense MSE between tower outputs (every pixel and channel)."""
    if len(student_towers) != len(teacher_towers):
        raise ValueError(
            f"{len(student_towers)} student tower outputs but {len(teacher_towers)} teacher ones"
        )
    terms = [F.mse_loss(s, t) for s, t in zip(student_towers, teacher_towers, strict=True)]
    return torch.stack(terms).sum()


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with no gradients, in eval mode (what ``TrainingModule.set_teacher`` expects).

    A stop signal arriving during the copy is delivered after it (see clod.utils.signals).
    """
    with deferred_signals():
        teacher = copy.deepcopy(module)
    teacher.requires_grad_(False)
    return teacher.eval()


class TeacherStrategy(Strategy):
    """A strategy distilling from a frozen copy of the previous task's model.

    The teacher is the whole previous model unless a subclass says otherwise
    (:meth:`build_teacher`, :meth:`teacher_forward`); subclasses add their terms. There
    is no teacher at task 0, so task 0 is plain training and returns no term: it trains
    bit for bit as naive does, which lets every such strategy share one base model.

    Args:
        frozen_bn: ``eval`` (clod): the teacher (and a frozen backbone) normalise with their
            running statistics, which never change. ``train``: the reference's behaviour,
            batch statistics and drifting running statistics; for reference fidelity only.
    """

    def __init__(
        self, name: str | None = None, joint: bool | None = None, frozen_bn: FrozenBN = "eval"
    ) -> None:
        super().__init__(name=name, joint=joint)
        if frozen_bn not in ("eval", "train"):
            raise ConfigError(f"strategy.frozen_bn must be eval or train, got {frozen_bn!r}")
        self.frozen_bn: FrozenBN = frozen_bn
        # Global indices of the old classes of the current task (set at task start).
        self.old_classes = torch.zeros(0, dtype=torch.long)

    def build_teacher(self, module: TrainingModule) -> nn.Module:
        """The part of ``module`` to copy as teacher (it holds the previous task's weights);
        by default the whole model: backbone, neck and head."""
        return module.whole_model()

    def teacher_forward(
        self, teacher: nn.Module, batch: Batch, features: Sequence[torch.Tensor]
    ) -> HeadOutput:
        """The teacher's output on this batch (called under ``no_grad``); by default the
        whole teacher model on the student's images."""
        return teacher(batch.images)

    def on_task_start(self, module: TrainingModule, task: Task) -> None:
        self.old_classes = torch.tensor(task.old, dtype=torch.long)
        module.set_frozen_bn(self.frozen_bn)
        if task.index > 0:
            module.set_teacher(frozen_copy(self.build_teacher(module)))

    def teacher_output(
        self, module: TrainingModule, batch: Batch, features: Sequence[torch.Tensor]
    ) -> HeadOutput | None:
        """The teacher's output without gradients; None before there is a teacher (task 0)."""
        if module.teacher is None:
            return None
        with torch.no_grad():
            return self.teacher_forward(module.teacher, batch, features)

    def base_training_signature(self) -> dict[str, Any] | None:
        return {}  # no teacher at task 0: plain training


def old_score_logit_mse(
    head: DetectionHead, student: HeadOutput, teacher: HeadOutput, old_classes: torch.Tensor
) -> torch.Tensor:
    """MSE of the raw logits the old classes' scores are made of, at every prior: their
    class logits (and, on a head with objectness, the objectness logit)."""
    if old_classes.numel() == 0:
        return attached_zero(student.raw)
    channels = head.score_channels(old_classes.to(student.raw.device))
    return class_logit_mse(student.raw, teacher.raw, channels)


def class_and_feature_terms(
    head: DetectionHead,
    student: HeadOutput,
    teacher: HeadOutput,
    old_classes: torch.Tensor,
    alpha: float,
    beta: float,
) -> dict[str, torch.Tensor]:
    """SID's and Latent Distillation's terms, weighted: α·L_cls and β·L_feat.

    L_cls: MSE of the old classes' raw score logits (old classes only: the reference's
    attempt to append the future-class slots appends nothing). L_feat: Σ_l dense MSE of the
    head-tower outputs. Regression logits and neck outputs are not distilled.
    """
    return {
        "distill_cls": alpha * old_score_logit_mse(head, student, teacher, old_classes),
        "distill_feat": beta * tower_feature_mse(student.towers, teacher.towers),
    }
