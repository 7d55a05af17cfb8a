"""``python -m clod.export``'s work: export a run's task model, quantise it, measure the cost.

One call writes ``task_<k>.onnx`` (fp32), ``task_<k>.int8.onnx`` and ``export.json`` /
``export.md`` into the output directory (docs/deployment.md §4): file and weight bytes,
parameters, mAP and mAP50 of PyTorch, ONNX fp32 and int8 on the same test images, the
agreement of the fp32 graph with PyTorch, images/s of the three at each batch size measured
in the same run, and the peak activation memory of one int8 inference.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clod.data.loaders import eval_loader
from clod.deploy.memory import peak_activation_bytes, weight_bytes
from clod.deploy.onnx_graph import compact, output_conv_paths, save_model, set_metadata, to_onnx
from clod.deploy.postprocess import with_postprocess
from clod.deploy.quantize import quantize_int8
from clod.deploy.runtime import OnnxDetector
from clod.deploy.table import markdown_table
from clod.engine.evaluation import LoadedCheckpoint, evaluate_detector, evaluate_predictions
from clod.errors import ConfigError
from clod.models.head import NanoDetPlusHead
from clod.models.runtime import tune_cpu_runtime
from clod.utils.io import write_json, write_text

FORMATS = ("onnx", "int8", "all")
POSTPROCESS = ("none", "graph")
# the evaluation rules a graph with post-processing bakes in (the run's ``eval`` values)
POSTPROCESS_DEFAULTS = {"score_thr": 0.05, "nms_iou": 0.6, "max_det": 100}
# The acceptance tolerance of the fp32 graph against PyTorch (raw output, absolute).
FP32_TOLERANCE = 1e-4


@dataclass
class ExportOptions:
    format: str = "all"
    postprocess: str = "none"
    calibration: str = "minmax"
    calibration_images: int = 64
    keep_float: str = "none"
    check_images: int = 16  # test images the fp32 agreement is measured on
    evaluate: bool = True
    speed_batches: Sequence[int] = field(default_factory=lambda: (1, 16))
    speed_repeats: int = 20
    threads: int | None = None  # None: the physical cores

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"format={self.format!r}: expected one of {', '.join(FORMATS)}")
        if self.postprocess not in POSTPROCESS:
            raise ConfigError(
                f"postprocess={self.postprocess!r}: expected one of {', '.join(POSTPROCESS)}"
            )
        if self.calibration_images < 1:
            raise ConfigError("calibration_images must be at least 1")


def _image_batches(records: Sequence[Any], data_cfg: Mapping[str, Any], limit: int):
    """Evaluation-transform batches of the first ``limit`` records (spread evenly)."""
    if len(records) > limit:
        picks = np.linspace(0, len(records) - 1, limit).round().astype(int)
        records = [records[i] for i in picks]
    for batch in eval_loader(records, {**data_cfg, "num_workers": 0}):
        yield batch.images.to(torch.float32).contiguous()


def raw_agreement(detector: torch.nn.Module, model: OnnxDetector, images: torch.Tensor) -> float:
    """Largest absolute difference of the raw output of PyTorch (unfused) and ``model``."""
    with torch.inference_mode():
        reference = detector(images).raw
    return float((model(images) - reference).abs().max())


def _time(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def throughput(
    runners: Mapping[str, Callable[[np.ndarray], object]],
    images: torch.Tensor,
    batches: Sequence[int],
    repeats: int,
    rounds: int = 10,
    pause_s: float = 0.05,
) -> dict[str, dict[str, float]]:
    """Median images/s of each runner at each batch size.

    The runners take turns in ``rounds`` blocks of ``repeats / rounds`` calls, so all of
    them see the same drift of a shared machine; before each block a pause lets the
    previous runtime's spinning workers go idle, so that no runtime is timed while another
    one's threads still hold the cores.
    """
    results: dict[str, dict[str, float]] = {name: {} for name in runners}
    per_block = max(1, -(-repeats // rounds))
    for batch in batches:
        picks = torch.arange(batch) % images.shape[0]
        array = images[picks].contiguous().numpy()
        calls = {name: (lambda run=run, a=array: run(a)) for name, run in runners.items()}
        for call in calls.values():  # warm-up: kernels chosen, buffers allocated
            for _ in range(3):
                call()
        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(rounds):
            for name, call in calls.items():
                time.sleep(pause_s)
                times[name].extend(_time(call) for _ in range(per_block))
        for name, samples in times.items():
            results[name][str(batch)] = batch / statistics.median(samples)
    return results


def torch_runners(fused: torch.nn.Module) -> dict[str, Callable[[np.ndarray], object]]:
    channels_last = copy.deepcopy(fused).to(memory_format=torch.channels_last)

    def plain(array: np.ndarray) -> object:
        with torch.inference_mode():
            return fused(torch.from_numpy(array)).raw

    def nhwc(array: np.ndarray) -> object:
        with torch.inference_mode():
            images = torch.from_numpy(array).contiguous(memory_format=torch.channels_last)
            return channels_last(images).raw

    return {"pytorch_nchw": plain, "pytorch_nhwc": nhwc}


def _metrics(result: Any) -> dict[str, float]:
    return {"map": float(result.map), "map50": float(result.map50)}


def export_checkpoint(
    loaded: LoadedCheckpoint, out_dir: Path, options: ExportOptions, label: str | None = None
) -> dict[str, Any]:
    """Export, quantise, evaluate and time one task checkpoint; write files and the report."""
    run, detector, checkpoint, model_cfg = loaded
    if options.postprocess == "graph" and not isinstance(detector.head, NanoDetPlusHead):
        raise ConfigError(
            f"postprocess=graph builds NanoDet-Plus's box-bin decoding into the graph; a "
            f"{type(detector.head).__name__} exports with postprocess=none (clod.evaluate "
            "decodes its raw output)"
        )
    data_cfg, eval_cfg = run.cfg["data"], run.cfg["eval"]
    width, height = (int(v) for v in data_cfg["input_size"])
    classes = run.classes("seen")
    # PyTorch's baseline as clod.bench and training run it: threads = physical cores, glibc
    # keeping freed memory (no page faults per batch; clod/models/runtime.py)
    threads = int(tune_cpu_runtime(options.threads)["threads"])
    stem = f"task_{run.task}"
    metadata = {
        "model": model_cfg,
        "task": run.task,
        "class_names": list(run.scenario.class_names),
        "classes": classes,
        "input_size": [width, height],
        "strategy": (run.cfg.get("strategy") or {}).get("name"),
        "scenario": (run.cfg.get("scenario") or {}).get("name"),
        # relative: a shared file should not carry the exporter's directory layout
        "checkpoint": str(checkpoint.relative_to(run.run_dir)),
    }
    fused = detector.fused()
    report: dict[str, Any] = {
        "run": str(run.run_dir),
        "label": label,
        "task": run.task,
        "input_size": [width, height],
        "params": sum(p.numel() for p in fused.parameters()),
        "threads": threads,
        "files": {},
        "bytes": {},
    }
    float_proto = to_onnx(detector, (width, height))
    report["peak_activation"] = {
        "int8": peak_activation_bytes(float_proto, 1, 1),
        "fp32": peak_activation_bytes(float_proto, 1, 4),
    }
    protos = {"onnx_fp32": float_proto}
    if options.format in ("int8", "all"):
        calibration = _image_batches(run.train_records(), data_cfg, options.calibration_images)
        int8_proto, how = quantize_int8(
            float_proto,
            (b.numpy() for b in calibration),
            options.calibration,
            options.keep_float,
            output_conv_paths(detector),
        )
        report["int8"] = how
        protos["onnx_int8"] = int8_proto
    if options.format == "int8":
        del protos["onnx_fp32"]
    models: dict[str, OnnxDetector] = {}
    for name, proto in protos.items():
        precision = name.split("_")[1]
        set_metadata(proto, {**metadata, "precision": precision, "postprocess": "none"})
        compact(proto)
        files = {name: (proto, f"{stem}{'.int8' if precision == 'int8' else ''}.onnx")}
        if options.postprocess == "graph":
            rules = {k: eval_cfg.get(k, d) for k, d in POSTPROCESS_DEFAULTS.items()}
            detectable = (
                classes if eval_cfg.get("restrict_to_seen", True) else range(detector.num_classes)
            )
            post = with_postprocess(proto, detector.head, (width, height), detectable, **rules)
            set_metadata(
                post, {**metadata, "precision": precision, "postprocess": "graph", "eval": rules}
            )
            compact(post)
            files[f"{name}_graph"] = (post, files[name][1].replace(".onnx", ".post.onnx"))
        for key, (written, filename) in files.items():
            path = save_model(written, out_dir / filename)
            report["files"][key] = str(path)
            report["bytes"][key] = {"file": path.stat().st_size, **weight_bytes(written)}
            models[key] = OnnxDetector.load(path, threads)

    raw_models = {k: m for k, m in models.items() if m.postprocess != "graph"}
    check_records = run.test_records(classes)
    check = next(_image_batches(check_records, data_cfg, options.check_images))
    report["raw_max_abs_diff"] = {
        name: raw_agreement(detector, model, check) for name, model in raw_models.items()
    }
    if "onnx_fp32" in models and report["raw_max_abs_diff"]["onnx_fp32"] > FP32_TOLERANCE:
        report["warning"] = (
            f"fp32 ONNX differs from PyTorch by {report['raw_max_abs_diff']['onnx_fp32']:.2e} "
            f"(> {FP32_TOLERANCE:g})"
        )
    if options.evaluate:
        accuracy = {
            "pytorch": _metrics(
                evaluate_detector(detector, check_records, classes, data_cfg, eval_cfg)
            )
        }
        for name, model in models.items():
            predict = model.predictor(eval_cfg, classes)
            accuracy[name] = _metrics(
                evaluate_predictions(
                    predict, model.head.num_classes, check_records, classes, data_cfg, eval_cfg
                )
            )
        report["accuracy"] = accuracy
        report["test_images"] = len(check_records)
    if options.speed_batches:
        runners = torch_runners(fused)
        for name, model in raw_models.items():  # sessions whose workers spin, for timing
            runners[name] = OnnxDetector.load(model.path, threads, spin=True).run
        speed = throughput(runners, check, options.speed_batches, options.speed_repeats)
        report["images_per_s"] = speed
        report["provider"] = next(iter(models.values())).provider
    write_json(out_dir / "export.json", report)
    write_text(out_dir / "export.md", markdown_table([report]) + "\n")
    return report
