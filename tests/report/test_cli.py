"""``python -m clod.report`` as a user runs it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from clod.report import hydra_style_to_flags
from tests.engine.conftest import ROOT, clod_env, wandb_inspect
from tests.report.conftest import Sweep

FIGURES = ("map_vs_memory.png", "map_per_task.png", "alpha_beta.png")


def report(*args: str | Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clod.report", *map(str, args)],
        cwd=ROOT,
        env=clod_env(ROOT / "data", **env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_report_writes_its_files_into_the_sweep_dir(sweep: Sweep) -> None:
    result = report(sweep.root)
    assert result.returncode == 0, result.stderr
    out = sweep.root / "report"
    for name in ("runs.csv", "report.md", *FIGURES):
        assert (out / name).is_file(), name
        assert f"wrote {out / name}" in result.stdout
    assert not list(out.glob(".*.tmp"))

    with (out / "runs.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == len(sweep.all_runs)
    markdown = (out / "report.md").read_text()
    assert "strategy.frozen_bn must be eval or train, got 'bogus'" in markdown
    assert "(6 done, 1 failed, 1 running)" in markdown
    assert "Varied: `strategy.alpha`, `strategy.beta`" in markdown
    for figure in FIGURES:
        assert f"]({figure})" in markdown
    # printed: the results table and the runs that did not finish, with the error
    assert "| lwf | 1 | - |" in result.stdout
    assert "| `failed` | failed | sid | 2p1 | 0 |" in result.stdout
    assert "| `running` | running | lwf | 2p1 | 2 |" in result.stdout

    # a second report over the same directory does not take its own output for a run
    again = report(sweep.root)
    assert again.returncode == 0
    with (out / "runs.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == len(sweep.all_runs)


def test_missing_or_empty_dir_exits_with_a_clear_message(tmp_path: Path) -> None:
    missing = report(tmp_path / "nope")
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: sweep directory {tmp_path / 'nope'} does not exist"
    empty = report(tmp_path)
    assert empty.returncode == 2
    assert empty.stderr.startswith(f"error: no runs under {tmp_path}")
    assert "Traceback" not in missing.stderr + empty.stderr


def test_hydra_style_logger_arguments_map_to_flags() -> None:
    assert hydra_style_to_flags(["d", "logger=wandb", "logger.wandb.project=p"]) == [
        "d",
        "--wandb",
        "--project",
        "p",
    ]
    assert hydra_style_to_flags(["d", "logger=csv"]) == ["d"]


def test_wandb_offline_run_of_job_type_report(sweep: Sweep, tmp_path: Path) -> None:
    wandb_dir = tmp_path / "wandb_dir"
    wandb_dir.mkdir()
    result = report(
        sweep.root,
        "--out",
        tmp_path / "out",
        "logger=wandb",
        "logger.wandb.project=clod-test",
        WANDB_DIR=str(wandb_dir),
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = wandb_dir.glob("wandb/offline-run-*")
    assert f"W&B run in {run_dir}" in result.stdout

    summary = json.loads(wandb_inspect(run_dir, "--summary"))
    assert summary["project"] == "clod-test" and summary["state"] == "finished"
    assert summary["config"]["sweep_dir"] == str(sweep.root)
    assert summary["summary"]["runs/total"] == len(sweep.all_runs)
    assert summary["summary"]["runs/done"] == len(sweep.finished)
    assert summary["summary"]["runs/failed"] == 1
    assert summary["summary"]["report/runs"]["nrows"] == len(sweep.all_runs)
    for figure in FIGURES:
        assert summary["summary"][f"report/{figure.removesuffix('.png')}"]["_type"] == "image-file"

    records = [json.loads(line) for line in wandb_inspect(run_dir).splitlines()]
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert run["job_type"] == "report"
    assert run["run_group"] == sweep.root.name  # the sweep's group, as its training runs
