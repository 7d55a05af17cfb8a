"""The one number a hyperparameter search maximises, read from a run's summary.

``<metric>`` (e.g. ``map50``) is the final value over every seen class, which the old
classes dominate; ``old_new_<metric>`` is the mean of the final old-class and new-class
values, so that a method which stops learning the new classes cannot win by keeping the
old ones (docs/protocol.md §8).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clod.errors import ConfigError
from clod.metrics.grouping import METRICS

OLD_NEW_PREFIX = "old_new_"


def objective_names() -> list[str]:
    return [*METRICS, *(OLD_NEW_PREFIX + metric for metric in METRICS)]


def check_objective(name: str) -> str:
    """``name`` if it names an objective; a ConfigError listing the choices otherwise."""
    if name not in objective_names():
        raise ConfigError(
            f"objective={name!r} is not an objective; choose one of {', '.join(objective_names())}"
        )
    return name


def objective_value(summary: Mapping[str, Any], name: str) -> float:
    """The objective ``name`` of a finished run's summary."""
    check_objective(name)
    metric = name.removeprefix(OLD_NEW_PREFIX)
    if metric == name:
        return float(summary["final"][metric])
    old, new = summary.get("final_old") or {}, summary.get("final_new") or {}
    if old.get(metric) is None or new.get(metric) is None:
        raise ConfigError(
            f"objective={name} needs old and new classes in the last task; this scenario's "
            f"last task has {'no old' if old.get(metric) is None else 'no new'} classes "
            f"(use objective={metric})"
        )
    return (float(old[metric]) + float(new[metric])) / 2.0
