"""Data loaders of one task, built from the ``data`` config."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from torch.utils.data import DataLoader

from clod.data.dataset import DetectionDataset, collate
from clod.data.sampling import EpochSampler, ShuffledBatches
from clod.data.transforms import Augment, DetectionTransform
from clod.data.types import Batch, ImageRecord
from clod.errors import ConfigError


def _augment(cfg: Mapping[str, Any] | None) -> Augment:
    cfg = dict(cfg or {})
    tuples = {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in cfg.items()}
    try:
        return Augment(**tuples)
    except TypeError as exc:
        raise ConfigError(f"data.augment: {exc}") from None


def transform_for(data_cfg: Mapping[str, Any], train: bool) -> DetectionTransform:
    """The training (resize and augmentation) or evaluation (resize) transform of ``data``."""
    try:
        return DetectionTransform(
            data_cfg["input_size"],
            bool(data_cfg.get("keep_ratio", True)),
            _augment(data_cfg.get("augment")) if train else None,
            str(data_cfg.get("pixels", "imagenet")),
        )
    except ValueError as exc:
        raise ConfigError(f"data: {exc}") from None


def batch_collate(dataset: DetectionDataset) -> Callable[[Sequence[Any]], Batch]:
    """The collate function padding with the dataset's pixel format (picklable for workers)."""
    return partial(collate, pad_value=dataset.transform.pad_value)


def train_dataset(records: Sequence[ImageRecord], data_cfg: Mapping[str, Any]) -> DetectionDataset:
    """The records with the training transform (resize and augmentation)."""
    return DetectionDataset(records, transform_for(data_cfg, train=True))


def train_loader(
    records: Sequence[ImageRecord], data_cfg: Mapping[str, Any], seed: int
) -> DataLoader:
    """Shuffled, augmented, ``drop_last`` batches (the reference drops the last partial batch).

    Order and augmentation follow ``seed`` and the epoch alone (:mod:`clod.data.sampling`).
    """
    batch_size = int(data_cfg["batch_size"])
    if len(records) < batch_size:
        raise ConfigError(
            f"a task has {len(records)} training images, fewer than data.batch_size={batch_size}; "
            f"with drop_last it would train on nothing: lower data.batch_size"
        )
    return sampled_train_loader(records, ShuffledBatches(len(records), batch_size, seed), data_cfg)


def sampled_train_loader(
    records: Sequence[ImageRecord], sampler: EpochSampler, data_cfg: Mapping[str, Any]
) -> DataLoader:
    """Augmented batches of ``records`` in the order ``sampler`` gives (whole batches)."""
    workers = int(data_cfg.get("num_workers", 0))
    dataset = train_dataset(records, data_cfg)
    return DataLoader(
        dataset,
        batch_size=sampler.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=batch_collate(dataset),
    )


def eval_loader(records: Sequence[ImageRecord], data_cfg: Mapping[str, Any]) -> DataLoader:
    """Resize-only batches in dataset order; every image once (no drop_last)."""
    dataset = DetectionDataset(records, transform_for(data_cfg, train=False))
    workers = int(data_cfg.get("num_workers", 0))
    return DataLoader(
        dataset,
        batch_size=int(data_cfg.get("eval_batch_size") or data_cfg["batch_size"]),
        shuffle=False,
        drop_last=False,
        num_workers=workers,
        collate_fn=batch_collate(dataset),
    )
