"""Torch datasets over image records, and the padding collate function."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from clod.data.sampling import SampleKey
from clod.data.transforms import DetectionTransform
from clod.data.types import Batch, ImageRecord, Sample
from clod.errors import DataError

PAD_MULTIPLE = 32  # the largest backbone stride: every feature map then has an integer size

# OpenCV's own thread pool helps nothing on images this small, and its threads would
# compete with torch's for the same cores (data workers run beside the training step).
cv2.setNumThreads(1)


def load_image(record: ImageRecord) -> np.ndarray:
    """Read a record's image as HxWx3 uint8 BGR; clear errors for unreadable or mis-sized files."""
    image = cv2.imread(str(record.path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"image {record.path} cannot be read (missing, unreadable or not an image)")
    height, width = image.shape[:2]
    if (width, height) != (record.width, record.height):
        raise DataError(
            f"image {record.path} is {width}x{height} but its annotation says "
            f"{record.width}x{record.height}; boxes would not match the pixels"
        )
    return image


class DetectionDataset(Dataset[Sample]):
    """Records -> transformed samples.

    A training dataset (one with augmentation) is indexed by the
    :class:`~clod.data.sampling.SampleKey` its sampler yields, and seeds each sample's
    augmentation from the key's entropy: the same image gets the same augmentation in any
    process, worker or attempt (exact resume). Indexed by a plain integer (ad-hoc use, not
    the training path), it draws the seed from torch's global generator instead.
    """

    def __init__(self, records: Sequence[ImageRecord], transform: DetectionTransform):
        self.records = tuple(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | SampleKey) -> Sample:
        index, entropy = (key.index, key.entropy) if isinstance(key, SampleKey) else (key, None)
        record = self.records[index]
        image = load_image(record)
        rng = None
        if self.transform.augment is not None:
            if entropy is None:
                entropy = (int(torch.randint(0, 2**62, (1,)).item()),)
            rng = np.random.default_rng(entropy)
        pixels, boxes, keep, warp = self.transform(image, record.boxes, rng)
        return Sample(
            image=pixels,
            boxes=boxes,
            labels=record.labels[keep],
            warp=warp,
            image_id=record.image_id,
            orig_size=(record.height, record.width),
            difficult=record.difficult[keep],
            index=index,
        )


def pad_size(size: int, multiple: int = PAD_MULTIPLE) -> int:
    return -(-size // multiple) * multiple


def collate(samples: Sequence[Sample], pad_value: float = 0.0) -> Batch:
    """Pad images bottom/right with ``pad_value`` (the pixel format's, see
    :class:`~clod.data.transforms.DetectionTransform`) to the batch's max size rounded up to
    a multiple of 32."""
    height = pad_size(max(s.image.shape[1] for s in samples))
    width = pad_size(max(s.image.shape[2] for s in samples))
    images = torch.full((len(samples), 3, height, width), pad_value, dtype=torch.float32)
    for i, sample in enumerate(samples):
        _, h, w = sample.image.shape
        images[i, :, :h, :w] = torch.from_numpy(sample.image)
    return Batch(
        images=images,
        boxes=[torch.from_numpy(s.boxes).reshape(-1, 4) for s in samples],
        labels=[torch.from_numpy(s.labels).long() for s in samples],
        warps=torch.from_numpy(np.stack([s.warp for s in samples])),
        orig_sizes=torch.tensor([s.orig_size for s in samples], dtype=torch.int64),
        image_ids=[s.image_id for s in samples],
        indices=torch.tensor([s.index for s in samples], dtype=torch.int64),
    )
