"""The strategy interface: what a continual-learning method changes in plain training.

The engine (:mod:`clod.engine`) owns the training loop. A strategy only says what
differs, through these hooks, each with a default that means "plain training":

- ``joint``: train once on every class (the upper bound) instead of task by task;
- :meth:`Strategy.on_task_start`: freeze parts, build a teacher, before a task trains;
- :meth:`Strategy.train_loader`: a loader of its own for a task (replay's mixed batches);
- :meth:`Strategy.training_loss`: extra loss terms, added to the detection loss;
- :meth:`Strategy.on_task_end`: after a task is trained and evaluated (update a buffer);
- :meth:`Strategy.memory`: what the strategy holds, for the mAP-vs-memory comparison;
- :meth:`Strategy.state_dict` / :meth:`Strategy.load_state_dict`: state a resumed run needs;
- :meth:`Strategy.base_training_signature`: whether (and how) task 0 differs from plain
  training, so the base-model cache can share one task-0 model between strategies.

A new strategy is one short file here plus one yaml in ``conf/strategy/``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from clod.data.tasks import Task
from clod.data.types import Batch
from clod.models.head import HeadOutput

FrozenBN = Literal["eval", "train"]


class TrainingModule(Protocol):
    """What a strategy sees of the engine's module (``clod.engine.module.CLODModule``).

    The strategies depend on this, not on the engine: imports point from the engine to
    the strategies, never back.
    """

    student: nn.Module  # neck + head: backbone features -> HeadOutput; trained
    teacher: nn.Module | None  # what set_teacher installed; None before

    def whole_model(self) -> nn.Module:
        """Backbone, neck and head as one detector (images -> HeadOutput), sharing weights."""
        ...

    def freeze_backbone(self) -> None:
        """No gradients, eval mode, one run per batch whose features feed student and teacher."""
        ...

    def set_teacher(self, teacher: nn.Module) -> None:
        """Install a frozen teacher: eval mode, no gradients, outside the optimiser."""
        ...

    def set_frozen_bn(self, mode: FrozenBN) -> None:
        """BatchNorm of the frozen parts: ``eval`` (running statistics) or ``train``."""
        ...


class Strategy:
    """Plain training (fine-tuning); subclasses override only what they change."""

    name: str = "naive"
    joint: bool = False

    def __init__(self, name: str | None = None, joint: bool | None = None) -> None:
        if name is not None:
            self.name = name
        if joint is not None:
            self.joint = bool(joint)

    def on_task_start(self, module: TrainingModule, task: Task) -> None:
        """Prepare ``module`` for ``task``; it holds the previous task's trained weights."""

    def train_loader(self, task: Task, data_cfg: Mapping[str, Any], seed: int) -> DataLoader | None:
        """A training loader of the strategy's own for ``task``; None: the engine's default.

        Its sampler must be a :class:`~clod.data.sampling.EpochSampler` seeded from ``seed``
        (the run's seed for this task), so that a resumed task trains on the same batches.
        """
        return None

    def training_loss(
        self,
        module: TrainingModule,
        batch: Batch,
        features: Sequence[torch.Tensor],
        output: HeadOutput,
    ) -> dict[str, torch.Tensor]:
        """Extra weighted loss terms for this batch, by name; they are summed into the loss."""
        return {}

    def on_task_end(self, module: TrainingModule, task: Task) -> None:
        """Called once the task is trained and evaluated."""

    def memory(self, module: TrainingModule) -> dict[str, int]:
        """Memory held for training, beyond the parameter counts the engine reports."""
        return {"buffer_images": 0, "buffer_bytes": 0}

    def base_training_signature(self) -> dict[str, Any] | None:
        """What makes this strategy's task 0 differ from plain training, for the base-model cache.

        ``{}`` (the default) says task 0 trains exactly as plain fine-tuning does, so its
        model can be shared with every other such strategy. A strategy whose task 0
        differs returns the settings that make it differ (they become part of the cache
        key), or None to never use the cache.
        """
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any], tasks: Sequence[Task]) -> None:
        """Restore :meth:`state_dict`; ``tasks`` lets a strategy find its records again."""
