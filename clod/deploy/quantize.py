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


def output_conv_names(proto: onnx.ModelProto, num_outputs: int) -> list[str]:
    """Names of the head's output convolutions: 1×1 convs with ``num_outputs`` filters."""
    shapes = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    names = []
    for node in proto.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        shape = shapes.get(node.input[1], ())
        if len(shape) == 4 and shape[0] == num_outputs and shape[2:] == (1, 1):
            names.append(node.name)
    return names


def quantize_int8(
    float_model: onnx.ModelProto,
    batches: Iterable[np.ndarray],
    method: str = "minmax",
    keep_float: str = "none",
    num_outputs: int | None = None,
) -> tuple[onnx.ModelProto, dict[str, object]]:
    """The int8 QDQ model of ``float_model`` calibrated on ``batches``, and what was done.

    ``keep_float="output"`` leaves the head's output convolutions (``num_outputs`` filters)
    in float32, for models whose boxes or scores suffer from int8 there.
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
            if num_outputs is None:
                raise ValueError("keep_float='output' needs num_outputs")
            excluded = output_conv_names(onnx.load(str(prepared)), num_outputs)
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
