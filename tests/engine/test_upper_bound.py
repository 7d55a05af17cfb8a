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


@pytest.mark.slow
def test_a_run_against_its_joint_run_and_the_report_pairing(tmp_path: Path) -> None:
    data, sweep = tmp_path / "data", tmp_path / "sweep"
    # task 0 long enough for the joint model to detect: its AP is the denominator
    joint = run_train(sweep / "joint", data, "strategy=joint", "trainer.epochs=12")
    assert joint.returncode == 0, joint.stderr[-3000:]
    bounded = run_train(
        sweep / "lwf", data, "strategy=lwf", f"eval.upper_bound={sweep / 'joint'}",
        "trainer.epochs=12", "trainer.incremental_epochs=2",
    )  # fmt: skip
    assert bounded.returncode == 0, bounded.stderr[-3000:]
    summary = read_json(sweep / "lwf" / "summary.json")
    expected = gap_metrics(summary, read_upper_bound(sweep / "joint"))
    assert summary["upper_bound"] == expected  # the same rule on the same files
    joint_map = read_json(sweep / "joint" / "summary.json")["final"]["map"]
    assert summary["upper_bound"]["map"]["upper_bound"] == pytest.approx(joint_map)
    assert f"Ω {expected['map']['omega']:.3f}" in bounded.stdout
    # the same run without eval.upper_bound: the report finds the joint run by itself
    shutil.copytree(sweep / "lwf", sweep / "lwf_plain")
    plain = read_json(sweep / "lwf_plain" / "summary.json")
    del plain["upper_bound"]
    (sweep / "lwf_plain" / "summary.json").write_text(json.dumps(plain))
    report = build_report(sweep)
    rows = {row["run"]: row for row in report.rows}
    for name in ("lwf", "lwf_plain"):
        assert rows[name]["omega_map"] == pytest.approx(expected["map"]["omega"])
        assert rows[name]["rel_gap_map"] == pytest.approx(expected["map"]["rel_gap"])
    assert rows["lwf_plain"]["upper_bound"] == "joint" and rows["joint"]["omega_map"] is None
    assert "| Ω mAP | RelGap mAP |" in report_markdown(report)


def test_a_bad_upper_bound_stops_before_training(tmp_path: Path) -> None:
    result = run_train(tmp_path / "run", tmp_path / "data", f"eval.upper_bound={tmp_path}")
    assert result.returncode == 2
    assert f"eval.upper_bound={tmp_path}: summary.json is missing" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
