"""``python -m clod.report SWEEP_DIR``: the table and figures of a sweep's runs.

    python -m clod.report outputs/multirun/lwf_alpha [--out DIR] [--wandb] [--project NAME]

Finds every run under SWEEP_DIR, writes ``runs.csv`` (one row per run), ``report.md``
(results per scenario, unfinished runs with their errors, figures) and the PNGs into
``SWEEP_DIR/report`` (or ``--out``), and prints the results and the files written.
``--wandb`` also logs them as a W&B run of job type ``report`` in the sweep's group.
Since sweeps are launched with Hydra overrides, ``logger=wandb`` works as ``--wandb``
and ``logger.wandb.project=NAME`` as ``--project NAME``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from clod.cli import user_errors

WANDB_PROJECT_OVERRIDE = "logger.wandb.project="


def hydra_style_to_flags(argv: Sequence[str]) -> list[str]:
    """Hydra-style ``logger=...`` arguments as this command's flags."""
    flags: list[str] = []
    for arg in argv:
        if arg in ("logger=wandb", "+logger=wandb"):
            flags.append("--wandb")
        elif arg == "logger=csv":  # the training default: nothing besides the files
            continue
        elif arg.startswith(WANDB_PROJECT_OVERRIDE):
            flags += ["--project", arg.removeprefix(WANDB_PROJECT_OVERRIDE)]
        else:
            flags.append(arg)
    return flags


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m clod.report",
        description="Tables and figures of the runs of a sweep directory.",
        epilog="Hydra-style logger=wandb and logger.wandb.project=NAME are accepted too.",
    )
    parser.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR", help="a hydra.sweep.dir")
    parser.add_argument("--out", type=Path, help="output folder (default: SWEEP_DIR/report)")
    parser.add_argument("--wandb", action="store_true", help="also log the report to W&B")
    parser.add_argument("--project", default="clod", help="W&B project (default: clod)")
    return parser.parse_args(hydra_style_to_flags(argv))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    with user_errors():
        # Imported here so that --help and argument errors answer at once.
        from clod.reporting.build import build_report, results_markdown, write_report

        report = build_report(args.sweep_dir, args.out)
        files = write_report(report)
        print(results_markdown(report), end="\n\n")
        for path in files:
            print(f"wrote {path}")
        if args.wandb:
            from clod.reporting.wandb import log_report

            images = {drawing.name: report.png(drawing) for drawing in report.drawings}
            run_dir = log_report(
                args.sweep_dir, report.rows, images, report.out_dir, project=args.project
            )
            print(f"W&B run in {run_dir} (offline runs: upload with `wandb sync {run_dir}`)")


if __name__ == "__main__":
    main()
