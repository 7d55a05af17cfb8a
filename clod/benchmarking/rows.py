"""The rows of ``clod.bench``: inference, and one training row per strategy.

Each strategy row comes from :func:`module_bench`, which receives the detector and the
strategy's config and returns a :class:`StrategyBench` (its trainable parameters, any
extra modules it holds, and a function computing the training loss of a batch): the strategy's own
training step (``CLODModule.training_losses``, as ``clod.train`` runs it) at the second
task of a scenario that adds the last class, so its teacher, frozen parts and extra terms
are all there.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch import nn

from clod.benchmarking.device import autocast, autocast_dtype, bench_device
from clod.benchmarking.timing import MatmulProbe, peak_rss_bytes, reset_peak_rss, time_interleaved
from clod.data.tasks import Task
from clod.data.types import Batch
from clod.engine.module import CLODModule
from clod.metrics.flops import (
    LossFn,
    forward_flops,
    step_conv_macs_per_image,
    train_step_flops,
)
from clod.models.detector import Detector
from clod.strategies.base import Strategy
from clod.utils.tensors import count_parameters

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"


@dataclass
class StrategyBench:
    """What one strategy contributes to the benchmark.

    loss: computes the scalar training loss of a batch (all its forward passes included);
        the bench runs backward and the optimiser step around it.
    trainable: the parameters its optimiser updates.
    modules: modules it holds besides the detector (e.g. a teacher), for ``params_held``.
    """

    loss: LossFn
    trainable: list[nn.Parameter]
    modules: dict[str, nn.Module] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # more row entries
    # The strategy's numbers about its last step (e.g. pseudo boxes per image): how much
    # selection work the timed steps did.
    diagnostics: Callable[[], dict[str, float]] = dict


# (detector, the strategy's config from conf/strategy or None) -> its benchmark step


def incremental_task(num_classes: int) -> Task:
    """The second task of a scenario that adds the last class (19p1 for 20 classes), no images."""
    return Task(
        index=1,
        num_tasks=2,
        new=(num_classes - 1,),
        seen=tuple(range(num_classes)),
        class_names=tuple(f"class_{c}" for c in range(num_classes)),
        train=(),
        eval=(),
    )


def module_bench(detector: Detector, strategy_cfg: DictConfig | None) -> StrategyBench:
    """The strategy's real training step on a copy of ``detector``, at an incremental task.

    ``strategy_cfg`` None is plain training (naive). The copy keeps rows independent: a
    strategy may freeze parts of its model.
    """
    strategy: Strategy = instantiate(strategy_cfg) if strategy_cfg is not None else Strategy()
    task = incremental_task(detector.num_classes)
    module = CLODModule(copy.deepcopy(detector), strategy, task, optimizer={}, evaluation={})
    strategy.on_task_start(module, task)
    module.to(next(detector.parameters()).device)  # Lightning's `device` follows the model
    module.train()

    def loss(batch: Batch) -> torch.Tensor:
        return module.training_losses(batch)[0]

    counts = module.parameter_counts()
    return StrategyBench(
        loss=loss,
        trainable=[p for p in module.parameters() if p.requires_grad],
        modules={"teacher": module.teacher} if module.teacher is not None else {},
        extra={"params_teacher": counts["params_teacher"]},
        diagnostics=strategy.diagnostics,
    )


def bench_inference(
    detector: Detector, batch: Batch, cfg: DictConfig, probe: MatmulProbe
) -> dict[str, Any]:
    device, dtype = bench_device(cfg.get("hardware")), autocast_dtype(cfg.get("hardware"))
    detector.eval()
    flops, macs = forward_flops(detector, batch.images[:1])
    model = detector.fused() if cfg.fuse_inference else detector
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    images = batch.images

    def run() -> None:
        with torch.inference_mode(), autocast(device, dtype):
            model(images)

    reset_peak_rss()
    timing = time_interleaved(run, int(cfg.warmup), int(cfg.steps), probe)
    images_per_s = images.shape[0] / timing.seconds
    return {
        "flops_forward_per_image": flops,
        "macs_conv_per_image": macs,
        "infer_images_per_s": images_per_s,
        "infer_ms_per_batch": timing.seconds * 1e3,
        "infer_matmul_flops_per_s": timing.matmul_flops_per_s,
        "infer_peak_rss_mb": peak_rss_bytes() / 2**20,
        "infer_peak_fraction": flops * images_per_s / timing.matmul_flops_per_s,
    }


def bench_strategy(
    name: str,
    strategy_cfg: DictConfig | None,
    detector: Detector,
    batch: Batch,
    cfg: DictConfig,
    probe: MatmulProbe,
) -> dict[str, Any]:
    if name != "naive" and (strategy_cfg is None or "_target_" not in strategy_cfg):
        raise KeyError(f"no benchmark for strategy {name!r}: no conf/strategy/{name}.yaml")
    device, dtype = bench_device(cfg.get("hardware")), autocast_dtype(cfg.get("hardware"))
    detector.train()
    strategy = module_bench(detector, strategy_cfg)

    def loss(batch: Batch) -> torch.Tensor:  # the forward passes in the run's precision
        with autocast(device, dtype):
            return strategy.loss(batch)

    # fused=True runs AdamW as one kernel per step instead of ~10 small ops per tensor.
    optimizer = torch.optim.AdamW(strategy.trainable, lr=1e-4, weight_decay=0.05, fused=True)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss(batch).backward()
        optimizer.step()

    batch_size = batch.images.shape[0]
    macs_conv_step = step_conv_macs_per_image(loss, batch)
    flops, default_flops = train_step_flops(step)
    flops_per_image = flops / batch_size
    reset_peak_rss()
    timing = time_interleaved(step, int(cfg.warmup), int(cfg.steps), probe)
    images_per_s = batch_size / timing.seconds
    return {
        "strategy": name,
        "params_trainable": sum(p.numel() for p in strategy.trainable),
        "params_held": count_parameters(detector)
        + sum(count_parameters(m) for m in strategy.modules.values()),
        "macs_conv_step": macs_conv_step,
        "train_flops_per_image": flops_per_image,
        "train_flops_per_image_torch_default": default_flops / batch_size,
        "train_images_per_s": images_per_s,
        "train_ms_per_step": timing.seconds * 1e3,
        "train_matmul_flops_per_s": timing.matmul_flops_per_s,
        "train_peak_rss_mb": peak_rss_bytes() / 2**20,
        "train_peak_fraction": flops_per_image * images_per_s / timing.matmul_flops_per_s,
        **strategy.extra,
        **{f"last_step/{k}": v for k, v in strategy.diagnostics().items()},
    }


def strategy_config(name: str, config_dir: Path = CONFIG_DIR) -> DictConfig | None:
    """``conf/strategy/<name>.yaml`` composed by Hydra (its defaults list applied), or None.

    A strategy yaml may extend another (``ilyolox_shipped`` says only how it differs from
    ``ilyolox``), so it is composed, not read as a plain file. Interpolations such as
    ``${seed}`` are left for the caller's config to resolve.
    """
    if not (config_dir / "strategy" / f"{name}.yaml").is_file():
        return None
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        composed = compose(config_name=f"strategy/{name}")
    node = composed.get("strategy")
    return node if isinstance(node, DictConfig) else None


def strategy_rows(cfg: DictConfig) -> list[tuple[str, DictConfig | None]]:
    """(name, strategy config) of every row to benchmark.

    ``strategy=<name>`` selects a config from the ``conf/strategy`` group (one row);
    ``strategies=[a,b]`` names several, each read from ``conf/strategy/<name>.yaml`` when it
    exists; with neither, one ``naive`` row.
    """
    selected = cfg.get("strategy")
    if selected is not None:
        return [(str(selected.get("name")), selected)]
    names = cfg.get("strategies")
    if not names:
        return [("naive", None)]
    if isinstance(names, str):
        names = [names]
    rows: list[tuple[str, DictConfig | None]] = []
    for name in names:
        node = strategy_config(str(name))
        if isinstance(node, DictConfig):
            # Placed in the bench config so interpolations such as ${seed} resolve.
            context = copy.deepcopy(cfg)
            with open_dict(context):
                context.strategy = node
            node = context.strategy
        rows.append((str(name), node if isinstance(node, DictConfig) else None))
    return rows
