"""Training-order samplers whose every draw is a pure function of (seed, epoch, position).

A resumed run must train on exactly the batches, and exactly the augmentations, that an
uninterrupted run would. Neither may depend on which data worker draws a sample, on how
long a (persistent) worker has lived, or on the global random state:

- the order of an epoch is computed from ``(seed, epoch)`` alone;
- the sampler yields :class:`SampleKey` items, ``(dataset index, entropy)``, and the
  dataset seeds the sample's augmentation from ``entropy = (seed, epoch, position)``,
  where ``position`` is the sample's place in the epoch's global order: the same draw in
  whatever process, whichever worker, before or after a restart;
- :meth:`EpochSampler.resume_at` starts the next pass at a given epoch and batch, so a
  task interrupted mid-epoch continues from the batch after the last one it trained.

DDP: Lightning only inserts its own ``DistributedSampler`` when a loader's sampler is not
one, and its sampler would reshuffle indices. :class:`EpochSampler` therefore *is* a
``DistributedSampler`` and shards whole global batches itself: rank r of W takes global
batches r, r+W, … (an equal number each), so the ranks together see what one process
would, each sample with the augmentation one process would give it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


class SampleKey(NamedTuple):
    """What a training sampler yields: the dataset index and the seed of its augmentation."""

    index: int
    entropy: tuple[int, int, int]  # (sampler seed, epoch, position in the epoch's order)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A torch generator seeded from ``(seed, epoch)`` only."""
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


class EpochSampler(DistributedSampler):
    """Base class: subclasses say which global batches an epoch has (:meth:`batches`).

    Args:
        batch_size: images per batch (per process under DDP).
        seed: with the epoch, fixes the order and every augmentation (non-negative).
        num_replicas, rank: the DDP world; None reads them from ``torch.distributed`` when
            iterating (it is initialised only once fitting starts).
    """

    def __init__(
        self,
        batch_size: int,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        # Not DistributedSampler.__init__: that resolves the world now, before DDP exists.
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.epoch = 0
        self._skip_batches = 0
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
    def global_batches(self) -> int:
        """Batches per epoch over all ranks."""
        raise NotImplementedError

    @property
    def batches_per_rank(self) -> int:
        return self.global_batches // self.num_replicas

    def batches(self) -> list[list[int]]:
        """Every global batch of the current epoch, as dataset indices."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Make the next pass epoch ``epoch`` without its first ``batches_done`` batches (of
        this rank); a finished epoch continues with the next one."""
        if batches_done >= self.batches_per_rank:
            epoch, batches_done = epoch + 1, 0
        self.epoch = int(epoch)
        self._skip_batches = int(batches_done)

    def __iter__(self) -> Iterator[SampleKey]:  # type: ignore[override]
        skip, self._skip_batches = self._skip_batches, 0  # applies to one pass only
        world, size = self.num_replicas, self.batch_size
        batches = self.batches()
        for k in range(self.rank + skip * world, self.batches_per_rank * world, world):
            for j, index in enumerate(batches[k]):
                yield SampleKey(index, (self.seed, self.epoch, k * size + j))

    def __len__(self) -> int:
        return self.batches_per_rank * self.batch_size


class ShuffledBatches(EpochSampler):
    """A fresh permutation of ``dataset_size`` indices every epoch, cut into whole batches
    (``drop_last``: the reference drops the last partial batch)."""

    def __init__(self, dataset_size: int, batch_size: int, seed: int = 0, **world: int | None):
        super().__init__(batch_size, seed, **world)
        if dataset_size < batch_size:
            raise ValueError(f"{dataset_size} images cannot fill a batch of {batch_size}")
        self.dataset_size = int(dataset_size)

    @property
    def global_batches(self) -> int:
        return self.dataset_size // self.batch_size

    def batches(self) -> list[list[int]]:
        order = torch.randperm(self.dataset_size, generator=epoch_generator(self.seed, self.epoch))
        size = self.batch_size
        return order[: self.global_batches * size].view(-1, size).tolist()


def task_seed(seed: int, task_index: int) -> int:
    """The loader seed of one task of a run: distinct per (run seed, task)."""
    return int(np.random.SeedSequence([int(seed), int(task_index)]).generate_state(1)[0])
