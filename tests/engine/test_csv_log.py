"""csv/metrics.csv across a restart: TaskCSVLogger (clod/engine/csv_log.py) on real files."""

from __future__ import annotations

import csv
from pathlib import Path

from clod.engine.csv_log import TaskCSVLogger


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_a_restart_keeps_earlier_rows_and_drops_those_after_the_checkpoint(
    tmp_path: Path,
) -> None:
    first = TaskCSVLogger(save_dir=tmp_path, name="csv", version="")
    first.begin_task(0, resumed_at_step=None)
    for step in (1, 2):
        first.log_metrics({"train/loss": 1.0 / step}, step=step)
    first.log_metrics({"task/idx": 0, "task/map50": 0.5}, step=0)
    first.begin_task(1, resumed_at_step=None)
    for step in (1, 2, 3, 4):
        first.log_metrics({"train/loss": 2.0 / step}, step=step)
    first.log_metrics({"task/idx": 1, "task/map50": 0.4}, step=1)
    # No finalize: the process is killed here. Every row is on disk already.
    path = tmp_path / "csv" / "metrics.csv"
    assert len(rows(path)) == 8

    second = TaskCSVLogger(save_dir=tmp_path, name="csv", version="")
    second.begin_task(1, resumed_at_step=2)  # task 1's last.ckpt was at step 2
    second.log_metrics({"train/loss": 0.9, "train/new_term": 7.0}, step=3)
    second.finalize("success")

    got = [(r["task"], r["step"], r["train/loss"], r["train/new_term"]) for r in rows(path)]
    assert got == [
        ("0", "1", "1.0", ""),
        ("0", "2", "0.5", ""),
        ("0", "0", "", ""),
        ("1", "1", "2.0", ""),
        ("1", "2", "1.0", ""),
        ("1", "3", "0.9", "7.0"),  # a column that appears later widens the file
    ]


def test_a_log_without_the_task_column_is_kept_whole(tmp_path: Path) -> None:
    """A run directory written before the column existed (Lightning's own CSV logger)."""
    (tmp_path / "csv").mkdir()
    path = tmp_path / "csv" / "metrics.csv"
    path.write_text("epoch,step,train/loss\n0,1,2.5\n0,2,2.0\n")
    logger = TaskCSVLogger(save_dir=tmp_path, name="csv", version="")
    logger.begin_task(1, resumed_at_step=None)
    logger.log_metrics({"train/loss": 1.5}, step=1)
    assert [(r["task"], r["step"], r["train/loss"]) for r in rows(path)] == [
        ("", "1", "2.5"),
        ("", "2", "2.0"),
        ("1", "1", "1.5"),
    ]
