"""A continual run against its upper bound, a jointly trained model: Ω, AbsGap and RelGap
(docs/protocol.md §5).

The upper bound is a finished ``strategy=joint`` run on the same classes; its value on the
classes seen after step t, x_UB,t, is the mean of its per-class AP over S_t, so one joint
model serves every step of a multi-step scenario (for two tasks, whose last step sees every
class, this is ILYOLOX's single all-class joint model). Ω counts the base step as 1.0, as
ILYOLOX does: Ω = (1/T)(1 + Σ_{t≥1} x_t / x_UB,t).
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

    def value(self, metric: str, classes: Sequence[int]) -> float:
        return mean_over_classes(self.per_class[metric], classes)


def read_upper_bound(run_dir: str | Path) -> UpperBound:
    """The joint run in ``run_dir`` (its summary.json and results/task_0.json, plain JSON)."""
    run_dir = Path(run_dir)
    summary_path, result_path = run_dir / "summary.json", run_dir / "results" / "task_0.json"
    for path in (summary_path, result_path):
        if not path.is_file():
            raise ConfigError(
                f"eval.upper_bound={run_dir}: {path.name} is missing (a finished "
                "`strategy=joint` run directory is needed)"
            )
    try:
        summary, record = read_json(summary_path), read_json(result_path)
        strategy, status = summary.get("strategy"), summary.get("status")
        result = record["result"]
        per_class = {metric: np.asarray(result[key], float) for metric, key in METRICS.items()}
        names = [str(name) for name in record["class_names"]]
    except (ValueError, KeyError, TypeError, AttributeError) as problem:
        raise ConfigError(f"eval.upper_bound={run_dir}: unreadable results ({problem})") from None
    if strategy != "joint" or status != "done" or int(summary.get("num_tasks", 0)) != 1:
        raise ConfigError(
            f"eval.upper_bound={run_dir}: {summary_path} is a {status} {strategy} run of "
            f"{summary.get('num_tasks')} tasks, not a finished joint run"
        )
    return UpperBound(str(run_dir), names, per_class)


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
        bounds = [bound.value(metric, seen_classes(groups, t)) for t in range(len(values))]
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
