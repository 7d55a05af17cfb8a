"""The report's figures, drawn from finished runs with matplotlib's Agg canvas.

Figures are built with the object API (``Figure`` + ``FigureCanvasAgg``), never pyplot:
no global figure state, no GUI backend, and a notebook's own backend is left alone.
Each function returns a :class:`Drawing`: the figure plus what it drew (points, lines,
grid cells) in plain lists, so tests and notebooks can check it without reading pixels.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from clod.reporting.collect import Run
from clod.reporting.seeds import SeedGroup, mean_std, per_task_mean_std, seed_groups
from clod.reporting.tables import STRATEGY_ORDER, number, run_row

# One marker and colour per strategy, the same in every figure.
STRATEGY_STYLE: dict[str, tuple[str, str]] = {
    "naive": ("o", "tab:gray"),
    "replay": ("s", "tab:orange"),
    "lwf": ("^", "tab:blue"),
    "sid": ("D", "tab:green"),
    "latent": ("*", "tab:red"),
    "erd": ("v", "tab:purple"),
    "ilyolox": ("X", "tab:brown"),
    "ilyolox_shipped": ("x", "tab:brown"),
    "pseudo_label": ("h", "tab:pink"),
    "joint": ("P", "black"),
}
MAX_LABELLED_RUNS = 6  # per strategy and scenario, in the mAP-vs-memory figure
OTHER_STYLES = (("<", "tab:olive"), (">", "tab:cyan"), ("p", "darkgoldenrod"), ("8", "navy"))


@dataclass
class Series:
    """Points or a line of a figure: one strategy's runs, or one run's tasks."""

    label: str
    scenario: str | None
    strategy: str | None
    x: list[float]
    y: list[float]
    runs: list[str]
    # half-length of each point's error bar: the sample std over the seeds of a setting
    # (0 where it has one run); empty when the series draws no error bars
    yerr: list[float] = field(default_factory=list)


@dataclass
class Grid:
    """One alpha x beta heatmap: ``values[i][j]`` is the mean final mAP50 of the runs with
    ``alphas[i]`` and ``betas[j]`` (None where no finished run has that pair)."""

    scenario: str | None
    strategy: str | None
    alphas: list[float]
    betas: list[float]
    values: list[list[float | None]]


@dataclass
class Drawing:
    name: str  # the PNG's file name without .png
    figure: Figure
    series: list[Series] = field(default_factory=list)
    grids: list[Grid] = field(default_factory=list)


def strategy_style(strategy: str | None, others: dict[str, tuple[str, str]]) -> tuple[str, str]:
    if strategy in STRATEGY_STYLE:
        return STRATEGY_STYLE[strategy]
    key = str(strategy)
    if key not in others:
        others[key] = OTHER_STYLES[len(others) % len(OTHER_STYLES)]
    return others[key]


def weights_label(run: Run) -> str:
    """ "α=1 β=2" for a run with strategy weights, else its directory."""
    parts = [
        f"{greek}={number(v)}" for greek, v in (("α", run.alpha), ("β", run.beta)) if v is not None
    ]
    return " ".join(parts) or run.name


def strategy_rank(strategy: str | None) -> tuple[int, str]:
    name = strategy or ""
    return (STRATEGY_ORDER.index(name) if name in STRATEGY_ORDER else len(STRATEGY_ORDER), name)


def panels(count: int, width: float = 5.0, height: float = 4.0) -> tuple[Figure, list[Axes]]:
    columns = min(count, 3)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, columns, squeeze=False)
    axes = [ax for line in grid for ax in line]
    for unused in axes[count:]:
        unused.set_visible(False)
    return figure, axes[:count]


def _finished(runs: Sequence[Run]) -> list[Run]:
    return [run for run in runs if run.finished and run.summary is not None]


def held_memory_mb(run: Run) -> float:
    """Parameters held at 4 bytes each plus the replay buffer's bytes, in MB (10^6 bytes)."""
    parameters = _final(run, "params_held") or 0.0
    buffer = _final(run, "buffer_bytes") or 0.0
    return (4 * parameters + buffer) / 1e6


