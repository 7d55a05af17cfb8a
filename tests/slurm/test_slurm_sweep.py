"""Hydra multiruns of ``python -m clod.train`` through submitit on a real SLURM cluster.

Nothing is mocked: the jobs go through sbatch to the single-node cluster of conftest.py,
submitit pickles and runs them, sacct reports their states, and SLURM's own time limit
interrupts one of them, which submitit requeues and clod resumes.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.slurm.conftest import ROOT, SlurmCluster

pytestmark = pytest.mark.slurm

NUM_TASKS = 3  # experiment=smoke: scenario 2p1 on 4 classes
# Columns that depend on the machine's speed and load, not on what was trained.
UNSTABLE_COLUMNS = {"peak_rss_mb", "train_time_s", "eval_time_s", "base_cache"}


def clod_train(*overrides: str, multirun: bool = False) -> list[str]:
    return [
        sys.executable,
        "-m",
        "clod.train",
        *(["--multirun"] if multirun else []),  # argparse: flags before the overrides
        "experiment=smoke",
        "trainer.enable_progress_bar=false",
        *overrides,
    ]


def slurm_sweep(sweep_dir: Path | str, *overrides: str) -> list[str]:
    """A multirun on the test cluster; each job gets one CPU, so two run at once on the node."""
    return clod_train(
        "hardware=slurm_cpu",
        f"hydra.sweep.dir={sweep_dir}",
        # 1 CPU per job (hardware.threads follows it): within the node's 2 CPUs, and two
        # jobs run side by side. No memory request: the node has no memory to spare for one.
        "hydra.launcher.cpus_per_task=1",
        *overrides,
        multirun=True,
    )


def run(
    command: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The Hydra job directories of a sweep (each has .hydra/), in job-number order."""
    found = [p.parent.parent for p in sweep_dir.glob("*/.hydra/config.yaml")]
    return sorted(found, key=lambda p: int(p.name) if p.name.isdigit() else p.name)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def hydra_job_id(job_dir: Path) -> str:
    """The id Hydra recorded for the job: the launcher sets it to the SLURM job id."""
    return str(
        yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"]
    )


def check_finished(job_dir: Path) -> list[dict[str, str]]:
    """A finished run: state done, a summary, one results row per task (none twice)."""
    state = read_json(job_dir / "state.json")
    assert state["status"] == "done", (job_dir, state.get("error"))
    assert state["tasks_done"] == list(range(NUM_TASKS))
    summary = read_json(job_dir / "summary.json")
    assert summary["status"] == "done" and summary["tasks_done"] == NUM_TASKS
    rows = read_rows(job_dir / "results.csv")
    assert [row["task"] for row in rows] == [str(t) for t in range(NUM_TASKS)], job_dir
    for task in range(NUM_TASKS):
        assert (job_dir / "results" / f"task_{task}.json").is_file()
    return rows


def check_ran_under_slurm(cluster: SlurmCluster, sweep_dir: Path, job_dir: Path) -> str:
    """The job has a SLURM id, submitit's folder for it, and sacct's final state; returns it."""
    job_id = hydra_job_id(job_dir)
    assert job_id.split("_")[0].isdigit(), f"{job_dir}: hydra.job.id {job_id} is no SLURM id"
    # submitit_folder is ${hydra.sweep.dir}/.submitit/%j; an array element's %j is <array>_<i>
    logs = sweep_dir / ".submitit" / job_id
    assert (logs / f"{job_id}_0_log.out").is_file(), sorted(logs.parent.iterdir())
    assert (logs / f"{job_id}_0_result.pkl").is_file(), "submitit got no result back"
    return cluster.final_state(job_id)


def comparable(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in UNSTABLE_COLUMNS} for row in rows]


