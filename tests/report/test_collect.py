"""Finding and reading the runs of a sweep directory."""

from __future__ import annotations

import json
import shutil
import traceback
from pathlib import Path

import pytest

from clod.reporting.build import build_report, write_report
from clod.reporting.collect import (
    DONE,
    FAILED,
    INCOMPLETE,
    RUNNING,
    UNREADABLE,
    ReportError,
    collect_runs,
    error_line,
)
from tests.report.conftest import Sweep, read_summary


def test_every_run_is_found_once_with_its_status(sweep: Sweep) -> None:
    runs = {run.name: run for run in collect_runs(sweep.root)}
    assert set(runs) == sweep.all_runs
    assert {name for name, run in runs.items() if run.status == DONE} == set(sweep.finished)
    assert runs[sweep.failed].status == FAILED
    assert runs[sweep.running].status == RUNNING


def test_finished_runs_carry_their_config_and_summary(sweep: Sweep) -> None:
    runs = {run.name: run for run in collect_runs(sweep.root)}
    for name, (strategy, alpha, beta) in sweep.finished.items():
        run = runs[name]
        assert (run.strategy, run.alpha, run.beta) == (strategy, alpha, beta), name
        assert (run.scenario, run.data) == ("2p1", "synthetic_tiny")
        assert run.summary == read_summary(sweep, name)
        assert run.tasks_done == run.num_tasks == 3
        assert [row["task"] for row in run.rows] == [0, 1, 2]
        assert f"strategy.alpha={alpha}" in run.overrides


def test_failed_run_reports_the_exception_line(sweep: Sweep) -> None:
    run = next(r for r in collect_runs(sweep.root) if r.name == sweep.failed)
    assert run.strategy == "sid" and run.scenario == "2p1"  # from state.json's config
    assert run.error is not None
    assert "strategy.frozen_bn must be eval or train, got 'bogus'" in run.error
    assert run.traceback is not None and run.traceback.startswith("Traceback")
    assert run.tasks_done == 0 and run.summary is None


def test_running_run_has_the_tasks_it_finished(sweep: Sweep) -> None:
    run = next(r for r in collect_runs(sweep.root) if r.name == sweep.running)
    assert run.tasks_done == 2
    assert [row["task"] for row in run.rows] == [0, 1]
    assert isinstance(run.rows[1]["map50"], float)
    assert run.summary is None and run.error is None


def test_a_corrupt_file_is_named_and_the_other_runs_are_read(sweep: Sweep, tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    for name in ("good", "bad_summary", "old_summary", "bad_state", "bad_config"):
        shutil.copytree(sweep.root / "alpha" / "0", root / name)
    (root / "bad_summary" / "summary.json").write_text('{"final": ')  # killed mid-write
    old = read_summary(sweep, "alpha/0")
    del old["final_old"]
    (root / "old_summary" / "summary.json").write_text(json.dumps(old))
    (root / "bad_state" / "state.json").write_text("[1, 2]")
    (root / "bad_config" / "config.yaml").write_text("strategy: [unclosed\n")
    runs = {run.name: run for run in collect_runs(root)}
    assert runs["good"].status == DONE
    assert runs["bad_summary"].status == UNREADABLE
    assert runs["bad_summary"].error.startswith("summary.json cannot be read")  # type: ignore[union-attr]
    assert runs["old_summary"].error == (
        "summary.json has no final_old.map50 (written by another clod version?)"
    )
    assert runs["bad_state"].error == "state.json holds a list, not a JSON object"
    assert runs["bad_config"].error.startswith("config.yaml cannot be read")  # type: ignore[union-attr]
    # and the whole report still comes out, naming the files
    write_report(build_report(root))
    markdown = (root / "report" / "report.md").read_text()
    assert "(1 done, 4 unreadable)" in markdown
    assert (
        "| `bad_summary` | unreadable |" in markdown and "summary.json cannot be read" in markdown
    )


def test_discovery_skips_what_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / ".hydra" / "config.yaml").write_text("strategy:\n  name: naive\n")
    (tmp_path / ".submitit" / "123").mkdir(parents=True)
    (tmp_path / ".submitit" / "123" / "config.yaml").write_text("x: 1\n")
    wandb_files = tmp_path / "report" / "wandb" / "offline-run-1" / "files"
    wandb_files.mkdir(parents=True)
    (wandb_files / "config.yaml").write_text("x: 1\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.yaml").write_text("strategy:\n  name: lwf\n")
    runs = collect_runs(tmp_path, exclude=tmp_path / "other")
    assert [run.name for run in runs] == ["0"]
    assert runs[0].status == INCOMPLETE and runs[0].strategy == "naive"
    assert "no state.json" in (runs[0].error or "")


def test_runs_sort_by_job_number(tmp_path: Path) -> None:
    for job in (10, 2, 1):
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / "state.json").write_text(json.dumps({"status": "running"}))
    assert [run.name for run in collect_runs(tmp_path)] == ["1", "2", "10"]


def test_missing_or_empty_sweep_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        collect_runs(tmp_path / "nope")
    with pytest.raises(ReportError, match="no runs under"):
        collect_runs(tmp_path)


def test_error_line_is_the_final_exception_of_a_chained_traceback() -> None:
    try:
        try:
            raise ValueError("inner")
        except ValueError as inner:
            raise RuntimeError("outer\nsecond line") from inner
    except RuntimeError as error:
        text = "".join(traceback.format_exception(error))
    assert error_line(text) == "RuntimeError: outer second line"
    assert error_line("just a message") == "just a message"
