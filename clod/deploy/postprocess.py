"""Decoding and NMS inside the graph (``postprocess=graph``): a file that outputs detections.

A device without Python gets boxes, scores and labels straight from the model. The
subgraph repeats :meth:`clod.models.head.NanoDetPlusHead.decode` with standard ONNX
operators (docs/deployment.md §5): σ of the class logits times the seen-class mask; the
distribution's expectation per side times the stride, around constant prior centres,
clipped to the input; ``NonMaxSuppression`` per class (a box is dropped when its IoU with
a kept box of its class is greater than ``nms_iou``; scores must be greater than
``score_thr``); the ``max_det`` best over all classes. It always runs in float32, after
the int8 part of an int8 model, and takes one image (batch 1), as a device does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from clod.deploy.onnx_graph import OUTPUT_NAME, export_module
from clod.models.boxes import clip_boxes, distance_to_box
from clod.models.head import NanoDetPlusHead
from clod.models.priors import make_priors


class DecodeToScores(nn.Module):
    """raw (1, N, C+4·(R+1)) → boxes (1, N, 4) in input pixels and scores (1, C, N)."""

    def __init__(
        self, head: NanoDetPlusHead, input_size: tuple[int, int], classes: Sequence[int]
    ) -> None:
        super().__init__()
        width, height = input_size
        self.size = (height, width)
        self.num_classes = head.num_classes
        self.num_bins = head.num_bins
        priors = make_priors((height, width), head.strides)
        self.register_buffer("centres", priors.centres)
        self.register_buffer("strides", priors.strides[:, None])
        self.register_buffer("bin_values", head.bin_values.detach().clone().float())
        mask = torch.zeros(head.num_classes)
        mask[list(classes)] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count = self.centres.shape[0]
        scores = raw[..., : self.num_classes].sigmoid() * self.mask
        bins = raw[..., self.num_classes :].reshape(1, count, 4, self.num_bins).softmax(dim=-1)
        distances = (bins @ self.bin_values) * self.strides
        boxes = clip_boxes(distance_to_box(self.centres, distances), *self.size)
        return boxes, scores.transpose(1, 2)


def _constant(name: str, values: Sequence[float] | Sequence[int], dtype: type) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def nms_nodes(score_thr: float, nms_iou: float, max_det: int) -> tuple[list, list]:
    """Nodes from (boxes (1,N,4), scores (1,C,N)) to the best ``max_det`` detections."""
    constants = [
        _constant("nms_max", [max_det], np.int64),
        _constant("nms_iou", [nms_iou], np.float32),
        _constant("nms_score", [score_thr], np.float32),
        _constant("axis0", [0], np.int64),
        _constant("k_max", [max_det], np.int64),
    ]
    make = helper.make_node
    nodes = [
        make("NonMaxSuppression", ["boxes", "scores", "nms_max", "nms_iou", "nms_score"], ["kept"]),
        make("GatherND", ["scores", "kept"], ["kept_scores"]),
        make("Gather", ["kept", _index(2)], ["kept_box"], axis=1),
        make("Gather", ["kept", _index(1)], ["kept_label"], axis=1),
        make("Squeeze", ["boxes", "axis0"], ["boxes0"]),
        make("Gather", ["boxes0", "kept_box"], ["kept_boxes"], axis=0),
        make("Shape", ["kept_scores"], ["kept_count"]),
        make("Min", ["kept_count", "k_max"], ["k"]),
        make("TopK", ["kept_scores", "k"], ["det_scores", "order"], axis=0, largest=1, sorted=1),
        make("Gather", ["kept_boxes", "order"], ["det_boxes"], axis=0),
        make("Gather", ["kept_label", "order"], ["det_labels"], axis=0),
    ]
    constants += [_constant(_index(i), i, np.int64) for i in (1, 2)]
    return nodes, constants


def _index(i: int) -> str:
    return f"column{i}"


def with_postprocess(
    raw_model: onnx.ModelProto,
    head: NanoDetPlusHead,
    input_size: tuple[int, int],
    classes: Sequence[int],
    score_thr: float,
    nms_iou: float,
    max_det: int,
) -> onnx.ModelProto:
    """``raw_model`` (fp32 or int8, names compacted) followed by decoding and NMS, batch 1."""
    decode = export_module(
        DecodeToScores(head, input_size, classes).eval(),
        torch.zeros(1, _num_priors(head, input_size), head.num_outputs),
        [OUTPUT_NAME],
        ["boxes", "scores"],
    )
    nodes, constants = nms_nodes(score_thr, nms_iou, max_det)
    graph = decode.graph
    graph.node.extend(nodes)
    graph.initializer.extend(constants)
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, ["k", 4]),
            helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, ["k"]),
            helper.make_tensor_value_info("det_labels", TensorProto.INT64, ["k"]),
        ]
    )
    single = onnx.ModelProto()
    single.CopyFrom(raw_model)
    for value in [*single.graph.input, *single.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 1
    # names cannot clash: the raw model is compacted (hex names), the decoder's are not hex
    merged = onnx.compose.merge_models(single, decode, io_map=[(OUTPUT_NAME, OUTPUT_NAME)])
    onnx.checker.check_model(merged)
    return merged


def _num_priors(head: NanoDetPlusHead, input_size: tuple[int, int]) -> int:
    width, height = input_size
    return int(make_priors((height, width), head.strides).centres.shape[0])
