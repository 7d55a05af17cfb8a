"""Replay: batch mixing, the buffer's policy and capacity, its state and memory."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from torch.utils.data import DistributedSampler

from clod.data.mixing import MixedReplaySampler
from clod.errors import ConfigError
from clod.strategies.replay import Replay
from tests.strategies.conftest import (
    build_model,
    build_strategy,
    image_records,
    make_module,
    make_task,
)

DATA = {
    "input_size": [64, 64],
    "keep_ratio": True,
    "batch_size": 8,
    "num_workers": 0,
    "augment": {"flip": 0.5},
}


@pytest.fixture
def tasks(tmp_path: Path):
    """Task 0: 30 images of classes 0 and 1; task 1: 13 images of class 2; task 2: 6 of class 3."""
    return [
        make_task(0, [0, 1], train=image_records(tmp_path, "a", 30, [0, 1])),
        make_task(1, [2], train=image_records(tmp_path, "b", 13, [2])),
        make_task(2, [3], train=image_records(tmp_path, "c", 6, [3])),
    ]


def trained_through(strategy: Replay, tasks, last: int) -> None:
    """Run the strategy's task hooks (no training) for tasks 0..last."""
    model = build_model()
    for task in tasks[: last + 1]:
        module = make_module(model, strategy, task)
        strategy.on_task_end(module, task)


def test_task_zero_uses_the_engine_loader_and_fills_the_buffer(tasks) -> None:
    strategy = build_strategy("replay", capacity=10)
    assert strategy.train_loader(tasks[0], DATA, seed=0) is None
    assert strategy.base_training_signature() == {}  # task 0 is plain: shares the base model
    trained_through(strategy, tasks, 0)
    assert len(strategy.buffer) == 10
    assert {item.task for item in strategy.buffer.items} == {0}


def test_mixed_batches_have_the_configured_mix_and_keep_buffer_labels(tasks) -> None:
    strategy = build_strategy("replay", capacity=10)
    trained_through(strategy, tasks, 0)
    loader = strategy.train_loader(tasks[1], DATA, seed=0)
    assert loader is not None
    task_ids = {r.image_id for r in tasks[1].train}
    buffer_ids = {r.image_id for r in strategy.buffer.records}
    # ⌊13 / 4⌋ = 3 steps of 4 task + 4 buffer images; the length counts batches
    assert len(loader) == 3
    seen_task: list[str] = []
    seen_buffer: list[str] = []
    for batch in loader:
        ids = batch.image_ids
        assert len(ids) == 8
        assert set(ids[:4]) <= task_ids and set(ids[4:]) <= buffer_ids
        seen_task += ids[:4]
        seen_buffer += ids[4:]
        for image_id, labels in zip(ids, batch.labels, strict=True):
            allowed = {2} if image_id in task_ids else {0, 1}  # each keeps its own task's boxes
            assert set(labels.tolist()) <= allowed and len(labels) > 0
    assert len(set(seen_task)) == 12  # no task image twice in an epoch
    assert len(set(seen_buffer)) == 10  # 12 buffer draws cover the whole buffer of 10 first
    assert max(Counter(seen_buffer).values()) == 2


def test_buffer_fraction_sets_the_split(tasks) -> None:
    strategy = build_strategy("replay", capacity=10, buffer_fraction=0.25)
    trained_through(strategy, tasks, 0)
    loader = strategy.train_loader(tasks[1], DATA, seed=0)
    assert len(loader) == 13 // 6
    first = next(iter(loader))
    task_ids = {r.image_id for r in tasks[1].train}
    assert sum(i in task_ids for i in first.image_ids) == 6
    with pytest.raises(ConfigError, match="buffer_fraction"):
        Replay(buffer_fraction=1.0)


def indices(keys) -> list[int]:
    return [key.index for key in keys]


