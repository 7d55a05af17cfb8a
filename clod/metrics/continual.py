"""Continual-learning aggregates over the sequence of per-task evaluations (docs/protocol.md §5).

Inputs are plain per-class arrays, one per evaluation (after task 0, 1, …), of one metric (e.g.
``DetectionResult.ap``), with −1 where a class has no GT or was not evaluated; and the class groups
of the tasks (New_t). Everything here is numpy/python and serialises to JSON through ``to_dict``.

Conventions:
- a mean over a class set skips classes without a value; with none left it is −1;
- ``None`` marks what is not defined: R[t][g] for g > t, mAP_old at task 0, forgetting with a
  single evaluation, Ω and the gaps without an upper bound.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from clod.metrics.grouping import NO_VALUE, mean_over_classes


def seen_classes(task_classes: Sequence[Iterable[int]], task: int) -> list[int]:
    """S_t: the union of the classes of tasks 0..t, sorted."""
    return sorted({int(c) for group in task_classes[: task + 1] for c in group})


def omega(
    values: Sequence[float],
    upper_bound: float | Sequence[float],
    base_as_one: bool = True,
) -> float:
    """Ω = (1/T)·Σ_t x_t / x_UB,t (Kemker), over the T evaluations in ``values``.

    ``upper_bound`` is either one value (a single all-class joint model, as ILYOLOX uses) or one
    value per evaluation (the joint model's value on S_t). With ``base_as_one`` (ILYOLOX's
    convention) the base step counts as 1.0 whatever its value, so two tasks give
    Ω = (1 + x_final / x_UB) / 2.
    """
    if len(values) == 0:
        raise ValueError("omega needs at least one evaluation")
    bounds = _per_step_bounds(upper_bound, len(values))
    ratios = [value / bound for value, bound in zip(values, bounds, strict=True)]
    if base_as_one:
        ratios[0] = 1.0
    return float(np.mean(ratios))


def absolute_gap(final: float, upper_bound: float) -> float:
    """AbsGap = UB − final."""
    return float(upper_bound - final)


def relative_gap(final: float, upper_bound: float) -> float:
    """RelGap = (UB − final) / UB."""
    if upper_bound <= 0:
        raise ValueError(f"the upper bound must be positive, got {upper_bound}")
    return float((upper_bound - final) / upper_bound)


def _per_step_bounds(upper_bound: float | Sequence[float], steps: int) -> list[float]:
    if isinstance(upper_bound, numbers.Real):
        bounds = [float(upper_bound)] * steps
    else:
        bounds = [float(b) for b in upper_bound]
        if len(bounds) < steps:
            raise ValueError(f"{len(bounds)} upper-bound values for {steps} evaluations")
        bounds = bounds[:steps]
    if any(b <= 0 for b in bounds):
        raise ValueError(f"upper-bound values must be positive, got {bounds}")
    return bounds


@dataclass
class ContinualSummary:
    """CL aggregates of one metric over a task sequence."""

    metric: str
    task_classes: list[list[int]]
    R: list[list[float | None]]  # R[t][g]: after task t, mean over New_g; None for g > t
    map_all: list[float]  # over S_t
    map_old: list[float | None]  # over Old_t = S_{t-1}; None at t = 0
    map_new: list[float]  # over New_t
    final_map: float  # map_all of the last evaluation
    avg_inc_map: float  # mean over evaluations of map_all
    forgetting_per_class: dict[int, float]  # classes not in the last evaluated task
    forgetting: float | None  # mean of forgetting_per_class
    forgetting_per_group: dict[int, float]  # groups (tasks) before the last evaluated one
    group_forgetting: float | None  # mean of forgetting_per_group
    upper_bound: float | list[float] | None = None
    omega: float | None = None
    abs_gap: float | None = None
    rel_gap: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # JSON object keys are strings; keep the class/group index readable.
        data["forgetting_per_class"] = {str(k): v for k, v in self.forgetting_per_class.items()}
        data["forgetting_per_group"] = {str(k): v for k, v in self.forgetting_per_group.items()}
        return data


def _max_drop(history: list[float], final: float) -> float | None:
    """Best earlier value minus the final one, over values that exist (≥ 0)."""
    earlier = [v for v in history if v > NO_VALUE]
    if not earlier or final <= NO_VALUE:
        return None
    return float(max(earlier) - final)


def summarize_continual(
    per_task_ap: Sequence[Sequence[float] | np.ndarray],
    task_classes: Sequence[Iterable[int]],
    upper_bound: float | Sequence[float] | None = None,
    omega_base_as_one: bool = True,
    metric: str = "map",
) -> ContinualSummary:
    """Aggregate the per-class results of evaluations after tasks 0..E−1.

    Args:
        per_task_ap: per-class arrays, evaluation t taken after task t (E ≤ number of tasks, so a
            run in progress can be summarised; "final" then means the last evaluation).
        task_classes: New_t for every task t (global class indices).
        upper_bound: the joint model's value (one number, or one per evaluation on S_t), in the
            same unit as ``per_task_ap``; enables Ω, AbsGap and RelGap.
        omega_base_as_one: count the base step of Ω as 1.0 (ILYOLOX).
        metric: a label stored in the summary (e.g. ``map`` or ``map50``).
    """
    groups = [sorted({int(c) for c in group}) for group in task_classes]
    evaluations = [np.asarray(values, dtype=np.float64) for values in per_task_ap]
    if not evaluations:
        raise ValueError("at least one evaluation is needed")
    if len(evaluations) > len(groups):
        raise ValueError(f"{len(evaluations)} evaluations for only {len(groups)} tasks")
    last = len(evaluations) - 1

    R: list[list[float | None]] = [
        [mean_over_classes(values, groups[g]) if g <= t else None for g in range(len(groups))]
        for t, values in enumerate(evaluations)
    ]
    map_all = [
        mean_over_classes(values, seen_classes(groups, t)) for t, values in enumerate(evaluations)
    ]
    map_old: list[float | None] = [
        None if t == 0 else mean_over_classes(values, seen_classes(groups, t - 1))
        for t, values in enumerate(evaluations)
    ]
    map_new = [mean_over_classes(values, groups[t]) for t, values in enumerate(evaluations)]

    # Forgetting of class c not in the last task: best AP in an earlier evaluation that had c
    # among its seen classes, minus the final AP.
    forgetting_per_class: dict[int, float] = {}
    for c in seen_classes(groups, last - 1) if last > 0 else []:
        if c in groups[last]:
            continue
        first_task = next(t for t, group in enumerate(groups) if c in group)
        drop = _max_drop(
            [float(evaluations[j][c]) for j in range(first_task, last)], float(evaluations[last][c])
        )
        if drop is not None:
            forgetting_per_class[c] = drop
    forgetting_per_group: dict[int, float] = {}
    for g in range(last):
        history = [R[j][g] for j in range(g, last)]
        drop = _max_drop([v for v in history if v is not None], R[last][g])  # type: ignore[arg-type]
        if drop is not None:
            forgetting_per_group[g] = drop

    summary = ContinualSummary(
        metric=metric,
        task_classes=groups,
        R=R,
        map_all=map_all,
        map_old=map_old,
        map_new=map_new,
        final_map=map_all[last],
        avg_inc_map=float(np.mean(map_all)),
        forgetting_per_class=forgetting_per_class,
        forgetting=float(np.mean(list(forgetting_per_class.values())))
        if forgetting_per_class
        else None,
        forgetting_per_group=forgetting_per_group,
        group_forgetting=float(np.mean(list(forgetting_per_group.values())))
        if forgetting_per_group
        else None,
    )
    if upper_bound is not None:
        bounds = _per_step_bounds(upper_bound, len(evaluations))
        summary.upper_bound = (
            float(upper_bound) if isinstance(upper_bound, numbers.Real) else list(bounds)
        )
        summary.omega = omega(map_all, bounds, base_as_one=omega_base_as_one)
        summary.abs_gap = absolute_gap(map_all[last], bounds[last])
        summary.rel_gap = relative_gap(map_all[last], bounds[last])
    return summary
