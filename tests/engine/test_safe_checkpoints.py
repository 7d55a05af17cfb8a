"""A shared run directory or base model cannot run code: crafted files are refused.

Each crafted file would create ``pwned`` when loaded the unsafe way (a pickle whose
``__reduce__`` calls ``Path.touch``; a model config whose ``_target_`` does the same).
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clod.engine.base_cache import BaseModelCache
from clod.engine.evaluation import evaluate_run_checkpoint
from clod.engine.run import load_task_checkpoint
from clod.errors import ConfigError, DataError
from clod.strategies.base import Strategy
from tests.engine.conftest import ROOT, clod_env, run_train
from tests.strategies.conftest import build_model


class Touch:
    """Unpickling this calls Path(target).touch(): arbitrary code, as an attacker would."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.target),))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    result = run_train(run_dir, data_dir, "trainer.epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def evaluate(run_dir: Path, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clod.evaluate", f"run={run_dir}", "task=0"],
        cwd=ROOT, env=clod_env(data_dir), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_crafted_pickle_would_run_code_if_unpickled(tmp_path: Path) -> None:
    """The attack is real: without weights_only the file is created."""
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    torch.save({"detector": Touch(marker)}, path)
    torch.load(path, weights_only=False)
    assert marker.exists()


def shared_copy(finished_run: Path, tmp_path: Path) -> tuple[Path, Path, dict]:
    """A copy of the run as a colleague would share it: its dir, task_0.pt and its state."""
    run_dir = tmp_path / "shared"
    shutil.copytree(finished_run, run_dir)
    checkpoint = run_dir / "checkpoints" / "task_0.pt"
    return run_dir, checkpoint, torch.load(checkpoint, weights_only=True)


def test_evaluate_refuses_a_crafted_task_checkpoint(
    finished_run: Path, tmp_path: Path, data_dir: Path
) -> None:
    run_dir, checkpoint, state = shared_copy(finished_run, tmp_path)
    marker = tmp_path / "pwned"
    torch.save({**state, "strategy": Touch(marker)}, checkpoint)
    result = evaluate(run_dir, data_dir)
    assert result.returncode == 2
    assert f"error: {checkpoint} is refused" in result.stderr
    assert not marker.exists()


def test_a_model_config_that_builds_anything_else_is_refused(
    finished_run: Path, tmp_path: Path
) -> None:
    run_dir, checkpoint, state = shared_copy(finished_run, tmp_path)
    marker = tmp_path / "pwned"
    model = {**state["model"], "neck": {"_target_": "pathlib.Path.touch", "self": str(marker)}}
    torch.save({**state, "model": model}, checkpoint)  # plain types: weights_only loads it
    with pytest.raises(ConfigError, match=r"model.neck._target_='pathlib.Path.touch' is refused"):
        evaluate_run_checkpoint(run_dir, task=0)
    assert not marker.exists()


def test_resume_refuses_a_crafted_checkpoint(
    finished_run: Path, tmp_path: Path, data_dir: Path
) -> None:
    """A run directory from elsewhere, resumed: its task checkpoint and in-task last.ckpt."""
    run_dir, _, _ = shared_copy(finished_run, tmp_path)
    state_file = run_dir / "state.json"
    state = json.loads(state_file.read_text())
    # as if the run had stopped during task 2
    state_file.write_text(json.dumps({**state, "status": "running", "tasks_done": [0]}))
    (run_dir / "summary.json").unlink()
    marker = tmp_path / "pwned"
    last = run_dir / "checkpoints" / "task_1" / "last.ckpt"
    last.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": Touch(marker)}, last)
    result = run_train(run_dir, data_dir, "trainer.epochs=1")
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"error: {last} is refused" in result.stderr
    assert not marker.exists()
    # the task checkpoint a resume starts from goes through the same loader
    task_0 = run_dir / "checkpoints" / "task_0.pt"
    torch.save({"detector": Touch(marker)}, task_0)
    with pytest.raises(DataError, match=re.escape(f"{task_0} is refused")):
        load_task_checkpoint(task_0, build_model(), Strategy(), [])
    assert not marker.exists()


def test_a_crafted_base_cache_entry_is_refused(tmp_path: Path) -> None:
    """The base-model cache is shared by every run of a sweep (and by its users)."""
    cache = BaseModelCache(tmp_path / "base_cache", {"any": "material"})
    assert cache.publish(build_model().state_dict(), {"steps": 1})
    assert cache.load() is not None
    marker = tmp_path / "pwned"
    torch.save({"backbone.x": Touch(marker)}, cache.path / "detector.pt")
    with pytest.raises(DataError, match=re.escape(f"{cache.path / 'detector.pt'} is refused")):
        cache.load()
    assert not marker.exists()
