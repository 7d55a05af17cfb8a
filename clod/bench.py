"""Model cost and speed benchmark: ``python -m clod.bench [hydra overrides]``.

Prints one JSON object on stdout with the parameter counts, forward FLOPs and conv MACs per
image, the fp32 matrix-multiply throughput of this machine, and for the inference pass and
every benchmarked strategy the median images/s, peak RSS and the achieved fraction of the
matmul throughput. Examples::

    python -m clod.bench
    python -m clod.bench model=nanodet_plus_m_1.5x batch_size=8 steps=5
    python -m clod.bench model=nanodet_tiny input_size=[128,128] threads=1

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the plain (un-fused)
model, so the numerator is the network's own work; the timed inference pass uses the
BN-folded copy (:meth:`Detector.fused`), which does the same convolutions with fewer
memory passes.

Strategies: each row comes from a factory in :data:`STRATEGY_BENCHES` that receives the
detector and returns a :class:`StrategyBench` (its trainable parameters and a function that
computes the training loss of one batch). ``strategy=null`` benchmarks ``naive``; a name or
a list of names gives one row each.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from clod.data.types import Batch
from clod.models.detector import Detector, build_detector

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
MATMUL_SIZE = 2048
OBJECTS_PER_IMAGE = 6

LossFn = Callable[[Batch], torch.Tensor]


@dataclass
class StrategyBench:
    """What one strategy contributes to the benchmark.

    loss: computes the scalar training loss of a batch (forward passes included); the bench
        runs backward and the optimiser step around it.
    trainable: the parameters its optimiser updates.
    modules: named modules it holds beyond the detector (e.g. a teacher), for the counts.
    """

    loss: LossFn
    trainable: list[nn.Parameter]
    modules: dict[str, nn.Module] | None = None


StrategyFactory = Callable[[Detector, DictConfig], StrategyBench]


def naive_bench(detector: Detector, cfg: DictConfig) -> StrategyBench:
    """Plain detection training: L_det on the batch, every parameter trainable."""

    def loss(batch: Batch) -> torch.Tensor:
        return detector.loss(batch.images, batch.boxes, batch.labels)["loss"]

    return StrategyBench(loss=loss, trainable=[p for p in detector.parameters() if p.requires_grad])


STRATEGY_BENCHES: dict[str, StrategyFactory] = {"naive": naive_bench}


# --------------------------------------------------------------------------- machine facts
def physical_core_count() -> int:
    """Physical cores available to this process (hyper-threads counted once)."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not allowed:
        return max(1, (os.cpu_count() or 2) // 2)
    cores: set[str] = set()
    for cpu in allowed:
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(siblings.read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return len(cores)


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


def median_seconds(run: Callable[[], object], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_flops_per_second(size: int = MATMUL_SIZE, repeats: int = 10) -> float:
    """Median fp32 ``size×size @ size×size`` throughput on this machine (2·n³ FLOPs each)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    out = torch.empty(size, size)
    seconds = median_seconds(lambda: torch.mm(a, b, out=out), warmup=2, repeats=repeats)
    return 2.0 * size**3 / seconds


# --------------------------------------------------------------------------- model facts
def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Parameters (BN affine included); running buffers are buffers, so not counted."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def synthetic_batch(
    batch_size: int, height: int, width: int, num_classes: int, seed: int = 0
) -> Batch:
    """Random normalised images with a few random boxes each."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, height, width, generator=generator)
    boxes, labels = [], []
    for _ in range(batch_size):
        size = torch.rand(OBJECTS_PER_IMAGE, 2, generator=generator) * 0.5 + 0.05
        size = size * torch.tensor([width, height])
        corner = torch.rand(OBJECTS_PER_IMAGE, 2, generator=generator) * (
            torch.tensor([width, height]) - size
        )
        boxes.append(torch.cat((corner, corner + size), dim=1))
        labels.append(torch.randint(num_classes, (OBJECTS_PER_IMAGE,), generator=generator))
    eye = torch.eye(3, dtype=torch.float64).expand(batch_size, 3, 3).clone()
    return Batch(
        images=images,
        boxes=boxes,
        labels=labels,
        warps=eye,
        orig_sizes=torch.tensor([[height, width]] * batch_size),
        image_ids=[f"synthetic_{i}" for i in range(batch_size)],
        indices=torch.arange(batch_size),
    )


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

    torch's default formula computes the weight gradient as a dense convolution over all
    input channels and ignores ``groups``, which overstates a depthwise conv's backward by
    a factor of its channel count (about 4× for a whole NanoDet step). Each gradient (input
    and weight) of a convolution costs exactly as many multiply-adds as its forward pass.
    """
    if transposed:
        raise NotImplementedError("transposed convolutions are not used by clod models")
    batch, _, *_unused = x_shape
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


def forward_flops(detector: Detector, images: torch.Tensor) -> tuple[int, int]:
    """(FLOPs, conv MACs) of one forward pass, counted on the un-fused model."""
    counter = flop_counter()
    with torch.no_grad(), counter:
        detector(images)
    conv_flops = sum(
        count
        for op, count in counter.get_flop_counts()["Global"].items()
        if "convolution" in str(op)
    )
    return counter.get_total_flops(), conv_flops // 2


def train_step_flops(step: Callable[[], object]) -> tuple[int, int]:
    """FLOPs of one training step (forward + backward): (group-aware, torch's default count)."""
    counter = flop_counter()
    with counter:
        step()
    default_counter = FlopCounterMode(display=False)
    with default_counter:
        step()
    return counter.get_total_flops(), default_counter.get_total_flops()


def to_memory_format(batch: Batch, channels_last: bool) -> Batch:
    if not channels_last:
        return batch
    return dataclasses.replace(
        batch, images=batch.images.contiguous(memory_format=torch.channels_last)
    )


# --------------------------------------------------------------------------- measurements
def bench_inference(
    detector: Detector, batch: Batch, cfg: DictConfig, matmul: float
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
    seconds = median_seconds(run, int(cfg.warmup), int(cfg.steps))
    images_per_s = images.shape[0] / seconds
    return {
        "flops_forward_per_image": flops,
        "macs_conv_per_image": macs,
        "infer_images_per_s": images_per_s,
        "infer_ms_per_batch": seconds * 1e3,
        "infer_peak_rss_mb": peak_rss_bytes() / 2**20,
        "infer_peak_fraction": flops * images_per_s / matmul,
    }


def bench_strategy(
    name: str, detector: Detector, batch: Batch, cfg: DictConfig, matmul: float
) -> dict[str, Any]:
    if name not in STRATEGY_BENCHES:
        raise KeyError(f"no benchmark for strategy {name!r}; known: {sorted(STRATEGY_BENCHES)}")
    detector.train()
    strategy = STRATEGY_BENCHES[name](detector, cfg)
    optimizer = torch.optim.AdamW(strategy.trainable, lr=1e-4, weight_decay=0.05)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = strategy.loss(batch)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    batch_size = batch.images.shape[0]
    flops, default_flops = train_step_flops(step)
    flops_per_image = flops / batch_size
    reset_peak_rss()
    seconds = median_seconds(step, int(cfg.warmup), int(cfg.steps))
    images_per_s = batch_size / seconds
    extra = strategy.modules or {}
    return {
        "strategy": name,
        "params_trainable": sum(p.numel() for p in strategy.trainable),
        "params_held": count_parameters(detector)
        + sum(count_parameters(m) for m in extra.values()),
        "train_flops_per_image": flops_per_image,
        # torch's own formula, which overcounts depthwise weight gradients (see above)
        "train_flops_per_image_torch_default": default_flops / batch_size,
        "train_images_per_s": images_per_s,
        "train_ms_per_step": seconds * 1e3,
        "train_peak_rss_mb": peak_rss_bytes() / 2**20,
        "train_peak_fraction": flops_per_image * images_per_s / matmul,
    }


def strategy_names(value: object) -> list[str]:
    if value is None:
        return ["naive"]
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable):
        return [str(v) for v in value]
    raise TypeError(f"strategy must be null, a name or a list of names, got {value!r}")


def run_benchmark(cfg: DictConfig) -> dict[str, Any]:
    threads = int(cfg.threads) if cfg.threads else physical_core_count()
    torch.set_num_threads(threads)
    torch.manual_seed(int(cfg.seed))
    detector = build_detector(cfg.model)
    if cfg.channels_last:
        detector = detector.to(memory_format=torch.channels_last)
    width, height = (int(v) for v in (cfg.input_size or cfg.model.input_size))
    batch = synthetic_batch(
        int(cfg.batch_size), height, width, detector.num_classes, seed=int(cfg.seed)
    )
    batch = to_memory_format(batch, bool(cfg.channels_last))
    matmul = matmul_flops_per_second(int(cfg.matmul_size))

    result: dict[str, Any] = {
        "model": cfg.get("model_name"),
        "input_size": [width, height],
        "batch_size": int(cfg.batch_size),
        "num_classes": detector.num_classes,
        "threads": threads,
        "torch": torch.__version__,
        "params": {
            "backbone": count_parameters(detector.backbone),
            "neck": count_parameters(detector.neck),
            "head": count_parameters(detector.head),
            "total": count_parameters(detector),
            "trainable": count_parameters(detector, trainable_only=True),
        },
        "matmul_flops_per_s": matmul,
    }
    rows = [
        bench_strategy(name, detector, batch, cfg, matmul) for name in strategy_names(cfg.strategy)
    ]
    result.update(bench_inference(detector, batch, cfg, matmul))
    result["rows"] = rows
    # The first row's training figures at top level, for one-strategy runs.
    for key in ("train_images_per_s", "train_flops_per_image", "train_peak_fraction"):
        result[key] = rows[0][key]
    result["peak_rss_mb"] = max(
        [result["infer_peak_rss_mb"]] + [row["train_peak_rss_mb"] for row in rows]
    )
    return {
        k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v)
        for k, v in result.items()
    }


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
