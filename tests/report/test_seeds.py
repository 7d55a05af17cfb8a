"""Runs repeated over seeds: mean ± std with n in the table, error bars in the figures.

A real sweep of tiny runs, ``-m strategy=naive,lwf seed=1,2``: each seed trains its own
task 0 (the base-model cache keys on the seed), so the two runs of a strategy differ.
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import numpy as np
import pytest

from clod.reporting.build import build_report, write_report
from clod.reporting.seeds import mean_std
from tests.report.conftest import SEED_STRATEGIES as STRATEGIES


def test_mean_std_by_hand() -> None:
    mean, std = mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3)
    # sample std: sqrt(((1-7/3)² + (2-7/3)² + (4-7/3)²) / (3-1)) = sqrt(7/3)
    assert std == pytest.approx(math.sqrt(7 / 3))
    assert mean_std([0.5]) == (0.5, None)


def finals(report, strategy: str, key: str = "map50") -> list[float]:
    return [float(r[key]) for r in report.rows if r["strategy"] == strategy]


def test_the_table_shows_mean_std_and_n(seed_sweep: Path) -> None:
    report = build_report(seed_sweep)
    assert len(report.rows) == 4 and all(r["status"] == "done" for r in report.rows)
    assert [r["strategy"] for r in report.seed_means] == list(STRATEGIES)
    spread = 0.0
    for mean_row in report.seed_means:
        values = finals(report, mean_row["strategy"])
        assert mean_row["n"] == 2 and mean_row["seed"] == "1,2"
        assert mean_row["map50"] == pytest.approx(statistics.mean(values))
        assert mean_row["map50_std"] == pytest.approx(statistics.stdev(values))
        old = finals(report, mean_row["strategy"], "old_map50")
        assert mean_row["old_map50_std"] == pytest.approx(statistics.stdev(old))
        spread += mean_row["map50_std"]
    assert spread > 0, "the seeds must change the results for the test to mean anything"

    write_report(report)
    markdown = (seed_sweep / "report" / "report.md").read_text()
    for mean_row in report.seed_means:
        cell = f"{mean_row['map50']:.3f} ± {mean_row['map50_std']:.3f}"
        line = next(
            line for line in markdown.splitlines() if line.startswith(f"| {mean_row['strategy']} |")
        )
        assert cell in line and line.rstrip().endswith("| 2 | `mean of 2` |")
    assert "### Per-seed runs" in markdown
    with (seed_sweep / "report" / "runs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["done"] * 4 + ["mean"] * 2
    for row in rows[4:]:
        values = finals(report, row["strategy"])
        assert float(row["map50_std"]) == pytest.approx(statistics.stdev(values))
        assert row["n"] == "2"
    groups = {r["group"] for r in rows}
    assert len(groups) == 2  # the two seeds of a strategy share their group


def bar_lengths(ax) -> list[float]:
    """Lengths of the vertical error bars the axes drew (one per point, cap to cap)."""
    lengths = []
    for container in ax.containers:
        for collection in container.lines[2]:
            segments = collection.get_segments()
            if all(seg[0][0] == seg[1][0] for seg in segments):  # vertical: the y error bars
                lengths += [abs(seg[1][1] - seg[0][1]) for seg in segments]
    return lengths


def test_the_figures_draw_error_bars_of_the_std(seed_sweep: Path) -> None:
    report = build_report(seed_sweep)
    drawings = {d.name: d for d in report.drawings}

    memory = drawings["map_vs_memory"]
    for series in memory.series:
        values = finals(report, series.strategy)
        assert series.y == pytest.approx([statistics.mean(values)])
        assert series.yerr == pytest.approx([statistics.stdev(values)])
        assert len(series.runs[0].split(",")) == 2
    expected = sorted(2 * e for s in memory.series for e in s.yerr)
    assert sorted(bar_lengths(memory.figure.axes[0])) == pytest.approx(expected)

    per_task = drawings["map_per_task"]
    runs = {run.name: run for run in report.runs}
    for series in per_task.series:
        assert series.label.endswith("(n=2)")
        curves = np.array([[float(r["map50"]) for r in runs[name].rows] for name in series.runs])
        assert series.x == [0, 1, 2]
        assert series.y == pytest.approx(curves.mean(axis=0).tolist())
        assert series.yerr == pytest.approx(curves.std(axis=0, ddof=1).tolist())
    expected = sorted(2 * e for s in per_task.series for e in s.yerr)
    assert sorted(bar_lengths(per_task.figure.axes[0])) == pytest.approx(expected)


def test_map_vs_compute_draws_the_std_over_seeds(seed_sweep: Path) -> None:
    from clod.reporting.plots import incremental_cost

    report = build_report(seed_sweep)
    drawing = next(d for d in report.drawings if d.name == "map_vs_compute")
    runs = {run.name: run for run in report.runs}
    for series in drawing.series:
        (names,) = series.runs
        members = [runs[name] for name in names.split(",")]
        assert len(members) == 2
        index = 0 if series.label.endswith("time") else 1
        scale = 1.0 if index == 0 else 1e-12
        costs = [incremental_cost(run)[index] * scale for run in members]
        assert series.x == pytest.approx([statistics.mean(costs)])
        assert series.yerr == pytest.approx([statistics.stdev(finals(report, series.strategy))])
    for ax in drawing.figure.axes:
        expected = sorted(2 * e for s in drawing.series for e in s.yerr)[::2]
        assert len(bar_lengths(ax)) >= len(expected)


def test_a_group_seed_that_follows_the_run_seed_is_part_of_the_seed() -> None:
    """replay's ``strategy.seed: ${seed}`` changes with the seed: its runs are one setting;
    a group seed set apart from the run's seed is a setting of its own."""
    from clod.reporting.collect import Run
    from clod.reporting.seeds import setting_key

    def run(seed: int, buffer_seed: int) -> Run:
        config = {"seed": seed, "strategy.name": "replay", "strategy.seed": buffer_seed}
        return Run(Path(f"/x/{seed}"), str(seed), "done", config=config)

    assert setting_key(run(1, 1)) == setting_key(run(2, 2))
    assert setting_key(run(1, 7)) == setting_key(run(2, 7))  # a fixed buffer seed, repeated
    assert setting_key(run(1, 7)) != setting_key(run(1, 1))  # another buffer seed