def _final(run: Run, key: str) -> float | None:
    """A final metric or memory figure, as the table shows it."""
    value = run_row(run)[key]
    return None if value is None else float(value)


def _final_map50(run: Run) -> float:
    return _final(run, "map50") or 0.0


def _group_mean(
    groups: Sequence[SeedGroup], value: Callable[[Run], float]
) -> tuple[list[float], list[float]]:
    """Per group: the mean of ``value`` over its runs, and its std (0 for a single run)."""
    stats = [mean_std([value(run) for run in group.runs]) for group in groups]
    return [mean for mean, _ in stats], [std or 0.0 for _, std in stats]


def _group_names(groups: Sequence[SeedGroup]) -> list[str]:
    """One entry per point: its run, or its runs joined by "," for a seed group."""
    return [",".join(run.name for run in group.runs) for group in groups]


def _by_scenario(runs: Sequence[Run]) -> dict[str | None, list[Run]]:
    grouped: dict[str | None, list[Run]] = defaultdict(list)
    for run in runs:
        grouped[run.scenario].append(run)
    return dict(sorted(grouped.items(), key=lambda item: str(item[0])))


def plot_map_vs_memory(runs: Sequence[Run]) -> Drawing | None:
    """Final mAP50 against the memory a strategy holds while training, one point per
    finished run and one marker per strategy; a panel per scenario. None when no run has
    finished. Memory is what the seed's figure compares: the parameters held (a shared
    backbone once, a teacher's copy included) as float32 plus the replay buffer's images."""
    plotted = [run for run in _finished(runs) if _final(run, "params_held") is not None]
    scenarios = _by_scenario(plotted)
    if not scenarios:
        return None
    figure, axes = panels(len(scenarios))
    drawing = Drawing("map_vs_memory", figure)
    others: dict[str, tuple[str, str]] = {}
    for ax, (scenario, in_scenario) in zip(axes, scenarios.items(), strict=True):
        strategies = sorted({run.strategy for run in in_scenario}, key=strategy_rank)
        for strategy in strategies:
            # a point per setting: the mean over the runs that differ only in their seed
            groups = seed_groups([run for run in in_scenario if run.strategy == strategy])
            x, _ = _group_mean(groups, held_memory_mb)
            y, yerr = _group_mean(groups, _final_map50)
            marker, colour = strategy_style(strategy, others)
            ax.errorbar(
                x, y, yerr=yerr, fmt=marker, color=colour, markersize=8, capsize=3,
                label=strategy, alpha=0.85,
            )  # fmt: skip
            # Tell apart a strategy's settings; past a handful the labels only pile up (the
            # table and the heatmap say which run is which).
            if 1 < len(groups) <= MAX_LABELLED_RUNS:
                for group, px, py in zip(groups, x, y, strict=True):
                    ax.annotate(
                        weights_label(group.runs[0]),
                        (px, py),
                        xytext=(4, 3),
                        textcoords="offset points",
                        fontsize=7,
                    )
            names = _group_names(groups)
            drawing.series.append(Series(str(strategy), scenario, strategy, x, y, names, yerr))
        ax.set(
            xlabel="memory held: float32 parameters + replay buffer (MB)",
            ylabel="final mAP50",
            title=f"mAP vs memory: {scenario}",
        )
        ax.margins(x=0.15)  # room for the labels of the rightmost points
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return drawing


