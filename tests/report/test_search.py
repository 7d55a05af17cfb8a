"""Optuna search the Hydra way: ``hparams_search=distill_optuna`` on the tiny data.

A real search of 3 trials of latent (alpha and beta sampled log-uniform) whose objective
is what ``python -m clod.train`` returns: the mean of the final old- and new-class mAP50.
The same command rerun with one trial more replays the 3 finished trials from their
summary.json (the seeded sampler proposes the same weights) and trains only the fourth.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
import yaml

from clod.errors import ConfigError
from clod.metrics.objective import objective_value
from clod.reporting.build import build_report, write_report
from clod.utils.io import read_json
from tests.engine.conftest import ROOT, clod_env
from tests.report.conftest import TIMEOUT_S, check, train

pytestmark = pytest.mark.slow


def search_command(tmp: Path, trials: int) -> list[str]:
    # task 0 trains 25 epochs, enough for the weights to change what the model keeps
    return train(
        tmp,
        "hparams_search=distill_optuna",
        "strategy=latent",
        "trainer.epochs=25",
        "plots=false",
        f"hydra.sweeper.n_trials={trials}",
        f"hydra.sweep.dir={tmp / 'search'}",
        multirun=False,  # the preset sets hydra.mode=MULTIRUN
    )


def run(command: list[str], tmp: Path, what: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command, cwd=ROOT, env=clod_env(tmp / "data"), capture_output=True, text=True,
        timeout=TIMEOUT_S,
    )  # fmt: skip
    check(result, what)
    return result


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("optuna")
    run(search_command(tmp, 3), tmp, "the 3-trial search")
    return tmp, run(search_command(tmp, 4), tmp, "the same search rerun with 4 trials")


def by_hand(summary: dict) -> float:
    return (summary["final_old"]["map50"] + summary["final_new"]["map50"]) / 2


def trial_weights(run_dir: Path) -> tuple[float, float]:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    return config["strategy"]["alpha"], config["strategy"]["beta"]


def test_trials_sample_the_weights_and_the_best_is_the_highest_objective(search) -> None:
    tmp, _ = search
    root = tmp / "search"
    runs = sorted((p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    assert [p.name for p in runs] == ["0", "1", "2", "3"]
    weights = [trial_weights(p) for p in runs]
    assert len(set(weights)) == 4 and all(0.1 <= w <= 100 for pair in weights for w in pair)
    summaries = [read_json(p / "summary.json") for p in runs]
    objectives = [by_hand(s) for s in summaries]
    assert len(set(objectives)) > 1, (
        "the weights must change the objective for the test to mean anything"
    )
    # task 0 is trained once: every later trial takes it from the base-model cache
    assert [s["base_cache"]["used"] for s in summaries] == [False, True, True, True]
    results = yaml.safe_load((root / "optimization_results.yaml").read_text())
    best = max(range(4), key=lambda i: objectives[i])
    assert results["best_value"] == pytest.approx(objectives[best], abs=1e-12)
    assert (results["best_params"]["strategy.alpha"], results["best_params"]["strategy.beta"]) == (
        pytest.approx(weights[best][0]),
        pytest.approx(weights[best][1]),
    )


def test_a_rerun_replays_finished_trials_without_training_them(search) -> None:
    tmp, rerun = search
    said = rerun.stdout + rerun.stderr
    for trial in (0, 1, 2):
        assert f"{tmp / 'search' / str(trial)} holds a finished run; nothing to do" in said
    assert f"results in {tmp / 'search' / '3'}" in said
    assert f"results in {tmp / 'search' / '0'}" not in said


def test_the_report_ranks_the_trials(search) -> None:
    tmp, _ = search
    report = build_report(tmp / "search")
    assert report.search is not None and report.search.objective == "old_new_map50"
    assert report.search.params == ["strategy.alpha", "strategy.beta"]
    ranked = report.search.ranked()
    assert len(ranked) == 4
    values = [t.objective for t in ranked]
    assert values == sorted(values, reverse=True)
    for trial in ranked:
        assert trial.objective == pytest.approx(by_hand(trial.run.summary), abs=1e-12)
    names = [d.name for d in report.drawings]
    assert "search" in names and "alpha_beta" not in names
    write_report(report)
    markdown = (tmp / "search" / "report" / "report.md").read_text()
    best = ranked[0]
    assert f"Best: trial {best.number}, alpha = {best.params['strategy.alpha']:.3g}" in markdown
    assert "`optimization_results.yaml` names the same best value." in markdown
    assert (tmp / "search" / "report" / "search.png").stat().st_size > 10_000


def test_a_bad_objective_stops_before_any_work(tmp_path: Path) -> None:
    command = train(
        tmp_path, "objective=map51", f"hydra.run.dir={tmp_path / 'run'}", multirun=False
    )
    result = subprocess.run(
        command, cwd=ROOT, env=clod_env(tmp_path / "data"), capture_output=True, text=True,
        timeout=TIMEOUT_S,
    )  # fmt: skip
    assert result.returncode == 2
    assert "objective='map51' is not an objective; choose one of map, map50" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_objective_values_by_hand() -> None:
    summary = {
        "final": {"map50": 0.6},
        "final_old": {"map50": 0.8},
        "final_new": {"map50": 0.1},
    }
    assert objective_value(summary, "map50") == 0.6
    assert math.isclose(objective_value(summary, "old_new_map50"), 0.45)
    # a run of one task (joint) has no old classes in its last task
    with pytest.raises(ConfigError, match="no old classes"):
        objective_value({**summary, "final_old": {"map50": None}}, "old_new_map50")
