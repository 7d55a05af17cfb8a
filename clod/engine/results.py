"""Per-task result rows, the run's summary, and their files.

Each finished task writes ``results/task_<k>.json`` (its row plus the full per-class
table); ``results.csv`` is rebuilt from those files after every task, so a resumed
run never duplicates a row. ``summary.json`` holds the final and continual metrics.
"""

from __future__ import annotations

import resource
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clod.data.tasks import Task
from clod.metrics.continual import summarize_continual
from clod.metrics.detection import DetectionResult
from clod.metrics.grouping import METRICS, mean_over_classes
from clod.metrics.upper_bound import UpperBound, check_classes, gap_metrics, read_upper_bound
from clod.utils.io import read_json, write_csv, write_json


def peak_memory_mb() -> float:
    """Peak resident memory of this process and of its finished children (data workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0  # Linux reports KiB


def task_row(
    task: Task,
    result: DetectionResult,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """One row of results.csv: the task, its metrics on all/old/new classes, costs."""
    counts = task.counts()
    row: dict[str, Any] = {
        "task": task.index,
        "classes": ", ".join(task.new_names),  # COCO names have spaces
        "num_seen": len(task.seen),
        **counts,
    }
    for metric in METRICS:
        row[metric] = float(getattr(result, metric))
    for group, classes in (("old", task.old), ("new", task.new)):
        for metric, per_class in METRICS.items():
            row[f"{group}/{metric}"] = (
                mean_over_classes(getattr(result, per_class), classes) if classes else None
            )
    row.update(extra)
    return row


def upper_bound_of(eval_cfg: Mapping[str, Any], class_names: Sequence[str]) -> UpperBound | None:
    """The joint run ``eval.upper_bound`` names, checked against the run's classes; None
    when it names none."""
    if not eval_cfg.get("upper_bound"):
        return None
    bound = read_upper_bound(eval_cfg["upper_bound"])
    check_classes(bound, class_names)
    return bound


class ResultsBook:
    """The files of one run's results under ``output_dir``; with an upper bound (a joint
    run), the summary also holds Ω, AbsGap and RelGap against it."""

    def __init__(self, output_dir: Path, upper_bound: UpperBound | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.task_dir = self.output_dir / "results"
        self.upper_bound = upper_bound

    def task_file(self, index: int) -> Path:
        return self.task_dir / f"task_{index}.json"

    def record(
        self, row: Mapping[str, Any], result: DetectionResult, class_names: Sequence[str]
    ) -> None:
        """Write one finished task's row and per-class table, then rebuild results.csv."""
        write_json(
            self.task_file(int(row["task"])),
            {"row": dict(row), "result": result.to_dict(), "class_names": list(class_names)},
        )
        write_csv(self.output_dir / "results.csv", [entry["row"] for entry in self.entries()])

    def entries(self) -> list[dict[str, Any]]:
        files = sorted(self.task_dir.glob("task_*.json"), key=lambda p: int(p.stem.split("_")[1]))
        return [read_json(p) for p in files]

    def summary(self, tasks: Sequence[Task], header: Mapping[str, Any]) -> dict[str, Any]:
        """Final and continual metrics over the finished tasks."""
        entries = self.entries()
        rows = [e["row"] for e in entries]
        results = [DetectionResult.from_dict(e["result"]) for e in entries]
        task_classes = [list(t.new) for t in tasks]
        continual = {
            metric: summarize_continual(
                [getattr(r, per_class) for r in results], task_classes, metric=metric
            ).to_dict()
            for metric, per_class in METRICS.items()
        }
        last = rows[-1]
        summary: dict[str, Any] = dict(header)
        summary["tasks_done"] = len(rows)
        summary["final"] = {metric: last[metric] for metric in METRICS}
        summary["final_old"] = {metric: last[f"old/{metric}"] for metric in METRICS}
        summary["final_new"] = {metric: last[f"new/{metric}"] for metric in METRICS}
        summary["avg_inc"] = {m: continual[m]["avg_inc_map"] for m in METRICS}
        summary["forgetting"] = {m: continual[m]["forgetting"] for m in METRICS}
        summary["memory"] = {
            key: last[key]
            for key in (
                "params_held",
                "params_trainable",
                "params_teacher",
                "buffer_images",
                "buffer_bytes",
            )
            if key in last
        }
        summary["memory"]["peak_rss_mb"] = max(r.get("peak_rss_mb", 0.0) for r in rows)
        summary["cost"] = {
            "macs_conv_step": last.get("macs_conv_step"),
            "macs_conv_step_per_task": [r.get("macs_conv_step") for r in rows],
        }
        summary["time"] = {
            "train_s": sum(r.get("train_time_s", 0.0) for r in rows),
            "eval_s": sum(r.get("eval_time_s", 0.0) for r in rows),
            "per_task_train_s": [r.get("train_time_s") for r in rows],
        }
        summary["continual"] = continual
        summary["rows"] = rows
        if self.upper_bound is not None and "class_names" in summary:
            summary["upper_bound"] = gap_metrics(summary, self.upper_bound)
        return summary

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        write_json(self.output_dir / "summary.json", summary)
