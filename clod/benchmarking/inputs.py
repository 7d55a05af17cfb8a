"""The batches ``clod.bench`` times: random images with random boxes, or rendered benchmark images.

Random images are enough to time the network. A strategy whose step selects teacher
predictions (ERD, ILYOLOX, pseudo-labelling) does as much work as the teacher finds
objects: on noise, an untrained teacher finds none. ``images=synthetic`` renders real
images of the embedded benchmark (with their boxes, through the evaluation transform), and
with a trained checkpoint (``weights=``) the selections are those of a real run.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from clod.data.dataset import collate
from clod.data.synthetic.render import render_synthetic_image
from clod.data.synthetic.spec import synthetic_preset
from clod.data.transforms import DetectionTransform
from clod.data.types import Batch, Sample

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


def rendered_batch(
    batch_size: int, height: int, width: int, num_classes: int, seed: int = 0
) -> Batch:
    """``batch_size`` training images of the embedded benchmark, rendered in memory (nothing
    is read from or written to disk), letterboxed to (height, width) with their boxes;
    objects of classes ≥ ``num_classes`` are dropped."""
    spec = synthetic_preset("synthetic")
    transform = DetectionTransform((width, height))
    samples = []
    for position in range(batch_size):
        index = seed * batch_size + position
        rendered = render_synthetic_image(spec, "trainval", index)
        boxes = np.asarray([o.box for o in rendered.objects], dtype=np.float32).reshape(-1, 4)
        labels = np.asarray([o.label for o in rendered.objects], dtype=np.int64)
        image, kept_boxes, keep, warp = transform(rendered.image, boxes)
        kept_labels = labels[keep]
        known = kept_labels < num_classes
        samples.append(
            Sample(
                image=image,
                boxes=kept_boxes[known],
                labels=kept_labels[known],
                warp=warp,
                image_id=f"rendered_{index}",
                orig_size=rendered.image.shape[:2],
                index=position,
            )
        )
    return collate(samples)
