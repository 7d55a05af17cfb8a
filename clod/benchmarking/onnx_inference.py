"""Inference timed in onnxruntime, the runtime ``clod.export`` ships a model to.

PyTorch's eager CPU inference runs oneDNN convolutions in NHWC with every activation,
concatenation and add as its own pass over memory. onnxruntime's CPU provider rewrites the
graph into its blocked NCHWc layout with its own convolution kernels, folds LeakyReLU into
the convolution and runs x·σ(x) as one fused op (QuickGelu); on the narrow, activation-heavy
networks clod targets that is markedly faster (docs/yolox.md §10). The row times exactly
what ``clod.export`` writes, the BN-folded float32 graph
(:func:`clod.deploy.onnx_graph.to_onnx`), on the same images and against the same
interleaved matmul reference as the PyTorch row.
"""

from __future__ import annotations

import time
from typing import Any

import onnxruntime as ort
import torch
from omegaconf import DictConfig

from clod.benchmarking.timing import MatmulProbe, peak_rss_bytes, reset_peak_rss, time_interleaved
from clod.data.types import Batch
from clod.deploy.onnx_graph import INPUT_NAME, to_onnx
from clod.deploy.runtime import PROVIDER, session_options
from clod.errors import ConfigError
from clod.models.detector import Detector

CHOICES = ("auto", True, False)


def wants_onnx_inference(choice: object, device: torch.device) -> bool:
    """``onnx_inference``: auto (on the CPU only), true (the CPU, else an error) or false."""
    if choice not in CHOICES:
        raise ConfigError(f"onnx_inference must be auto, true or false, got {choice!r}")
    if choice is True and device.type != "cpu":
        raise ConfigError(
            "onnx_inference=true times onnxruntime's CPU provider; it needs hardware=cpu"
        )
    return device.type == "cpu" and choice is not False


def bench_onnx_inference(
    detector: Detector,
    batch: Batch,
    cfg: DictConfig,
    probe: MatmulProbe,
    flops_per_image: float,
    threads: int | None,
) -> dict[str, Any]:
    """The ``onnx_infer_*`` figures: images/s, ms per batch, peak RSS and peak fraction.

    Idle onnxruntime workers sleep rather than spin (``session_options(spin=False)``): a
    spinning pool would take the cores from the matmul sample taken right after each run
    and so inflate the fraction.
    """
    images = batch.images
    width, height = images.shape[-1], images.shape[-2]
    start = time.perf_counter()
    proto = to_onnx(detector, (width, height))
    session = ort.InferenceSession(
        proto.SerializeToString(), session_options(threads, spin=False), providers=[PROVIDER]
    )
    export_seconds = time.perf_counter() - start
    feed = {INPUT_NAME: images.detach().cpu().contiguous().numpy()}

    def run() -> None:
        session.run(None, feed)

    reset_peak_rss()
    timing = time_interleaved(run, int(cfg.warmup), int(cfg.steps), probe)
    images_per_s = images.shape[0] / timing.seconds
    return {
        "onnx_infer_images_per_s": images_per_s,
        "onnx_infer_ms_per_batch": timing.seconds * 1e3,
        "onnx_infer_matmul_flops_per_s": timing.matmul_flops_per_s,
        "onnx_infer_peak_rss_mb": peak_rss_bytes() / 2**20,
        "onnx_infer_peak_fraction": flops_per_image * images_per_s / timing.matmul_flops_per_s,
        "onnx_export_s": export_seconds,
        "onnxruntime": ort.__version__,
    }
