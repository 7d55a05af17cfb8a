"""Reports over sweep directories: the API behind ``python -m clod.report`` and the notebooks.

- :mod:`~clod.reporting.collect`: find the run directories and read them;
- :mod:`~clod.reporting.tables`: one row per run, as CSV and Markdown;
- :mod:`~clod.reporting.plots`: mAP vs memory, mAP per task, alpha x beta heatmaps;
- :mod:`~clod.reporting.build`: all of it as files in ``SWEEP_DIR/report``;
- :mod:`~clod.reporting.wandb`: optionally, the same as a W&B run.
"""

from __future__ import annotations

from clod.reporting.build import Report, build_report, results_markdown, write_report
from clod.reporting.collect import ReportError, Run, collect_runs
from clod.reporting.plots import (
    Drawing,
    Grid,
    Series,
    plot_alpha_beta,
    plot_map_per_task,
    plot_map_vs_memory,
)
from clod.reporting.tables import markdown_results, run_rows, write_runs_csv

__all__ = [
    "Drawing",
    "Grid",
    "Report",
    "ReportError",
    "Run",
    "Series",
    "build_report",
    "collect_runs",
    "markdown_results",
    "plot_alpha_beta",
    "plot_map_per_task",
    "plot_map_vs_memory",
    "results_markdown",
    "run_rows",
    "write_report",
    "write_runs_csv",
]