def plot_map_per_task(runs: Sequence[Run], only_finished: bool = True) -> Drawing | None:
    """mAP50 on the seen classes after each task, as the seed's left figure: a panel per
    scenario on a shared 0-1 axis, a line per finished run in its strategy's colour and
    marker. A single-task run (joint) is the upper bound: a dashed level across the panel.
    ``only_finished=False`` draws the tasks a run in progress has finished (a run's own
    figure). None when there is nothing to draw."""
    finished = _finished(runs) if only_finished else [run for run in runs if run.rows]
    scenarios = sorted({run.scenario for run in finished}, key=str)
    if not scenarios:
        return None
    figure, axes = panels(len(scenarios), width=5.5, height=4.0)
    drawing = Drawing("map_per_task", figure)
    others: dict[str, tuple[str, str]] = {}
    for ax, scenario in zip(axes, scenarios, strict=True):
        chosen = sorted(
            (run for run in finished if run.scenario == scenario),
            key=lambda run: (strategy_rank(run.strategy), run.name),
        )
        last_task = max(int(row["task"]) for run in chosen for row in run.rows)
        # a line per setting: the mean over the runs that differ only in their seed, with
        # the sample std as error bars
        for group in seed_groups(chosen):
            run = group.runs[0]
            x, y, stds = per_task_mean_std(group)
            yerr = [std or 0.0 for std in stds]
            marker, colour = strategy_style(run.strategy, others)
            weights = weights_label(run)
            label = str(run.strategy) if weights == run.name else f"{run.strategy} {weights}"
            if run.strategy == "joint":  # say which upper bound the line is
                label = "joint per step (upper bound)" if len(x) > 1 else "joint (upper bound)"
            if group.n > 1:
                label += f" (n={group.n})"
            if len(x) == 1 and last_task > 0:
                ax.plot([0, last_task], [y[0], y[0]], linestyle="--", color=colour, label=label)
                if group.n > 1:
                    ax.axhspan(y[0] - yerr[0], y[0] + yerr[0], color=colour, alpha=0.1)
            elif group.n > 1:
                ax.errorbar(x, y, yerr=yerr, marker=marker, color=colour, capsize=3, label=label)
            else:
                ax.plot(x, y, marker=marker, color=colour, label=label)
            names = [r.name for r in group.runs]
            drawing.series.append(Series(label, scenario, run.strategy, x, y, names, yerr))
        ax.set(xlabel="after task", ylabel="mAP50 on seen classes", title=str(scenario))
        ax.set_xticks(range(last_task + 1))
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return drawing


def incremental_cost(run: Run) -> tuple[float, float] | None:
    """Training seconds and conv MACs (per step × steps) of the run's incremental tasks
    (task 1 on; task 0 is the same base model for every strategy). None for a one-task run."""
    later = [row for row in run.rows if int(row["task"]) > 0]
    if not later:
        return None
    seconds = math.fsum(float(row.get("train_time_s") or 0.0) for row in later)
    macs = math.fsum(
        float(row.get("macs_conv_step") or 0.0) * float(row.get("steps") or 0.0) for row in later
    )
    return seconds, macs


