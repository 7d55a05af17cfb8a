"""Batches that mix a task's images with replay-buffer images (strategies.md §3).

:class:`MixedReplaySampler` yields indices into ``ConcatDataset([task, buffer])`` so that a
``DataLoader(batch_size=B, drop_last=True)`` over it produces batches of
``task_per_batch`` task images followed by ``buffer_per_batch`` buffer images:

- the task half is a fresh permutation of the task every epoch, cut into
  ⌊|D_t| / task_per_batch⌋ batches (``drop_last``): an epoch counts batches, not images
  (the reference's loader reports its length in images);
- the buffer half is an independent stream that cycles through the buffer, reshuffled on
  every pass, as long as the task half lasts.

Both orders depend only on ``(seed, epoch)``: Lightning calls :meth:`set_epoch` before
each epoch, so a run resumed at an epoch boundary replays the same batches, and every
DDP rank builds the same global list of batches.

DDP: Lightning only inserts its own ``DistributedSampler`` when a loader's sampler is
not one, and its sampler would shuffle indices across batches and break the mix. This
sampler therefore *is* a ``DistributedSampler`` and does the sharding itself: rank r of
W takes global batches r, r+W, … (each rank an equal number), so every rank's batch
keeps the configured mix and the ranks together see what one process would.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


class MixedReplaySampler(DistributedSampler):
    """Indices of ``ConcatDataset([task, buffer])``, ``B = task_per_batch + buffer_per_batch`` per batch.

    Args:
        dataset: the concatenated dataset (task images first, then buffer images).
        task_size: number of task images (they are indices ``[0, task_size)``).
        buffer_size: number of buffer images (indices ``[task_size, task_size + buffer_size)``).
        task_per_batch, buffer_per_batch: images of each kind in every batch.
        seed: with the epoch, fixes both orders (a non-negative integer).
        num_replicas, rank: the DDP world size and this rank; None reads them from
            ``torch.distributed`` when iterating (it is initialised only once fitting starts).
    """

    def __init__(
        self,
        dataset: Dataset,
        task_size: int,
        buffer_size: int,
        task_per_batch: int,
        buffer_per_batch: int,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        # Not DistributedSampler.__init__: that resolves the world now, before DDP exists.
        if task_per_batch < 1 or buffer_per_batch < 1:
            raise ValueError("a mixed batch needs at least one task and one buffer image")
        if task_size < task_per_batch:
            raise ValueError(f"{task_size} task images cannot fill {task_per_batch} per batch")
        if buffer_size < 1:
            raise ValueError("the replay buffer is empty")
        self.dataset = dataset
        self.task_size = task_size
        self.buffer_size = buffer_size
        self.task_per_batch = task_per_batch
        self.buffer_per_batch = buffer_per_batch
        self.seed = int(seed)
        self.epoch = 0
        self._num_replicas = num_replicas
        self._rank = rank

    # DistributedSampler's attributes, resolved when asked (DDP starts after construction).
    @property
    def num_replicas(self) -> int:  # type: ignore[override]
        if self._num_replicas is not None:
            return self._num_replicas
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    @property
    def rank(self) -> int:  # type: ignore[override]
        if self._rank is not None:
            return self._rank
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    @property
    def batch_size(self) -> int:
        return self.task_per_batch + self.buffer_per_batch

    @property
    def global_batches(self) -> int:
        """Batches per epoch over all ranks: ⌊|D_t| / task_per_batch⌋."""
        return self.task_size // self.task_per_batch

    @property
    def batches_per_rank(self) -> int:
        return self.global_batches // self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batches(self) -> list[list[int]]:
        """Every global batch of the current epoch, as dataset indices (task half first)."""
        epoch_seed = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(epoch_seed))
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

    def __iter__(self) -> Iterator[int]:
        mine = self.batches()[self.rank :: self.num_replicas][: self.batches_per_rank]
        for batch in mine:
            yield from batch

    def __len__(self) -> int:
        return self.batches_per_rank * self.batch_size
