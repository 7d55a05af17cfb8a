"""The figures: what each one drew, checked on the returned series and on the axes."""

from __future__ import annotations

from pathlib import Path

import pytest

from clod.reporting.collect import collect_runs
from clod.reporting.plots import (
    plot_alpha_beta,
    plot_map_per_task,
    plot_map_vs_compute,
    plot_map_vs_memory,
    save_png,
)
from tests.report.conftest import Sweep, read_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_map_vs_memory_has_one_point_per_finished_run(sweep: Sweep) -> None:
    drawing = plot_map_vs_memory(collect_runs(sweep.root))
    assert drawing is not None
    points = {
        run: (x, y)
        for series in drawing.series
        for run, x, y in zip(series.runs, series.x, series.y, strict=True)
    }
    assert set(points) == set(sweep.finished)
    for run, (x, y) in points.items():
        summary = read_summary(sweep, run)
        memory = summary["memory"]
        assert x == pytest.approx((4 * memory["params_held"] + memory["buffer_bytes"]) / 1e6)
        assert y == summary["final"]["map50"]
    assert [s.strategy for s in drawing.series] == ["lwf", "sid"]  # one marker per strategy
    # every point is drawn: the markers of each strategy's error-bar container
    drawn = sum(len(c.lines[0].get_xdata()) for ax in drawing.figure.axes for c in ax.containers)
    assert drawn == len(sweep.finished)


def test_map_per_task_has_one_line_per_finished_run(sweep: Sweep) -> None:
    drawing = plot_map_per_task(collect_runs(sweep.root))
    assert drawing is not None
    assert sorted(run for s in drawing.series for run in s.runs) == sorted(sweep.finished)
    for series in drawing.series:
        rows = read_summary(sweep, series.runs[0])["rows"]
        assert series.x == [0, 1, 2]
        assert series.y == [row["map50"] for row in rows]
    assert sum(len(ax.get_lines()) for ax in drawing.figure.axes) == len(sweep.finished)
    # one panel per scenario, every strategy in it
    assert [ax.get_title() for ax in drawing.figure.axes if ax.get_visible()] == ["2p1"]
    assert {series.strategy for series in drawing.series} == {"lwf", "sid"}


def test_alpha_beta_heatmap_matches_the_grid(sweep: Sweep) -> None:
    drawing = plot_alpha_beta(collect_runs(sweep.root))
    assert drawing is not None
    assert len(drawing.grids) == 1  # lwf has no beta: no heatmap
    grid = drawing.grids[0]
    assert (grid.strategy, grid.scenario, grid.alphas, grid.betas) == ("sid", "2p1", [1, 2], [1, 2])
    for run, (_, alpha, beta) in sweep.finished.items():
        if beta is not None:
            cell = grid.values[grid.alphas.index(alpha)][grid.betas.index(beta)]
            assert cell == read_summary(sweep, run)["final"]["map50"], run
    image = drawing.figure.axes[0].images[0]
    assert image.get_array().shape == (2, 2)


def test_nothing_finished_draws_nothing(sweep: Sweep) -> None:
    unfinished = [run for run in collect_runs(sweep.root) if not run.finished]
    assert plot_map_vs_memory(unfinished) is None
    assert plot_map_per_task(unfinished) is None
    assert plot_alpha_beta(unfinished) is None


def test_png_is_written_whole(sweep: Sweep, tmp_path: Path) -> None:
    drawing = plot_map_vs_memory(collect_runs(sweep.root))
    assert drawing is not None
    save_png(drawing.figure, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").read_bytes().startswith(PNG_MAGIC)
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]  # no temporary left behind


def test_map_vs_compute_has_one_point_per_finished_run(sweep: Sweep) -> None:
    """Time and MACs of the incremental tasks, read back from each run's results.csv."""
    import csv

    drawing = plot_map_vs_compute(collect_runs(sweep.root))
    assert drawing is not None
    for axis in ("time", "macs"):
        points = {
            run: (x, y)
            for series in drawing.series
            if series.label.endswith(axis)
            for run, x, y in zip(series.runs, series.x, series.y, strict=True)
        }
        assert set(points) == set(sweep.finished)
        for run, (x, y) in points.items():
            with (sweep.root / run / "results.csv").open() as handle:
                later = [row for row in csv.DictReader(handle) if int(row["task"]) > 0]
            if axis == "time":
                expected = sum(float(row["train_time_s"]) for row in later)
            else:
                expected = (
                    sum(int(row["macs_conv_step"]) * int(row["steps"]) for row in later) / 1e12
                )
            assert x == pytest.approx(expected)
            assert y == read_summary(sweep, run)["final"]["map50"]
    for ax in drawing.figure.axes:  # every point drawn, in both panels
        assert sum(len(c.lines[0].get_xdata()) for c in ax.containers) == len(sweep.finished)