def plot_map_vs_compute(runs: Sequence[Run]) -> Drawing | None:
    """Final mAP50 against the training cost of the incremental tasks, a row of two panels
    per scenario: measured training time, and conv MACs per training step × steps (what
    the time would be on any machine). A point per setting and marker per strategy, with
    the std over seeds as error bars. None when no multi-task run has finished."""
    costed = [run for run in _finished(runs) if incremental_cost(run) is not None]
    scenarios = _by_scenario(costed)
    if not scenarios:
        return None
    figure = Figure(figsize=(10.0, 4.0 * len(scenarios)), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(len(scenarios), 2, squeeze=False)
    drawing = Drawing("map_vs_compute", figure)
    others: dict[str, tuple[str, str]] = {}
    for axes, (scenario, in_scenario) in zip(grid, scenarios.items(), strict=True):
        for strategy in sorted({run.strategy for run in in_scenario}, key=strategy_rank):
            groups = seed_groups([run for run in in_scenario if run.strategy == strategy])
            y, yerr = _group_mean(groups, _final_map50)
            marker, colour = strategy_style(strategy, others)
            names = _group_names(groups)
            for ax, index, scale, axis in (
                (axes[0], 0, 1.0, "time"),
                (axes[1], 1, 1e-12, "macs"),
            ):
                x, xerr = _group_mean(
                    groups,
                    lambda r, i=index, k=scale: incremental_cost(r)[i] * k,  # type: ignore[index]
                )
                ax.errorbar(
                    x, y, xerr=xerr, yerr=yerr, fmt=marker, color=colour, markersize=8,
                    capsize=3, label=strategy, alpha=0.85,
                )  # fmt: skip
                drawing.series.append(
                    Series(f"{strategy} {axis}", scenario, strategy, x, y, names, yerr)
                )
        axes[0].set(xlabel="training time of the incremental tasks (s)", ylabel="final mAP50")
        axes[1].set(xlabel="conv TMACs of the incremental tasks (per step × steps)")
        for ax in axes:
            ax.set_title(f"mAP vs compute: {scenario}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    return drawing


def _weight(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def alpha_beta_grids(runs: Sequence[Run]) -> list[Grid]:
    """A grid per scenario and strategy whose finished runs vary both alpha and beta."""
    cells: dict[tuple[str | None, str | None], dict[tuple[float, float], list[float]]] = (
        defaultdict(lambda: defaultdict(list))
    )
    for run in _finished(runs):
        alpha, beta = _weight(run.alpha), _weight(run.beta)
        if alpha is not None and beta is not None:
            cells[(run.scenario, run.strategy)][(alpha, beta)].append(_final(run, "map50") or 0.0)
    grids = []
    for (scenario, strategy), values in sorted(
        cells.items(), key=lambda i: (str(i[0][0]), strategy_rank(i[0][1]))
    ):
        alphas = sorted({a for a, _ in values})
        betas = sorted({b for _, b in values})
        if len(alphas) < 2 or len(betas) < 2:
            continue
        table = [
            [sum(values[(a, b)]) / len(values[(a, b)]) if (a, b) in values else None for b in betas]
            for a in alphas
        ]
        grids.append(Grid(scenario, strategy, alphas, betas, table))
    return grids


def plot_alpha_beta(runs: Sequence[Run]) -> Drawing | None:
    """Heatmaps of final mAP50 over alpha (rows) x beta (columns); None when no strategy
    of the sweep varies both."""
    grids = alpha_beta_grids(runs)
    if not grids:
        return None
    figure, axes = panels(len(grids), width=4.5, height=4.0)
    drawing = Drawing("alpha_beta", figure, grids=grids)
    for ax, grid in zip(axes, grids, strict=True):
        data = [[math.nan if v is None else v for v in row] for row in grid.values]
        image = ax.imshow(data, cmap="viridis", origin="lower", aspect="auto")
        for i, row in enumerate(grid.values):
            for j, value in enumerate(row):
                # Dark text on the bright (high) end of viridis, light text elsewhere.
                bright = value is not None and image.norm(value) > 0.6
                text = "-" if value is None else f"{value:.3f}"
                ax.text(j, i, text, ha="center", va="center", color="black" if bright else "white")
        ax.set_xticks(range(len(grid.betas)), [number(b) for b in grid.betas])
        ax.set_yticks(range(len(grid.alphas)), [number(a) for a in grid.alphas])
        ax.set(
            xlabel="beta", ylabel="alpha", title=f"final mAP50: {grid.strategy}, {grid.scenario}"
        )
        figure.colorbar(image, ax=ax, shrink=0.8)
    return drawing


def all_drawings(runs: Sequence[Run]) -> list[Drawing]:
    """Every figure the sweep has data for."""
    drawn = (
        plot_map_vs_memory(runs),
        plot_map_vs_compute(runs),
        plot_map_per_task(runs),
        plot_alpha_beta(runs),
    )
    return [drawing for drawing in drawn if drawing is not None]


def save_png(figure: Figure, path: Path, dpi: int = 120) -> None:
    """Write the PNG next to its final name, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            figure.savefig(handle, format="png", dpi=dpi)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
