"""Experiment loggers: Lightning's per-step logging plus clod's per-task and summary records.

``conf/logger/*.yaml`` lists loggers by name; each entry is instantiated. The CSV
logger is always there. With ``logger=wandb`` a Weights & Biases run is added:
one run per experiment (not per task), offline unless credentials are configured,
with the resolved config, per-task metrics against ``task/idx``, the R matrix as a
table, and the summary keys that the W&B scatter panel plots (mAP against memory).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger

from clod.engine.csv_log import TaskCSVLogger
from clod.utils.hydra_runtime import sweep_dir
from clod.utils.wandb_auth import wandb_credentials_configured

log = logging.getLogger(__name__)


def make_wandb_logger(
    project: str,
    save_dir: str,
    name: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    tags: Sequence[str] = (),
    entity: str | None = None,
    mode: str = "auto",
    run_id: str | None = None,
) -> WandbLogger:
    """A WandbLogger that never hangs without a network.

    ``mode``: ``auto`` (online only with credentials), ``online``, ``offline`` or
    ``disabled``. ``WANDB_MODE`` in the environment wins, as W&B itself does.
    ``group``: None puts every job of a sweep in one group named after the sweep's
    directory (``hydra.sweep.dir=outputs/multirun/lwf_alpha`` -> ``lwf_alpha``), so the
    sweep's runs plot together; a single run has no group.
    """
    sweep = sweep_dir()
    group = group or (sweep.name if sweep is not None else None)
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode:
        mode = env_mode
    elif mode == "auto":
        mode = "online" if wandb_credentials_configured() else "offline"
    if mode not in ("online", "offline", "disabled", "dryrun"):
        raise ValueError(
            f"logger.wandb.mode must be auto, online, offline or disabled, got {mode!r}"
        )
    os.environ.setdefault("WANDB_START_METHOD", "thread")  # robust under DDP and submitit
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if mode == "online" and run_id:
        kwargs.update(id=run_id, resume="allow")
    return WandbLogger(
        project=project,
        name=name,
        save_dir=save_dir,
        group=group,
        job_type=job_type,
        tags=list(tags or ()),
        entity=entity,
        offline=mode in ("offline", "dryrun"),
        mode="disabled" if mode == "disabled" else None,
        **kwargs,
    )


class RunLoggers:
    """The loggers of one run, with clod's task-level records on top of Lightning's."""

    def __init__(self, logger_cfg: Mapping[str, Any] | None, run_id: str | None = None) -> None:
        self.loggers: list[Logger] = []
        for name, entry in (logger_cfg or {}).items():
            if not entry:
                continue
            overrides = {"run_id": run_id} if name == "wandb" and run_id else {}
            self.loggers.append(instantiate(entry, **overrides))

    @property
    def wandb(self) -> WandbLogger | None:
        return next((lg for lg in self.loggers if isinstance(lg, WandbLogger)), None)

    def wandb_run_id(self) -> str | None:
        logger = self.wandb
        return logger.experiment.id if logger is not None else None

    def start(self, config: Mapping[str, Any]) -> None:
        for logger in self.loggers:
            logger.log_hyperparams(dict(config))
        if self.wandb is not None:
            run = self.wandb.experiment
            run.define_metric("task/idx")
            run.define_metric("task/*", step_metric="task/idx")

    def begin_task(self, task: int, resumed_at_step: int | None) -> None:
        """Tell the loggers that keep per-task rows (the CSV log) which task trains now."""
        for logger in self.loggers:
            if isinstance(logger, TaskCSVLogger):
                logger.begin_task(task, resumed_at_step)

    def log_task(self, row: Mapping[str, Any], matrix: Sequence[Sequence[float | None]]) -> None:
        """The evaluation after one task, with the task index as x-axis."""
        numbers = {
            f"task/{k}": v for k, v in row.items() if isinstance(v, int | float) and k != "task"
        }
        numbers["task/idx"] = int(row["task"])
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                run = logger.experiment
                run.log(numbers)
                columns = ["after_task"] + [f"group_{g}" for g in range(len(matrix[0]))]
                table = wandb.Table(
                    columns=columns,
                    data=[
                        [t] + [v if v is not None else None for v in r]
                        for t, r in enumerate(matrix)
                    ],
                )
                run.log({"task/R_map50": table, "task/idx": int(row["task"])})
            else:
                logger.log_metrics(numbers, step=int(row["task"]))

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        logger = self.wandb
        if logger is None:
            return
        memory, cost = summary.get("memory", {}), summary.get("cost", {})
        keys = {
            "final/map": summary["final"]["map"],
            "final/map50": summary["final"]["map50"],
            "final/map_old": summary["final_old"]["map"],
            "final/map50_old": summary["final_old"]["map50"],
            "final/map_new": summary["final_new"]["map"],
            "final/map50_new": summary["final_new"]["map50"],
            "final/avg_inc_map": summary["avg_inc"]["map"],
            "final/avg_inc_map50": summary["avg_inc"]["map50"],
            "final/forgetting": summary["forgetting"]["map"],
            "final/forgetting_map50": summary["forgetting"]["map50"],
            "mem/params_held": memory.get("params_held"),
            "mem/params_trainable": memory.get("params_trainable"),
            "mem/params_teacher": memory.get("params_teacher"),
            "mem/buffer_images": memory.get("buffer_images"),
            "mem/buffer_bytes": memory.get("buffer_bytes"),
            "mem/peak_rss_mb": memory.get("peak_rss_mb"),
            "cost/macs_conv_step": cost.get("macs_conv_step"),
            "time/train_s": summary.get("time", {}).get("train_s"),
            **upper_bound_keys(summary.get("upper_bound")),
        }
        run = logger.experiment
        for key, value in keys.items():
            if value is not None:
                run.summary[key] = value

    def close(self, status: str) -> None:
        for logger in self.loggers:
            try:
                logger.finalize(status)
            except Exception:  # a logger failing to close must not hide the run's own error
                log.exception("logger %s failed to finalise", type(logger).__name__)
        if self.wandb is not None:
            import wandb

            # Without finish() the next job in the same process (a sweep under submitit's
            # local executor, a test) would reuse this run.
            wandb.finish(exit_code=0 if status == "success" else 1)


def upper_bound_keys(gaps: Mapping[str, Any] | None) -> dict[str, float]:
    """``final/omega_map``, ``final/rel_gap_map50``, ... when the run has an upper bound."""
    if not gaps:
        return {}
    return {
        f"final/{name}_{metric}": gaps[metric][name]
        for metric in ("map", "map50")
        for name in ("omega", "abs_gap", "rel_gap", "upper_bound")
    }
