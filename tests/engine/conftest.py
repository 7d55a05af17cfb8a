"""Run ``python -m clod.train`` as a user does, in a subprocess, on the tiny benchmark."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[2]


def clod_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "SLURM_"))}
    env.update(CLOD_DATA_DIR=str(data_dir), WANDB_MODE="offline", WANDB_SILENT="true", **extra)
    return env


def train_command(run_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "clod.train",
        "experiment=smoke",
        f"hydra.run.dir={run_dir}",
        # Runs of one test share a base-model cache; never the repository's outputs/.
        f"base_cache.dir={run_dir.parent / 'base_cache'}",
        "trainer.enable_progress_bar=false",
        *overrides,
    ]


def run_train(
    run_dir: Path, data_dir: Path, *overrides: str, timeout: float = 600
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        train_command(run_dir, *overrides),
        cwd=ROOT,
        env=clod_env(data_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result


def kill_when(
    run_dir: Path, data_dir: Path, condition: Callable[[], bool], *overrides: str
) -> None:
    """Start a run and SIGKILL it (a real signal) as soon as ``condition()`` holds."""
    process = subprocess.Popen(
        train_command(run_dir, *overrides),
        cwd=ROOT,
        env=clod_env(data_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not condition() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def kill_when_exists(run_dir: Path, data_dir: Path, marker: Path, *overrides: str) -> None:
    """Start a run and SIGKILL it as soon as ``marker`` exists."""
    kill_when(run_dir, data_dir, marker.exists, *overrides)


def loader_position(checkpoint: Path) -> dict | None:
    """The loader position a last.ckpt records (None while there is none)."""
    if not checkpoint.exists():
        return None
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["loader_position"]


def run_sweep(
    sweep_dir: Path, data_dir: Path, *overrides: str, timeout: float = 600
) -> subprocess.CompletedProcess:
    """A multirun (``-m``) of the tiny experiment into ``sweep_dir``."""
    command = [
        sys.executable, "-m", "clod.train", "-m", "experiment=smoke",
        f"hydra.sweep.dir={sweep_dir}", f"base_cache.dir={sweep_dir.parent / 'base_cache'}",
        "trainer.enable_progress_bar=false", *overrides,
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=ROOT, env=clod_env(data_dir), capture_output=True, text=True, timeout=timeout
    )


def wandb_inspect(run_path: Path, *flags: str) -> str:
    """``wandb leet inspect --json``: an offline run read back by W&B's own reader."""
    result = subprocess.run(
        ["wandb", "leet", "inspect", *flags, "--json", str(run_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def wandb_run_record(run_dir: Path) -> dict:
    """The run record (name, group, job type, ...) of the one offline W&B run of a run dir."""
    (wandb_run,) = (run_dir / "wandb").glob("offline-run-*")
    records = [json.loads(line) for line in wandb_inspect(wandb_run).splitlines() if line]
    (run,) = [r["run"] for r in records if r.get("type") == "run"]
    return run


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of generated datasets for the whole session."""
    return tmp_path_factory.mktemp("data")
