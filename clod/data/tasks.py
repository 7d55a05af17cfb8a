"""Task datasets of a class-incremental scenario (docs/protocol.md §3–§4).

Training set of task t: the images with at least one box of New_t, keeping only the
New_t boxes (old and future objects become background: the "background shift").
Evaluation set after task t, with ``test_images="seen_images"`` (the reference): the
test images with at least one box of a seen class S_t, keeping only S_t boxes; with
``"all_images"`` every test image, ground truth restricted to S_t.

Crowd boxes never count for training (they are dropped) but stay in the evaluation
ground truth, where COCOeval treats them as crowd regions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from clod.data.scenario import Scenario
from clod.data.types import ImageRecord, Split
from clod.errors import ConfigError, DataError

TestImages = Literal["seen_images", "all_images"]
DifficultTrain = Literal["keep", "drop"]


@dataclass(frozen=True)
class Task:
    """One step of a scenario with its training and evaluation images."""

    index: int
    num_tasks: int
    new: tuple[int, ...]  # global labels this task adds
    seen: tuple[int, ...]  # every label learnt up to and including this task
    class_names: tuple[str, ...]  # names of all global labels
    train: tuple[ImageRecord, ...]
    eval: tuple[ImageRecord, ...]

    @property
    def old(self) -> tuple[int, ...]:
        new = set(self.new)
        return tuple(c for c in self.seen if c not in new)

    @property
    def new_names(self) -> list[str]:
        return [self.class_names[c] for c in self.new]

    def counts(self) -> dict[str, int]:
        return {
            "train_images": len(self.train),
            "train_boxes": sum(r.num_boxes for r in self.train),
            "eval_images": len(self.eval),
            "eval_boxes": sum(r.num_boxes for r in self.eval),
        }


def relabel(split: Split, scenario: Scenario) -> tuple[ImageRecord, ...]:
    """The split's records with dataset class indices replaced by global labels."""
    if tuple(split.class_names) != scenario.dataset_classes:
        raise ConfigError(
            f"{split.source}: its classes {list(split.class_names)} differ from those the "
            f"scenario was resolved against {list(scenario.dataset_classes)}"
        )
    to_label = np.asarray(scenario.dataset_to_label, dtype=np.int64)
    return tuple(
        ImageRecord(
            image_id=r.image_id,
            path=r.path,
            width=r.width,
            height=r.height,
            boxes=r.boxes,
            labels=to_label[r.labels],
            difficult=r.difficult,
            iscrowd=r.iscrowd,
        )
        for r in split.records
    )


def select_images(
    records: Sequence[ImageRecord],
    classes: Sequence[int],
    num_classes: int,
    *,
    keep_empty: bool = False,
    drop_crowd: bool = False,
    drop_difficult: bool = False,
) -> tuple[ImageRecord, ...]:
    """Images with at least one (non-crowd) box of ``classes``, keeping only those classes' boxes.

    ``keep_empty`` keeps every image (GT restricted to ``classes``), for ``all_images``.
    """
    member = np.zeros(num_classes, dtype=bool)
    member[list(classes)] = True
    selected = []
    for record in records:
        keep = member[record.labels]
        if drop_crowd:
            keep &= ~record.iscrowd
        if drop_difficult:
            keep &= ~record.difficult
        has_object = bool((keep & ~record.iscrowd).any())
        if has_object or keep_empty:
            selected.append(record if keep.all() else record.subset(keep))
    return tuple(selected)


def build_tasks(
    scenario: Scenario,
    train_split: Split,
    test_split: Split,
    *,
    joint: bool = False,
    cumulative: bool = False,
    test_images: TestImages = "seen_images",
    difficult_train: DifficultTrain = "keep",
) -> list[Task]:
    """Build every task of ``scenario`` (or the single joint task when ``joint``); with
    ``cumulative``, task t trains on every image and box of the classes seen so far (the
    cumulative joint upper bound, docs/strategies.md §2)."""
    if test_images not in ("seen_images", "all_images"):
        raise ConfigError(
            f"eval.test_images must be seen_images or all_images, got {test_images!r}"
        )
    if difficult_train not in ("keep", "drop"):
        raise ConfigError(f"data.difficult.train must be keep or drop, got {difficult_train!r}")
    train_records = relabel(train_split, scenario)
    test_records = relabel(test_split, scenario)
    task_classes = scenario.task_classes
    if joint:
        task_classes = (tuple(c for classes in task_classes for c in classes),)

    tasks = []
    seen: tuple[int, ...] = ()
    for index, new in enumerate(task_classes):
        seen = seen + new
        train = select_images(
            train_records,
            seen if cumulative else new,
            scenario.num_classes,
            drop_crowd=True,
            drop_difficult=difficult_train == "drop",
        )
        names = ", ".join(scenario.names(new))
        if not train:
            raise DataError(
                f"task {index} of scenario {scenario.name} ({names}) has no training image "
                f"in {train_split.source}: no image has a box of these classes"
            )
        evaluation = select_images(
            test_records, seen, scenario.num_classes, keep_empty=test_images == "all_images"
        )
        if not any(r.num_boxes for r in evaluation):
            raise DataError(
                f"task {index} of scenario {scenario.name}: no test image in {test_split.source} "
                f"has a box of the classes seen so far"
            )
        tasks.append(
            Task(
                index=index,
                num_tasks=len(task_classes),
                new=new,
                seen=seen,
                class_names=scenario.class_names,
                train=train,
                eval=evaluation,
            )
        )
    return tasks
