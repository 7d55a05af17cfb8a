"""The synthetic batch ``clod.bench`` times: random normalised images with a few boxes each."""

from __future__ import annotations

import dataclasses

import torch

from clod.data.types import Batch

OBJECTS_PER_IMAGE = 6


def synthetic_batch(
    batch_size: int, height: int, width: int, num_classes: int, seed: int = 0
) -> Batch:
    """Random normalised images with a few random boxes each (identity warps), on the CPU."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, height, width, generator=generator)
    extent = torch.tensor([float(width), float(height)])
    boxes, labels = [], []
    for _ in range(batch_size):
        size = (torch.rand(OBJECTS_PER_IMAGE, 2, generator=generator) * 0.5 + 0.05) * extent
        corner = torch.rand(OBJECTS_PER_IMAGE, 2, generator=generator) * (extent - size)
        boxes.append(torch.cat((corner, corner + size), dim=1))
        labels.append(torch.randint(num_classes, (OBJECTS_PER_IMAGE,), generator=generator))
    return Batch(
        images=images,
        boxes=boxes,
        labels=labels,
        warps=torch.eye(3, dtype=torch.float64).expand(batch_size, 3, 3).clone(),
        orig_sizes=torch.tensor([[height, width]] * batch_size),
        image_ids=[f"synthetic_{i}" for i in range(batch_size)],
        indices=torch.arange(batch_size),
    )


def to_memory_format(batch: Batch, channels_last: bool) -> Batch:
    if not channels_last:
        return batch
    return dataclasses.replace(
        batch, images=batch.images.contiguous(memory_format=torch.channels_last)
    )
