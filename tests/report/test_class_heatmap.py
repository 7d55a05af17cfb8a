"""Per-class AP50 after each task: the heatmap of a run, its mean over seeds, and the
figures a training run draws into its own directory as each task ends."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np

from clod.reporting.build import build_report, write_report
from clod.reporting.run_figures import class_table, plot_class_heatmap

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def recorded_ap50(run_dir: Path) -> dict[tuple[int, int], float]:
    """(class, task) -> AP50 as results/task_<k>.json records it (classes with positives)."""
    cells = {}
    for path in (run_dir / "results").glob("task_*.json"):
        result = json.loads(path.read_text())["result"]
        for c in result["classes"]:
            if result["ap50"][c] >= 0:
                cells[(c, int(path.stem.split("_")[1]))] = result["ap50"][c]
    return cells


def test_one_cell_per_class_and_task(seed_sweep: Path) -> None:
    run_dir = seed_sweep / "0"
    table = class_table(run_dir)
    assert table is not None and table.tasks == [0, 1, 2]
    cells = recorded_ap50(run_dir)
    assert {
        (c, t)
        for c in range(len(table.class_names))
        for t in range(3)
        if not math.isnan(table.ap50[c, t])
    } == set(cells)
    for (c, t), value in cells.items():
        assert table.ap50[c, t] == value
    drawing = plot_class_heatmap(table, "run 0")
    image = drawing.figure.axes[0].images[0]
    shown_classes = sorted({c for c, _ in cells})
    assert image.get_array().shape == (len(shown_classes), 3)
    texts = [t.get_text() for t in drawing.figure.axes[0].texts]
    assert len(texts) == len(cells)  # one number per evaluated cell, none for the rest
    labels = [t.get_text() for t in drawing.figure.axes[0].get_yticklabels()]
    assert labels == [table.class_names[c] for c in shown_classes]


def test_the_report_draws_every_run_and_the_seed_mean(seed_sweep: Path) -> None:
    report = build_report(seed_sweep)
    write_report(report)
    out = seed_sweep / "report"
    for run in ("0", "1", "2", "3"):
        assert (out / "per_class" / f"{run}.png").read_bytes().startswith(PNG_MAGIC)
    means = sorted((out / "per_class").glob("mean_*.png"))
    assert len(means) == 2  # naive and lwf, two seeds each
    naive = next(d for d in report.class_drawings if d.name.startswith("per_class/mean_naive"))
    tables = [class_table(seed_sweep / name) for name in ("0", "1")]  # the two naive seeds
    with warnings.catch_warnings():  # cells no seed evaluated stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmean(np.stack([t.ap50 for t in tables]), axis=0)
    shown = ~np.isnan(expected).all(axis=1)
    np.testing.assert_allclose(
        np.ma.filled(naive.figure.axes[0].images[0].get_array(), np.nan), expected[shown]
    )
    markdown = (out / "report.md").read_text()
    assert "per_class/0.png" in markdown and "per_class/mean_naive" in markdown


def test_a_training_run_draws_its_own_figures_as_tasks_end(tmp_path: Path) -> None:
    """Killed (SIGKILL) once task 2's results are written: the figures of the finished
    tasks are already there; ``plots=false`` draws none."""
    from tests.engine.conftest import kill_when_exists, run_train

    data_dir, run_dir = tmp_path / "data", tmp_path / "run"
    kill_when_exists(run_dir, data_dir, run_dir / "results" / "task_1.json")
    for figure in ("map_per_task.png", "ap50_per_class.png"):
        assert (run_dir / "plots" / figure).read_bytes().startswith(PNG_MAGIC)
    quiet = tmp_path / "quiet"
    result = run_train(quiet, data_dir, "plots=false")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (quiet / "summary.json").exists() and not (quiet / "plots").exists()


def test_the_scenario_summary_is_each_setting_s_final_ap50_per_class(
    seed_sweep: Path,
) -> None:
    """``per_class_final_2p1``: a row per strategy (n=2 seeds), a column per class, the
    mean over seeds of the AP50 recorded after the last task."""
    report = build_report(seed_sweep)
    drawing = next(d for d in report.drawings if d.name == "per_class_final_2p1")
    ax = drawing.figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["naive (n=2)", "lwf (n=2)"]
    expected = []
    for runs in (("0", "1"), ("2", "3")):  # the sweep's order: naive seeds 1, 2; lwf 1, 2
        strategies = {report.runs[int(name)].strategy for name in runs}
        assert strategies == {"naive" if runs[0] == "0" else "lwf"}
        finals = [recorded_ap50(seed_sweep / name) for name in runs]
        last = max(t for _, t in finals[0])
        expected.append(
            [
                np.mean([f[(c, last)] for f in finals])
                for c in sorted(c for c, t in finals[0] if t == last)
            ]
        )
    np.testing.assert_allclose(np.ma.filled(ax.images[0].get_array(), np.nan), expected)
    # the line between task 0's classes (2 of them) and the classes added later
    assert [line.get_xdata()[0] for line in ax.lines] == [1.5]
    write_report(report)
    markdown = (seed_sweep / "report" / "report.md").read_text()
    assert "AP50 per class after the last task of 2p1" in markdown
    assert (seed_sweep / "report" / "per_class_final_2p1.png").read_bytes().startswith(PNG_MAGIC)
