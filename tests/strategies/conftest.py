"""Builders for the strategy tests: tiny detectors, tasks, modules, batches and image records."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from clod.bench import synthetic_batch
from clod.benchmarking.rows import strategy_config
from clod.data.tasks import Task
from clod.data.types import Batch, ImageRecord
from clod.engine.module import CLODModule
from clod.models.detector import Detector, build_detector
from clod.models.head import NanoDetPlusHead
from clod.models.outputs import HeadOutput
from clod.models.targets import pad_targets
from clod.strategies.base import Step, Strategy

CONF = Path(__file__).resolve().parents[2] / "conf"
NUM_CLASSES = 4
OPTIMIZER = {"optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-2}}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: these models are tiny, and on a busy shared machine two threads
    that wait for each other in every parallel region make the tests many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build_model(name: str = "nanodet_tiny", num_classes: int = NUM_CLASSES) -> Detector:
    cfg = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    cfg.num_classes = num_classes
    return build_detector(cfg)


def build_strategy(name: str, **overrides: Any) -> Strategy:
    """``conf/strategy/<name>.yaml`` as Hydra composes it, with ``overrides`` (``seed`` 0)."""
    cfg = strategy_config(name, CONF)
    assert cfg is not None, f"no conf/strategy/{name}.yaml"
    root = OmegaConf.create({"seed": 0, "strategy": cfg})
    root.strategy.merge_with(overrides)
    return instantiate(root.strategy)


def make_task(
    index: int,
    new: Sequence[int],
    num_classes: int = NUM_CLASSES,
    train: Sequence[ImageRecord] = (),
    num_tasks: int = 3,
) -> Task:
    seen = tuple(range(max(new) + 1))
    return Task(
        index=index,
        num_tasks=num_tasks,
        new=tuple(new),
        seen=seen,
        class_names=tuple(f"class_{c}" for c in range(num_classes)),
        train=tuple(train),
        eval=(),
    )


def make_module(detector: Detector, strategy: Strategy, task: Task) -> CLODModule:
    """A module at ``task`` with the strategy's task-start preparation done."""
    module = CLODModule(detector, strategy, task, OPTIMIZER, {})
    strategy.on_task_start(module, task)
    module.train()
    return module


def batch(size: int = 4, side: int = 64, num_classes: int = NUM_CLASSES, seed: int = 0) -> Batch:
    return synthetic_batch(size, side, side, num_classes, seed=seed)


def perturb_(module: torch.nn.Module, scale: float = 0.05, seed: int = 1) -> None:
    """Add noise to every parameter of ``module`` in place."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (BatchNorm running statistics included), cloned."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def image_records(
    directory: Path, prefix: str, count: int, labels: Sequence[int], side: int = 48
) -> list[ImageRecord]:
    """``count`` PNG images on disk, each with one box per label in ``labels``."""
    directory.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(count):
        path = directory / f"{prefix}{i}.png"
        pixels = np.full((side, side, 3), 30 + (7 * i) % 200, dtype=np.uint8)
        cv2.imwrite(str(path), pixels)
        n = len(labels)
        boxes = np.array(
            [[4 + 2 * k, 4 + 2 * k, side - 4 - k, side - 4 - k] for k in range(n)], np.float32
        )
        records.append(
            ImageRecord(
                image_id=f"{prefix}{i}",
                path=path,
                width=side,
                height=side,
                boxes=boxes.reshape(n, 4),
                labels=np.asarray(labels, dtype=np.int64),
                difficult=np.zeros(n, dtype=bool),
            )
        )
    return records


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of generated datasets for the end-to-end runs."""
    return tmp_path_factory.mktemp("data")


# --------------------------------------------------------------------------- hand-built steps
# Mechanism tests build teacher/student outputs by hand on a tiny head: 4 classes, 8 bins,
# a 64×64 input (64 + 16 + 4 + 1 = 85 priors).
HAND_CLASSES = 4
HAND_SIDE = 64


def tiny_head() -> NanoDetPlusHead:
    return NanoDetPlusHead(HAND_CLASSES, in_channels=8, feat_channels=8, stacked_convs=1)


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def level0_prior(x: int, y: int) -> int:
    """The index of the stride-8 prior whose centre is (x, y) (8×8 priors, row-major)."""
    return (y // 8) * 8 + x // 8


def hand_step(student_raw: torch.Tensor, teacher_raw: torch.Tensor | None, images: Batch) -> Step:
    """A :class:`Step` over hand-built raw outputs (no towers) on :func:`tiny_head`."""

    def output(raw: torch.Tensor) -> HeadOutput:
        return HeadOutput.from_raw(raw, (), HAND_CLASSES)

    return Step(
        batch=images,
        features=(),
        student=output(student_raw),
        teacher=output(teacher_raw) if teacher_raw is not None else None,
        head=tiny_head(),
        input_size=(HAND_SIDE, HAND_SIDE),
        annotated=pad_targets(images.boxes, images.labels, "cpu", torch.float32),
    )
