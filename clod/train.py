"""``python -m clod.train``: run one continual-learning experiment (or print its plan)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from clod.cli import user_errors


def print_plan(cfg: DictConfig) -> None:
    """Per task: its classes and its training/evaluation image and box counts."""
    from clod.data.build import build_experiment_tasks
    from clod.utils.table import format_table

    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    scenario, tasks = build_experiment_tasks(resolved)
    print(
        f"plan: data={cfg.data.name} scenario={scenario.name} strategy={cfg.strategy.name} "
        f"({len(tasks)} task{'s' if len(tasks) != 1 else ''}, {scenario.num_classes} classes)"
    )
    rows = []
    for task in tasks:
        counts = task.counts()
        names = task.new_names
        shown = ", ".join(names) if len(names) <= 6 else f"{', '.join(names[:3])}, ... {names[-1]}"
        rows.append(
            {
                "task": task.index,
                "new classes": f"{_label_range(task.new)} ({len(names)}): {shown}",
                "seen": len(task.seen),
                **{key.replace("_", " "): value for key, value in counts.items()},
            }
        )
    print(format_table(rows))


def _label_range(labels: tuple[int, ...]) -> str:
    if len(labels) == 1:
        return str(labels[0])
    if labels == tuple(range(labels[0], labels[-1] + 1)):
        return f"{labels[0]}-{labels[-1]}"
    return ",".join(map(str, labels))


def _figures(cfg: DictConfig):
    """What draws the run's own figures as each task ends (``plots: false``: nothing)."""
    if not cfg.get("plots", True):
        return None
    from clod.reporting.run_figures import draw_run_figures

    return draw_run_figures


def objective(cfg: DictConfig) -> float:
    """The run's ``objective`` (conf/train.yaml), read back from its summary.json: also what
    a finished trial gives when a search is rerun, without training it again."""
    from clod.metrics.objective import objective_value
    from clod.utils.io import read_json

    return objective_value(read_json(Path(cfg.paths.output_dir) / "summary.json"), cfg.objective)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train (or resume) the configured run; return its objective, which a Hydra sweeper
    such as Optuna's (``hparams_search=distill_optuna``) maximises."""
    from clod.utils.signals import RunInterrupted

    try:
        with user_errors():
            if cfg.dry_run:
                print_plan(cfg)
                return None
            from clod.engine.run import is_rank_zero, run_experiment
            from clod.metrics.objective import check_objective

            check_objective(cfg.objective)  # before any work: a typo costs nothing
            run_experiment(cfg, on_task_end=_figures(cfg))
            # DDP's other ranks return nothing: rank 0 writes (and reads) the summary
            return objective(cfg) if is_rank_zero() else None
    except RunInterrupted as stop:
        # Not a failure: the run is resumable. Exit as a signal would (128 + N), which also
        # ends a multirun instead of going on with the next job.
        print(
            f"interrupted by {stop.signal_name}: rerun the same command to resume from the "
            "last checkpoint",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(stop.exit_code)


if __name__ == "__main__":
    main()
