"""The strategy interface: what a continual-learning method changes in plain training.

The engine (:mod:`clod.engine`) owns the training loop. A strategy only says what
differs, through these hooks, each with a default that means "plain training":

- ``joint``: train once on every class (the upper bound) instead of task by task;
- :meth:`Strategy.on_task_start`: freeze parts, build a teacher, before a task trains;
- :meth:`Strategy.train_records`: the images a task trains on (replay adds its buffer);
- :meth:`Strategy.training_loss`: extra loss terms, added to the detection loss;
- :meth:`Strategy.on_task_end`: after a task is trained and evaluated (update a buffer);
- :meth:`Strategy.memory`: what the strategy holds, for the mAP-vs-memory comparison;
- :meth:`Strategy.state_dict` / :meth:`Strategy.load_state_dict`: state a resumed run needs.

A new strategy is one short file here plus one yaml in ``conf/strategy/``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from clod.data.tasks import Task
from clod.data.types import Batch, ImageRecord
from clod.models.head import HeadOutput

if TYPE_CHECKING:
    from clod.engine.module import CLODModule


class Strategy:
    """Plain training (fine-tuning); subclasses override only what they change."""

    name: str = "naive"
    joint: bool = False

    def __init__(self, name: str | None = None, joint: bool | None = None) -> None:
        if name is not None:
            self.name = name
        if joint is not None:
            self.joint = bool(joint)

    def on_task_start(self, module: CLODModule, task: Task) -> None:
        """Prepare ``module`` for ``task``; it holds the previous task's trained weights."""

    def train_records(self, task: Task) -> Sequence[ImageRecord]:
        return task.train

    def training_loss(
        self, module: CLODModule, batch: Batch, features: Sequence[torch.Tensor], output: HeadOutput
    ) -> dict[str, torch.Tensor]:
        """Extra weighted loss terms for this batch, by name; they are summed into the loss."""
        return {}

    def on_task_end(self, module: CLODModule, task: Task) -> None:
        """Called once the task is trained and evaluated."""

    def memory(self, module: CLODModule) -> dict[str, int]:
        """Memory held for training, beyond the parameter counts the engine reports."""
        return {"buffer_images": 0, "buffer_bytes": 0}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any], tasks: Sequence[Task]) -> None:
        """Restore :meth:`state_dict`; ``tasks`` lets a strategy find its records again."""
