"""Model cost and speed benchmark: ``python -m clod.bench [hydra overrides]``.

Prints one JSON object on stdout: parameter counts, forward FLOPs and conv MACs per image,
the fp32 matrix-multiply throughput of this machine, and for inference and for every
benchmarked strategy the median images/s, the peak RSS and the achieved fraction of the
matmul throughput. Examples::

    python -m clod.bench
    python -m clod.bench model=nanodet_plus_m_1.5x batch_size=8 steps=5
    python -m clod.bench model=nanodet_tiny input_size=[128,128] threads=1

How the numbers are taken:

* FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the plain
  (un-fused) model, so the numerator is the network's own work. Its default formula for
  ``convolution_backward`` ignores ``groups`` and counts a depthwise weight gradient as a
  dense one (about 4× the true training FLOPs of this network); a group-aware formula
  replaces it, and torch's figure is reported as ``train_flops_per_image_torch_default``.
* Inference is timed on the BN-folded copy (:meth:`Detector.fused`), which does the same
  convolutions with fewer memory passes; it covers the network forward (the raw head
  output), not score thresholding and NMS.
* On a shared machine the speed of both the model and the matmul reference drifts from
  second to second. One matmul sample is therefore taken right before every timed step,
  and each fraction divides the median achieved FLOP/s by the median matmul FLOP/s of the
  same window.

Strategies: each row comes from a factory in :data:`STRATEGY_BENCHES` that receives the
detector and the strategy's config and returns a :class:`StrategyBench` (its trainable
parameters, any extra modules it holds, and a function computing the training loss of a
batch). Every strategy with a config is timed by :func:`module_bench`: the strategy's own
training step (``CLODModule.training_losses``, as ``clod.train`` runs it) at the second
task of a scenario that adds the last class, so its teacher, frozen parts and extra
terms are all there. ``strategy=<name>`` selects one from the ``conf/strategy`` group,
``strategies=[a,b]`` gives one row each, and with neither the row is ``naive``.
"""

from __future__ import annotations

import os

# GNU OpenMP (torch's and MKL's threads) reads this once, when torch loads it, so it is set
# before `import torch`. Idle workers spin 1,000 rounds instead of 300,000 before sleeping.
# Measured on 2 shared cores: with another process busy on one core, training runs ~1.5×
# faster (a spinning worker no longer takes CPU from the one still working); on an idle
# machine it costs 2–5 %. An explicit GOMP_SPINCOUNT in the environment wins.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

import copy
import dataclasses
import json
import math
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from clod.data.tasks import Task
from clod.data.types import Batch
from clod.models.detector import Detector, build_detector
from clod.models.runtime import tune_cpu_runtime
from clod.strategies.base import Strategy

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
OBJECTS_PER_IMAGE = 6

LossFn = Callable[[Batch], torch.Tensor]


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


# (detector, the strategy's config from conf/strategy or None) -> its benchmark step
StrategyFactory = Callable[[Detector, DictConfig | None], StrategyBench]


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
    from clod.engine.module import CLODModule

    strategy: Strategy = instantiate(strategy_cfg) if strategy_cfg is not None else Strategy()
    task = incremental_task(detector.num_classes)
    module = CLODModule(copy.deepcopy(detector), strategy, task, optimizer={}, evaluation={})
    strategy.on_task_start(module, task)
    module.train()

    def loss(batch: Batch) -> torch.Tensor:
        return module.training_losses(batch)[0]

    counts = module.parameter_counts()
    return StrategyBench(
        loss=loss,
        trainable=[p for p in module.parameters() if p.requires_grad],
        modules={"teacher": module.teacher} if module.teacher is not None else {},
        extra={"params_teacher": counts["params_teacher"]},
    )


# Strategies that need a factory of their own; any other with a config uses module_bench.
STRATEGY_BENCHES: dict[str, StrategyFactory] = {"naive": module_bench}


