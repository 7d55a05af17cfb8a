"""Weight bytes and peak activation memory, against graphs worked out by hand."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from clod.deploy.memory import peak_activation_bytes, weight_bytes


def conv(name: str, source: str, target: str, channels_in: int, channels_out: int):
    weight = numpy_helper.from_array(
        np.ones((channels_out, channels_in, 1, 1), np.float32), f"{name}.w"
    )
    return helper.make_node("Conv", [source, weight.name], [target], name=name), weight


def test_peak_of_a_branch_that_keeps_its_input_alive() -> None:
    """x (8 ch) → a (16 ch) → b (8 ch); out = x + b. x lives until the Add.

    At 1 byte per element on 4×4 maps (16 elements per channel):
    running a: x 128 + a 256 = 384; running b: x 128 + a 256 + b 128 = 512;
    running add: x 128 + b 128 + out 128 = 384. Peak 512, at b.
    """
    nodes, weights = [], []
    for spec in (("a", "x", "a_out", 8, 16), ("b", "a_out", "b_out", 16, 8)):
        node, weight = conv(*spec)
        nodes.append(node)
        weights.append(weight)
    nodes.append(helper.make_node("Add", ["x", "b_out"], ["out"], name="add"))
    graph = helper.make_graph(
        nodes, "branch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 4, 4])],
        weights,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    peak = peak_activation_bytes(model, batch=1, bytes_per_float=1)
    assert peak["peak_bytes"] == 512
    assert peak["peak_node"] == "Conv b"
    assert peak["input_bytes"] == 128 and peak["output_bytes"] == 128
    # float32: four bytes per element, the same schedule
    assert peak_activation_bytes(model, 1, 4)["peak_bytes"] == 2048
    assert weight_bytes(model) == {
        "int8_weights": 0, "int32_biases": 0, "float": (128 + 128) * 4, "total": 1024,
    }  # fmt: skip


def test_a_chain_frees_each_tensor_after_its_reader() -> None:
    """x (4 ch) → a (4) → b (4) → c (4): never more than two maps alive (64 + 64 bytes)."""
    nodes, weights = [], []
    for name, source, target in (("a", "x", "ta"), ("b", "ta", "tb"), ("c", "tb", "y")):
        node, weight = conv(name, source, target, 4, 4)
        nodes.append(node)
        weights.append(weight)
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 4, 4])],
        weights,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    assert peak_activation_bytes(model, 1, 1)["peak_bytes"] == 128
    # the free batch dimension is set to the batch asked for: every tensor scales with it
    assert peak_activation_bytes(model, 3, 1)["peak_bytes"] == 3 * 128
