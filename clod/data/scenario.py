"""Class-incremental scenarios: which classes each task adds (docs/protocol.md §1–§2).

A scenario is data-agnostic. It says how many classes each task adds, in one of
three forms, and in which order the dataset's classes are taken:

- ``base`` + ``increment``: ``15p1`` is base 15, then tasks of 1 until the classes end;
- ``splits``: a list of counts, or the grammar ``"40+10x4"`` (``NxK`` = K tasks of N);
- ``tasks``: explicit lists of class names, one list per task.

``class_order`` is ``default`` (the dataset's order), ``reversed``, ``permuted``
(shuffled with ``order_seed``) or an explicit list of every class name.

Global labels are positions in the ordered class list and never change between
tasks. With the default order they equal the dataset's own class indices.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clod.errors import ConfigError

_TERM = re.compile(r"^\s*(\d+)\s*(?:x\s*(\d+))?\s*$")


def parse_splits(text: str) -> list[int]:
    """Parse ``"40+10x4"`` into ``[40, 10, 10, 10, 10]``."""
    counts: list[int] = []
    for term in str(text).split("+"):
        match = _TERM.match(term)
        if not match:
            raise ConfigError(
                f"scenario.splits: cannot parse {term!r} in {text!r} (expected e.g. 40+10x4)"
            )
        size, repeat = int(match.group(1)), int(match.group(2) or 1)
        counts.extend([size] * repeat)
    return counts


@dataclass(frozen=True)
class Scenario:
    """A scenario resolved against a dataset's class list."""

    name: str
    class_names: tuple[str, ...]  # the experiment's classes, in scenario order (= global labels)
    dataset_classes: tuple[str, ...]  # the dataset's own class order
    dataset_to_label: tuple[int, ...]  # dataset class index -> global label
    task_classes: tuple[tuple[int, ...], ...]  # global labels added by each task

    @property
    def num_tasks(self) -> int:
        return len(self.task_classes)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def new(self, task: int) -> tuple[int, ...]:
        return self.task_classes[task]

    def seen(self, task: int) -> tuple[int, ...]:
        return tuple(c for t in range(task + 1) for c in self.task_classes[t])

    def old(self, task: int) -> tuple[int, ...]:
        return self.seen(task - 1) if task > 0 else ()

    def names(self, labels: Sequence[int]) -> list[str]:
        return [self.class_names[c] for c in labels]


def resolve_scenario(cfg: Mapping[str, Any], dataset_classes: Sequence[str]) -> Scenario:
    """Check a scenario config against the dataset's classes and resolve its tasks."""
    name = str(cfg.get("name", "scenario"))
    dataset_classes = tuple(dataset_classes)
    total = len(dataset_classes)
    ordered = _ordered_classes(cfg, dataset_classes, name)

    explicit = cfg.get("tasks")
    if explicit:
        task_names = _explicit_tasks(explicit, set(ordered), name, dataset_classes)
        # Labels follow first appearance in the task lists, so each task's classes are
        # contiguous (needed when the head grows per task); unlisted classes come last.
        listed = [n for names in task_names for n in names]
        ordered = tuple(listed) + tuple(n for n in ordered if n not in set(listed))
        label_of_name = {n: i for i, n in enumerate(ordered)}
        task_classes = [tuple(label_of_name[n] for n in names) for names in task_names]
        counts = [len(names) for names in task_names]
    else:
        label_of_name = {n: i for i, n in enumerate(ordered)}
        counts = _counts(cfg, total, name)
        task_classes, start = [], 0
        for count in counts:
            task_classes.append(tuple(range(start, start + count)))
            start += count

    covered = sum(counts)
    if covered < total and not cfg.get("allow_partial", False):
        raise ConfigError(
            f"scenario {name} covers {covered} of the dataset's {total} classes "
            f"(tasks of {counts}); set scenario.allow_partial=true to leave "
            f"{', '.join(ordered[covered:])} out"
        )
    return Scenario(
        name=name,
        class_names=ordered,
        dataset_classes=dataset_classes,
        dataset_to_label=tuple(label_of_name[n] for n in dataset_classes),
        task_classes=tuple(task_classes),
    )


