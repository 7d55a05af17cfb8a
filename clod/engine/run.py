"""The task loop of one experiment: train each task, evaluate on seen classes, write results.

Everything lands in the run's output directory:

- ``state.json``: status and finished tasks (see :mod:`clod.engine.state`);
- ``checkpoints/task_<k>/last.ckpt``: Lightning's checkpoint of the task in progress
  (after every epoch and every ``checkpoint.every_n_minutes``), from which an
  interrupted task continues;
- ``checkpoints/task_<k>.pt``: the weights and strategy state handed to task k+1;
- ``results/task_<k>.json``, ``results.csv`` and ``summary.json``.

Rerunning the same command into the same directory resumes: finished tasks are skipped,
an interrupted task continues from the batch after its last checkpoint. The training
order and every augmentation are functions of (seed, task, epoch, position)
(:mod:`clod.data.sampling`), so a resumed run ends with the weights an uninterrupted one
would have. Checkpoints are written as tensors and plain types and read with
``weights_only=True`` (:mod:`clod.utils.checkpoints`): a shared run directory cannot run code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from clod.data.build import build_experiment_tasks
from clod.data.loaders import eval_loader, train_loader
from clod.data.sampling import EpochSampler, task_seed
from clod.data.scenario import Scenario
from clod.data.tasks import Task
from clod.engine.base_cache import BaseModelCache, CachedBase
from clod.engine.cost import training_step_conv_macs
from clod.engine.loggers import RunLoggers
from clod.engine.module import CLODModule
from clod.engine.results import ResultsBook, peak_memory_mb, task_row, upper_bound_of
from clod.engine.state import RunState
from clod.engine.trainer import (
    check_input_size,
    check_trainer_config,
    cpu_threads_per_process,
    make_trainer,
    task_epochs,
)
from clod.errors import ConfigError
from clod.metrics.detection import DetectionResult
from clod.models.detector import Detector, build_detector
from clod.models.runtime import tune_cpu_runtime
from clod.strategies.base import Strategy
from clod.utils.checkpoints import load_plain
from clod.utils.io import save_torch
from clod.utils.signals import RunInterrupted, interrupt_on_stop_signals
from clod.utils.table import format_table

log = logging.getLogger(__name__)


def is_rank_zero() -> bool:
    return rank_zero_only.rank == 0


def say(message: str) -> None:
    """A line for the user on stdout (rank 0 only)."""
    if is_rank_zero():
        print(message, flush=True)


@dataclass
class Run:
    """What every step of an experiment works with."""

    cfg: DictConfig
    resolved: dict[str, Any]
    output_dir: Path
    state: RunState
    book: ResultsBook
    detector: Detector
    strategy: Strategy
    scenario: Scenario
    tasks: list[Task]
    loggers: RunLoggers
    base_cache: BaseModelCache | None
    on_task_end: Callable[[Path], object] | None = None
    # the weights before any training, for a strategy that restarts every task from them
    initial_weights: dict[str, torch.Tensor] | None = None

    @property
    def seed(self) -> int:
        return int(self.resolved["seed"])

    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoints"


@dataclass
class TrainedTask:
    """A task after training (or after loading its base model from the cache)."""

    module: CLODModule
    trainer: pl.Trainer
    epochs: int
    train_time_s: float
    steps: int
    macs_conv_step: int


def run_experiment(
    cfg: DictConfig, on_task_end: Callable[[Path], object] | None = None
) -> dict[str, Any] | None:
    """Run (or resume) every task of the configured scenario; return the summary.

    A stop signal (SIGINT, SIGTERM) ends it as ``interrupted`` in ``state.json`` and raises
    :class:`RunInterrupted`; any other error records ``failed`` with its traceback.
    ``on_task_end(output_dir)`` runs on rank 0 after each task's results are written (the
    entry point draws the run's figures with it); an error in it is logged, not raised.
    """
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[assignment]
    output_dir = Path(resolved["paths"]["output_dir"])
    state = RunState(output_dir, resolved, write=is_rank_zero())
    if state.done:
        say(f"{output_dir} holds a finished run; nothing to do (summary.json has its results)")
        return None
    with interrupt_on_stop_signals() as received:
        try:
            summary = _run(cfg, resolved, output_dir, state, on_task_end)
        except RunInterrupted as stop:
            state.interrupt(stop.signal_name)
            raise
        except BaseException as error:
            if received:  # e.g. a data worker killed by the same Ctrl-C: still a stop
                stop = RunInterrupted(received[0])
                state.interrupt(stop.signal_name)
                raise stop from error
            state.fail(error)
            raise
    state.finish()
    return summary


def _run(
    cfg: DictConfig,
    resolved: dict[str, Any],
    output_dir: Path,
    state: RunState,
    on_task_end: Callable[[Path], object] | None = None,
) -> dict[str, Any]:
    check_trainer_config(resolved["trainer"])  # before any work: a typo costs nothing
    configure_threads(resolved["hardware"])
    pl.seed_everything(int(resolved["seed"]), workers=True, verbose=False)
    scenario, tasks = build_experiment_tasks(resolved)
    detector = build_detector(cfg.model)
    if resolved["hardware"].get("channels_last", True):
        # oneDNN's convolutions are markedly faster in NHWC on CPU (clod.bench); the
        # backbone keeps the layout through its channel shuffles.
        detector = detector.to(memory_format=torch.channels_last)
    check_input_size(resolved["data"]["input_size"])
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
    base_cache = BaseModelCache.for_run(
        resolved, strategy, tasks[0], task_epochs(resolved, tasks[0])
    )
    # the joint run to compare with, read and checked before any training
    book = ResultsBook(output_dir, upper_bound_of(resolved["eval"], scenario.class_names))
    run = Run(
        cfg, resolved, output_dir, state, book, detector, strategy,
        scenario, tasks, loggers, base_cache, on_task_end,
        {k: v.detach().clone() for k, v in detector.state_dict().items()}
        if strategy.from_scratch else None,
    )  # fmt: skip
    status = "failed"
    try:
        summary = run_tasks(run)
        status = "success"
    finally:
        loggers.close(status)
    return summary


def configure_threads(hardware: Mapping[str, Any]) -> None:
    if hardware["accelerator"] == "cpu":
        tuned = tune_cpu_runtime(hardware.get("threads") or cpu_threads_per_process(hardware))
        log.info("CPU runtime: %s", tuned)
    elif hardware.get("threads"):
        torch.set_num_threads(int(hardware["threads"]))


def run_tasks(run: Run) -> dict[str, Any]:
    """Every task not yet done: train, evaluate, record; then the summary."""
    if run.loggers.loggers:
        run.loggers.start(run.resolved)
        run_id = run.loggers.wandb_run_id()
        if run_id:
            run.state.set(wandb_run_id=run_id)
    done = [t for t in run.state.tasks_done if t < len(run.tasks)]
    if done:
        load_task_checkpoint(
            run.checkpoint_dir() / f"task_{max(done)}.pt", run.detector, run.strategy, run.tasks
        )
        say(f"resuming {run.output_dir}: tasks {', '.join(str(t + 1) for t in done)} already done")
    for task in run.tasks:
        if task.index in done:
            continue
        trained = train_task(run, task)
        started = time.perf_counter()
        result = evaluate_task(run, task, trained)
        run.strategy.on_task_end(trained.module, task)
        record_task(run, task, trained, result, time.perf_counter() - started)
        if run.on_task_end is not None and is_rank_zero():
            try:
                run.on_task_end(run.output_dir)
            except Exception as error:  # a figure is not worth a failed run
                log.warning("drawing the run's figures after task %d failed: %s", task.index, error)
    return finish_run(run)


def load_task_checkpoint(
    path: Path, detector: Detector, strategy: Strategy, tasks: list[Task]
) -> None:
    state = load_plain(path)
    detector.load_state_dict(state["detector"])
    strategy.load_state_dict(state.get("strategy", {}), tasks)


def train_task(run: Run, task: Task) -> TrainedTask:
    """Train ``task`` (or take task 0 from the base-model cache); resume its last.ckpt."""
    epochs = task_epochs(run.resolved, task)
    say(banner(task, run.resolved, epochs))
    pl.seed_everything(run.seed + task.index, workers=True, verbose=False)
    if run.initial_weights is not None:  # e.g. the cumulative joint: every task from scratch
        run.detector.load_state_dict(run.initial_weights)
    cached = run.base_cache.load() if run.base_cache is not None and task.index == 0 else None
    if cached is not None:
        run.detector.load_state_dict(cached.weights)
        say(f"   base model from the cache {run.base_cache.path}: task 1 is not trained again")
    module = CLODModule(
        run.detector, run.strategy, task, run.resolved["optimizer"], run.resolved["eval"]
    )
    run.strategy.on_task_start(module, task)
    macs = training_step_conv_macs(module, run.resolved["data"]["input_size"])
    if cached is not None:  # the cached model's own training time and steps: its cost
        run.loggers.begin_task(task.index, resumed_at_step=None)
        trainer = make_trainer(run.resolved, task, run.output_dir, run.loggers.loggers, epochs)
        trained = TrainedTask(
            module, trainer, epochs, float(cached.meta.get("train_time_s", 0.0)),
            int(cached.meta.get("steps", 0)), macs,
        )  # fmt: skip
    else:
        trained = fit(run, task, module, epochs, macs)
    if task.index == 0:
        note_base_cache(run, trained, cached)
    return trained


def fit(run: Run, task: Task, module: CLODModule, epochs: int, macs: int) -> TrainedTask:
    data_cfg = run.resolved["data"]
    seed = task_seed(run.seed, task.index)
    loader = run.strategy.train_loader(task, data_cfg, seed)
    if loader is None:
        loader = train_loader(task.train, data_cfg, seed)
    trainer = make_trainer(
        run.resolved, task, run.output_dir, run.loggers.loggers, epochs, len(loader)
    )
    resume_from = run.checkpoint_dir() / f"task_{task.index}" / "last.ckpt"
    checkpoint = load_plain(resume_from) if resume_from.exists() else None
    run.loggers.begin_task(task.index, checkpoint["global_step"] if checkpoint else None)
    if checkpoint is not None:
        position = checkpoint.get("loader_position")
        if position and not isinstance(loader.sampler, EpochSampler):
            log.warning(
                "strategy %s's loader has no EpochSampler: task %d resumes from its checkpoint "
                "but not on the batches an uninterrupted run would see",
                run.strategy.name,
                task.index,
            )
        elif position:
            loader.sampler.resume_at(position["epoch"], position["batches_done"])
            where = f"epoch {position['epoch'] + 1}" + (
                f", after batch {position['batches_done']}" if position["batches_done"] else ""
            )
            say(f"   continuing from {resume_from}: {where}")
    started = time.perf_counter()
    trainer.fit(
        module,
        train_dataloaders=loader,
        ckpt_path=str(resume_from) if resume_from.exists() else None,
        weights_only=True,
    )
    return TrainedTask(
        module, trainer, epochs, time.perf_counter() - started, int(trainer.global_step), macs
    )


def note_base_cache(run: Run, trained: TrainedTask, cached: CachedBase | None) -> None:
    """Record whether task 0 came from the cache; publish the model if it was trained here."""
    info: dict[str, Any] = {"used": cached is not None, "status": "off"}
    if run.base_cache is not None:
        info.update(status="hit" if cached else "miss", key=run.base_cache.key)
        info["path"] = str(run.base_cache.path)
        if cached is None:
            meta = {
                "train_time_s": trained.train_time_s,
                "steps": trained.steps,
                "run_dir": str(run.output_dir),
            }
            share_base_model(run.base_cache, run.detector, trained.trainer, meta)
    if is_rank_zero():
        run.state.set(base_cache=info)


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


def evaluate_task(run: Run, task: Task, trained: TrainedTask) -> DetectionResult:
    trained.trainer.validate(
        trained.module, dataloaders=eval_loader(task.eval, run.resolved["data"]), verbose=False
    )
    result = trained.module.last_result
    assert result is not None, "validation produced no result"
    return result


def record_task(
    run: Run, task: Task, trained: TrainedTask, result: DetectionResult, eval_time_s: float
) -> None:
    """The task's row, checkpoint and state (rank 0 writes), and its line on stdout."""
    extra = {
        "epochs": trained.epochs,
        "steps": trained.steps,
        **trained.module.parameter_counts(),
        **run.strategy.memory(trained.module),
        "peak_rss_mb": round(peak_memory_mb(), 1),
        "train_time_s": round(trained.train_time_s, 2),
        "eval_time_s": round(eval_time_s, 2),
        "macs_conv_step": trained.macs_conv_step,
    }
    if task.index == 0:
        extra["base_cache"] = run.state.data.get("base_cache", {}).get("status", "off")
    row = task_row(task, result, extra)
    if is_rank_zero():
        save_torch(
            run.checkpoint_dir() / f"task_{task.index}.pt",
            {  # tensors and plain types only: loadable with weights_only=True
                "detector": trained.module.detector_state_dict(),
                "strategy": run.strategy.state_dict(),
                "task": task.index,
                "class_names": list(run.scenario.class_names),
                "model": run.resolved["model"],
            },
        )
        run.book.record(row, result, run.scenario.class_names)
        matrix = run.book.summary(run.tasks, {})["continual"]["map50"]["R"]
        run.loggers.log_task(row, matrix)
        run.state.mark_task(task.index, train_time_s=row["train_time_s"])
    say(
        f"   task {task.index + 1} done in {trained.train_time_s:.0f} s: map50 {row['map50']:.3f}"
        + (f", old {row['old/map50']:.3f}, new {row['new/map50']:.3f}" if task.old else "")
    )