def test_sampler_orders_follow_seed_and_epoch() -> None:
    def sampler(seed: int) -> MixedReplaySampler:
        return MixedReplaySampler(
            task_size=20, buffer_size=5, task_per_batch=4, buffer_per_batch=4, seed=seed
        )

    a, b = sampler(3), sampler(3)
    assert list(a) == list(b)  # a resumed epoch replays the same batches and augmentations
    first = indices(a)
    a.set_epoch(1)
    assert indices(a) != first  # a new epoch, a new order
    assert indices(sampler(4)) != first
    assert sorted(first[i] for i in range(len(first)) if i % 8 < 4) == list(range(20))
    # every draw of an epoch has its own augmentation seed, even a buffer image drawn twice
    assert len({key.entropy for key in a}) == len(first)


def test_sampler_shards_whole_batches_across_ranks() -> None:
    def rank(r: int) -> MixedReplaySampler:
        return MixedReplaySampler(
            21, 9, task_per_batch=3, buffer_per_batch=2, num_replicas=2, rank=r
        )

    # Lightning inserts its own DistributedSampler unless the sampler is one: this one
    # shards itself, keeping each rank's batches whole.
    assert isinstance(rank(0), DistributedSampler)
    batches = rank(0).batches()
    assert len(batches) == 7
    zero, one = list(rank(0)), list(rank(1))
    assert len(zero) == len(one) == 3 * 5  # ⌊7 / 2⌋ batches of 5 per rank
    assert indices(zero) == [i for b in batches[0:6:2] for i in b]
    assert indices(one) == [i for b in batches[1:6:2] for i in b]
    # a rank draws each sample's augmentation as one process would at that position
    single = list(MixedReplaySampler(21, 9, task_per_batch=3, buffer_per_batch=2))
    assert set(zero) | set(one) == set(single[: 6 * 5])


def test_half_policy_through_the_strategy(tasks) -> None:
    strategy = build_strategy("replay", capacity=10, policy="random")  # alias of half
    trained_through(strategy, tasks, 1)
    # |D_1| = 13 >= M/2: keep 5 old items, add 5 task-1 images
    assert Counter(item.task for item in strategy.buffer.items) == {0: 5, 1: 5}
    strategy.on_task_end(make_module(build_model(), strategy, tasks[2]), tasks[2])
    # |D_2| = 6 >= 5: again 5 old (of tasks 0 and 1) and 5 new
    counts = Counter(item.task for item in strategy.buffer.items)
    assert len(strategy.buffer) == 10 and counts[2] == 5


def test_class_balanced_policy_through_the_strategy(tasks) -> None:
    strategy = build_strategy("replay", capacity=9, policy="class_balanced")
    trained_through(strategy, tasks, 1)
    # k = ⌊9 / 3 seen classes⌋ = 3 buffer items replaced by task-1 images
    assert Counter(item.task for item in strategy.buffer.items) == {0: 6, 1: 3}
    with pytest.raises(ConfigError, match="unknown replay policy"):
        Replay(policy="fifo")


def test_memory_reports_the_buffer_a_task_trained_with(tasks) -> None:
    strategy = build_strategy("replay", capacity=10)
    model = build_model()
    module = make_module(model, strategy, tasks[0])
    strategy.on_task_end(module, tasks[0])
    assert strategy.memory(module) == {"buffer_images": 0, "buffer_bytes": 0}
    module = make_module(model, strategy, tasks[1])
    memory = strategy.memory(module)
    assert memory["buffer_images"] == 10
    assert memory["buffer_bytes"] == strategy.buffer.memory_bytes() > 10 * 50


def test_state_round_trip_restores_buffer_and_generator(tasks) -> None:
    strategy = build_strategy("replay", capacity=10)
    trained_through(strategy, tasks, 1)
    restored = build_strategy("replay", capacity=10)
    restored.load_state_dict(strategy.state_dict(), tasks)
    assert [r.image_id for r in restored.buffer.records] == [
        r.image_id for r in strategy.buffer.records
    ]
    for s in (strategy, restored):
        module = make_module(build_model(), s, tasks[2])
        s.on_task_end(module, tasks[2])
    assert [r.image_id for r in restored.buffer.records] == [
        r.image_id for r in strategy.buffer.records
    ]