def _explicit_tasks(
    explicit: Sequence[Any], known: set[str], name: str, dataset_classes: tuple[str, ...]
) -> list[list[str]]:
    task_names: list[list[str]] = []
    used: set[str] = set()
    for t, names in enumerate(explicit):
        names = [names] if isinstance(names, str) else [str(n) for n in names]
        if not names:
            raise ConfigError(f"scenario {name}: task {t} has no classes")
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(
                f"scenario {name}: task {t} names unknown class(es) {unknown}; "
                f"dataset classes: {', '.join(dataset_classes)}"
            )
        repeated = sorted(used.intersection(names))
        if repeated:
            raise ConfigError(f"scenario {name}: class(es) {repeated} appear in more than one task")
        used.update(names)
        task_names.append(names)
    return task_names


def _counts(cfg: Mapping[str, Any], total: int, name: str) -> list[int]:
    splits = cfg.get("splits")
    if splits is not None:
        counts = parse_splits(splits) if isinstance(splits, str) else [int(c) for c in splits]
    elif cfg.get("base") is not None:
        base, increment = int(cfg["base"]), int(cfg.get("increment") or 0)
        if base <= 0:
            raise ConfigError(f"scenario {name}: base must be > 0, got {base}")
        if base > total:
            raise ConfigError(
                f"scenario {name} needs at least {base} classes for its base task, "
                f"but the dataset has {total}"
            )
        if increment <= 0:
            if base != total:
                raise ConfigError(f"scenario {name}: increment must be > 0 (got {increment})")
            return [base]
        if base == total:
            raise ConfigError(
                f"scenario {name}: base {base} uses every class of the dataset, so no class is "
                f"left for the increments of {increment}"
            )
        remaining = total - base
        num_steps = cfg.get("num_steps")
        steps = int(num_steps) if num_steps is not None else -(-remaining // increment)
        counts = [base] + [increment] * steps
        if sum(counts) > total:
            if num_steps is not None:
                raise ConfigError(
                    f"scenario {name}: base {base} + {steps}x{increment} needs {sum(counts)} "
                    f"classes, but the dataset has {total}"
                )
            raise ConfigError(
                f"scenario {name}: the {remaining} classes after the base do not divide into "
                f"tasks of {increment}"
            )
    else:
        raise ConfigError(f"scenario {name}: give base+increment, splits, or tasks")
    if not counts or any(c <= 0 for c in counts):
        raise ConfigError(f"scenario {name}: every task needs > 0 classes, got {counts}")
    if sum(counts) > total:
        raise ConfigError(
            f"scenario {name} needs {sum(counts)} classes (tasks of {counts}), "
            f"but the dataset has {total}"
        )
    return counts


def _ordered_classes(
    cfg: Mapping[str, Any], dataset_classes: tuple[str, ...], name: str
) -> tuple[str, ...]:
    order = cfg.get("class_order", "default") or "default"
    if isinstance(order, str):
        if order == "default":
            return dataset_classes
        if order == "reversed":
            return dataset_classes[::-1]
        if order == "permuted":
            shuffled = list(dataset_classes)
            random.Random(int(cfg.get("order_seed", 0))).shuffle(shuffled)
            return tuple(shuffled)
        raise ConfigError(
            f"scenario {name}: class_order must be default, reversed, permuted or a list, got {order!r}"
        )
    order = tuple(str(n) for n in order)
    if sorted(order) != sorted(dataset_classes):
        missing = sorted(set(dataset_classes) - set(order))
        unknown = sorted(set(order) - set(dataset_classes))
        raise ConfigError(
            f"scenario {name}: class_order must list every dataset class once "
            f"(missing {missing}, unknown {unknown})"
        )
    return order
