"""The task loop of one experiment: train each task, evaluate on seen classes, write results.

Everything lands in the run's output directory:

- ``state.json``: status and finished tasks (see :mod:`clod.engine.state`);
- ``checkpoints/task_<k>/last.ckpt``: Lightning's checkpoint of the task in progress
  (one per epoch), from which an interrupted task continues;
- ``checkpoints/task_<k>.pt``: the weights and strategy state handed to task k+1;
- ``results/task_<k>.json``, ``results.csv`` and ``summary.json``.

Rerunning the same command into the same directory resumes: finished tasks are
skipped, an interrupted task continues from its last epoch. Each task reseeds the
generators from (seed, task), so a resumed run trains exactly as an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from clod.data.build import build_experiment_tasks
from clod.data.loaders import eval_loader, train_loader
from clod.data.scenario import Scenario
from clod.data.tasks import Task
from clod.engine.base_cache import BaseModelCache
from clod.engine.checkpointing import EpochCheckpoint
from clod.engine.cost import training_step_conv_macs
from clod.engine.loggers import RunLoggers
from clod.engine.module import CLODModule
from clod.engine.results import ResultsBook, peak_memory_mb, task_row
from clod.engine.state import RunState
from clod.errors import ConfigError
from clod.models.detector import Detector, build_detector
from clod.models.runtime import physical_core_count, tune_cpu_runtime
from clod.strategies.base import Strategy
from clod.utils.io import save_torch
from clod.utils.table import format_table

log = logging.getLogger(__name__)

# Lightning announces accelerators and tips at INFO on every Trainer (one per task); clod
# prints its own per-task banner instead. Warnings and errors still show.
for _name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings(
    "ignore", message=".*defined a `validation_step` but have no `val_dataloader`.*"
)
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
# Under DDP the evaluation metric gathers every rank's rows and keeps each image once
# (DetectionMetric), so the padded DistributedSampler and rank-0 logging are correct as they are.
warnings.filterwarnings("ignore", message=".*it is recommended to use `Trainer\\(devices=1.*")
warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")
# On a SLURM login node (or the test cluster's machine) Lightning would advise srun on every
# Trainer; clod's cluster path is hardware=slurm*, where submitit starts the tasks with srun.
warnings.filterwarnings("ignore", message=".*The `srun` command is available on your system.*")
# A strategy's teacher and frozen backbone are in eval mode on purpose (strategies.md §0).
warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")


def is_rank_zero() -> bool:
    return rank_zero_only.rank == 0


def say(message: str) -> None:
    """A line for the user on stdout (rank 0 only)."""
    if is_rank_zero():
        print(message, flush=True)


def cpu_threads_per_process(hardware: Mapping[str, Any]) -> int | None:
    """With several CPU processes on one node (DDP on CPU), each takes an equal share of the
    physical cores: two processes of all-core thread pools oversubscribe every core."""
    devices = hardware.get("devices", 1)
    if isinstance(devices, int) and devices > 1:
        return max(1, physical_core_count() // devices)
    return None  # one process: all physical cores


def make_trainer(
    cfg: Mapping[str, Any], task: Task, output_dir: Path, loggers: list[Any], epochs: int
) -> pl.Trainer:
    hardware, trainer_cfg = cfg["hardware"], cfg["trainer"]
    checkpoint = EpochCheckpoint(output_dir / "checkpoints" / f"task_{task.index}")
    # Under SLURM (submitit runs one copy of the job per task through srun), requeueing
    # belongs to submitit: Lightning must not install its own SIGUSR1 handler that
    # checkpoints and calls `scontrol requeue` (ecosystem.md §3).
    plugins = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else None
    return pl.Trainer(
        accelerator=hardware["accelerator"],
        devices=hardware["devices"],
        num_nodes=hardware.get("num_nodes", 1),
        strategy=hardware.get("strategy", "auto"),
        precision=hardware.get("precision", "32-true"),
        max_epochs=epochs,
        gradient_clip_val=cfg["optimizer"].get("gradient_clip_val"),
        gradient_clip_algorithm="norm",
        logger=loggers or False,
        callbacks=[checkpoint],
        plugins=plugins,
        default_root_dir=str(output_dir),
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_progress_bar=bool(trainer_cfg.get("enable_progress_bar", True)),
        log_every_n_steps=int(trainer_cfg.get("log_every_n_steps", 10)),
        deterministic=bool(trainer_cfg.get("deterministic", False)),
        use_distributed_sampler=True,
    )


def task_epochs(cfg: Mapping[str, Any], task: Task) -> int:
    trainer_cfg = cfg["trainer"]
    epochs = trainer_cfg["epochs"]
    if task.index > 0 and trainer_cfg.get("incremental_epochs") is not None:
        epochs = trainer_cfg["incremental_epochs"]
    if (cfg.get("strategy") or {}).get("epochs") is not None:  # e.g. joint's longer single task
        epochs = cfg["strategy"]["epochs"]
    if int(epochs) < 1:
        raise ConfigError(f"trainer.epochs must be >= 1, got {epochs}")
    return int(epochs)


def banner(task: Task, cfg: Mapping[str, Any], epochs: int) -> str:
    names = task.new_names
    shown = ", ".join(names) if len(names) <= 5 else f"{', '.join(names[:4])}, ... ({len(names)})"
    counts = task.counts()
    return (
        f"== task {task.index + 1}/{task.num_tasks} [{cfg['strategy']['name']}]: {shown} | "
        f"{counts['train_images']} training images, {epochs} epochs | "
        f"evaluated on {len(task.seen)} seen classes, {counts['eval_images']} test images"
    )


def load_task_checkpoint(
    path: Path, detector: Detector, strategy: Strategy, tasks: list[Task]
) -> None:
    state = torch.load(path, map_location="cpu", weights_only=False)
    detector.load_state_dict(state["detector"])
    strategy.load_state_dict(state.get("strategy", {}), tasks)


def share_base_model(
    cache: BaseModelCache, detector: Detector, trainer: pl.Trainer, meta: dict[str, Any]
) -> bool:
    """Publish the task-0 model just trained; if another run won the race, continue from its.

    Returns whether this run's own model was published.
    """
    published = cache.publish(detector.state_dict(), meta) if is_rank_zero() else False
    trainer.strategy.barrier()  # every rank sees the entry rank 0 published (or found)
    winner = cache.load() if not published else None
    if winner is not None:
        detector.load_state_dict(winner.weights)
    return published


def run_experiment(cfg: DictConfig) -> dict[str, Any] | None:
    """Run (or resume) every task of the configured scenario; return the summary."""
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[assignment]
    output_dir = Path(resolved["paths"]["output_dir"])
    state = RunState(output_dir, resolved, write=is_rank_zero())
    book = ResultsBook(output_dir)
    if state.done:
        say(f"{output_dir} holds a finished run; nothing to do (summary.json has its results)")
        return None
    try:
        summary = _run(cfg, resolved, output_dir, state, book)
    except BaseException as error:
        state.fail(error)
        raise
    state.finish()
    return summary


def _run(
    cfg: DictConfig, resolved: dict[str, Any], output_dir: Path, state: RunState, book: ResultsBook
) -> dict[str, Any]:
    hardware = resolved["hardware"]
    if hardware["accelerator"] == "cpu":
        tuned = tune_cpu_runtime(hardware.get("threads") or cpu_threads_per_process(hardware))
        log.info("CPU runtime: %s", tuned)
    elif hardware.get("threads"):
        torch.set_num_threads(int(hardware["threads"]))
    seed = int(resolved["seed"])
    pl.seed_everything(seed, workers=True, verbose=False)
    scenario, tasks = build_experiment_tasks(resolved)
    detector = build_detector(cfg.model)
    if hardware.get("channels_last", True):
        # oneDNN's convolutions are markedly faster in NHWC on CPU (clod.bench); the
        # backbone keeps the layout through its channel shuffles.
        detector = detector.to(memory_format=torch.channels_last)
    if detector.num_classes != scenario.num_classes:
        raise ConfigError(
            f"model.num_classes={detector.num_classes} but the data has {scenario.num_classes} classes"
        )
    strategy: Strategy = instantiate(cfg.strategy)
    if is_rank_zero():
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
    loggers = (
        RunLoggers(resolved.get("logger"), run_id=state.data.get("wandb_run_id"))
        if is_rank_zero()
        else RunLoggers(None)
    )
    status = "failed"
    try:
        summary = _run_tasks(
            cfg, resolved, output_dir, state, book, detector, strategy, scenario, tasks, loggers
        )
        status = "success"
    finally:
        loggers.close(status)
    return summary


def _run_tasks(
    cfg: DictConfig,
    resolved: dict[str, Any],
    output_dir: Path,
    state: RunState,
    book: ResultsBook,
    detector: Detector,
    strategy: Strategy,
    scenario: Scenario,
    tasks: list[Task],
    loggers: RunLoggers,
) -> dict[str, Any]:
    seed = int(resolved["seed"])
    if loggers.loggers:
        loggers.start(resolved)
        run_id = loggers.wandb_run_id()
        if run_id:
            state.set(wandb_run_id=run_id)

    base_cache = BaseModelCache.for_run(
        resolved, strategy, tasks[0], task_epochs(resolved, tasks[0])
    )
    done = [t for t in state.tasks_done if t < len(tasks)]
    if done:
        last = max(done)
        load_task_checkpoint(
            output_dir / "checkpoints" / f"task_{last}.pt", detector, strategy, tasks
        )
        say(f"resuming {output_dir}: tasks {', '.join(str(t + 1) for t in done)} already done")

    for task in tasks:
        if task.index in done:
            continue
        epochs = task_epochs(resolved, task)
        say(banner(task, resolved, epochs))
        pl.seed_everything(seed + task.index, workers=True, verbose=False)
        cached = base_cache.load() if base_cache is not None and task.index == 0 else None
        if cached is not None:
            detector.load_state_dict(cached.weights)
            say(f"   base model from the cache {base_cache.path}: task 1 is not trained again")
        module = CLODModule(detector, strategy, task, resolved["optimizer"], resolved["eval"])
        strategy.on_task_start(module, task)
        macs_conv_step = training_step_conv_macs(module, resolved["data"]["input_size"])
        trainer = make_trainer(resolved, task, output_dir, loggers.loggers, epochs)
        if cached is None:
            loader = strategy.train_loader(task, resolved["data"])
            if loader is None:
                loader = train_loader(strategy.train_records(task), resolved["data"])
            resume_from = output_dir / "checkpoints" / f"task_{task.index}" / "last.ckpt"
            started = time.perf_counter()
            trainer.fit(
                module,
                train_dataloaders=loader,
                ckpt_path=str(resume_from) if resume_from.exists() else None,
            )
            train_time = time.perf_counter() - started
            steps = int(trainer.global_step)
        else:  # the cached model's own training time and steps: the cost of producing it
            train_time = float(cached.meta.get("train_time_s", 0.0))
            steps = int(cached.meta.get("steps", 0))
        if task.index == 0:
            cache_info: dict[str, Any] = {"used": cached is not None, "status": "off"}
            if base_cache is not None:
                cache_info.update(status="hit" if cached else "miss", key=base_cache.key)
                cache_info["path"] = str(base_cache.path)
            if base_cache is not None and cached is None:
                meta = {"train_time_s": train_time, "steps": steps, "run_dir": str(output_dir)}
                share_base_model(base_cache, detector, trainer, meta)
            if is_rank_zero():
                state.set(base_cache=cache_info)
        started = time.perf_counter()
        trainer.validate(
            module, dataloaders=eval_loader(task.eval, resolved["data"]), verbose=False
        )
        eval_time = time.perf_counter() - started
        result = module.last_result
        assert result is not None, "validation produced no result"
        strategy.on_task_end(module, task)

        extra = {
            "epochs": epochs,
            "steps": steps,
            **module.parameter_counts(),
            **strategy.memory(module),
            "peak_rss_mb": round(peak_memory_mb(), 1),
            "train_time_s": round(train_time, 2),
            "eval_time_s": round(eval_time, 2),
            "macs_conv_step": macs_conv_step,
        }
        if task.index == 0:
            extra["base_cache"] = state.data.get("base_cache", {}).get("status", "off")
        row = task_row(task, result, extra)
        if is_rank_zero():
            save_torch(
                output_dir / "checkpoints" / f"task_{task.index}.pt",
                {
                    "detector": module.detector_state_dict(),
                    "strategy": strategy.state_dict(),
                    "task": task.index,
                    "class_names": list(scenario.class_names),
                    "model": resolved["model"],
                },
            )
            book.record(row, result, scenario.class_names)
            matrix = book.summary(tasks, {})["continual"]["map50"]["R"]
            loggers.log_task(row, matrix)
            state.mark_task(task.index, train_time_s=row["train_time_s"])
        say(
            f"   task {task.index + 1} done in {train_time:.0f} s: map50 {row['map50']:.3f}"
            + (f", old {row['old/map50']:.3f}, new {row['new/map50']:.3f}" if task.old else "")
        )

    header = {
        "status": "done",
        "strategy": resolved["strategy"]["name"],
        "scenario": scenario.name,
        "data": resolved["data"]["name"],
        "model": Path(str(resolved["model"].get("_target_", ""))).suffix.lstrip(".") or "detector",
        "seed": seed,
        "num_tasks": len(tasks),
        "class_names": list(scenario.class_names),
        "base_cache": state.data.get("base_cache", {"used": False, "status": "off"}),
    }
    summary = book.summary(tasks, header) if is_rank_zero() else {}
    if is_rank_zero():
        book.write_summary(summary)
        loggers.log_summary(summary)
        columns = ["task", "classes", "map", "map50", "old/map50", "new/map50", "train_time_s"]
        printed = []
        for row in summary["rows"]:
            shown = {k: row.get(k) if row.get(k) is not None else "-" for k in columns}
            names = row["classes"].split()
            if len(names) > 3:  # a base task of many classes: the files keep the full list
                shown["classes"] = f"{' '.join(names[:2])} ... {names[-1]} ({len(names)})"
            printed.append(shown)
        print(format_table(printed, columns))
        print(
            f"final map {summary['final']['map']:.3f}, map50 {summary['final']['map50']:.3f}; "
            f"results in {output_dir}"
        )
    return summary
