"""A sweep's report: collect the runs, build the table, figures and Markdown, write them.

:func:`build_report` reads and draws without writing anything (what a notebook wants);
:func:`write_report` writes ``runs.csv``, ``report.md`` and one PNG per figure, each
atomically, into the output folder (default ``SWEEP_DIR/report``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clod.reporting.class_summary import class_drawings, plot_final_per_class
from clod.reporting.collect import STATUSES, Run, collect_runs
from clod.reporting.plots import Drawing, all_drawings, save_png
from clod.reporting.search import Search, plot_search, read_search, search_markdown
from clod.reporting.seeds import group_row, seed_groups
from clod.reporting.tables import (
    Row,
    markdown_against_upper_bound,
    markdown_problems,
    markdown_results,
    row_order,
    run_rows,
    write_runs_csv,
)
from clod.reporting.upper_bounds import attach_upper_bounds
from clod.utils.io import write_text

REPORT_DIR = "report"
FIGURE_TITLES = {
    "map_vs_memory": "Final mAP50 against the parameters held in memory",
    "map_vs_compute": "Final mAP50 against the training cost of the incremental tasks",
    "map_per_task": "mAP50 on the seen classes after each task",
    "alpha_beta": "Final mAP50 over the distillation weights alpha x beta",
    "search": "The Optuna search: objective per trial, and the trials in the weight space",
}
MAX_SWEPT_KEYS_SHOWN = 12
OMEGA_NOTE = (
    "Ω and RelGap compare a run with the joint run of the same data, model and seed (the "
    "`upper_bound` column of runs.csv names it): Ω = (1/T)(1 + Σ_{t≥1} x_t / x_UB,t) with "
    "x_UB,t the joint model's value on the classes seen after step t, RelGap = (x_UB − "
    "final) / x_UB (docs/protocol.md §5)."
)


@dataclass
class Report:
    sweep_dir: Path
    out_dir: Path
    runs: list[Run]
    rows: list[Row]
    drawings: list[Drawing]
    # one row per setting repeated over seeds: means, ``<column>_std`` and n (clod.reporting.seeds)
    seed_means: list[Row] = field(default_factory=list)
    # per-class AP50 after each task: one heatmap per run, and the mean of each seed group
    class_drawings: list[Drawing] = field(default_factory=list)
    search: Search | None = None  # an Optuna search's trials (clod.reporting.search)
    notes: list[str] = field(default_factory=list)  # what could not be computed, one line each
    files: list[Path] = field(default_factory=list)  # filled by write_report

    @property
    def unfinished(self) -> list[Row]:
        return [row for row in self.rows if row["status"] != "done"]

    def png(self, drawing: Drawing) -> Path:
        return self.out_dir / f"{drawing.name}.png"


def build_report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> Report:
    sweep_dir = Path(sweep_dir)
    out = Path(out_dir) if out_dir is not None else sweep_dir / REPORT_DIR
    runs = collect_runs(sweep_dir, exclude=out)
    gap_problems = attach_upper_bounds(runs)  # Ω and the gaps against each run's joint run
    rows = run_rows(runs)
    groups = seed_groups([run for run in runs if run.finished and run.summary is not None])
    group_of = {run.name: group.key for group in groups for run in group.runs}
    for row in rows:
        row["group"] = group_of.get(row["run"])
    means = sorted((group_row(g) for g in groups if g.n > 1), key=row_order)
    drawings = all_drawings(runs) + plot_final_per_class(groups)
    search = read_search(sweep_dir, runs)
    if search is not None:
        # sampled weights do not form a grid: the search figure shows them instead
        drawings = [d for d in drawings if d.name != "alpha_beta"]
        drawings += [d for d in (plot_search(search),) if d is not None]
    return Report(
        sweep_dir, out, runs, rows, drawings, means, class_drawings(runs, groups), search,
        gap_problems,
    )  # fmt: skip


def figure_title(name: str) -> str:
    scenario = name.removeprefix("per_class_final_")
    if scenario != name:
        return f"AP50 per class after the last task of {scenario}, per strategy (mean over seeds)"
    return FIGURE_TITLES.get(name, name)


def status_counts(rows: Sequence[Row]) -> str:
    counts = Counter(row["status"] for row in rows)
    return ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """The config keys whose value differs between runs: what the sweep varied."""
    # `_target_`, `_partial_`: the class a group choice implies, not a choice of its own.
    keys = sorted(
        {k for run in runs for k in run.config if not k.rsplit(".", 1)[-1].startswith("_")}
    )
    return [key for key in keys if len({repr(run.config.get(key)) for run in runs}) > 1]


def results_markdown(report: Report) -> str:
    """The results tables and the unfinished runs: what the CLI prints."""
    parts = [markdown_results(report.rows, report.seed_means)]
    problems = markdown_problems(report.rows)
    if problems:
        parts.append(f"Runs that did not finish:\n\n{problems}")
    return "\n\n".join(parts)


def report_markdown(report: Report) -> str:
    name = report.sweep_dir.resolve().name
    swept = swept_keys(report.runs)
    shown = ", ".join(f"`{key}`" for key in swept[:MAX_SWEPT_KEYS_SHOWN])
    if len(swept) > MAX_SWEPT_KEYS_SHOWN:
        shown += f" and {len(swept) - MAX_SWEPT_KEYS_SHOWN} more"
    lines: list[Any] = [
        f"# Sweep report: {name}",
        "",
        f"`{report.sweep_dir}`: {len(report.rows)} runs ({status_counts(report.rows)}).",
    ]
    if swept:
        lines.append(f"Varied: {shown}.")
    against_upper_bound = markdown_against_upper_bound(report.rows)
    if against_upper_bound is not None:
        lines += ["", "## Against the upper bound", "", against_upper_bound, "", OMEGA_NOTE]
    lines += ["", "## Results", "", markdown_results(report.rows, report.seed_means)]
    if report.notes:
        lines += ["", "Not computed:", "", *(f"- {note}" for note in report.notes)]
    if report.search is not None:
        lines += ["", "## Hyperparameter search", "", search_markdown(report.search)]
    problems = markdown_problems(report.rows)
    if problems:
        lines += ["", "## Runs that did not finish", "", problems]
    if report.drawings:
        lines += ["", "## Figures"]
        for drawing in report.drawings:
            title = figure_title(drawing.name)
            lines += ["", f"{title}:", "", f"![{title}]({drawing.name}.png)"]
    if report.class_drawings:
        lines += ["", "## Per-class AP50 after each task", ""]
        # the seed means first: the summary; then every run
        ordered = sorted(report.class_drawings, key=lambda d: "/mean_" not in d.name)
        lines += [f"- [{d.name.removeprefix('per_class/')}]({d.name}.png)" for d in ordered]
    return "\n".join(lines) + "\n"


def write_report(report: Report) -> list[Path]:
    """Write runs.csv, report.md and the PNGs; return their paths."""
    files = [report.out_dir / "runs.csv", report.out_dir / "report.md"]
    # every run, then a line per setting repeated over seeds (status "mean", with n and std)
    write_runs_csv([*report.rows, *report.seed_means], files[0])
    for drawing in [*report.drawings, *report.class_drawings]:
        save_png(drawing.figure, report.png(drawing))
        files.append(report.png(drawing))
    # The Markdown last: once it is there, the figures it links to are too.
    write_text(files[1], report_markdown(report))
    report.files = files
    return files
