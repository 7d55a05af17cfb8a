"""Ω, AbsGap and RelGap against a joint run (docs/protocol.md §5): by hand on joint-run
files written here, then end to end: a smoke joint run as ``eval.upper_bound`` of a smoke
continual run, and the report pairing a sweep's runs with its joint run by itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clod.errors import ConfigError
from clod.metrics.upper_bound import gap_metrics, read_upper_bound
from clod.reporting.build import build_report, report_markdown
from clod.reporting.collect import collect_runs
from clod.reporting.plots import plot_map_per_task
from clod.utils.io import read_json
from tests.engine.conftest import run_train

NAMES = ["a", "b", "c", "d"]


def write_joint(run_dir: Path, ap: list[float], ap50: list[float], strategy: str = "joint") -> Path:
    """The two files of a finished joint run that an upper bound reads."""
    (run_dir / "results").mkdir(parents=True)
    per_class = {"ap": ap, "ap50": ap50, "ap75": ap, "ap50_voc07": ap50, "ap50_voc": ap50}
    record = {"row": {"task": 0}, "result": per_class, "class_names": NAMES}
    (run_dir / "results" / "task_0.json").write_text(json.dumps(record))
    summary = {"status": "done", "strategy": strategy, "num_tasks": 1, "class_names": NAMES}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def continual_summary(map_all: list[float], groups: list[list[int]]) -> dict:
    block = {"map_all": map_all, "task_classes": groups}
    return {"class_names": NAMES, "continual": {"map": block, "map50": block}}


def test_two_tasks_reduce_to_ilyolox_s_formula(tmp_path: Path) -> None:
    bound = read_upper_bound(write_joint(tmp_path / "joint", [0.6, 0.8, 0.4, 0.2], [0.9] * 4))
    gaps = gap_metrics(continual_summary([0.5, 0.3], [[0, 1], [2, 3]]), bound)["map"]
    # x_UB on every class = (0.6 + 0.8 + 0.4 + 0.2) / 4 = 0.5; the base step counts as 1
    assert gaps["upper_bound"] == pytest.approx(0.5)
    assert gaps["omega"] == pytest.approx((1 + 0.3 / 0.5) / 2)
    assert gaps["abs_gap"] == pytest.approx(0.2) and gaps["rel_gap"] == pytest.approx(0.4)
    # the protocol's check value, through the same rule: (1 + 31.10/33.61) / 2 = 0.963
    paper = write_joint(tmp_path / "paper", [0.3361] * 4, [0.5] * 4)
    omega = gap_metrics(continual_summary([0.4, 0.3110], [[0, 1], [2, 3]]), read_upper_bound(paper))
    assert round(omega["map"]["omega"], 3) == 0.963


def test_each_step_is_bounded_on_its_own_seen_classes(tmp_path: Path) -> None:
    """Three tasks: x_UB,1 is the joint model on a, b, c (0.6), not on every class (0.5),
    which a single all-class bound would use: Ω = (1 + 0.45/0.6 + 0.25/0.5) / 3."""
    bound = read_upper_bound(write_joint(tmp_path / "joint", [0.6, 0.8, 0.4, 0.2], [0.9] * 4))
    gaps = gap_metrics(continual_summary([0.7, 0.45, 0.25], [[0, 1], [2], [3]]), bound)["map"]
    assert gaps["upper_bound_per_step"] == pytest.approx([0.7, 0.6, 0.5])
    assert gaps["omega"] == pytest.approx((1 + 0.45 / 0.6 + 0.25 / 0.5) / 3)
    assert gaps["omega"] != pytest.approx((1 + 0.45 / 0.5 + 0.25 / 0.5) / 3)
    assert gaps["omega_per_step"] == pytest.approx([1.0, (1 + 0.75) / 2, gaps["omega"]])


def test_what_is_not_a_joint_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"summary\.json is missing"):
        read_upper_bound(tmp_path)
    naive = write_joint(tmp_path / "naive", [0.5] * 4, [0.5] * 4, strategy="naive")
    with pytest.raises(ConfigError, match="not a finished joint run"):
        read_upper_bound(naive)
    bound = read_upper_bound(write_joint(tmp_path / "joint", [0.5] * 4, [0.5] * 4))
    other = {**continual_summary([0.5, 0.3], [[0, 1], [2, 3]]), "class_names": NAMES[::-1]}
    with pytest.raises(ConfigError, match="other classes or in another order"):
        gap_metrics(other, bound)


# 3+1: two steps, so that the cumulative joint (a model per step) stays short
STEPS = ("scenario=custom", "scenario.splits=3+1")


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep of real smoke runs: the all-class joint, the cumulative joint and lwf trained
    with ``eval.upper_bound`` naming the all-class joint. The joint models train 25 epochs,
    enough to detect: their AP is the denominator."""
    tmp = tmp_path_factory.mktemp("bounded")
    data, sweep = tmp / "data", tmp / "sweep"
    runs = {
        "joint": ("strategy=joint", "strategy.epochs=25"),
        "cumulative": ("strategy=joint", "strategy.cumulative=true", "strategy.epochs=25"),
        "lwf": (
            "strategy=lwf", f"eval.upper_bound={sweep / 'joint'}", "trainer.epochs=12",
            "trainer.incremental_epochs=2",
        ),
    }  # fmt: skip
    for name, overrides in runs.items():
        result = run_train(sweep / name, data, *STEPS, *overrides)
        assert result.returncode == 0, result.stderr[-3000:]
        (sweep / name / "stdout.txt").write_text(result.stdout)
    return sweep


