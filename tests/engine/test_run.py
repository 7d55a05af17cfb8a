"""End-to-end runs of ``python -m clod.train`` on the tiny benchmark: outputs, resume, W&B."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.engine.conftest import (
    ROOT,
    clod_env,
    kill_when,
    kill_when_exists,
    loader_position,
    run_sweep,
    run_train,
    train_command,
    wandb_inspect,
    wandb_run_record,
)

METRIC_COLUMNS = ["task", "classes", "train_images", "eval_images", "map", "map50", "map75",
                  "map50_voc07", "map50_voc", "old/map50", "new/map50", "steps", "params_held"]  # fmt: skip


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


LEARNS = ("trainer.epochs=20",)  # enough for the tiny model to detect something in task 1


def test_run_writes_results_summary_and_checkpoints(tmp_path: Path, data_dir: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_train(run_dir, data_dir, *LEARNS)
    assert result.returncode == 0, result.stderr[-3000:]
    # a banner per task and a table at the end
    assert "== task 1/3 [naive]: aeroplane, bicycle" in result.stdout
    assert "== task 3/3 [naive]: boat" in result.stdout
    assert "final map" in result.stdout

    rows = read_rows(run_dir / "results.csv")
    assert [r["task"] for r in rows] == ["0", "1", "2"]
    assert [r["classes"] for r in rows] == ["aeroplane, bicycle", "bird", "boat"]
    assert rows[0]["old/map50"] == "" and rows[1]["old/map50"] != ""
    for row in rows:
        assert 0.0 <= float(row["map50"]) <= 1.0
        assert int(row["steps"]) > 0

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "done" and summary["tasks_done"] == 3
    assert summary["final"]["map50"] == pytest.approx(float(rows[-1]["map50"]))
    assert len(summary["continual"]["map50"]["R"]) == 3
    assert summary["memory"]["params_held"] == int(rows[-1]["params_held"])
    per_task = json.loads((run_dir / "results" / "task_2.json").read_text())
    assert len(per_task["result"]["ap50"]) == 4  # full per-class table, every class

    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "done" and state["tasks_done"] == [0, 1, 2]
    checkpoint = torch.load(run_dir / "checkpoints" / "task_2.pt", weights_only=True)
    assert any(k.startswith("backbone.") for k in checkpoint["detector"])
    assert not any(k.startswith("teacher.") for k in checkpoint["detector"])

    # the same command again finds the run finished and changes nothing
    before = (run_dir / "results.csv").stat().st_mtime_ns
    again = run_train(run_dir, data_dir, *LEARNS)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert (run_dir / "results.csv").stat().st_mtime_ns == before

    # a different configuration into the same directory is refused, naming the key
    changed = run_train(run_dir, data_dir, *LEARNS, "seed=7")
    assert changed.returncode == 2
    assert "holds a run with a different configuration (seed: 1234 -> 7)" in changed.stderr

    # clod.evaluate on a task checkpoint reproduces the evaluation the run recorded
    assert float(rows[0]["map50"]) > 0.05, "the tiny model should have learnt something"
    for task, row in enumerate(rows):
        evaluation = subprocess.run(
            [sys.executable, "-m", "clod.evaluate", f"ckpt={run_dir}/checkpoints/task_{task}.pt"],
            cwd=ROOT, env=clod_env(data_dir), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert evaluation.returncode == 0, evaluation.stderr
        printed = json.loads(evaluation.stdout.splitlines()[-1])
        assert printed["task"] == task
        for metric in ("map", "map50", "map50_voc07"):
            assert printed[metric] == pytest.approx(float(row[metric]), abs=1e-9), metric
    bad = subprocess.run(
        [sys.executable, "-m", "clod.evaluate", f"run={run_dir}", "task=9"],
        cwd=ROOT, env=clod_env(data_dir), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "task_9.pt does not exist" in bad.stderr


def assert_same_run(expected_dir: Path, run_dir: Path, last_task: int) -> None:
    """Identical metrics in results.csv and bit-identical final weights."""
    expected = read_rows(expected_dir / "results.csv")
    got = read_rows(run_dir / "results.csv")
    assert [{k: r[k] for k in METRIC_COLUMNS} for r in got] == [
        {k: r[k] for k in METRIC_COLUMNS} for r in expected
    ]
    final = f"checkpoints/task_{last_task}.pt"
    final_a = torch.load(expected_dir / final, weights_only=True)["detector"]
    final_b = torch.load(run_dir / final, weights_only=True)["detector"]
    for key, value in final_a.items():
        assert torch.equal(value, final_b[key]), key


def training_log(run_dir: Path) -> list[dict[str, str]]:
    """csv/metrics.csv without the columns that time or measure the machine."""
    rows = read_rows(run_dir / "csv" / "metrics.csv")
    machine = ("time", "rss")
    return [{k: v for k, v in r.items() if not any(m in k for m in machine)} for r in rows]


def assert_same_training_log(
    expected_dir: Path, run_dir: Path, resumed_task: int, resumed_at_step: int
) -> None:
    """The resumed run's per-step log reads as the uninterrupted one's from the resumed task
    on, no row twice, and it still holds a row of every task before. (Task 0 may differ: it
    comes from the base-model cache the first run filled.) The one row it may lack is that
    of the checkpoint's own step, logged just after the checkpoint was written (the kill can
    land in between)."""
    log = training_log(run_dir)
    assert {r["task"] for r in log} == {r["task"] for r in read_rows(run_dir / "results.csv")}
    expected = [r for r in training_log(expected_dir) if int(r["task"]) >= resumed_task]
    got = [r for r in log if int(r["task"]) >= resumed_task]
    missing = [r for r in expected if r not in got]
    assert all(
        (r["task"], r["step"]) == (str(resumed_task), str(resumed_at_step)) for r in missing
    ), missing
    assert got == [r for r in expected if r not in missing]


# The default data config's loader: 2 persistent workers, whose augmentation streams must
# not depend on how long a worker lived or which worker drew a sample.
WORKERS = ("data.num_workers=2",)


def test_killed_run_resumes_to_the_same_results(tmp_path: Path, data_dir: Path) -> None:
    overrides = ("trainer.epochs=4", *WORKERS)
    reference = run_train(tmp_path / "uninterrupted", data_dir, *overrides)
    assert reference.returncode == 0, reference.stderr[-3000:]

    run_dir = tmp_path / "interrupted"
    # Kill it with a real SIGKILL once task 2 (index 1) has saved its first epoch.
    marker = run_dir / "checkpoints" / "task_1" / "last.ckpt"
    kill_when_exists(run_dir, data_dir, marker, *overrides)
    state = json.loads((run_dir / "state.json").read_text())
    assert state["tasks_done"] == [0], "the kill must land in the middle of task 2"
    # ... after an epoch of it and before its last: the resume continues the task mid-way
    killed_at = torch.load(marker, weights_only=True)
    assert 0 <= killed_at["epoch"] < 3

    resumed = run_train(run_dir, data_dir, *overrides)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout and "tasks 1 already done" in resumed.stdout
    assert_same_run(tmp_path / "uninterrupted", run_dir, 2)
    assert_same_training_log(tmp_path / "uninterrupted", run_dir, 1, killed_at["global_step"])
    assert json.loads((run_dir / "state.json").read_text())["attempts"] == 2


@pytest.mark.slow
def test_killed_mid_epoch_on_the_default_loader_resumes_bit_identically(
    tmp_path: Path, data_dir: Path
) -> None:
    """data=synthetic as a user gets it (batch 32, 192 px, 2 persistent workers, the default
    augmentation) on a smaller generated set; killed between two epoch ends of task 2."""
    overrides = (
        "data=synthetic", "+data.generate.num_trainval=200", "+data.generate.num_test=40",
        "model=nanodet_tiny", "scenario=custom", "scenario.splits=10+10",
        "trainer.epochs=2", "trainer.incremental_epochs=3",
        # a checkpoint after every step but the last of an epoch (0.06 s apart at least)
        "checkpoint.every_n_minutes=0.001",
    )  # fmt: skip
    reference = run_train(tmp_path / "uninterrupted", data_dir, *overrides)
    assert reference.returncode == 0, reference.stderr[-3000:]
    batches = int(read_rows(tmp_path / "uninterrupted" / "results.csv")[1]["steps"]) // 3
    assert batches >= 3, "task 2 needs a few batches per epoch to be killed inside one"

    run_dir = tmp_path / "interrupted"
    checkpoint = run_dir / "checkpoints" / "task_1" / "last.ckpt"

    def inside_second_epoch() -> bool:
        position = loader_position(checkpoint)
        return position is not None and position["epoch"] == 1 and position["batches_done"] > 0

    kill_when(run_dir, data_dir, inside_second_epoch, *overrides)
    position = loader_position(checkpoint)
    assert position["epoch"] == 1 and 0 < position["batches_done"] < batches, position
    killed_at_step = torch.load(checkpoint, weights_only=True)["global_step"]
    resumed = run_train(run_dir, data_dir, *overrides)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"epoch 2, after batch {position['batches_done']}" in resumed.stdout
    assert_same_run(tmp_path / "uninterrupted", run_dir, 1)
    assert_same_training_log(tmp_path / "uninterrupted", run_dir, 1, killed_at_step)


def test_sigterm_records_an_interrupted_resumable_run(tmp_path: Path, data_dir: Path) -> None:
    """A stop signal is not a failure: state.json says interrupted, the report agrees, and
    rerunning resumes. The run has 2 data workers, which get the signal too."""
    import signal

    overrides = ("trainer.epochs=4", *WORKERS)
    run_dir = tmp_path / "run"
    marker = run_dir / "checkpoints" / "task_0" / "last.ckpt"
    process = subprocess.Popen(
        train_command(run_dir, *overrides), cwd=ROOT, env=clod_env(data_dir),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGTERM)  # the whole group, as scancel and Ctrl-C do
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "interrupted by SIGTERM: rerun the same command to resume" in stderr
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "interrupted" and state["signal"] == "SIGTERM"
    assert "error" not in state

    from clod.reporting.collect import read_run

    run = read_run(run_dir, tmp_path)
    assert run.status == "interrupted" and "resumable" in run.error

    resumed = run_train(run_dir, data_dir, *overrides)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "done" and "signal" not in state


def test_wandb_offline_run_holds_config_task_metrics_and_summary(
    tmp_path: Path, data_dir: Path
) -> None:
    run_dir = tmp_path / "run"
    result = run_train(run_dir, data_dir, "logger=wandb", "tags=[smoke,test]")
    assert result.returncode == 0, result.stderr[-3000:]
    (wandb_run,) = (run_dir / "wandb").glob("offline-run-*")

    info = json.loads(wandb_inspect(wandb_run, "--summary"))
    assert info["config"]["strategy"]["name"] == "naive"
    assert info["config"]["scenario"]["name"] == "2p1"
    assert sorted(info["tags"]) == ["smoke", "test"]
    summary = info["summary"]
    expected = json.loads((run_dir / "summary.json").read_text())
    assert summary["final/map50"] == pytest.approx(expected["final"]["map50"])
    assert summary["final/avg_inc_map"] == pytest.approx(expected["avg_inc"]["map"])
    assert summary["mem/params_held"] == expected["memory"]["params_held"]

    records = [json.loads(line) for line in wandb_inspect(wandb_run).splitlines() if line.strip()]
    task_points = [
        r["history"]["item"]
        for r in records
        if r.get("type") == "history" and "task/map50" in r["history"]["item"]
    ]
    rows = read_rows(run_dir / "results.csv")
    assert [p["task/idx"] for p in task_points] == [0, 1, 2]
    assert [p["task/map50"] for p in task_points] == pytest.approx(
        [float(r["map50"]) for r in rows]
    )


def test_wandb_runs_of_a_sweep_share_its_group_and_name_their_strategy(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep_dir = tmp_path / "lwf_vs_naive"
    result = run_sweep(
        sweep_dir, data_dir, "logger=wandb", "strategy=naive,lwf", "trainer.epochs=1"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = {job: wandb_run_record(sweep_dir / job) for job in ("0", "1")}
    assert {job: (run["run_group"], run["job_type"]) for job, run in seen.items()} == {
        "0": ("lwf_vs_naive", "naive"),
        "1": ("lwf_vs_naive", "lwf"),
    }
    # a single run belongs to no group
    single = tmp_path / "single"
    assert run_train(single, data_dir, "logger=wandb", "trainer.epochs=1").returncode == 0
    assert not wandb_run_record(single).get("run_group")


def test_a_failing_sweep_job_is_recorded_and_the_others_still_run(
    tmp_path: Path, data_dir: Path
) -> None:
    """A user error inside one job of a multirun must not end the sweep (an exit would)."""
    sweep_dir = tmp_path / "sweep"
    result = run_sweep(
        sweep_dir, data_dir, "strategy=lwf", "strategy.frozen_bn=bogus,eval", "trainer.epochs=1"
    )
    assert result.returncode != 0  # the sweep reports its failure ...
    assert "error: strategy.frozen_bn must be eval or train, got 'bogus'" in result.stderr
    failed = json.loads((sweep_dir / "0" / "state.json").read_text())
    assert failed["status"] == "failed" and "frozen_bn must be eval or train" in failed["error"]
    done = json.loads((sweep_dir / "1" / "state.json").read_text())
    assert done["status"] == "done"  # ... after running the job that follows the failed one

    # the same error in a single run: one line and exit 2 (the constructor's ConfigError
    # arrives wrapped in Hydra's InstantiationException)
    single = run_train(tmp_path / "single", data_dir, "strategy=lwf", "strategy.frozen_bn=bogus")
    assert single.returncode == 2
    assert single.stderr.strip().splitlines()[-1] == (
        "error: strategy.frozen_bn must be eval or train, got 'bogus'"
    )
