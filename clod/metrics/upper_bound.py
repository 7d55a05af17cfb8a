"""A continual run against its upper bound, a jointly trained model: Ω, AbsGap and RelGap
(docs/protocol.md §5).

The upper bound is a finished ``strategy=joint`` run on the same classes. Its value on the
classes seen after step t, x_UB,t, is either

- for the all-class joint model (one task): the mean of its per-class AP over S_t, so one
  model serves every step (for two tasks, whose last step sees every class, this is
  ILYOLOX's single all-class joint model);
- for the cumulative joint (``strategy.cumulative=true``, one model per step trained on
  S_t): its own value after step t, which bounds only runs of the same scenario.

Ω counts the base step as 1.0, as ILYOLOX does: Ω = (1/T)(1 + Σ_{t≥1} x_t / x_UB,t).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clod.errors import ConfigError
from clod.metrics.continual import absolute_gap, relative_gap, seen_classes
from clod.metrics.grouping import METRICS, mean_over_classes
from clod.utils.io import read_json

# What each headline metric averages in the upper bound's per-class table.
GAP_METRICS = ("map", "map50")


@dataclass
class UpperBound:
    """The per-class values of a joint run, enough to give x_UB on any class set."""

    run: str  # the joint run's directory, as given
    class_names: list[str]
    per_class: dict[str, np.ndarray]  # headline metric -> per-class values (−1: none)
    # the cumulative joint: its value after each step, and the classes of its steps
    per_step: dict[str, list[float]] | None = None
    task_classes: list[list[int]] | None = None

    def value(self, metric: str, classes: Sequence[int]) -> float:
        return mean_over_classes(self.per_class[metric], classes)

    def per_step_values(self, metric: str, task_classes: Sequence[Sequence[int]]) -> list[float]:
        """x_UB,t for a run whose steps add ``task_classes``."""
        if self.per_step is None:
            return [
                self.value(metric, seen_classes(task_classes, t)) for t in range(len(task_classes))
            ]
        if [sorted(g) for g in task_classes] != [sorted(g) for g in self.task_classes or []]:
            raise ConfigError(
                f"eval.upper_bound={self.run} is a cumulative joint run of other steps; it "
                "bounds only runs of its own scenario"
            )
        return list(self.per_step[metric])


def read_upper_bound(run_dir: str | Path) -> UpperBound:
    """The joint run in ``run_dir`` (its summary.json and results/task_0.json, plain JSON)."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise ConfigError(
            f"eval.upper_bound={run_dir}: summary.json is missing (a finished "
            "`strategy=joint` run directory is needed)"
        )
    try:
        summary = read_json(summary_path)
        strategy, status, tasks = (
            summary.get("strategy"),
            summary.get("status"),
            summary["num_tasks"],
        )
        record = read_json(run_dir / "results" / f"task_{int(tasks) - 1}.json")
        per_class = {m: np.asarray(record["result"][key], float) for m, key in METRICS.items()}
        names = [str(name) for name in record["class_names"]]
        cumulative = int(tasks) > 1
        per_step = (
            {m: [float(row[m]) for row in summary["rows"]] for m in METRICS} if cumulative else None
        )
        task_classes = summary["continual"]["map"]["task_classes"] if cumulative else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as problem:
        raise ConfigError(f"eval.upper_bound={run_dir}: unreadable results ({problem})") from None
    if strategy != "joint" or status != "done":
        raise ConfigError(
            f"eval.upper_bound={run_dir}: {summary_path} is a {status} {strategy} run, not a "
            "finished joint run"
        )
    return UpperBound(str(run_dir), names, per_class, per_step, task_classes)


def check_classes(bound: UpperBound, class_names: Sequence[str]) -> None:
    if list(class_names) != bound.class_names:
        raise ConfigError(
            f"eval.upper_bound={bound.run} was trained on other classes or in another order "
            f"({len(bound.class_names)} classes, first {bound.class_names[:3]}) than this run "
            f"({len(class_names)} classes, first {list(class_names[:3])})"
        )


def gap_metrics(summary: Mapping[str, Any], bound: UpperBound) -> dict[str, Any]:
    """Ω (also after each step), AbsGap, RelGap and x_UB for mAP and mAP50, from a run's
    summary (its ``continual`` block: per-step values over S_t and the task classes)."""
    check_classes(bound, summary["class_names"])
    out: dict[str, Any] = {"run": bound.run}
    for metric in GAP_METRICS:
        continual = summary["continual"][metric]
        values = [float(v) for v in continual["map_all"]]
        groups = continual["task_classes"]
        bounds = bound.per_step_values(metric, groups)[: len(values)]
        if any(b <= 0 for b in bounds):
            raise ConfigError(
                f"eval.upper_bound={bound.run}: its {metric} on the seen classes is {bounds}; "
                "an upper bound must be positive"
            )
        ratios = [1.0] + [v / b for v, b in zip(values[1:], bounds[1:], strict=True)]
        out[metric] = {
            "upper_bound": bounds[-1],
            "upper_bound_per_step": bounds,
            "omega": float(np.mean(ratios)),
            "omega_per_step": [float(np.mean(ratios[: t + 1])) for t in range(len(ratios))],
            "abs_gap": absolute_gap(values[-1], bounds[-1]),
            "rel_gap": relative_gap(values[-1], bounds[-1]),
        }
    return out
