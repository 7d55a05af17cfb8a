"""A fixed-capacity replay buffer of training images with pluggable selection policies.

Items keep the annotations of the task they were drawn from (a task-0 image carries
only task-0 boxes; docs/protocol.md §3). The buffer samples with its own seeded generator,
and its state (item ids and generator state) round-trips through ``state_dict`` so a
resumed run keeps the same buffer (docs/strategies.md §3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clod.data.types import ImageRecord
from clod.errors import ConfigError

# Annotation bytes per box when counting buffer memory: 4 float32 coordinates, an
# int64 label and a bool difficult flag.
_BOX_BYTES = 4 * 4 + 8 + 1


@dataclass(frozen=True)
class BufferItem:
    record: ImageRecord  # filtered for its own task
    task: int


def _sample(seq: Sequence[Any], k: int, rng: np.random.Generator) -> list[Any]:
    """``k`` distinct elements drawn uniformly, in draw order."""
    k = min(k, len(seq))
    return [seq[i] for i in rng.choice(len(seq), size=k, replace=False)] if k else []


class CountPolicy:
    """Base of the selection policies: decides the buffer's content after a task.

    Subclasses say only how many old items to keep and how many task images to add; a
    policy that needs more overrides :meth:`select` (it must not exceed ``capacity``).

    The first fill draws ``capacity`` images uniformly from the task; afterwards
    :meth:`counts` says how many old items survive (drawn uniformly) and how many task
    images join (drawn uniformly, without replacement).
    """

    def counts(
        self,
        num_items: int,
        num_candidates: int,
        new_classes: Sequence[int],
        seen_classes: Sequence[int],
        capacity: int,
    ) -> tuple[int, int]:
        """(items kept, task images added)."""
        raise NotImplementedError

    def select(
        self,
        items: list[BufferItem],
        candidates: Sequence[ImageRecord],
        task: int,
        new_classes: Sequence[int],
        seen_classes: Sequence[int],
        capacity: int,
        rng: np.random.Generator,
    ) -> list[BufferItem]:
        if not items:
            return [BufferItem(r, task) for r in _sample(candidates, capacity, rng)]
        num_kept, num_new = self.counts(
            len(items), len(candidates), new_classes, seen_classes, capacity
        )
        kept = _sample(items, num_kept, rng)
        added = [BufferItem(r, task) for r in _sample(candidates, num_new, rng)]
        return kept + added


class HalfPolicy(CountPolicy):
    """The reference policy: after each later task, half old items, half new images.

    If the task has at least M/2 images: keep M/2 random old items and add M/2 random
    task images; otherwise keep M - |D_t| old items and add all of D_t.
    """

    def counts(self, num_items, num_candidates, new_classes, seen_classes, capacity):
        num_new = min(num_candidates, capacity // 2)
        return min(num_items, capacity - num_new), num_new


class ClassBalancedPolicy(CountPolicy):
    """Replace k·|New_t| random items with task images, k = floor(M / |S_t|) (the "smart" buffer)."""

    def counts(self, num_items, num_candidates, new_classes, seen_classes, capacity):
        per_class = capacity // max(1, len(seen_classes))
        num_new = min(per_class * len(new_classes), num_candidates, capacity)
        free = capacity - num_items  # a buffer not yet full takes new images without evicting
        return num_items - max(0, num_new - free), num_new


POLICIES: dict[str, type] = {"half": HalfPolicy, "class_balanced": ClassBalancedPolicy}


class ReplayBuffer:
    """Up to ``capacity`` images from past tasks, chosen by ``policy``."""

    def __init__(self, capacity: int, policy: str | CountPolicy = "half", seed: int = 0):
        if capacity <= 0:
            raise ConfigError(f"replay buffer capacity must be > 0, got {capacity}")
        if isinstance(policy, str):
            if policy not in POLICIES:
                raise ConfigError(
                    f"unknown replay policy {policy!r}; choose from {sorted(POLICIES)}"
                )
            policy = POLICIES[policy]()
        self.capacity = capacity
        self.policy = policy
        self.rng = np.random.default_rng(seed)
        self.items: list[BufferItem] = []

    def __len__(self) -> int:
        return len(self.items)

    @property
    def records(self) -> list[ImageRecord]:
        return [item.record for item in self.items]

    def update(
        self,
        task: int,
        candidates: Sequence[ImageRecord],
        new_classes: Sequence[int],
        seen_classes: Sequence[int],
    ) -> None:
        """Let the policy choose the buffer's content after ``task`` from its training images."""
        items = self.policy.select(
            list(self.items), candidates, task, new_classes, seen_classes, self.capacity, self.rng
        )
        if len(items) > self.capacity:
            raise RuntimeError(
                f"replay policy returned {len(items)} items for capacity {self.capacity}"
            )
        self.items = items

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Number of buffer images holding at least one box of each class."""
        counts = np.zeros(num_classes, dtype=np.int64)
        for item in self.items:
            counts[np.unique(item.record.labels)] += 1
        return counts

    def memory_bytes(self) -> int:
        """Bytes to store the buffer: encoded image files plus their annotations."""
        return sum(
            item.record.path.stat().st_size + _BOX_BYTES * item.record.num_boxes
            for item in self.items
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "items": [[item.task, item.record.image_id] for item in self.items],
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(
        self, state: Mapping[str, Any], task_records: Sequence[Sequence[ImageRecord]]
    ) -> None:
        """Restore items by looking up (task, image id) in each task's training records."""
        lookup = {(t, r.image_id): r for t, records in enumerate(task_records) for r in records}
        items = []
        for task, image_id in state["items"]:
            key = (int(task), str(image_id))
            if key not in lookup:
                raise ConfigError(
                    f"replay state names image {image_id!r} of task {task}, which that task lacks"
                )
            items.append(BufferItem(lookup[key], int(task)))
        self.capacity = int(state["capacity"])
        self.items = items
        self.rng.bit_generator.state = state["rng"]
