"""A whole ``clod.bench`` run from its config: the model's counts, the reference rates and every row."""

from __future__ import annotations

import math
import os
import statistics
from typing import Any

import torch
from omegaconf import DictConfig

from clod.benchmarking.device import autocast_dtype, bench_device
from clod.benchmarking.inputs import rendered_batch, synthetic_batch, to_memory_format
from clod.benchmarking.onnx_inference import bench_onnx_inference, wants_onnx_inference
from clod.benchmarking.rows import bench_inference, bench_strategy, strategy_rows
from clod.benchmarking.timing import MatmulProbe, onednn_conv_flops_per_second
from clod.errors import ConfigError
from clod.models.detector import build_detector
from clod.models.runtime import tune_cpu_runtime
from clod.models.weights import load_detector_state
from clod.utils.tensors import count_parameters

BATCHES = {"random": synthetic_batch, "synthetic": rendered_batch}


def _rounded(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.5g}") if abs(value) < 1e4 else round(value)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def run_benchmark(cfg: DictConfig) -> dict[str, Any]:
    """Every figure of one bench run, rounded to 5 significant digits (the printed JSON)."""
    runtime = tune_cpu_runtime(cfg.threads, keep_memory=bool(cfg.keep_freed_memory))
    device = bench_device(cfg.get("hardware"))
    torch.manual_seed(int(cfg.seed))
    detector = build_detector(cfg.model)
    if cfg.get("weights"):
        load_detector_state(detector, cfg.weights)
    detector = detector.to(device)
    if cfg.channels_last:
        detector = detector.to(memory_format=torch.channels_last)
    width, height = (int(v) for v in (cfg.input_size or cfg.model.input_size))
    images = str(cfg.get("images", "random"))
    if images not in BATCHES:
        raise ConfigError(f"images must be one of {sorted(BATCHES)}, got {images!r}")
    batch = BATCHES[images](
        int(cfg.batch_size), height, width, detector.num_classes, seed=int(cfg.seed)
    )
    batch = to_memory_format(batch.to(device), bool(cfg.channels_last))
    # On a GPU the reference runs in the dtype the convolutions run in (see MatmulProbe).
    matmul_dtype = autocast_dtype(cfg.get("hardware")) if device.type == "cuda" else None
    probe = MatmulProbe(int(cfg.matmul_size), device, matmul_dtype or torch.float32)

    # Inference first: the allocator keeps freed memory (keep_freed_memory), so a phase's
    # peak RSS includes the footprint of the phases before it.
    inference = bench_inference(detector, batch, cfg, probe)
    if wants_onnx_inference(cfg.get("onnx_inference", "auto"), device):
        inference |= bench_onnx_inference(
            detector,
            batch,
            cfg,
            probe,
            inference["flops_forward_per_image"],
            torch.get_num_threads(),
        )
    rows = [
        bench_strategy(name, strategy_cfg, detector, batch, cfg, probe)
        for name, strategy_cfg in strategy_rows(cfg)
    ]
    result: dict[str, Any] = {
        "model": cfg.get("model_name"),
        "input_size": [width, height],
        "batch_size": int(cfg.batch_size),
        "num_classes": detector.num_classes,
        "images": images,
        "weights": cfg.get("weights"),
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
            [inference["infer_peak_rss_mb"], inference.get("onnx_infer_peak_rss_mb", 0.0)]
            + [row["train_peak_rss_mb"] for row in rows]
        ),
        "rows": rows,
    }
    return _rounded(result)
