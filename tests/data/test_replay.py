"""The replay buffer: capacity, the reference 'half' policy, class balance, state round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clod.data.replay import ReplayBuffer
from clod.data.types import ImageRecord
from clod.errors import ConfigError


def records(task: int, n: int, label: int, tmp_path: Path) -> list[ImageRecord]:
    path = tmp_path / "img.jpg"
    if not path.exists():
        path.write_bytes(b"x" * 1000)
    return [
        ImageRecord(
            image_id=f"{task}-{i}",
            path=path,
            width=10,
            height=10,
            boxes=np.array([[0, 0, 5, 5]], np.float32),
            labels=np.array([label]),
            difficult=np.zeros(1, bool),
        )
        for i in range(n)
    ]


def test_half_policy_follows_the_reference_rule(tmp_path: Path) -> None:
    buffer = ReplayBuffer(capacity=10, policy="half", seed=0)
    buffer.update(0, records(0, 30, 0, tmp_path), new_classes=[0], seen_classes=[0])
    assert len(buffer) == 10 and {i.task for i in buffer.items} == {0}
    assert len({r.image_id for r in buffer.records}) == 10  # drawn without replacement
    # |D_1| = 8 >= M/2: keep 5 old, add 5 new
    buffer.update(1, records(1, 8, 1, tmp_path), new_classes=[1], seen_classes=[0, 1])
    assert sorted(i.task for i in buffer.items) == [0] * 5 + [1] * 5
    # |D_2| = 3 < M/2: keep M - 3 = 7 old items, add all 3
    buffer.update(2, records(2, 3, 2, tmp_path), new_classes=[2], seen_classes=[0, 1, 2])
    tasks = [i.task for i in buffer.items]
    assert len(tasks) == 10 and tasks.count(2) == 3
    assert buffer.class_counts(3).tolist() == [tasks.count(0), tasks.count(1), 3]


def test_small_first_task_fills_what_it_can(tmp_path: Path) -> None:
    buffer = ReplayBuffer(capacity=10, policy="half", seed=0)
    buffer.update(0, records(0, 4, 0, tmp_path), [0], [0])
    assert len(buffer) == 4


def test_class_balanced_policy(tmp_path: Path) -> None:
    buffer = ReplayBuffer(capacity=12, policy="class_balanced", seed=1)
    buffer.update(0, records(0, 40, 0, tmp_path), [0, 1], [0, 1])
    # k = floor(12 / 3 seen classes) = 4 per class: replace 4 items with task-1 images
    buffer.update(1, records(1, 40, 2, tmp_path), [2], [0, 1, 2])
    assert sorted(i.task for i in buffer.items) == [0] * 8 + [1] * 4


def test_items_keep_their_own_task_labels(tmp_path: Path) -> None:
    buffer = ReplayBuffer(capacity=4, seed=0)
    buffer.update(0, records(0, 4, 7, tmp_path), [7], [7])
    assert all(r.labels.tolist() == [7] for r in buffer.records)


def test_memory_counts_file_bytes_and_annotations(tmp_path: Path) -> None:
    buffer = ReplayBuffer(capacity=3, seed=0)
    buffer.update(0, records(0, 5, 0, tmp_path), [0], [0])
    assert buffer.memory_bytes() == 3 * (1000 + 25)


def test_state_round_trip_continues_identically(tmp_path: Path) -> None:
    task_records = [
        records(0, 30, 0, tmp_path),
        records(1, 30, 1, tmp_path),
        records(2, 30, 2, tmp_path),
    ]
    a = ReplayBuffer(capacity=10, seed=5)
    a.update(0, task_records[0], [0], [0])
    a.update(1, task_records[1], [1], [0, 1])
    b = ReplayBuffer(capacity=10, seed=999)
    b.load_state_dict(a.state_dict(), task_records)
    assert [r.image_id for r in b.records] == [r.image_id for r in a.records]
    a.update(2, task_records[2], [2], [0, 1, 2])
    b.update(2, task_records[2], [2], [0, 1, 2])
    assert [r.image_id for r in b.records] == [r.image_id for r in a.records]


def test_same_seed_same_buffer_and_different_seed_differs(tmp_path: Path) -> None:
    recs = records(0, 50, 0, tmp_path)
    ids = []
    for seed in (3, 3, 4):
        buffer = ReplayBuffer(capacity=10, seed=seed)
        buffer.update(0, recs, [0], [0])
        ids.append([r.image_id for r in buffer.records])
    assert ids[0] == ids[1] != ids[2]


def test_bad_configuration() -> None:
    with pytest.raises(ConfigError, match=r"unknown replay policy 'fifo'"):
        ReplayBuffer(10, policy="fifo")
    with pytest.raises(ConfigError, match=r"capacity must be > 0"):
        ReplayBuffer(0)
