"""One run's own figures: mAP50 per task and per-class AP50 after each task.

``python -m clod.train`` draws them into ``<run dir>/plots/`` as each task ends, so a run
leaves a picture, not only a CSV; ``clod.report`` draws the per-class heatmap of every run
of a sweep, and its mean over the runs of a setting that differ only in their seed.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from clod.reporting.collect import read_run
from clod.reporting.plots import Drawing, plot_map_per_task, save_png

PLOTS_DIR = "plots"


@dataclass
class ClassTable:
    """AP50 of every class after each task: ``ap50[c][t]`` (NaN where class c was not
    evaluated after task t: not seen yet, or no positives)."""

    class_names: list[str]
    tasks: list[int]
    ap50: np.ndarray  # classes × tasks

    def mean(self, others: Sequence[ClassTable]) -> ClassTable:
        stack = np.stack([self.ap50, *(o.ap50 for o in others)])
        with warnings.catch_warnings():  # a cell no run evaluated stays NaN, silently
            warnings.simplefilter("ignore", RuntimeWarning)
            return ClassTable(self.class_names, self.tasks, np.nanmean(stack, axis=0))


def class_table(run_dir: Path) -> ClassTable | None:
    """The per-class AP50 a run recorded in ``results/task_<k>.json``; None before task 0."""
    files = sorted(
        (run_dir / "results").glob("task_*.json"), key=lambda p: int(p.stem.split("_")[1])
    )
    if not files:
        return None
    columns, names, tasks = [], None, []
    for path in files:
        record = json.loads(path.read_text())
        result = record["result"]
        names = names or list(record["class_names"])
        column = np.full(len(names), math.nan)
        for c in result.get("classes", []):
            value = float(result["ap50"][c])
            column[c] = value if value >= 0 else math.nan  # −1: no positives
        columns.append(column)
        tasks.append(int(path.stem.split("_")[1]))
    return ClassTable(list(names or []), tasks, np.stack(columns, axis=1))


def plot_class_heatmap(table: ClassTable, title: str, name: str = "ap50_per_class") -> Drawing:
    """Classes (rows, in label order) × tasks (columns), AP50 as colour and text; a class's
    drop after later tasks is its row fading to the right."""
    rows = [c for c in range(len(table.class_names)) if not np.isnan(table.ap50[c]).all()]
    data = table.ap50[rows]
    height = max(3.0, 0.28 * len(rows) + 1.5)
    figure = Figure(figsize=(1.0 + 0.8 * len(table.tasks) + 2.0, height), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    image = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for i, row in enumerate(data):
        for j, value in enumerate(row):
            if not math.isnan(value):
                colour = "black" if value > 0.6 else "white"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, color=colour)
    ax.set_xticks(range(len(table.tasks)), [str(t) for t in table.tasks])
    ax.set_yticks(range(len(rows)), [table.class_names[c] for c in rows], fontsize=7)
    ax.set(xlabel="after task", title=title)
    figure.colorbar(image, ax=ax, shrink=0.8, label="AP50")
    return Drawing(name, figure)


def draw_run_figures(run_dir: str | Path) -> list[Path]:
    """``plots/map_per_task.png`` and ``plots/ap50_per_class.png`` of one run, from what it
    has recorded so far (written atomically; a task later, drawn again)."""
    run_dir = Path(run_dir)
    written = []
    table = class_table(run_dir)
    if table is None:
        return written
    run = read_run(run_dir, run_dir.parent)
    title = f"{run.strategy} {run.scenario}: AP50 per class"
    heatmap = plot_class_heatmap(table, title)
    save_png(heatmap.figure, run_dir / PLOTS_DIR / "ap50_per_class.png")
    written.append(run_dir / PLOTS_DIR / "ap50_per_class.png")
    drawing = plot_map_per_task([run], only_finished=False)
    if drawing is not None:
        save_png(drawing.figure, run_dir / PLOTS_DIR / "map_per_task.png")
        written.append(run_dir / PLOTS_DIR / "map_per_task.png")
    return written
