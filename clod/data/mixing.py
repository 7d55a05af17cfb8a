"""Batches that mix a task's images with replay-buffer images (docs/strategies.md §3).

:class:`MixedReplaySampler` yields keys into one dataset of ``task records + buffer
records`` so that a ``DataLoader(batch_size=B)`` over it produces batches of
``task_per_batch`` task images followed by ``buffer_per_batch`` buffer images:

- the task half is a fresh permutation of the task every epoch, cut into
  ⌊|D_t| / task_per_batch⌋ batches (``drop_last``): an epoch counts batches, not images
  (the reference's loader reports its length in images);
- the buffer half is an independent stream that cycles through the buffer, reshuffled on
  every pass, as long as the task half lasts.

Both orders depend only on ``(seed, epoch)``, and sharding, augmentation seeds and
mid-epoch resume are those of every :class:`~clod.data.sampling.EpochSampler`.
"""

from __future__ import annotations

import torch

from clod.data.sampling import EpochSampler, epoch_generator


class MixedReplaySampler(EpochSampler):
    """Keys of ``task records + buffer records``, ``task_per_batch + buffer_per_batch`` per batch.

    Args:
        task_size: number of task images (they are indices ``[0, task_size)``).
        buffer_size: number of buffer images (indices ``[task_size, task_size + buffer_size)``).
        task_per_batch, buffer_per_batch: images of each kind in every batch.
        seed: with the epoch, fixes both orders and the augmentations (non-negative).
        num_replicas, rank: the DDP world (see :class:`~clod.data.sampling.EpochSampler`).
    """

    def __init__(
        self,
        task_size: int,
        buffer_size: int,
        task_per_batch: int,
        buffer_per_batch: int,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if task_per_batch < 1 or buffer_per_batch < 1:
            raise ValueError("a mixed batch needs at least one task and one buffer image")
        if task_size < task_per_batch:
            raise ValueError(f"{task_size} task images cannot fill {task_per_batch} per batch")
        if buffer_size < 1:
            raise ValueError("the replay buffer is empty")
        super().__init__(task_per_batch + buffer_per_batch, seed, num_replicas, rank)
        self.task_size = task_size
        self.buffer_size = buffer_size
        self.task_per_batch = task_per_batch
        self.buffer_per_batch = buffer_per_batch

    @property
    def global_batches(self) -> int:
        """Batches per epoch over all ranks: ⌊|D_t| / task_per_batch⌋."""
        return self.task_size // self.task_per_batch

    def batches(self) -> list[list[int]]:
        """Every global batch of the current epoch, as dataset indices (task half first)."""
        generator = epoch_generator(self.seed, self.epoch)
        task_order = torch.randperm(self.task_size, generator=generator).tolist()
        needed = self.global_batches * self.buffer_per_batch
        buffer_order: list[int] = []
        while len(buffer_order) < needed:  # cycle through the buffer, reshuffling each pass
            buffer_order += torch.randperm(self.buffer_size, generator=generator).tolist()
        tp, bp = self.task_per_batch, self.buffer_per_batch
        return [
            task_order[k * tp : (k + 1) * tp]
            + [self.task_size + i for i in buffer_order[k * bp : (k + 1) * bp]]
            for k in range(self.global_batches)
        ]
