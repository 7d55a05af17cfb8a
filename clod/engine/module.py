"""The LightningModule of one task: backbone, student and teacher as submodules.

- ``backbone``: the detector's backbone. A strategy may freeze it (``freeze_backbone``):
  it then runs in eval mode under ``no_grad``, once per batch, and its features feed
  the student and the teacher alike.
- ``student``: neck + head, trained.
- ``teacher``: a frozen model a strategy builds at task start (``set_teacher``), in eval
  mode, outside the optimiser. It is not written into checkpoints: it is rebuilt
  from the previous task's weights.

The module trains with the detection loss plus the strategy's extra terms, and
evaluates with :class:`~clod.metrics.detection.DetectionMetric`, which synchronises
across DDP ranks.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from hydra.utils import instantiate
from torch import nn

from clod.data.tasks import Task
from clod.data.types import Batch
from clod.engine import quiet  # noqa: F401  (Lightning's expected warnings, silenced once)
from clod.engine.evaluation import decode_for_evaluation, record_targets
from clod.engine.schedule import lr_factor
from clod.metrics.detection import DetectionMetric, DetectionResult
from clod.models.detector import Detector
from clod.models.head_protocol import DetectionHead
from clod.models.outputs import HeadOutput
from clod.models.targets import pad_targets
from clod.strategies.base import Step, Strategy
from clod.strategies.supervision import supervised_detection_loss
from clod.utils.tensors import count_parameters, float32

TEACHER_PREFIX = "teacher."


class NeckHead(nn.Module):
    """The trainable part on top of the backbone: ``neck`` then ``head``."""

    def __init__(self, neck: nn.Module, head: DetectionHead) -> None:
        super().__init__()
        self.neck = neck
        self.head = head

    def forward(self, features: Sequence[torch.Tensor]) -> HeadOutput:
        return self.head(self.neck(features))


class CLODModule(pl.LightningModule):
    """Trains one task of a scenario and evaluates on the classes seen so far."""

    def __init__(
        self,
        detector: Detector,
        strategy: Strategy,
        task: Task,
        optimizer: Mapping[str, Any],
        evaluation: Mapping[str, Any],
    ) -> None:
        super().__init__()
        self.backbone = detector.backbone
        self.student = NeckHead(detector.neck, detector.head)
        self.teacher: nn.Module | None = None
        self.backbone_frozen = False
        # Reference fidelity only (docs/strategies.md §0): frozen parts' BatchNorm in train mode,
        # so it normalises with batch statistics and its running statistics drift.
        self.frozen_bn_train = False
        self.strategy = strategy
        self.task = task
        self.optimizer_cfg = dict(optimizer)
        self.eval_cfg = dict(evaluation)
        num_classes = detector.head.num_classes
        self.metric = DetectionMetric(
            num_classes,
            classes=task.seen,
            difficult=self.eval_cfg.get("difficult", "gt"),
            max_det=int(self.eval_cfg.get("max_det", 100)),
            coco_backend=self.eval_cfg.get("coco_backend", "faster"),
        )
        seen = torch.zeros(num_classes, dtype=torch.bool)
        seen[list(task.seen)] = True
        self.register_buffer("seen_mask", seen, persistent=False)
        self.last_result: DetectionResult | None = None
        # Batches trained in the current epoch: where a resumed run's loader continues.
        self.batches_done = 0

    # ------------------------------------------------------------------ parts
    @property
    def head(self) -> DetectionHead:
        return self.student.head

    def detector_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights in :class:`Detector` layout (``backbone.``, ``neck.``, ``head.``)."""
        state = {f"backbone.{k}": v for k, v in self.backbone.state_dict().items()}
        state.update({k: v for k, v in self.student.state_dict().items()})
        return {k: v.detach().clone() for k, v in state.items()}

    def whole_model(self) -> Detector:
        """Backbone, neck and head as one detector, sharing this module's weights."""
        return Detector(self.backbone, self.student.neck, self.student.head)

    def set_frozen_bn(self, mode: str) -> None:
        if mode not in ("eval", "train"):
            raise ValueError(f"frozen BatchNorm mode must be eval or train, got {mode!r}")
        self.frozen_bn_train = mode == "train"

    def freeze_backbone(self) -> None:
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.backbone_frozen = True

    def set_teacher(self, teacher: nn.Module) -> None:
        teacher.requires_grad_(False)
        teacher.eval()
        self.teacher = teacher

    def train(self, mode: bool = True) -> CLODModule:
        # Lightning switches modes around fitting and validation; frozen parts must stay in
        # eval mode whatever it does, so BatchNorm keeps its running statistics. Only the
        # reference-fidelity option (frozen_bn_train) lets them follow the module's mode.
        super().train(mode)
        frozen_mode = mode and self.frozen_bn_train
        if self.backbone_frozen:
            self.backbone.train(frozen_mode)
        if self.teacher is not None:
            self.teacher.train(frozen_mode)
        return self

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Backbone features, computed once per batch (without gradients when frozen)."""
        if self.backbone_frozen:
            with torch.no_grad():
                return tuple(self.backbone(images))
        return tuple(self.backbone(images))

    def forward(self, images: torch.Tensor) -> HeadOutput:
        return self.student(self.features(images))

    def transfer_batch_to_device(
        self, batch: Batch, device: torch.device, dataloader_idx: int
    ) -> Batch:
        return batch.to(device)

    # ------------------------------------------------------------------ training
    def training_losses(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total loss of one training batch and its named terms (detection, strategy).

        The backbone runs once, and the teacher (if any) once; their outputs feed the
        detection loss, the strategy's supervision and its terms. The losses run in
        float32 outside autocast. Kept apart from :meth:`training_step` so ``clod.bench``
        times this same code path.
        """
        images = batch.images
        features = self.features(images)
        output = self.student(features)
        teacher = self.strategy.teacher_output(self, batch, features)
        with float32(images):
            step = Step(
                batch=batch,
                features=features,
                student=output.float(),
                teacher=teacher.float() if teacher is not None else None,
                head=self.head,
                input_size=(int(images.shape[-2]), int(images.shape[-1])),
                annotated=pad_targets(batch.boxes, batch.labels, images.device, torch.float32),
            )
            supervision = self.strategy.supervision(self, step)
            losses, assigned = supervised_detection_loss(self.head, step, supervision)
            extra = self.strategy.training_loss(self, step, assigned)
        total = losses["loss"] + sum(extra.values()) if extra else losses["loss"]
        return total, {**losses, **extra}

    def on_train_epoch_start(self) -> None:
        self.batches_done = 0  # not called when a run resumes in the middle of an epoch

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        self.batches_done = batch_idx + 1  # batch_idx counts within the epoch, resumes included
        total, terms = self.training_losses(batch)
        logged = {f"train/{name}": value.detach() for name, value in terms.items()}
        logged["train/total"] = total.detach()
        logged.update({f"train/{k}": float(v) for k, v in self.strategy.diagnostics().items()})
        self.log_dict(logged, batch_size=len(batch), on_step=True, on_epoch=False)
        self.log("loss", total.detach(), prog_bar=True, logger=False, batch_size=len(batch))
        return total

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.optimizer_cfg
        params = [p for p in self.parameters() if p.requires_grad]
        trainer = self.trainer
        options = {}
        if cfg["optimizer"].get("fused") and "mixed" in str(trainer.precision):
            # Lightning cannot clip the gradients of a fused optimiser under mixed precision
            # (the fused step unscales them itself); the unfused step computes the same update.
            options["fused"] = False
        optimizer = instantiate(cfg["optimizer"], _convert_="all", **options)(params)
        factor = lr_factor(
            cfg, int(trainer.estimated_stepping_batches), int(trainer.max_epochs or 1)
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ------------------------------------------------------------------ evaluation
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        output = self(batch.images)
        with float32(batch.images):
            detections = decode_for_evaluation(
                self.head, output.raw.float(), batch, self.eval_cfg, self.seen_mask
            )
        targets = record_targets([self.task.eval[int(i)] for i in batch.indices])
        self.metric.update(detections, targets, batch.indices)

    def on_validation_epoch_end(self) -> None:
        result = self.metric.compute()
        self.metric.reset()
        self.last_result = result
        self.log_dict(
            {f"val/{k}": v for k, v in result.scalars().items()}, logger=True, sync_dist=False
        )

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(TEACHER_PREFIX)]:
            del state[key]  # rebuilt from the previous task's weights
        # The loader's order and augmentations are functions of (seed, epoch, position)
        # (clod.data.sampling): the position is all a resumed run needs to continue them.
        # An epoch that is over (also one cut short by trainer.limit_train_batches) resumes
        # with the next one.
        epoch, done = int(self.current_epoch), int(self.batches_done)
        if done >= self.trainer.num_training_batches:
            epoch, done = epoch + 1, 0
        checkpoint["loader_position"] = {"epoch": epoch, "batches_done": done}
        # Anything else random in a step (none of clod's strategies is) continues too.
        name, keys, position, has_gauss, cached = np.random.get_state()
        checkpoint["rng"] = {  # plain types and tensors: loadable with weights_only=True
            "torch": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
            "python": random.getstate(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.teacher is not None:
            checkpoint["state_dict"].update(
                {f"{TEACHER_PREFIX}{k}": v for k, v in self.teacher.state_dict().items()}
            )
        rng = checkpoint.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            name, keys, position, has_gauss, cached = rng["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
            random.setstate(rng["python"])

    # ------------------------------------------------------------------ accounting
    def parameter_counts(self) -> dict[str, int]:
        """Parameters held during training: a shared frozen backbone counts once."""
        backbone = count_parameters(self.backbone)
        student = count_parameters(self.student)
        teacher = count_parameters(self.teacher)
        return {
            "params_held": backbone + student + teacher,
            "params_trainable": count_parameters(self.backbone, True)
            + count_parameters(self.student, True),
            "params_teacher": teacher,
        }
