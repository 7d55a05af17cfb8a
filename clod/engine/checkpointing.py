"""The in-task checkpoint: ``checkpoints/task_<k>/last.ckpt``, after every epoch and every
``every_n_minutes`` of training.

Lightning's ``ModelCheckpoint(save_last=True, save_top_k=0)`` writes ``last.ckpt`` only when
training ends (in 2.6 the per-epoch ``last`` follows a top-k save, and ``save_top_k=0`` never
makes one), so an interrupted task would start over. A top-1 checkpoint without a monitored
metric, named ``last``, is the latest epoch instead. An epoch can be long (COCO on a CPU:
about 20 minutes), so the same file is also rewritten mid-epoch once ``every_n_minutes``
have passed since the last write; it records the loader's position (``loader_position``,
see :class:`~clod.engine.module.CLODModule`), from which a resumed task continues with the
next batch. Lightning cannot combine a time interval with per-epoch saves in one
``ModelCheckpoint``, hence the hook here.

Every write goes to a temporary name and is renamed, so a job killed mid-write (SIGKILL, a
SLURM time limit) leaves the previous checkpoint intact rather than a truncated one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

LAST = "last"


class EpochCheckpoint(ModelCheckpoint):
    """``<dirpath>/last.ckpt`` after every training epoch and every ``every_n_minutes``."""

    def __init__(self, dirpath: Path, every_n_minutes: float | None = None) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=LAST,
            monitor=None,
            save_top_k=1,
            save_last=False,
            every_n_epochs=1,
            enable_version_counter=False,
        )
        if every_n_minutes is not None and float(every_n_minutes) <= 0:
            raise ValueError(f"checkpoint.every_n_minutes must be > 0, got {every_n_minutes}")
        self.interval_s = float(every_n_minutes) * 60 if every_n_minutes else None
        self._last_write = time.monotonic()

    @property
    def last_path(self) -> str:
        return os.path.join(str(self.dirpath), f"{LAST}{self.FILE_EXTENSION}")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._last_write = time.monotonic()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.interval_s is None or trainer.sanity_checking or trainer.fast_dev_run:
            return
        if batch_idx + 1 >= trainer.num_training_batches:
            return  # the epoch-end checkpoint follows at once
        due = time.monotonic() - self._last_write >= self.interval_s
        # Every rank must take part in a save (it gathers state): rank 0's clock decides.
        if trainer.strategy.broadcast(due):
            self._save_checkpoint(trainer, self.last_path)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        partial = f"{filepath}.partial"
        super()._save_checkpoint(trainer, partial)
        if trainer.is_global_zero:  # only rank 0 writes checkpoints
            os.replace(partial, filepath)
        trainer.strategy.barrier()
        self._last_checkpoint_saved = filepath
        self._last_write = time.monotonic()
