"""A real trained run and its real export, shared by the deployment tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.conftest import ROOT, clod_env, run_train

pytest.importorskip("onnxruntime")


def clod_command(data_dir: Path, module: str, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *arguments],
        cwd=ROOT, env=clod_env(data_dir), capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The smoke experiment with a task 0 that detects (mAP50 ≈ 0.3): 25 epochs, then 1."""
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    result = run_train(run_dir, data_dir, "trainer.epochs=25", "trainer.incremental_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="session")
def exported(trained_run: Path, data_dir: Path) -> tuple[Path, dict]:
    """``python -m clod.export`` of task 0 in both formats, with and without the graph's
    post-processing, with the speed rows."""
    out = trained_run.parent / "export"
    result = clod_command(
        data_dir, "clod.export", f"run={trained_run}", "task=0", f"out={out}",
        "batches=1,4", "repeats=3", "calibration_images=16", "label=smoke", "postprocess=graph",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out, json.loads(result.stdout.strip().splitlines()[-1])
