"""A trained detector as an ONNX graph: BN folded, fixed input size, the head's raw output.

The graph takes the evaluation transform's tensor (``images``: B×3×H×W, normalised, H×W
the model's input size; B free) and returns ``raw`` (B×N×(C+4·(reg_max+1))), the same
tensor :class:`clod.models.head.HeadOutput` holds, so decoding and evaluation stay
clod's and an exported model is scored by the same rules as the PyTorch one
(docs/deployment.md §1). What a reader of the file needs to decode it (the model config,
the task, the class names, the seen classes) travels in the file's metadata.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx
import torch
from onnx import numpy_helper
from torch import nn

from clod.models.detector import Detector
from clod.utils.io import write_bytes

OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "raw"
METADATA_PREFIX = "clod."


class RawOutput(nn.Module):
    """The detector with the head's raw output as its only output (what the graph holds)."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.detector(images).raw


def output_conv_paths(detector: Detector) -> tuple[str, ...]:
    """The head's output convolutions as paths in :class:`RawOutput` (``detector.head.…``)."""
    return tuple(f"detector.head.{name}" for name in detector.head.output_conv_names())


def export_module(
    module: nn.Module,
    example: torch.Tensor,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
) -> onnx.ModelProto:
    """``module`` traced on ``example`` as a checked ONNX model (opset :data:`OPSET`)."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.onnx"
        with warnings.catch_warnings():
            # the TorchScript exporter is deprecated in favour of dynamo, which needs far more
            # time and packages for the same graph; the traced shapes here are all static.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes={k: dict(v) for k, v in (dynamic_axes or {}).items()} or None,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    return proto


def to_onnx(detector: Detector, input_size: tuple[int, int]) -> onnx.ModelProto:
    """The fused (BN-folded) eval-mode copy of ``detector`` as an ONNX model.

    ``input_size`` is ``(width, height)`` (the config convention); the batch is dynamic.
    """
    width, height = input_size
    return export_module(
        RawOutput(detector.fused()).eval(),
        torch.zeros(1, 3, height, width),
        [INPUT_NAME],
        [OUTPUT_NAME],
        {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
    )


def set_metadata(proto: onnx.ModelProto, metadata: Mapping[str, Any]) -> None:
    """Store ``metadata`` (JSON values) as ``clod.<key>`` metadata properties."""
    kept = [p for p in proto.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key = METADATA_PREFIX + key
        entry.value = json.dumps(value, separators=(",", ":"))


def read_metadata(custom: Mapping[str, str]) -> dict[str, Any]:
    """The ``clod.*`` entries of a model's metadata map, decoded (see :func:`set_metadata`)."""
    return {
        key[len(METADATA_PREFIX) :]: json.loads(value)
        for key, value in custom.items()
        if key.startswith(METADATA_PREFIX)
    }


def compact(proto: onnx.ModelProto) -> None:
    """Drop what running the graph does not need, and shorten every name.

    Exported names spell out module paths (``detector.backbone.stage4.3.branch2.5.weight``
    and its quantisation parameters) and, with the inferred shapes of every tensor
    (``value_info``), took a quarter of the int8 file; a device needs none of them. All-zero
    zero points of constant DequantizeLinear inputs (symmetric weights) are dropped, 0 being
    the operator's default, identical constants are stored once, and Conv attributes that
    equal their defaults go. Graph inputs and outputs keep their names.
    """
    graph = proto.graph
    del graph.value_info[:]
    constants = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if (
            node.op_type == "DequantizeLinear"
            and len(node.input) == 3
            and node.input[0] in constants
            and node.input[2] in constants
            and not numpy_helper.to_array(constants[node.input[2]]).any()
        ):
            del node.input[2]
    # One copy of identical constants (the quantiser gives a reshape, slice or concat the
    # scale and zero point of its input again, under a new name).
    first: dict[tuple, str] = {}
    alias: dict[str, str] = {}
    for initializer in graph.initializer:
        key = (
            initializer.data_type,
            tuple(initializer.dims),
            numpy_helper.to_array(initializer).tobytes(),
        )
        alias[initializer.name] = first.setdefault(key, initializer.name)
    for node in graph.node:
        node.input[:] = [alias.get(n, n) for n in node.input]
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    renamed: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in renamed:
            renamed[name] = format(len(renamed), "x")
        return renamed[name]

    for initializer in graph.initializer:
        initializer.name = short(initializer.name)
        initializer.ClearField("doc_string")
    for node in graph.node:
        node.ClearField("name")  # optional in ONNX; a device has no use for it
        node.ClearField("doc_string")
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
        if node.op_type == "Conv":
            _drop_default_conv_attributes(node)
    graph.ClearField("doc_string")
    proto.ClearField("doc_string")


def _drop_default_conv_attributes(node: onnx.NodeProto) -> None:
    """Attributes a Conv has by default (unit strides and dilations, one group, no padding)
    and ``kernel_shape``, which the operator infers from its weight."""
    kept = []
    for attribute in node.attribute:
        values = list(attribute.ints) if attribute.ints else [attribute.i]
        default = {"strides": 1, "dilations": 1, "group": 1, "pads": 0}.get(attribute.name)
        if attribute.name == "kernel_shape" or (default is not None and set(values) == {default}):
            continue
        kept.append(attribute)
    del node.attribute[:]
    node.attribute.extend(kept)


def save_model(proto: onnx.ModelProto, path: str | Path) -> Path:
    """Write ``proto`` atomically (a half-written file never carries the final name)."""
    path = Path(path)
    write_bytes(path, proto.SerializeToString())
    return path