def test_strategy_sweep_runs_every_job_to_the_end(
    slurm_cluster: SlurmCluster, data_dir: Path, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run(
        slurm_sweep(
            sweep_dir,
            "strategy=lwf,sid",
            "strategy.alpha=1,2",
            # The four jobs share one task-0 model (same task-0 training), as a real sweep does.
            f"base_cache.dir={tmp_path / 'base_cache'}",
        ),
        env=slurm_cluster.env(CLOD_DATA_DIR=str(data_dir)),
        timeout=480,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (sweep_dir / "multirun.yaml").is_file()

    dirs = job_dirs(sweep_dir)
    assert [d.name for d in dirs] == ["0", "1", "2", "3"], "one directory per job, no collision"
    seen = set()
    for job_dir in dirs:
        assert check_ran_under_slurm(slurm_cluster, sweep_dir, job_dir) == "COMPLETED"
        check_finished(job_dir)
        config = yaml.safe_load((job_dir / "config.yaml").read_text())
        assert config["paths"]["output_dir"] == str(job_dir)
        assert config["hardware"]["threads"] == 1  # follows hydra.launcher.cpus_per_task
        seen.add((config["strategy"]["name"], float(config["strategy"]["alpha"])))
        assert read_json(job_dir / "summary.json")["strategy"] == config["strategy"]["name"]
    assert seen == {("lwf", 1.0), ("lwf", 2.0), ("sid", 1.0), ("sid", 2.0)}
    # the four jobs form one job array, as hydra-submitit-launcher submits a sweep batch
    assert len({hydra_job_id(d).split("_")[0] for d in dirs}) == 1


TIME_LIMITED = (
    "strategy=lwf",  # a teacher and strategy state to restore on resume, not only weights
    "trainer.epochs=40",  # ~20 s of training on one thread: a resumed attempt finishes
    "base_cache.enabled=false",  # train task 0 for real in both runs
)
SIGUSR2_BIT = 1 << (signal.SIGUSR2 - 1)  # in /proc/PID/status' pending-signal masks


def job_processes(under: Path) -> list[int]:
    """Pids of the Python processes submitit runs for the jobs whose folder is under `under`.

    srun starts ``python -u -m submitit.core._submit <folder>``; srun's own command line
    holds the same words, so only processes whose program is this Python count.
    """
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:  # exited meanwhile
            continue
        if (
            argv[:4] == [sys.executable, "-u", "-m", "submitit.core._submit"]
            and len(argv) == 5
            and argv[4].startswith(str(under))
        ):
            pids.append(int(proc.name))
    return pids


def usr2_pending(pid: int) -> bool:
    """Whether SIGUSR2 waits to be delivered to a (stopped) process; False once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    masks = [
        line.split()[1] for line in status.splitlines() if line.startswith(("SigPnd", "ShdPnd"))
    ]
    return any(int(mask, 16) & SIGUSR2_BIT for mask in masks)


def hold_until_time_limit_signal(
    sweep: subprocess.Popen[str], root: Path, timeout: float
) -> dict[str, Any] | None:
    """Freeze the job's first attempt at the start of task 2 until SLURM's signal reaches it.

    SLURM checks time limits every 30 s, so the warning signal (USR2, signal_delay_s before
    the 1-minute limit) reaches a job 25-55 s after it starts. Rather than choosing enough
    epochs to outlast that on every machine, the job is stopped (SIGSTOP) as soon as task 1 is
    recorded as done, while task 2 starts. slurmstepd may continue it (SIGCONT) as it delivers
    the signal (this function does too, once the signal is pending or the process is gone):
    the job handles SLURM's signal at a known point, mid-run, whatever the machine's speed.
    Returns state.json as it was while the job was held, or None where the signal came
    before task 1 was done (a slow machine): that attempt was cut short without help.
    """
    deadline = time.monotonic() + timeout
    held: int | None = None
    state: dict[str, Any] | None = None
    try:
        while sweep.poll() is None and time.monotonic() < deadline:
            if held is None:
                found = list(root.glob("sweep_*/0/state.json"))
                state = read_json(found[0]) if found else None
                if state is None or not state["tasks_done"]:
                    pass
                elif state["attempts"] > 1:
                    return None
                elif len(pids := job_processes(root)) == 1:
                    os.kill(pids[0], signal.SIGSTOP)
                    held = pids[0]
                    state = read_json(found[0])  # what the stopped job had written
            elif usr2_pending(held) or not Path(f"/proc/{held}").exists():
                return state  # continued below
            time.sleep(0.05)
    finally:
        if held is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(held, signal.SIGCONT)
    raise AssertionError("the job never finished task 1 or never received SLURM's signal")


@pytest.mark.slow
def test_job_ended_by_the_time_limit_is_requeued_and_resumes_to_the_same_results(
    slurm_cluster: SlurmCluster, data_dir: Path, tmp_path: Path
) -> None:
    # The uninterrupted reference runs locally, without SLURM, on the other CPU meanwhile.
    # One thread in both runs: the float results must not depend on the thread count.
    local_env = slurm_cluster.env(CLOD_DATA_DIR=str(data_dir))
    local_env.pop("SLURM_CONF")
    reference_dir = tmp_path / "uninterrupted"
    reference = subprocess.Popen(
        clod_train(*TIME_LIMITED, "hardware.threads=1", f"hydra.run.dir={reference_dir}"),
        cwd=ROOT,
        env=local_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sweep = subprocess.Popen(
        slurm_sweep(
            # ${now:} in the sweep dir, as in the default one: the requeued attempt must find
            # the same directory (Hydra resolves it once; the pickled config keeps the value).
            f"{tmp_path}/sweep_${{now:%H-%M-%S-%f}}",
            *TIME_LIMITED,
            # SLURM's shortest limit; the warning signal comes 25-55 s into each attempt, and
            # an attempt that has not finished by then is requeued again (hence several).
            "hydra.launcher.timeout_min=1",
            "hydra.launcher.signal_delay_s=5",
            "hydra.launcher.max_num_timeout=4",
        ),
        cwd=ROOT,
        env=slurm_cluster.env(CLOD_DATA_DIR=str(data_dir)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        held_state = hold_until_time_limit_signal(sweep, tmp_path, timeout=300)
        _, sweep_err = sweep.communicate(timeout=480)
        reference_out, _ = reference.communicate(timeout=300)
    finally:
        for process in (sweep, reference):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert reference.returncode == 0, reference_out[-3000:]
    assert sweep.returncode == 0, sweep_err[-4000:]
    if held_state is not None:  # held (and so interrupted) after task 1, in task 2
        assert held_state["tasks_done"] == [0] and held_state["attempts"] == 1, held_state

    sweeps = list(tmp_path.glob("sweep_*"))
    assert len(sweeps) == 1, f"the requeued attempt made another sweep directory: {sweeps}"
    sweep_dir = sweeps[0]
    (job_dir,) = job_dirs(sweep_dir)
    assert check_ran_under_slurm(slurm_cluster, sweep_dir, job_dir) == "COMPLETED"
    job_id = hydra_job_id(job_dir)
    # SLURM's own record of every run of the job: requeued at least once, then completed.
    runs = slurm_cluster.job_states(job_id, duplicates=True)
    assert runs[-1] == "COMPLETED" and runs[:-1] and set(runs[:-1]) == {"REQUEUED"}, runs
    log_err = (sweep_dir / ".submitit" / job_id / f"{job_id}_0_log.err").read_text()
    assert "Caught signal SIGUSR2" in log_err and "this job is timed-out" in log_err
    assert f"Requeued job {job_id}" in log_err, log_err[-3000:]
    if held_state is not None:  # the next attempt skipped task 1
        log_out = (sweep_dir / ".submitit" / job_id / f"{job_id}_0_log.out").read_text()
        # "tasks 1, 2" where the interrupted attempt got further before SLURM killed it
        assert re.search(f"resuming {re.escape(str(job_dir))}: tasks 1(, 2)? already done", log_out)
    assert "Traceback" not in log_err, log_err[-3000:]

    state = read_json(job_dir / "state.json")
    assert state["attempts"] == len(runs), (state["attempts"], runs)
    rows = check_finished(job_dir)
    expected = check_finished(reference_dir)
    assert comparable(rows) == comparable(expected)
    summary, expected_summary = (read_json(d / "summary.json") for d in (job_dir, reference_dir))
    for key in ("final", "final_old", "final_new", "avg_inc", "forgetting", "continual"):
        assert summary[key] == expected_summary[key], key


def test_a_job_that_fails_at_runtime_is_recorded_as_failed(
    slurm_cluster: SlurmCluster, data_dir: Path, tmp_path: Path
) -> None:
    # A negative learning rate composes (any float does) and passes clod's config checks,
    # but torch's AdamW raises ValueError when Lightning builds the optimiser inside
    # trainer.fit: a genuine error in the middle of the run, after state.json is written
    # and the data, model and strategy are built. Hydra's run_job catches it in the job and
    # returns it to the launching process, which raises it once the sweep has ended.
    sweep_dir = tmp_path / "sweep"
    result = run(
        slurm_sweep(
            sweep_dir,
            "optimizer.optimizer.lr=0.001,-1",
            f"base_cache.dir={tmp_path / 'base_cache'}",
        ),
        env=slurm_cluster.env(CLOD_DATA_DIR=str(data_dir)),
        timeout=300,
    )
    assert result.returncode != 0, "the sweep must report its failed job"
    assert "Invalid learning rate: -1" in result.stderr, result.stderr[-4000:]
    # Whatever Hydra does on a failure, no job of the sweep may still be running.
    slurm_cluster.wait_until_idle()

    good, bad = job_dirs(sweep_dir)
    check_finished(good)
    state = read_json(bad / "state.json")
    assert state["status"] == "failed"
    assert "ValueError: Invalid learning rate: -1" in state["error"]
    assert "Traceback" in state["error"]  # the whole traceback, to debug from the file
    assert state["tasks_done"] == []
    assert not (bad / "summary.json").exists()
    for job_dir in (good, bad):
        # Hydra catches the job's exception inside the job, so SLURM sees it end normally:
        # only state.json (and the launching process) tell a failed run from a finished one.
        assert check_ran_under_slurm(slurm_cluster, sweep_dir, job_dir) == "COMPLETED"
    # The sweep's report lists the failed run with its error, next to the finished one.
    report = run(
        [sys.executable, "-m", "clod.report", str(sweep_dir)],
        env=slurm_cluster.env(),
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    assert re.search(r"\| `1` \| failed \|.*ValueError: Invalid learning rate: -1", report.stdout)
    listed = {row["run"]: row for row in read_rows(sweep_dir / "report" / "runs.csv")}
    assert listed["0"]["status"] == "done" and listed["0"]["error"] == ""
    assert listed["1"]["status"] == "failed"
    assert listed["1"]["error"] == "ValueError: Invalid learning rate: -1"


def test_ddp_job_runs_one_rank_per_slurm_task_and_evaluates_like_one_process(
    slurm_cluster: SlurmCluster, data_dir: Path, tmp_path: Path
) -> None:
    """hardware.devices=2 under SLURM: srun starts two tasks (tasks_per_node follows
    devices), Lightning's SLURMEnvironment makes them ranks 0 and 1 of one gloo group."""
    sweep_dir = tmp_path / "ddp"
    command = slurm_sweep(
        sweep_dir,
        "hardware.devices=2",
        "hardware.strategy=ddp",
        "strategy=joint",  # one task of all four classes
        "strategy.epochs=30",
        "data.batch_size=4",
        f"base_cache.dir={tmp_path / 'base_cache'}",
    )
    result = run(command, slurm_cluster.env(CLOD_DATA_DIR=str(data_dir)), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (job_dir,) = job_dirs(sweep_dir)
    job_id = hydra_job_id(job_dir)
    logs = sweep_dir / ".submitit" / job_id
    for task in (0, 1):  # one submitit task (one rank) per SLURM task
        assert (logs / f"{job_id}_{task}_log.out").is_file(), sorted(logs.iterdir())
    assert slurm_cluster.final_state(job_id) == "COMPLETED"

    (row,) = read_rows(job_dir / "results.csv")  # rank 1 wrote no row of its own
    # 40 training images, 4 per batch and rank, 30 epochs: 5 steps per epoch with two ranks
    # (10 with one process), so the gradients really were averaged over a world of two.
    assert int(row["train_images"]) == 40 and int(row["steps"]) == 30 * 40 // (2 * 4)
    assert float(row["map50"]) > 0.05, "the tiny model should have learnt something"
    evaluation = run(
        [sys.executable, "-m", "clod.evaluate", f"run={job_dir}", "task=0"],
        {**slurm_cluster.env(CLOD_DATA_DIR=str(data_dir))},
        timeout=300,
    )
    assert evaluation.returncode == 0, evaluation.stderr
    printed = json.loads(evaluation.stdout.splitlines()[-1])
    for metric in ("map", "map50", "map50_voc07"):
        assert printed[metric] == pytest.approx(float(row[metric]), abs=1e-9), metric
