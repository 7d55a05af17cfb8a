"""Per-class AP50 across the runs of a sweep: one heatmap per run and per seed group
(classes × tasks), and per scenario a summary of every setting's final AP50 per class
(settings × classes, the mean over seeds), where each method's forgotten classes line up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from clod.reporting.collect import Run
from clod.reporting.plots import Drawing, strategy_rank, weights_label
from clod.reporting.run_figures import ClassTable, class_table, plot_class_heatmap
from clod.reporting.seeds import SeedGroup


def class_drawings(runs: Sequence[Run], groups: Sequence[SeedGroup]) -> list[Drawing]:
    """The per-class heatmap of every run that finished a task, then of each seed group's
    mean (``per_class/mean_<strategy>_<scenario>_<group>``)."""
    drawings = []
    for run in runs:
        table = class_table(run.path)
        if table is not None:
            name = "per_class/" + ("run" if run.name == "." else run.name)
            title = f"{run.strategy} {run.scenario} ({run.name}): AP50 per class"
            drawings.append(plot_class_heatmap(table, title, name))
    for group in groups:
        tables = _tables(group)
        if group.n > 1 and tables is not None:
            first = group.runs[0]
            title = f"{first.strategy} {first.scenario}: AP50 per class, mean of {group.n} seeds"
            name = f"per_class/mean_{first.strategy}_{first.scenario}_{group.key}"
            drawings.append(plot_class_heatmap(tables[0].mean(tables[1:]), title, name))
    return drawings


def _tables(group: SeedGroup) -> list[ClassTable] | None:
    tables = [t for t in (class_table(run.path) for run in group.runs) if t is not None]
    return tables if len(tables) == group.n else None


def _setting_label(group: SeedGroup, same_strategy: int) -> str:
    first = group.runs[0]
    label = str(first.strategy)
    if same_strategy > 1:  # e.g. a weight sweep: say which weights
        label += f" {weights_label(first)}"
    return f"{label} (n={group.n})" if group.n > 1 else label


def plot_final_per_class(groups: Sequence[SeedGroup]) -> list[Drawing]:
    """Per scenario with several settings: ``per_class_final_<scenario>``, rows the
    settings (strategy order), columns the classes in label order, the cell the AP50 after
    the last task, averaged over the setting's seeds."""
    by_scenario: dict[str, list[tuple[SeedGroup, np.ndarray]]] = {}
    names: dict[str, list[str]] = {}
    base: dict[str, set[int]] = {}  # the classes of task 0
    for group in groups:
        tables = _tables(group)
        first = group.runs[0]
        if tables is None or not first.finished:
            continue
        final = tables[0].mean(tables[1:]).ap50[:, -1]
        by_scenario.setdefault(str(first.scenario), []).append((group, final))
        names[str(first.scenario)] = tables[0].class_names
        # joint training has every class in task 0: the base classes are those all agree on
        first_task = set(np.flatnonzero(~np.isnan(tables[0].ap50[:, 0])).tolist())
        base[str(first.scenario)] = base.get(str(first.scenario), first_task) & first_task
    drawings = []
    for scenario, rows in sorted(by_scenario.items()):
        if len(rows) < 2:
            continue
        rows.sort(key=lambda item: strategy_rank(item[0].runs[0].strategy))
        strategies = [g.runs[0].strategy for g, _ in rows]
        labels = [_setting_label(g, strategies.count(g.runs[0].strategy)) for g, _ in rows]
        data = np.stack([final for _, final in rows])
        shown = [c for c in range(data.shape[1]) if not np.isnan(data[:, c]).all()]
        data = data[:, shown]
        figure = Figure(
            figsize=(2.5 + 0.45 * len(shown), 1.5 + 0.35 * len(rows)), layout="constrained"
        )
        FigureCanvasAgg(figure)
        ax = figure.subplots()
        image = ax.imshow(
            np.ma.masked_invalid(data), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto"
        )
        for i, row in enumerate(data):
            for j, value in enumerate(row):
                if not math.isnan(value):
                    colour = "black" if value > 0.6 else "white"
                    ax.text(
                        j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, color=colour
                    )
        ticks = [names[scenario][c] for c in shown]
        ax.set_xticks(range(len(shown)), ticks, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        # a line between the base classes and those added later, when they are contiguous
        first_added = [j for j, c in enumerate(shown) if c not in base[scenario]]
        if first_added and all(c in base[scenario] for c in shown[: first_added[0]]):
            ax.axvline(first_added[0] - 0.5, color="white", linewidth=2)
        repeated = any(g.n > 1 for g, _ in rows)
        ax.set_title(
            f"{scenario}: AP50 per class after the last task"
            + (" (mean over seeds, n per row)" if repeated else "")
        )
        figure.colorbar(image, ax=ax, shrink=0.8, label="AP50")
        drawings.append(Drawing(f"per_class_final_{scenario}", figure))
    return drawings