def finish_run(run: Run) -> dict[str, Any]:
    """summary.json, the loggers' summary and the final table (rank 0)."""
    resolved = run.resolved
    header = {
        "status": "done",
        "strategy": resolved["strategy"]["name"],
        "scenario": run.scenario.name,
        "data": resolved["data"]["name"],
        "model": Path(str(resolved["model"].get("_target_", ""))).suffix.lstrip(".") or "detector",
        "seed": run.seed,
        "num_tasks": len(run.tasks),
        "class_names": list(run.scenario.class_names),
        "base_cache": run.state.data.get("base_cache", {"used": False, "status": "off"}),
    }
    if not is_rank_zero():
        return {}
    summary = run.book.summary(run.tasks, header)
    run.book.write_summary(summary)
    run.loggers.log_summary(summary)
    print(final_table(summary))
    gaps = summary.get("upper_bound")
    against = f", Ω {gaps['map']['omega']:.3f}, RelGap {gaps['map']['rel_gap']:.3f}" if gaps else ""
    print(
        f"final map {summary['final']['map']:.3f}, map50 {summary['final']['map50']:.3f}"
        f"{against}; results in {run.output_dir}"
    )
    return summary


def banner(task: Task, cfg: Mapping[str, Any], epochs: int) -> str:
    names = task.new_names
    shown = ", ".join(names) if len(names) <= 5 else f"{', '.join(names[:4])}, ... ({len(names)})"
    counts = task.counts()
    return (
        f"== task {task.index + 1}/{task.num_tasks} [{cfg['strategy']['name']}]: {shown} | "
        f"{counts['train_images']} training images, {epochs} epochs | "
        f"evaluated on {len(task.seen)} seen classes, {counts['eval_images']} test images"
    )


def final_table(summary: Mapping[str, Any]) -> str:
    columns = ["task", "classes", "map", "map50", "old/map50", "new/map50", "train_time_s"]
    printed = []
    for row in summary["rows"]:
        shown = {k: row.get(k) if row.get(k) is not None else "-" for k in columns}
        names = row["classes"].split(", ")
        if len(names) > 3:  # a base task of many classes: the files keep the full list
            shown["classes"] = f"{', '.join(names[:2])} ... {names[-1]} ({len(names)})"
        printed.append(shown)
    return format_table(printed, columns)
