"""Static int8 post-training quantisation of an exported detector with onnxruntime.

QDQ format (QuantizeLinear/DequantizeLinear pairs around each quantised op, which
onnxruntime fuses into integer kernels and converters for microcontrollers read),
per-channel symmetric int8 weights, uint8 activations whose ranges come from running
calibration images through the float graph (docs/deployment.md §2).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from clod.deploy.onnx_graph import INPUT_NAME
from clod.errors import ConfigError

CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
    "distribution": CalibrationMethod.Distribution,
}
KEEP_FLOAT = ("none", "output")


class ImageBatches(CalibrationDataReader):
    """Feeds calibration batches (N×3×H×W float32 arrays) to the calibrator, once each."""

    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self._batches: Iterator[np.ndarray] = iter(batches)
        self.images = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        self.images += int(batch.shape[0])
        return {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}


def output_conv_names(proto: onnx.ModelProto, module_names: Sequence[str]) -> list[str]:
    """Names of the Conv nodes the exporter made from the modules ``module_names``, paths
    of the form ``detector.head.<list>.<level>`` (e.g. ``detector.head.gfl_cls.0``).

    The TorchScript exporter names a node after its module scopes, one per level, and a
    ModuleList's child is one scope named ``<list>.<level>``:
    ``/detector/head/gfl_cls.0/Conv``.
    """
    scopes = tuple("/" + name.replace(".", "/", 2) + "/" for name in module_names)
    return [
        node.name
        for node in proto.graph.node
        if node.op_type == "Conv" and node.name.startswith(scopes)
    ]


def quantize_int8(
    float_model: onnx.ModelProto,
    batches: Iterable[np.ndarray],
    method: str = "minmax",
    keep_float: str = "none",
    output_convs: Sequence[str] = (),
) -> tuple[onnx.ModelProto, dict[str, object]]:
    """The int8 QDQ model of ``float_model`` calibrated on ``batches``, and what was done.

    ``keep_float="output"`` leaves the head's output convolutions in float32 (the modules
    ``output_convs``, paths in the exported module:
    :func:`clod.deploy.onnx_graph.output_conv_paths`), for models
    whose boxes or scores suffer from int8 there.
    """
    if method not in CALIBRATION_METHODS:
        raise ConfigError(
            f"int8.calibration={method!r}: expected one of {', '.join(CALIBRATION_METHODS)}"
        )
    if keep_float not in KEEP_FLOAT:
        raise ConfigError(
            f"int8.keep_float={keep_float!r}: expected one of {', '.join(KEEP_FLOAT)}"
        )
    reader = ImageBatches(batches)
    with tempfile.TemporaryDirectory() as scratch:
        source, prepared, target = (Path(scratch) / n for n in ("f.onnx", "p.onnx", "q.onnx"))
        onnx.save(float_model, source)
        # shape inference and constant folding first, as onnxruntime recommends for QDQ
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        excluded: Sequence[str] = ()
        if keep_float == "output":
            excluded = output_conv_names(onnx.load(str(prepared)), output_convs)
            if len(excluded) != len(output_convs):
                raise ValueError(
                    f"int8.keep_float=output: found {len(excluded)} of the "
                    f"{len(output_convs)} output convolutions {list(output_convs)} in the graph"
                )
        quantize_static(
            str(prepared),
            str(target),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CALIBRATION_METHODS[method],
            nodes_to_exclude=list(excluded),
            extra_options={
                "WeightSymmetric": True,
                "ActivationSymmetric": False,
                # Biases stay float32 (as many bytes as int32): onnxruntime still fuses each
                # conv into its integer kernel, and the file does without an int32 scale and
                # zero point per channel (55 KB of NanoDet-Plus-m; same speed, measured).
                "QuantizeBias": False,
            },
        )
        quantized = onnx.load(str(target))
    if reader.images == 0:
        raise ConfigError("int8 calibration got no images: the task has no training images")
    return quantized, {
        "calibration": method,
        "calibration_images": reader.images,
        "weights": "int8, per channel, symmetric; biases float32",
        "activations": "uint8, per tensor",
        "format": "QDQ",
        "float_nodes": len(excluded),
        "keep_float": keep_float,
    }