# --------------------------------------------------------------------------- timing
class MatmulProbe:
    """Times one fp32 ``n×n @ n×n`` product (2·n³ FLOPs) per :meth:`sample` call."""

    def __init__(self, size: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.size = size
        self.a = torch.randn(size, size, generator=generator)
        self.b = torch.randn(size, size, generator=generator)
        self.out = torch.empty(size, size)
        self.samples: list[float] = []
        for _ in range(2):  # let MKL pick its kernels and threads
            torch.mm(self.a, self.b, out=self.out)

    def sample(self) -> float:
        start = time.perf_counter()
        torch.mm(self.a, self.b, out=self.out)
        rate = 2.0 * self.size**3 / (time.perf_counter() - start)
        self.samples.append(rate)
        return rate


@dataclass
class Timing:
    seconds: float  # median time of one run
    matmul_flops_per_s: float  # median matmul rate sampled between those runs


def time_interleaved(
    run: Callable[[], object], warmup: int, repeats: int, probe: MatmulProbe
) -> Timing:
    """Median time of ``run`` after ``warmup`` calls, one matmul sample before each run."""
    for _ in range(warmup):
        run()
    times, rates = [], []
    for _ in range(max(1, repeats)):
        rates.append(probe.sample())
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return Timing(statistics.median(times), statistics.median(rates))


def onednn_conv_flops_per_second(size: int, repeats: int = 5) -> float:
    """The same n×n×n product as a 1×1 convolution (oneDNN rather than MKL's sgemm).

    Reported for context only: on some CPUs (e.g. AMD with MKL) oneDNN's GEMM is markedly
    faster than ``torch.mm``, which bounds how high the peak fractions can go.
    """
    generator = torch.Generator().manual_seed(1)
    side = max(1, math.isqrt(size))
    pixels = side * side
    x = torch.randn(1, size, side, side, generator=generator).contiguous(
        memory_format=torch.channels_last
    )
    w = torch.randn(size, size, 1, 1, generator=generator)
    F.conv2d(x, w)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        F.conv2d(x, w)
        times.append(time.perf_counter() - start)
    return 2.0 * size * size * pixels / statistics.median(times)


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """Peak resident set size since the last reset (VmHWM), else since process start."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


# --------------------------------------------------------------------------- counting
def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Parameters (BN affine included); BN running statistics are buffers, not counted."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _conv_backward_flops(
    grad_out_shape: Sequence[int],
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    _bias: object,
    _stride: object,
    _padding: object,
    _dilation: object,
    transposed: bool,
    _output_padding: object,
    _groups: int,
    output_mask: Sequence[bool],
    out_shape: object = None,
    **_: object,
) -> int:
    """Group-aware FLOPs of ``aten.convolution_backward``.

    Each gradient (input and weight) of a convolution takes exactly as many multiply-adds
    as its forward pass; torch's default formula instead multiplies the weight gradient by
    all input channels, ignoring ``groups``.
    """
    if transposed:
        raise NotImplementedError("transposed convolutions are not used by clod models")
    batch = x_shape[0]
    out_channels, in_per_group, *kernel = w_shape
    forward = (
        2 * batch * out_channels * in_per_group * math.prod(kernel) * math.prod(grad_out_shape[2:])
    )
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def flop_counter() -> FlopCounterMode:
    """A silent FlopCounterMode with the group-aware convolution-backward formula."""
    return FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flops}
    )


def conv_flops(counter: FlopCounterMode) -> int:
    """The FLOPs a counter attributed to convolutions (forward and backward)."""
    return sum(
        count
        for op, count in counter.get_flop_counts()["Global"].items()
        if "convolution" in str(op)
    )


def forward_flops(detector: nn.Module, images: torch.Tensor) -> tuple[int, int]:
    """(FLOPs, conv MACs) of one forward pass, counted on the un-fused model."""
    counter = flop_counter()
    with torch.no_grad(), counter:
        detector(images)
    return counter.get_total_flops(), conv_flops(counter) // 2


def step_conv_macs_per_image(loss: LossFn, batch: Batch) -> int:
    """Conv MACs of the forward passes of one training step, per image (``cost/macs_conv_step``).

    Counted on the whole batch (BatchNorm in train mode needs more than one value per
    channel) and divided by its size.
    """
    counter = flop_counter()
    with torch.no_grad(), counter:
        loss(batch)
    return conv_flops(counter) // 2 // batch.images.shape[0]


def train_step_flops(step: Callable[[], object]) -> tuple[int, int]:
    """FLOPs of one training step (forward + backward): (group-aware, torch's default)."""
    counter = flop_counter()
    with counter:
        step()
    default_counter = FlopCounterMode(display=False)
    with default_counter:
        step()
    return counter.get_total_flops(), default_counter.get_total_flops()


# --------------------------------------------------------------------------- inputs
def synthetic_batch(
    batch_size: int, height: int, width: int, num_classes: int, seed: int = 0
) -> Batch:
    """Random normalised images with a few random boxes each (identity warps)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, height, width, generator=generator)
    extent = torch.tensor([float(width), float(height)])
    boxes, labels = [], []
    for _ in range(batch_size):
        size = (torch.rand(OBJECTS_PER_IMAGE, 2, generator=generator) * 0.5 + 0.05) * extent
        corner = torch.rand(OBJECTS_PER_IMAGE, 2, generator=generator) * (extent - size)
        boxes.append(torch.cat((corner, corner + size), dim=1))
        labels.append(torch.randint(num_classes, (OBJECTS_PER_IMAGE,), generator=generator))
    return Batch(
        images=images,
        boxes=boxes,
        labels=labels,
        warps=torch.eye(3, dtype=torch.float64).expand(batch_size, 3, 3).clone(),
        orig_sizes=torch.tensor([[height, width]] * batch_size),
        image_ids=[f"synthetic_{i}" for i in range(batch_size)],
        indices=torch.arange(batch_size),
    )


def to_memory_format(batch: Batch, channels_last: bool) -> Batch:
    if not channels_last:
        return batch
    return dataclasses.replace(
        batch, images=batch.images.contiguous(memory_format=torch.channels_last)
    )


# --------------------------------------------------------------------------- measurements
def bench_inference(
    detector: Detector, batch: Batch, cfg: DictConfig, probe: MatmulProbe
) -> dict[str, Any]:
    detector.eval()
    flops, macs = forward_flops(detector, batch.images[:1])
    model = detector.fused() if cfg.fuse_inference else detector
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    images = batch.images

    def run() -> None:
        with torch.inference_mode():
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
    factory = STRATEGY_BENCHES.get(name)
    if factory is None and strategy_cfg is not None and "_target_" in strategy_cfg:
        factory = module_bench
    if factory is None:
        raise KeyError(
            f"no benchmark for strategy {name!r}: no conf/strategy/{name}.yaml and no factory in "
            f"STRATEGY_BENCHES ({sorted(STRATEGY_BENCHES)})"
        )
    detector.train()
    strategy = factory(detector, strategy_cfg)
    # fused=True runs AdamW as one kernel per step instead of ~10 small ops per tensor.
    optimizer = torch.optim.AdamW(strategy.trainable, lr=1e-4, weight_decay=0.05, fused=True)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        strategy.loss(batch).backward()
        optimizer.step()

    batch_size = batch.images.shape[0]
    macs_conv_step = step_conv_macs_per_image(strategy.loss, batch)
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
    }


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
        path = CONFIG_DIR / "strategy" / f"{name}.yaml"
        node = OmegaConf.load(path) if path.is_file() else None
        if isinstance(node, DictConfig):
            # Placed in the bench config so interpolations such as ${seed} resolve.
            context = copy.deepcopy(cfg)
            with open_dict(context):
                context.strategy = node
            node = context.strategy
        rows.append((str(name), node if isinstance(node, DictConfig) else None))
    return rows


def _rounded(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.5g}") if abs(value) < 1e4 else round(value)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def run_benchmark(cfg: DictConfig) -> dict[str, Any]:
    runtime = tune_cpu_runtime(cfg.threads, keep_memory=bool(cfg.keep_freed_memory))
    torch.manual_seed(int(cfg.seed))
    detector = build_detector(cfg.model)
    if cfg.channels_last:
        detector = detector.to(memory_format=torch.channels_last)
    width, height = (int(v) for v in (cfg.input_size or cfg.model.input_size))
    batch = synthetic_batch(
        int(cfg.batch_size), height, width, detector.num_classes, seed=int(cfg.seed)
    )
    batch = to_memory_format(batch, bool(cfg.channels_last))
    probe = MatmulProbe(int(cfg.matmul_size))

    # Inference first: the allocator keeps freed memory (keep_freed_memory), so a phase's
    # peak RSS includes the footprint of the phases before it.
    inference = bench_inference(detector, batch, cfg, probe)
    rows = [
        bench_strategy(name, strategy_cfg, detector, batch, cfg, probe)
        for name, strategy_cfg in strategy_rows(cfg)
    ]
    result: dict[str, Any] = {
        "model": cfg.get("model_name"),
        "input_size": [width, height],
        "batch_size": int(cfg.batch_size),
        "num_classes": detector.num_classes,
        "torch": torch.__version__,
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
        **runtime,
        "channels_last": bool(cfg.channels_last),
        "fuse_inference": bool(cfg.fuse_inference),
        "params": {
            "backbone": count_parameters(detector.backbone),
            "neck": count_parameters(detector.neck),
            "head": count_parameters(detector.head),
            "total": count_parameters(detector),
            "trainable": count_parameters(detector, trainable_only=True),
        },
        "matmul_size": probe.size,
        "matmul_flops_per_s": statistics.median(probe.samples),
        "onednn_conv1x1_flops_per_s": onednn_conv_flops_per_second(probe.size),
        **inference,
        # The first row's training figures at top level, for one-strategy runs.
        **{
            key: rows[0][key]
            for key in ("train_flops_per_image", "train_images_per_s", "train_peak_fraction")
        },
        "peak_rss_mb": max(
            [inference["infer_peak_rss_mb"]] + [row["train_peak_rss_mb"] for row in rows]
        ),
        "rows": rows,
    }
    return _rounded(result)


def load_config(overrides: Sequence[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="bench", overrides=list(overrides), return_hydra_config=True)
    model_name = OmegaConf.select(cfg, "hydra.runtime.choices.model")
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.model_name = model_name
    return cfg


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    cfg = load_config(sys.argv[1:] if argv is None else argv)
    result = run_benchmark(cfg)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
