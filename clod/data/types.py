"""Plain data types shared by readers, task construction, transforms and models.

Conventions (docs/detector.md):
- boxes are ``xyxy`` float32 in pixels of the image they belong to;
- labels are global, 0-based class indices that never change between tasks;
- a batch image is BGR, normalised, padded bottom/right to a multiple of 32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class ImageRecord:
    """One annotated image as read from disk (no pixels loaded)."""

    image_id: str
    path: Path
    width: int
    height: int
    boxes: np.ndarray  # (n, 4) float32 xyxy
    labels: np.ndarray  # (n,) int64 global class index
    difficult: np.ndarray  # (n,) bool
    iscrowd: np.ndarray = field(default=None)  # type: ignore[assignment]  # (n,) bool

    def __post_init__(self) -> None:
        if self.iscrowd is None:
            object.__setattr__(self, "iscrowd", np.zeros(len(self.labels), dtype=bool))

    @property
    def num_boxes(self) -> int:
        return len(self.labels)

    def subset(self, keep: np.ndarray) -> ImageRecord:
        """The same image with only the boxes selected by the boolean mask ``keep``."""
        return ImageRecord(
            image_id=self.image_id,
            path=self.path,
            width=self.width,
            height=self.height,
            boxes=self.boxes[keep],
            labels=self.labels[keep],
            difficult=self.difficult[keep],
            iscrowd=self.iscrowd[keep],
        )


@dataclass(frozen=True)
class Split:
    """The records of one dataset split (e.g. trainval or test) with the class list."""

    class_names: tuple[str, ...]
    records: tuple[ImageRecord, ...]
    source: str = ""  # where it was read from, for messages

    @property
    def num_boxes(self) -> int:
        return sum(r.num_boxes for r in self.records)


@dataclass
class Sample:
    """One image after the transform pipeline, before batching."""

    image: np.ndarray  # (3, h, w) float32, BGR, normalised
    boxes: np.ndarray  # (n, 4) float32 xyxy in input pixels
    labels: np.ndarray  # (n,) int64
    warp: np.ndarray  # (3, 3) float64: original image pixels -> input pixels
    image_id: str
    orig_size: tuple[int, int]  # (height, width) of the original image
    difficult: np.ndarray | None = None  # (n,) bool, kept for evaluation
    index: int = -1  # position in its dataset; evaluation looks the original GT up by it


@dataclass
class Batch:
    """A padded batch: what the detector and its loss consume."""

    images: torch.Tensor  # (B, 3, H, W) float32, H and W multiples of 32
    boxes: list[torch.Tensor]  # B tensors (n_i, 4) float32 xyxy in input pixels
    labels: list[torch.Tensor]  # B tensors (n_i,) int64
    warps: torch.Tensor  # (B, 3, 3) float64
    orig_sizes: torch.Tensor  # (B, 2) int64 (height, width)
    image_ids: list[str]
    indices: torch.Tensor  # (B,) int64 positions in the dataset

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            images=self.images.to(device, non_blocking=True),
            boxes=[b.to(device, non_blocking=True) for b in self.boxes],
            labels=[lab.to(device, non_blocking=True) for lab in self.labels],
            warps=self.warps.to(device),
            orig_sizes=self.orig_sizes.to(device),
            image_ids=self.image_ids,
            indices=self.indices,
        )

    def __len__(self) -> int:
        return int(self.images.shape[0])
