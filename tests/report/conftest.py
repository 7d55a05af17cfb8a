"""A real sweep directory for the report's tests, made once per session by clod.train.

Under ``<tmp>/sweep``:

- ``alpha/0..3``: ``-m strategy=lwf,sid strategy.alpha=1,2`` (sid with its default beta 1);
- ``sid_beta/0..1``: ``-m strategy=sid strategy.alpha=1,2 strategy.beta=2``, so sid has a
  full 2 x 2 alpha x beta grid;
- ``failed``: sid with ``strategy.frozen_bn=bogus``, which composes but fails in the run;
- ``running``: a copy of ``alpha/0`` rewound to a run still in its third task.

Task 0 is trained once (the base-model cache) for 12 epochs so that the model detects
something and the runs' metrics differ; later tasks train 2 epochs. About a minute on
2 CPU cores.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.engine.conftest import ROOT, clod_env

SMOKE = (
    "experiment=smoke",
    "trainer.epochs=12",
    "trainer.incremental_epochs=2",
    "trainer.enable_progress_bar=false",
)
TIMEOUT_S = 400


@dataclass(frozen=True)
class Sweep:
    root: Path
    finished: dict[str, tuple[str, float, float | None]]  # run -> strategy, alpha, beta
    failed: str
    running: str

    @property
    def all_runs(self) -> set[str]:
        return {*self.finished, self.failed, self.running}


def train(tmp: Path, *overrides: str, multirun: bool = True) -> list[str]:
    return [
        sys.executable,
        "-m",
        "clod.train",
        *(["-m"] if multirun else []),
        *SMOKE,
        f"base_cache.dir={tmp / 'base_cache'}",
        f"paths.data_dir={tmp / 'data'}",
        *overrides,
    ]


def check(result: subprocess.CompletedProcess, what: str) -> None:
    assert result.returncode == 0, (
        f"{what} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    )


def rewind_to_running(run_dir: Path, tasks_done: int) -> None:
    """Make a finished run look like one killed (or still busy) after ``tasks_done`` tasks."""
    state = json.loads((run_dir / "state.json").read_text())
    state.update(status="running", tasks_done=list(range(tasks_done)))
    state.pop("finished_at", None)
    (run_dir / "state.json").write_text(json.dumps(state, indent=2))
    (run_dir / "summary.json").unlink()
    for later in run_dir.glob("results/task_*.json"):
        if int(later.stem.split("_")[1]) >= tasks_done:
            later.unlink()
    lines = (run_dir / "results.csv").read_text().splitlines()
    (run_dir / "results.csv").write_text("\n".join(lines[: 1 + tasks_done]) + "\n")


@pytest.fixture(scope="session")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    tmp = tmp_path_factory.mktemp("report")
    root = tmp / "sweep"
    env = clod_env(tmp / "data")

    def run(command: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
        )

    # The failing run stops before training: let it start while the first sweep trains.
    failing = subprocess.Popen(
        train(
            tmp,
            "strategy=sid",
            "strategy.frozen_bn=bogus",
            f"hydra.run.dir={root / 'failed'}",
            multirun=False,
        ),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    check(
        run(
            train(
                tmp, "strategy=lwf,sid", "strategy.alpha=1,2", f"hydra.sweep.dir={root / 'alpha'}"
            )
        ),
        "the lwf/sid alpha sweep",
    )
    check(
        run(
            train(
                tmp,
                "strategy=sid",
                "strategy.alpha=1,2",
                "strategy.beta=2",
                f"hydra.sweep.dir={root / 'sid_beta'}",
            )
        ),
        "the sid beta sweep",
    )
    _, stderr = failing.communicate(timeout=TIMEOUT_S)
    assert failing.returncode != 0, "the run with strategy.frozen_bn=bogus should have failed"
    assert "frozen_bn" in stderr

    shutil.copytree(root / "alpha" / "0", root / "running")
    rewind_to_running(root / "running", tasks_done=2)
    return Sweep(
        root=root,
        finished={
            "alpha/0": ("lwf", 1, None),
            "alpha/1": ("lwf", 2, None),
            "alpha/2": ("sid", 1, 1.0),
            "alpha/3": ("sid", 2, 1.0),
            "sid_beta/0": ("sid", 1, 2),
            "sid_beta/1": ("sid", 2, 2),
        },
        failed="failed",
        running="running",
    )


def read_summary(sweep: Sweep, run: str) -> dict:
    return json.loads((sweep.root / run / "summary.json").read_text())


SEED_STRATEGIES = ("naive", "lwf")


@pytest.fixture(scope="session")
def seed_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``-m strategy=naive,lwf seed=1,2``, shared by the seed and class-heatmap tests."""
    tmp = tmp_path_factory.mktemp("seeds")
    # task 0 trains 25 epochs: enough for the model to detect, so that the seeds differ
    command = [
        sys.executable, "-m", "clod.train", "-m", "experiment=smoke", "trainer.epochs=25",
        "trainer.incremental_epochs=2", "trainer.enable_progress_bar=false",
        f"base_cache.dir={tmp / 'base_cache'}", f"paths.data_dir={tmp / 'data'}",
        f"strategy={','.join(SEED_STRATEGIES)}", "seed=1,2", f"hydra.sweep.dir={tmp / 'sweep'}",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=ROOT, env=clod_env(tmp / "data"), capture_output=True, text=True,
        timeout=TIMEOUT_S,
    )  # fmt: skip
    check(result, "the seed sweep")
    return tmp / "sweep"
