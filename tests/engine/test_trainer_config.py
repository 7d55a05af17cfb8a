"""The Trainer is built from the ``trainer`` config: Lightning's own flags work from the
command line, the ``debug=`` presets do what they say, and a wrong key is a clear error."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.engine.conftest import run_train


def steps_per_task(run_dir: Path) -> list[int]:
    with (run_dir / "results.csv").open() as handle:
        return [int(row["steps"]) for row in csv.DictReader(handle)]


def test_a_lightning_flag_from_the_command_line_is_applied(tmp_path: Path, data_dir: Path) -> None:
    unlimited = run_train(tmp_path / "all", data_dir)
    assert unlimited.returncode == 0, unlimited.stderr[-3000:]
    limited = run_train(tmp_path / "one", data_dir, "+trainer.limit_train_batches=1")
    assert limited.returncode == 0, limited.stderr[-3000:]
    # experiment=smoke: 2 epochs per task of 3, 2 and 2 batches without the limit
    assert steps_per_task(tmp_path / "all") == [6, 4, 4]
    assert steps_per_task(tmp_path / "one") == [2, 2, 2]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+trainer.limit_train_batchs=2", "trainer.limit_train_batchs is not an argument of "
         "lightning.pytorch.Trainer (did you mean one of"),
        ("+trainer.max_epochs=3", "trainer.max_epochs cannot be set: set trainer.epochs"),
        ("trainer.precision=13-true", "trainer config rejected by Lightning"),
    ],
)  # fmt: skip
def test_a_wrong_trainer_key_is_one_line_and_exit_2(
    tmp_path: Path, data_dir: Path, override: str, message: str
) -> None:
    result = run_train(tmp_path / "run", data_dir, override)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, last


@pytest.mark.parametrize(
    ("preset", "expected_steps"),
    [("fdr", [1, 1, 1]), ("limit", [4, 4, 4]), ("overfit", [40, 40, 40])],
)
def test_debug_presets_train_what_they_say(
    tmp_path: Path, data_dir: Path, preset: str, expected_steps: list[int]
) -> None:
    run_dir = tmp_path / preset
    result = run_train(run_dir, data_dir, f"debug={preset}", "trainer.enable_progress_bar=false")
    assert result.returncode == 0, result.stderr[-3000:]
    assert steps_per_task(run_dir) == expected_steps
    # a debug run never publishes a base model for other runs to reuse
    assert not (tmp_path / "base_cache").exists()


def test_debug_profiler_prints_lightnings_report(tmp_path: Path, data_dir: Path) -> None:
    result = run_train(tmp_path / "run", data_dir, "debug=profiler")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FIT Profiler Report" in result.stdout + result.stderr
    assert steps_per_task(tmp_path / "run") == [3, 2, 2]  # one epoch of each smoke task
