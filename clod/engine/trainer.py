"""The Lightning Trainer of one task, built from the ``trainer`` config (conf/trainer/).

Every Trainer argument can be set from the config or the command line, as in
lightning-hydra-template; the engine adds what only it knows: the task's ``max_epochs``
(from clod's per-task keys ``epochs`` / ``incremental_epochs``, or a strategy's own
``epochs``), the loggers, the in-task checkpoint and, under SLURM, the cluster plugin.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.utils import instantiate
from lightning.pytorch.plugins.environments import SLURMEnvironment

from clod.data.tasks import Task
from clod.engine.checkpointing import EpochCheckpoint
from clod.errors import ConfigError
from clod.models.runtime import physical_core_count

# Keys of the trainer config that are clod's, not the Trainer's.
CLOD_KEYS = frozenset({"epochs", "incremental_epochs"})
# Trainer arguments the engine sets for every task; the config must not.
ENGINE_KEYS = {
    "max_epochs": "set trainer.epochs (and trainer.incremental_epochs) instead",
    "logger": "choose loggers with logger=...",
    "plugins": "the engine adds the SLURM plugin itself",
    "default_root_dir": "runs write into their own output directory (hydra.run.dir)",
}


def trainer_arguments() -> frozenset[str]:
    return frozenset(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}


def check_trainer_config(trainer_cfg: Mapping[str, Any]) -> None:
    """An unknown key, or one the engine owns, is an error that names it."""
    known = trainer_arguments()
    for key in trainer_cfg:
        if key in ("_target_", "callbacks") or key in CLOD_KEYS:
            continue
        if key in ENGINE_KEYS:
            raise ConfigError(f"trainer.{key} cannot be set: {ENGINE_KEYS[key]}")
        if key not in known:
            close = sorted(k for k in known if key.split("_")[0] in k)[:5]
            hint = f" (did you mean one of {', '.join(close)}?)" if close else ""
            raise ConfigError(
                f"trainer.{key} is not an argument of lightning.pytorch.Trainer{hint}"
            )


# The neck joins the stride-8, 16 and 32 maps by 2x up-sampling: each side must divide by 32.
INPUT_MULTIPLE = 32


def check_input_size(size: Any) -> None:
    """A clear error for an input size the detector cannot join across levels."""
    bad = [int(side) for side in size if int(side) % INPUT_MULTIPLE]
    if bad:
        raise ConfigError(
            f"data.input_size={list(size)}: each side must be a multiple of {INPUT_MULTIPLE} "
            f"(the neck joins the stride-{INPUT_MULTIPLE} map to finer ones), {bad} is not"
        )


def task_epochs(cfg: Mapping[str, Any], task: Task) -> int:
    """Epochs of ``task``: ``trainer.epochs``, ``trainer.incremental_epochs`` after task 0
    (not for the cumulative joint, whose every task trains from scratch), or the strategy's
    own ``epochs`` (joint's single longer task)."""
    trainer_cfg = cfg["trainer"]
    epochs = trainer_cfg["epochs"]
    from_scratch = bool((cfg.get("strategy") or {}).get("cumulative", False))
    if task.index > 0 and trainer_cfg.get("incremental_epochs") is not None and not from_scratch:
        epochs = trainer_cfg["incremental_epochs"]
    if (cfg.get("strategy") or {}).get("epochs") is not None:
        epochs = cfg["strategy"]["epochs"]
    if int(epochs) < 1:
        raise ConfigError(f"trainer.epochs must be >= 1, got {epochs}")
    return int(epochs)


def cpu_threads_per_process(hardware: Mapping[str, Any]) -> int | None:
    """With several CPU processes on one node (DDP on CPU), each takes an equal share of the
    physical cores: two processes of all-core thread pools oversubscribe every core."""
    devices = hardware.get("devices", 1)
    if isinstance(devices, int) and devices > 1:
        return max(1, physical_core_count() // devices)
    return None  # one process: all physical cores


def make_trainer(
    cfg: Mapping[str, Any],
    task: Task,
    output_dir: Path,
    loggers: Sequence[Any],
    epochs: int,
    batches_per_epoch: int | None = None,
) -> pl.Trainer:
    """The Trainer of ``task``; ``batches_per_epoch`` caps the logging interval so that a
    short task logs every epoch (Lightning would warn and log nothing between)."""
    trainer_cfg = {k: v for k, v in cfg["trainer"].items() if k not in CLOD_KEYS}
    check_trainer_config(trainer_cfg)
    every = trainer_cfg.get("log_every_n_steps")
    if every is not None and batches_per_epoch:
        trainer_cfg["log_every_n_steps"] = max(1, min(int(every), batches_per_epoch))
    callbacks = list(trainer_cfg.pop("callbacks", None) or [])
    checkpoint = EpochCheckpoint(
        output_dir / "checkpoints" / f"task_{task.index}",
        every_n_minutes=(cfg.get("checkpoint") or {}).get("every_n_minutes"),
    )
    # Under SLURM (submitit runs one copy of the job per task through srun), requeueing
    # belongs to submitit: Lightning must not install its own SIGUSR1 handler that
    # checkpoints and calls `scontrol requeue` (docs/engineering.md §3).
    plugins = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else None
    try:
        return instantiate(
            trainer_cfg,
            max_epochs=epochs,
            logger=list(loggers) or False,
            callbacks=[checkpoint, *callbacks],
            plugins=plugins,
            default_root_dir=str(output_dir),
            _convert_="all",
        )
    except Exception as error:  # a bad value of a real argument: say which one
        cause = error.__cause__ or error
        raise ConfigError(f"trainer config rejected by Lightning: {cause}") from error
