"""What a deployed model needs: bytes of its weights, and the peak memory of its activations.

A microcontroller keeps the weights in flash and the activations in SRAM. The SRAM an
inference needs is at least the largest set of tensors alive at once when the graph's
nodes run in order: a node's inputs and outputs coexist while it runs, and a tensor is
freed after its last reader (docs/deployment.md §3). Weights are constants and not
counted there.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper


def weight_bytes(proto: onnx.ModelProto) -> dict[str, int]:
    """Bytes of the model's constants, by role.

    ``int8_weights``: quantised weight tensors (int8 inputs of DequantizeLinear with more
    than one element, i.e. not zero points); ``int32_biases``; ``float``: every float
    constant (in a QDQ model mostly scales, in a float model the weights themselves);
    ``total``: all constants.
    """
    dequantized = {n.input[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    sizes: dict[str, int] = defaultdict(int)
    for initializer in proto.graph.initializer:
        array = numpy_helper.to_array(initializer)
        sizes["total"] += array.nbytes
        if array.dtype == np.int8 and array.size > 1 and initializer.name in dequantized:
            sizes["int8_weights"] += array.nbytes
        elif array.dtype == np.int32:
            sizes["int32_biases"] += array.nbytes
        elif array.dtype.kind == "f":
            sizes["float"] += array.nbytes
    return {k: int(sizes[k]) for k in ("int8_weights", "int32_biases", "float", "total")}


def _tensor_sizes(
    proto: onnx.ModelProto, batch: int, bytes_per_float: int
) -> tuple[dict[str, int], list[str]]:
    """Bytes of every graph input and node output, measured by running the graph once.

    Running it (every tensor exposed as an output, no graph optimisation) gives exact shapes
    where shape inference stops at shapes computed inside the graph (channel shuffles,
    splits). Returns the sizes and the graph's input names.
    """
    import onnxruntime as ort

    exposed = onnx.ModelProto()
    exposed.CopyFrom(proto)
    known = {v.name for v in exposed.graph.output}
    for node in exposed.graph.node:
        for name in node.output:
            if name and name not in known:
                exposed.graph.output.append(onnx.ValueInfoProto(name=name))
                known.add(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        exposed.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feeds = {}
    for value in session.get_inputs():
        dims = [d if isinstance(d, int) else batch for d in value.shape]
        feeds[value.name] = np.zeros(dims, dtype=np.float32)
    names = [o.name for o in session.get_outputs()]
    arrays = dict(zip(names, session.run(names, feeds), strict=True)) | feeds
    sizes = {
        name: array.size * (bytes_per_float if array.dtype.kind == "f" else array.itemsize)
        for name, array in arrays.items()
    }
    return sizes, list(feeds)


def peak_activation_bytes(
    float_model: onnx.ModelProto, batch: int = 1, bytes_per_float: int = 1
) -> dict[str, Any]:
    """Peak bytes of simultaneously live activations of one run of ``float_model``.


    Float activations count ``bytes_per_float`` bytes per element (1: the int8 model as a
    microcontroller runs it, where every tensor between layers is int8; 4: float32).
    Returns the peak, the node where it is reached and the input and output sizes.
    """
    proto = float_model
    sizes, inputs = _tensor_sizes(proto, batch, bytes_per_float)
    constants = {i.name for i in proto.graph.initializer}
    outputs = {v.name for v in proto.graph.output}
    last_use: dict[str, int] = {}
    for index, node in enumerate(proto.graph.node):
        for name in node.input:
            if name and name not in constants:
                last_use[name] = index
    live = set(inputs)
    live_bytes = sum(sizes[n] for n in live)
    peak, peak_node = live_bytes, ""
    for index, node in enumerate(proto.graph.node):
        produced = [n for n in node.output if n]
        live.update(produced)
        live_bytes += sum(sizes.get(n, 0) for n in produced)
        if live_bytes > peak:
            peak, peak_node = live_bytes, f"{node.op_type} {node.name}"
        for name in [*node.input, *produced]:
            if name in live and name not in outputs and last_use.get(name, -1) <= index:
                live.discard(name)
                live_bytes -= sizes.get(name, 0)
    return {
        "peak_bytes": int(peak),
        "peak_node": peak_node,
        "bytes_per_float": bytes_per_float,
        "batch": batch,
        "input_bytes": int(sum(sizes[n] for n in inputs)),
        "output_bytes": int(sum(sizes[v.name] for v in proto.graph.output)),
    }
