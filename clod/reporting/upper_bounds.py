"""Pair each finished run of a sweep with its upper bound: the joint run of the same data,
model, seed and classes (docs/protocol.md §5). A run trained with ``eval.upper_bound``
already has Ω and the gaps in its summary; the others get them here, in memory, so that the
table and figures read them from one place (``summary["upper_bound"]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clod.errors import ClodError
from clod.metrics.upper_bound import gap_metrics, read_upper_bound
from clod.reporting.collect import Run

JOINT = "joint"


def _model(run: Run) -> dict[str, Any]:
    return {k: v for k, v in run.config.items() if k.startswith("model.")}


def _steps(run: Run) -> Any:
    return (run.summary or {}).get("continual", {}).get("map", {}).get("task_classes")


def matching_joint(run: Run, joints: Sequence[Run]) -> Run | None:
    """The joint run that bounds ``run``: same data, model config, seed and class list; a
    cumulative joint of the same steps first, else the all-class joint (one task)."""
    candidates = [
        joint
        for joint in joints
        if joint.data == run.data
        and joint.config.get("seed") == run.config.get("seed")
        and _model(joint) == _model(run)
        and joint.summary is not None
        and run.summary is not None
        and joint.summary.get("class_names") == run.summary.get("class_names")
    ]
    cumulative = [j for j in candidates if j.num_tasks != 1 and _steps(j) == _steps(run)]
    single = [j for j in candidates if j.num_tasks == 1]
    return (cumulative or single or [None])[0]


def attach_upper_bounds(runs: Sequence[Run]) -> list[str]:
    """Fill ``summary["upper_bound"]`` of every finished non-joint run that has a joint run
    to compare with; return the problems met (one line each, naming the runs)."""
    joints = [r for r in runs if r.finished and r.summary is not None and r.strategy == JOINT]
    problems = []
    for run in runs:
        if not run.finished or run.summary is None or run.strategy == JOINT:
            continue
        if run.summary.get("upper_bound"):
            continue
        joint = matching_joint(run, joints)
        if joint is None:
            continue
        try:
            gaps = gap_metrics(run.summary, read_upper_bound(joint.path))
        except (ClodError, KeyError, TypeError, ValueError) as problem:
            problems.append(f"{run.name}: no Ω against {joint.name} ({problem})")
            continue
        gaps["run"] = joint.name  # the report names runs by their path in the sweep
        run.summary["upper_bound"] = gaps
    return problems
