"""Training order and augmentation are pure functions of (seed, epoch, position).

The loaders here read a generated dataset from disk through the real VOC reader and run
real worker processes, as training does (the default data config: 2 persistent workers).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DistributedSampler

from clod.data.build import load_splits
from clod.data.loaders import train_loader
from clod.data.sampling import SampleKey, ShuffledBatches

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory):
    data_cfg = OmegaConf.to_container(OmegaConf.load(CONF / "data" / "synthetic_tiny.yaml"))
    data_cfg.update(input_size=[96, 96], name="synthetic_tiny", format="voc")
    data_cfg.pop("defaults", None)
    base = OmegaConf.to_container(OmegaConf.load(CONF / "data" / "synthetic.yaml"))
    # Read without the train config, the pixel format's interpolation of model.pixels is
    # unresolvable: the NanoDet default is what a composed config gives.
    merged = {**base, **data_cfg, "pixels": "imagenet"}
    train, _ = load_splits(merged, tmp_path_factory.mktemp("data"))
    return train.records[:24], merged


def batches(loader, epochs: range) -> list[tuple[torch.Tensor, list[str]]]:
    out = []
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)
        out += [(b.images.clone(), list(b.image_ids)) for b in loader]
    return out


def test_order_depends_on_seed_and_epoch_only() -> None:
    a, b = ShuffledBatches(20, 4, seed=7), ShuffledBatches(20, 4, seed=7)
    assert list(a) == list(b)
    first = [k.index for k in a]
    assert sorted(first) == list(range(20))
    a.set_epoch(1)
    assert [k.index for k in a] != first
    assert [k.index for k in ShuffledBatches(20, 4, seed=8)] != first
    # keys carry (seed, epoch, position): the augmentation of each draw is fixed by them
    assert [k.entropy for k in a] == [(7, 1, p) for p in range(20)]
    assert all(isinstance(k, SampleKey) for k in a)
    assert isinstance(a, DistributedSampler)  # Lightning leaves it in place under DDP


def test_resume_at_skips_the_trained_batches_of_this_rank() -> None:
    full = list(ShuffledBatches(22, 4, seed=1))  # 5 whole batches, 2 images dropped
    assert len(full) == 20
    resumed = ShuffledBatches(22, 4, seed=1)
    resumed.resume_at(epoch=0, batches_done=2)
    assert list(resumed) == full[8:]
    assert list(resumed) == full  # the skip applies to one pass only
    finished = ShuffledBatches(22, 4, seed=1)
    finished.resume_at(epoch=0, batches_done=5)  # a finished epoch: the next one, whole
    following = ShuffledBatches(22, 4, seed=1)
    following.set_epoch(1)
    assert list(finished) == list(following)
    # two ranks: each skips its own trained batches; together they are one process's batches
    ranks = [ShuffledBatches(22, 4, seed=1, num_replicas=2, rank=r) for r in (0, 1)]
    for sampler in ranks:
        sampler.resume_at(epoch=0, batches_done=1)
    assert sorted(list(ranks[0]) + list(ranks[1])) == sorted(full[8:16])


def test_workers_and_restarts_do_not_change_a_single_pixel(records) -> None:
    """2 persistent workers, 0 workers, and a fresh loader resumed mid-epoch: same batches."""
    train, data_cfg = records
    cfg = {**data_cfg, "batch_size": 4}
    in_process = batches(train_loader(train, {**cfg, "num_workers": 0}, seed=5), range(3))
    workers = train_loader(train, {**cfg, "num_workers": 2}, seed=5)
    assert workers.persistent_workers
    with_workers = batches(workers, range(3))
    assert len(in_process) == len(with_workers) == 3 * 6
    for (a, ids_a), (b, ids_b) in zip(in_process, with_workers, strict=True):
        assert ids_a == ids_b and torch.equal(a, b)
    # epochs differ, in order and in augmentation
    assert in_process[0][1] != in_process[6][1] or not torch.equal(
        in_process[0][0], in_process[6][0]
    )

    # a new process's loader, resumed in epoch 1 after its 4th batch
    restarted = train_loader(train, {**cfg, "num_workers": 2}, seed=5)
    restarted.sampler.resume_at(epoch=1, batches_done=4)
    rest = [(b.images.clone(), list(b.image_ids)) for b in restarted]
    assert len(rest) == 2
    for (a, ids_a), (b, ids_b) in zip(in_process[10:12], rest, strict=True):
        assert ids_a == ids_b and torch.equal(a, b)
