"""The strategy interface: what a continual-learning method changes in plain training.

The engine (:mod:`clod.engine`) owns the training loop. A strategy only says what
differs, through these hooks, each with a default that means "plain training":

- ``joint``: train once on every class (the upper bound) instead of task by task;
- :meth:`Strategy.on_task_start`: freeze parts, build a teacher, before a task trains;
- :meth:`Strategy.train_loader`: a loader of its own for a task (replay's mixed batches);
- :meth:`Strategy.teacher_output`: the teacher's outputs on the batch, computed once and
  shared by every term of the step;
- :meth:`Strategy.supervision`: changes to the detection loss's supervision: extra (pseudo)
  targets merged before assignment, a class mask, QFL elements left out, and the route
  of the positives matched to extra targets (:class:`Supervision`);
- :meth:`Strategy.training_loss`: extra loss terms, added to the detection loss; they see
  the step (:class:`Step`) and the assignment (which positive matched which target);
- :meth:`Strategy.diagnostics`: numbers about the last step to log (selection counts);
- :meth:`Strategy.on_task_end`: after a task is trained and evaluated (update a buffer);
- :meth:`Strategy.memory`: what the strategy holds, for the mAP-vs-memory comparison;
- :meth:`Strategy.state_dict` / :meth:`Strategy.load_state_dict`: state a resumed run needs;
- :meth:`Strategy.base_training_signature`: whether (and how) task 0 differs from plain
  training, so the base-model cache can share one task-0 model between strategies.

A new strategy is one short file here plus one yaml in ``conf/strategy/``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from clod.data.tasks import Task
from clod.data.types import Batch
from clod.models.head_protocol import DetectionHead
from clod.models.outputs import HeadOutput
from clod.models.targets import Assigned, Targets

FrozenBN = Literal["eval", "train"]
# Where the positives matched to extra (pseudo) targets learn (docs/strategies.md §8):
# "standard": the ordinary detection loss against their target; "distill": no detection
# loss at all at those priors (the strategy's own terms handle them); "distill_keep_quality":
# as distill, but QFL keeps their soft IoU target (the analogue of YOLOX's objectness).
ExtraRoute = Literal["standard", "distill", "distill_keep_quality"]
EXTRA_ROUTES: tuple[str, ...] = ("standard", "distill", "distill_keep_quality")


@dataclass(frozen=True)
class Step:
    """What a strategy sees of one training batch; outputs are float32 (docs/engineering.md).

    student: the student's outputs (in the graph); teacher: the teacher's outputs,
    computed once per batch without gradients (None without a teacher); features: the
    backbone features both were computed from (a frozen backbone runs once for both);
    head: the student's head, for decoding boxes and priors; input_size: (height, width);
    annotated: the batch's own boxes as padded :class:`~clod.models.targets.Targets`, padded
    once per step for the detection loss and any strategy that compares with them.
    """

    batch: Batch
    features: tuple[torch.Tensor, ...]
    student: HeadOutput
    teacher: HeadOutput | None
    head: DetectionHead
    input_size: tuple[int, int]
    annotated: Targets


@dataclass(frozen=True)
class Supervision:
    """How a strategy changes the detection loss of one batch (all optional).

    extra_boxes / extra_labels / extra_ids: per image (n_i, 4) boxes in input pixels, (n_i,)
        global labels and (n_i,) int64 ids of targets to add to the annotated ones before
        assignment (pseudo ground truth); the ids come back in ``Assigned.targets.extra_id``.
    class_mask: bool (C,): QFL covers only these channels and the box-loss weights are the
        max score over them (ERD trains the new classes on the non-old channels only).
    ignore_negatives: bool (B, N, C): QFL elements left out where their target is 0.
    extra_route: what the positives matched to extra targets learn (:data:`ExtraRoute`).
    """

    extra_boxes: Sequence[torch.Tensor] | None = None
    extra_labels: Sequence[torch.Tensor] | None = None
    extra_ids: Sequence[torch.Tensor] | None = None
    class_mask: torch.Tensor | None = None
    ignore_negatives: torch.Tensor | None = None
    extra_route: ExtraRoute = "standard"

    def __post_init__(self) -> None:
        if self.extra_route not in EXTRA_ROUTES:
            raise ValueError(f"extra_route must be one of {EXTRA_ROUTES}, got {self.extra_route!r}")
        given = [x is not None for x in (self.extra_boxes, self.extra_labels)]
        if any(given) and not all(given):
            raise ValueError("extra_boxes and extra_labels come together")


class TrainingModule(Protocol):
    """What a strategy sees of the engine's module (``clod.engine.module.CLODModule``).

    The strategies depend on this, not on the engine: imports point from the engine to
    the strategies, never back.
    """

    student: nn.Module  # neck + head: backbone features -> HeadOutput; trained
    teacher: nn.Module | None  # what set_teacher installed; None before

    @property
    def head(self) -> DetectionHead:
        """The student's head (class count, priors, decoding)."""
        ...

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
    # Every task starts again from the initial weights (the cumulative joint upper bound).
    from_scratch: bool = False

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

    def teacher_output(
        self, module: TrainingModule, batch: Batch, features: Sequence[torch.Tensor]
    ) -> HeadOutput | None:
        """The teacher's outputs on ``batch`` (run once, without gradients); None: no teacher."""
        return None

    def supervision(self, module: TrainingModule, step: Step) -> Supervision | None:
        """Changes to the detection loss's supervision for this batch; None: plain training."""
        return None

    def training_loss(
        self, module: TrainingModule, step: Step, assigned: Assigned
    ) -> dict[str, torch.Tensor]:
        """Extra weighted loss terms for this batch, by name; they are summed into the loss.

        They run in float32 outside autocast. ``assigned`` is the detection loss's
        assignment, over the annotated and any extra targets.
        """
        return {}

    def diagnostics(self) -> dict[str, float]:
        """Numbers about the last training step that are not loss terms (e.g. pseudo boxes per
        image); the engine logs them beside the terms as ``train/<name>``."""
        return {}

    def on_task_end(self, module: TrainingModule, task: Task) -> None:
        """Called once the task is trained and evaluated."""

    def memory(self, module: TrainingModule) -> dict[str, int]:
        """Memory held for training, beyond the parameter counts the engine reports."""
        return {"buffer_images": 0, "buffer_bytes": 0}

    def base_training_signature(self) -> dict[str, Any] | None:
        """What makes this strategy's task 0 differ from plain training, for the base-model cache.

        ``{}`` says task 0 trains exactly as plain fine-tuning does, so its model can be
        shared with every other such strategy; settings that make it differ become part
        of the cache key. None (the default, the safe choice) never uses the cache: a
        strategy must claim a plain task 0 explicitly, and tests/strategies check the
        claim by training task 0 beside ``naive``.
        """
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any], tasks: Sequence[Task]) -> None:
        """Restore :meth:`state_dict`; ``tasks`` lets a strategy find its records again."""
