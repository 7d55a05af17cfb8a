"""The in-task checkpoint: ``checkpoints/task_<k>/last.ckpt``, rewritten after every epoch.

Lightning's ``ModelCheckpoint(save_last=True, save_top_k=0)`` writes ``last.ckpt`` only when
training ends (in 2.6 the per-epoch ``last`` follows a top-k save, and ``save_top_k=0`` never
makes one), so an interrupted task would start over. A top-1 checkpoint without a monitored
metric, named ``last``, is the latest epoch instead. It is written to a temporary name and
renamed, so a job killed mid-write (SIGKILL, a SLURM time limit) leaves the previous epoch's
checkpoint intact rather than a truncated one.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

LAST = "last"


class EpochCheckpoint(ModelCheckpoint):
    """``<dirpath>/last.ckpt`` after every training epoch, replaced atomically."""

    def __init__(self, dirpath: Path) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=LAST,
            monitor=None,
            save_top_k=1,
            save_last=False,
            every_n_epochs=1,
            enable_version_counter=False,
        )

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        partial = f"{filepath}.partial"
        super()._save_checkpoint(trainer, partial)
        if trainer.is_global_zero:  # only rank 0 writes checkpoints
            os.replace(partial, filepath)
        trainer.strategy.barrier()
        self._last_checkpoint_saved = filepath