@pytest.mark.slow
def test_a_run_against_its_joint_run(bounded: Path) -> None:
    summary = read_json(bounded / "lwf" / "summary.json")
    expected = gap_metrics(summary, read_upper_bound(bounded / "joint"))
    assert summary["upper_bound"] == expected  # the same rule on the same files
    joint_map = read_json(bounded / "joint" / "summary.json")["final"]["map"]
    assert summary["upper_bound"]["map"]["upper_bound"] == pytest.approx(joint_map)
    assert f"Ω {expected['map']['omega']:.3f}" in (bounded / "lwf" / "stdout.txt").read_text()


@pytest.mark.slow
def test_the_cumulative_joint_bounds_each_step_of_its_own_scenario(bounded: Path) -> None:
    """``strategy=joint strategy.cumulative=true``: a task per step, each on every image and
    box of the classes seen so far; Ω of a run of the same steps divides by its values."""
    from omegaconf import OmegaConf

    from clod.data.build import build_experiment_tasks
    from tests.test_config import compose_train

    bound = read_json(bounded / "cumulative" / "summary.json")
    assert bound["num_tasks"] == 2 and [row["epochs"] for row in bound["rows"]] == [25, 25]
    cfg = compose_train(["experiment=smoke", *STEPS, f"paths.data_dir={bounded.parent / 'data'}"])
    _, tasks = build_experiment_tasks(OmegaConf.to_container(cfg, resolve=True))
    seen_images = [len({r.image_id for t in tasks[: k + 1] for r in t.train}) for k in range(2)]
    assert [row["train_images"] for row in bound["rows"]] == seen_images
    lwf = read_json(bounded / "lwf" / "summary.json")
    gaps = gap_metrics(lwf, read_upper_bound(bounded / "cumulative"))
    assert gaps["map50"]["upper_bound_per_step"] == [row["map50"] for row in bound["rows"]]
    lwf["continual"]["map"]["task_classes"] = [[0, 1], [2, 3]]
    with pytest.raises(ConfigError, match="bounds only runs of its own scenario"):
        gap_metrics(lwf, read_upper_bound(bounded / "cumulative"))


@pytest.mark.slow
def test_the_report_pairs_runs_with_the_sweep_s_joint_run(bounded: Path) -> None:
    """A run without ``eval.upper_bound`` gets the cumulative joint of its steps; one with
    it keeps the bound it was given."""
    plain = bounded.parent / "plain"
    shutil.copytree(bounded / "joint", plain / "joint")
    shutil.copytree(bounded / "lwf", plain / "lwf")
    summary = read_json(plain / "lwf" / "summary.json")
    del summary["upper_bound"]
    (plain / "lwf" / "summary.json").write_text(json.dumps(summary))
    rows = {row["run"]: row for row in build_report(plain).rows}
    expected = read_json(bounded / "lwf" / "summary.json")["upper_bound"]
    assert rows["lwf"]["upper_bound"] == "joint" and rows["joint"]["omega_map"] is None
    assert rows["lwf"]["omega_map"] == pytest.approx(expected["map"]["omega"])
    assert rows["lwf"]["rel_gap_map"] == pytest.approx(expected["map"]["rel_gap"])
    shutil.copytree(bounded / "cumulative", plain / "cumulative")
    report = build_report(plain)
    rows = {row["run"]: row for row in report.rows}
    cumulative = gap_metrics(summary, read_upper_bound(plain / "cumulative"))
    assert rows["lwf"]["upper_bound"] == "cumulative"
    assert rows["lwf"]["omega_map"] == pytest.approx(cumulative["map"]["omega"])
    markdown = report_markdown(report)
    assert "| Ω mAP | RelGap mAP |" in markdown
    lwf, bound = rows["lwf"], rows["cumulative"]
    assert (
        f"| lwf | {lwf['map']:.3f} ({lwf['omega_map']:.3f}) | {lwf['rel_gap_map']:.3f} |"
        in markdown
    )
    assert f"| joint (upper bound) | {bound['map']:.3f} | - |" in markdown
    # the per-task figure names the two upper bounds apart
    drawing = plot_map_per_task(collect_runs(plain))
    assert drawing is not None
    labels = {series.label: series.y for series in drawing.series}
    per_step = [row["map50"] for row in read_json(plain / "cumulative" / "summary.json")["rows"]]
    assert labels["joint per step (upper bound)"] == pytest.approx(per_step)
    assert len(labels["joint (upper bound)"]) == 1


def test_a_bad_upper_bound_stops_before_training(tmp_path: Path) -> None:
    result = run_train(tmp_path / "run", tmp_path / "data", f"eval.upper_bound={tmp_path}")
    assert result.returncode == 2
    assert f"eval.upper_bound={tmp_path}: summary.json is missing" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
