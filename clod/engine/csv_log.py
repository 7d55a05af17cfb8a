"""The per-step CSV log, ``csv/metrics.csv``, whole across interruptions.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts, so a resumed
run kept only the steps logged after the resume, and it buffers rows for 100 steps, so a
killed run lost its last ones. Here the file is kept and every row is written when it is
logged. Each row carries the ``task`` it belongs to (Lightning's ``step`` starts again with
every task). When a task starts, the rows an earlier attempt logged for it after the point
the task now continues from (its ``last.ckpt``) are dropped, since the resumed attempt logs
those steps again: the file then reads as one uninterrupted run. The row of the checkpoint's
own step is logged just after the checkpoint is written; an attempt killed in between
leaves that one row out.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_only

TASK = "task"


class _KeepingWriter(ExperimentWriter):
    """Appends to an existing ``metrics.csv`` (under its header) instead of deleting it."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])


def _int(value: str | None) -> int | None:
    return int(float(value)) if value not in (None, "") else None


class TaskCSVLogger(CSVLogger):
    """Lightning's CSV logger with a ``task`` column, each row written at once, and the rows
    of earlier attempts of a resumed run kept."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.task: int | None = None

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if self.task is not None:
            metrics = {**metrics, TASK: self.task}
        super().log_metrics(dict(metrics), step)
        self.save()  # a killed run keeps every row it logged

    @rank_zero_only
    def begin_task(self, task: int, resumed_at_step: int | None) -> None:
        """Rows from now on belong to ``task``; drop what an earlier attempt logged for it
        (and later tasks) after ``resumed_at_step`` (None: the task starts from scratch)."""
        self.save()
        self.task = task
        path = self.experiment.metrics_file_path
        if not os.path.isfile(path):
            return
        with open(path, newline="") as file:
            reader = csv.DictReader(file)
            header, rows = reader.fieldnames or [], list(reader)

        def kept(row: Mapping[str, str]) -> bool:
            row_task = _int(row.get(TASK))
            if row_task is None or row_task < task:
                return True  # an earlier task's, or a log written before the column existed
            if row_task > task or resumed_at_step is None or row.get("task/idx"):
                return False  # the task's own evaluation row is logged again when it ends
            return (_int(row.get("step")) or 0) <= resumed_at_step

        keep = [row for row in rows if kept(row)]
        if len(keep) == len(rows):
            return
        partial = f"{path}.partial"
        with open(partial, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=header)
            writer.writeheader()
            writer.writerows(keep)
        os.replace(partial, path)
