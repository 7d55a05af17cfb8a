"""Run ``python -m clod.train`` as a user does, in a subprocess, on the tiny benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of generated datasets for the whole session."""
    return tmp_path_factory.mktemp("data")
