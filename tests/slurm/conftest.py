"""A real single-node SLURM cluster (scripts/slurm/cluster.sh) for the tests in this directory.

The cluster runs for the whole test session: munged, a private MariaDB, slurmdbd, slurmctld
and slurmd, all under one fresh base directory. Without the SLURM packages (or without root,
which the daemons need) the tests are skipped, unless ``CLOD_REQUIRE_SLURM=1`` (set by CI),
which turns that into a failure: CI must never pass by skipping them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.workers import unpinned

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "scripts" / "slurm" / "cluster.sh"
# Not under pytest's tmp_path: its parents are mode 0700 and the database runs as mysql.
BASE_DIR = Path("/tmp/clod-slurm-tests")
# The daemons listen on fixed ports, so one cluster per machine: a second pytest session
# waits here for the first one's cluster to stop instead of tearing it down.
LOCK_FILE = Path("/tmp/clod-slurm-tests.lock")
LOCK_WAIT_S = 900
UNFINISHED_STATES = {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "SUSPENDED"}
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "sbatch", "sacct", "srun")


def missing_tools() -> list[str]:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [tool for tool in DAEMONS if shutil.which(tool, path=search) is None]


def unavailable_reason() -> str | None:
    missing = missing_tools()
    if missing:
        return (
            f"SLURM is not installed ({', '.join(missing)} missing): "
            f"run `bash {SCRIPT.relative_to(ROOT)} install` as root"
        )
    if os.geteuid() != 0:
        return "the test cluster needs root (its daemons run as the munge and mysql users)"
    return None


@dataclass(frozen=True)
class SlurmCluster:
    """The running test cluster: its base directory and the environment that reaches it."""

    base: Path
    slurm_conf: Path

    def env(self, **extra: str) -> dict[str, str]:
        """os.environ without anything that would redirect or reshape jobs, plus SLURM_CONF.

        SLURM_*/SBATCH_* from an enclosing job would leak into sbatch (partition, account, a
        foreign job id); W&B stays offline and quiet.
        """
        prefixes = ("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "WANDB_", "SUBMITIT_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
        env.update(SLURM_CONF=str(self.slurm_conf), WANDB_MODE="disabled", WANDB_SILENT="true")
        env.update(extra)
        return env

    def command(self, *args: str, timeout: float = 60) -> str:
        result = subprocess.run(
            args, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )
        assert result.returncode == 0, f"{' '.join(args)} failed: {result.stderr}"
        return result.stdout

    def queue(self) -> list[str]:
        """Job ids still in the queue (pending, running or completing)."""
        return self.command("squeue", "-h", "-o", "%i").split()

    def wait_until_idle(self, timeout: float = 120) -> None:
        """Block until the queue is empty: a failed job makes Hydra return before the others end."""
        deadline = time.monotonic() + timeout
        while self.queue():
            assert time.monotonic() < deadline, f"jobs still queued: {self.command('squeue')}"
            time.sleep(0.5)

    def job_states(self, job_id: str, duplicates: bool = False) -> list[str]:
        """sacct's states of a job (or of every element of a job array), in record order.

        With ``duplicates`` every run of a requeued job has its own record (REQUEUED, then the
        final state); otherwise only the last run is shown.
        """
        args = ["sacct", "-n", "-X", "-P", "-j", job_id, "--format=JobID,State"]
        if duplicates:
            args.append("-D")
        lines = self.command(*args).splitlines()
        return [line.split("|")[1] for line in lines if line.strip()]

    def final_state(self, job_id: str, timeout: float = 60) -> str:
        """sacct's state of a job once it has ended.

        submitit returns as soon as a job has written its result pickle, a moment before the
        job's process exits and slurmdbd records the end: poll until the state is final.
        """
        deadline = time.monotonic() + timeout
        while True:
            states = self.job_states(job_id)
            assert len(states) == 1, f"job {job_id}: {states}"
            if states[0] not in UNFINISHED_STATES or time.monotonic() > deadline:
                return states[0]
            time.sleep(0.5)


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    with LOCK_FILE.open("w") as handle:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another test session held {LOCK_FILE} for {LOCK_WAIT_S} s")
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        # The daemons serve the whole machine: not the one core a parallel test worker has.
        preexec_fn=unpinned,
    )


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """Start the cluster once per session; stop it at the end, whatever happened."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CLOD_REQUIRE_SLURM") == "1":
            pytest.fail(f"CLOD_REQUIRE_SLURM=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    with machine_lock():
        started = time.monotonic()
        start = run_script("start", str(BASE_DIR), timeout=300)
        if start.returncode != 0:
            pytest.fail(f"the test cluster did not start:\n{start.stderr}", pytrace=False)
        print(f"\nslurm test cluster started in {time.monotonic() - started:.1f} s")
        try:
            yield SlurmCluster(base=BASE_DIR, slurm_conf=BASE_DIR / "etc" / "slurm.conf")
        finally:
            started = time.monotonic()
            stop = run_script("stop", str(BASE_DIR), timeout=300)
            print(f"\nslurm test cluster stopped in {time.monotonic() - started:.1f} s")
            # A failed stop leaves daemons behind on fixed ports: say so loudly.
            assert stop.returncode == 0, f"the test cluster did not stop cleanly:\n{stop.stderr}"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of generated datasets for every job of the session."""
    return tmp_path_factory.mktemp("data")
