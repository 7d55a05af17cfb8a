"""The Trainer is built from the ``trainer`` config: Lightning's own flags work from the
command line, the ``debug=`` presets do what they say, and a wrong key is a clear error."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from clod.engine.trainer import check_trainer_config
from clod.errors import ConfigError
from tests.engine.conftest import run_sweep, run_train


def steps_per_task(run_dir: Path) -> list[int]:
    with (run_dir / "results.csv").open() as handle:
        return [int(row["steps"]) for row in csv.DictReader(handle)]


def test_a_lightning_flag_from_the_command_line_is_applied(tmp_path: Path, data_dir: Path) -> None:
    limited = run_train(tmp_path / "one", data_dir, "+trainer.limit_train_batches=1")
    assert limited.returncode == 0, limited.stderr[-3000:]
    with (tmp_path / "one" / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # experiment=smoke: batch 8, 2 epochs; without the limit each task would take more steps
    unlimited = [int(r["train_images"]) // 8 * int(r["epochs"]) for r in rows]
    assert unlimited == [6, 4, 4]
    assert [int(r["steps"]) for r in rows] == [2, 2, 2]


def test_a_wrong_trainer_key_is_one_line_and_exit_2(tmp_path: Path, data_dir: Path) -> None:
    result = run_train(tmp_path / "run", data_dir, "+trainer.limit_train_batchs=2")
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "error: trainer.limit_train_batchs is not an argument of lightning.pytorch.Trainer "
        "(did you mean one of"
    ), last
    assert "limit_train_batches" in last
    assert not (tmp_path / "run" / "results.csv").exists()  # refused before any work


def test_keys_the_engine_sets_are_refused_with_the_key_to_use() -> None:
    with pytest.raises(ConfigError, match=r"trainer.max_epochs cannot be set: set trainer.epochs"):
        check_trainer_config({"_target_": "lightning.pytorch.Trainer", "max_epochs": 3})
    with pytest.raises(ConfigError, match=r"trainer.logger cannot be set: choose loggers"):
        check_trainer_config({"logger": False})
    check_trainer_config({"epochs": 2, "limit_val_batches": 0.5, "callbacks": []})  # fine


def test_debug_presets_train_what_they_say(tmp_path: Path, data_dir: Path) -> None:
    """One sweep over the presets (one process start for all four)."""
    sweep_dir = tmp_path / "debug"
    result = run_sweep(sweep_dir, data_dir, "debug=fdr,limit,overfit,profiler")
    assert result.returncode == 0, result.stderr[-3000:]
    expected = {"0": [1, 1, 1], "1": [4, 4, 4], "2": [40, 40, 40], "3": [3, 2, 2]}
    # fdr: one batch per task; limit: 2 batches x 2 epochs; overfit: 2 batches x 20 epochs;
    # profiler: one epoch of each smoke task (3, 2 and 2 batches)
    assert {job: steps_per_task(sweep_dir / job) for job in expected} == expected
    assert "FIT Profiler Report" in result.stdout + result.stderr
    # a debug run never publishes a base model for other runs to reuse
    assert not (tmp_path / "base_cache").exists()
