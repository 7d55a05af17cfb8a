"""``python -m clod.export`` and ``clod.evaluate model=`` on a real trained run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from clod.deploy.onnx_graph import output_conv_paths, to_onnx
from clod.deploy.runtime import OnnxDetector
from clod.engine.evaluation import load_run_checkpoint
from tests.deploy.conftest import clod_command


def test_export_writes_both_models_and_the_report(exported: tuple[Path, dict]) -> None:
    out, report = exported
    assert json.loads((out / "export.json").read_text()) == report
    fp32, int8 = out / "task_0.onnx", out / "task_0.int8.onnx"
    assert report["files"] == {
        "onnx_fp32": str(fp32),
        "onnx_int8": str(int8),
        "onnx_fp32_graph": str(out / "task_0.post.onnx"),
        "onnx_int8_graph": str(out / "task_0.int8.post.onnx"),
    }
    assert report["bytes"]["onnx_fp32"]["file"] == fp32.stat().st_size
    assert report["bytes"]["onnx_int8"]["file"] == int8.stat().st_size
    # int8 weights take a quarter of fp32's; scales, biases and the graph add the rest
    assert int8.stat().st_size < fp32.stat().st_size / 2.5
    assert report["raw_max_abs_diff"]["onnx_fp32"] <= 1e-4
    assert "warning" not in report
    assert set(report["images_per_s"]) == {"pytorch_nchw", "pytorch_nhwc", "onnx_fp32", "onnx_int8"}
    assert all(set(rates) == {"1", "4"} for rates in report["images_per_s"].values())
    table = (out / "export.md").read_text().splitlines()
    assert len(table) == 3 and table[2].startswith("| smoke task 0")


def test_int8_weight_bytes_are_one_byte_per_conv_weight(
    exported: tuple[Path, dict], trained_run: Path
) -> None:
    _, report = exported
    _, detector, _, _ = load_run_checkpoint(trained_run, 0)
    fused = detector.fused()
    weights = sum(m.weight.numel() for m in fused.modules() if isinstance(m, nn.Conv2d))
    assert report["bytes"]["onnx_int8"]["int8_weights"] == weights
    assert report["params"] == sum(p.numel() for p in fused.parameters())
    assert report["int8"]["calibration_images"] == 16


def test_the_files_carry_what_decoding_them_needs(exported: tuple[Path, dict]) -> None:
    out, _ = exported
    model = OnnxDetector.load(out / "task_0.int8.onnx")
    assert model.metadata["task"] == 0
    assert model.metadata["precision"] == "int8"
    assert model.metadata["classes"] == [0, 1]
    assert model.input_size == (128, 128)
    graph = onnx.load(out / "task_0.int8.onnx").graph
    # compacted: no node names, inner tensors named in hex, no shapes of inner tensors
    assert not any(n.name for n in graph.node)
    assert all(len(i.name) <= 3 for i in graph.initializer) and not graph.value_info


def evaluate(data_dir: Path, *arguments: str) -> dict:
    result = clod_command(data_dir, "clod.evaluate", *arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_evaluate_model_agrees_with_the_pytorch_evaluation(
    exported: tuple[Path, dict], trained_run: Path, data_dir: Path
) -> None:
    out, report = exported
    pytorch = evaluate(data_dir, f"run={trained_run}", "task=0")
    fp32 = evaluate(data_dir, f"model={out / 'task_0.onnx'}", f"run={trained_run}")
    # with the default data config's 2 loader workers (the smoke run has none)
    int8 = evaluate(
        data_dir, f"model={out / 'task_0.int8.onnx'}", f"run={trained_run}", "data.num_workers=2"
    )
    assert pytorch["map50"] > 0.15, (
        "the model must detect something for the comparison to mean anything"
    )
    assert fp32["classes"] == pytorch["classes"] == ["aeroplane", "bicycle"]
    # raw outputs within 1e-4 move no detection across a threshold on these images
    assert fp32["map"] == pytest.approx(pytorch["map"], abs=1e-6)
    assert fp32["map50"] == pytest.approx(pytorch["map50"], abs=1e-6)
    assert int8["map50"] == pytest.approx(pytorch["map50"], abs=0.05)
    assert int8["precision"] == "int8"
    # the report's numbers are the same evaluations
    assert report["accuracy"]["pytorch"]["map50"] == pytest.approx(pytorch["map50"], abs=1e-9)
    assert report["accuracy"]["onnx_int8"]["map50"] == pytest.approx(int8["map50"], abs=1e-9)


@pytest.mark.parametrize("size", [(128, 128), (192, 192), (224, 160)])
def test_the_graph_matches_pytorch_at_other_batch_sizes(
    trained_run: Path, size: tuple[int, int]
) -> None:
    """The run's size, the embedded benchmark's default 192², and a non-square input."""
    import onnxruntime as ort

    _, detector, _, _ = load_run_checkpoint(trained_run, 0)
    width, height = size
    proto = to_onnx(detector, size)
    # every shape but the batch is a constant: no Shape op keeps a dequantised copy of an
    # activation alive in the int8 model
    assert not [n for n in proto.graph.node if n.op_type == "Shape"]
    session = ort.InferenceSession(proto.SerializeToString())
    images = torch.randn(5, 3, height, width, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = detector(images).raw.numpy()
    (raw,) = session.run(None, {"images": images.numpy()})
    assert raw.shape == reference.shape
    assert np.abs(raw - reference).max() <= 1e-4


def test_keep_float_leaves_the_output_convs_in_float(trained_run: Path) -> None:
    from clod.deploy.quantize import quantize_int8

    _, detector, _, _ = load_run_checkpoint(trained_run, 0)
    proto = to_onnx(detector, (128, 128))
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((2, 3, 128, 128), dtype=np.float32) for _ in range(2)]
    quantized, how = quantize_int8(proto, batches, "minmax", "output", output_conv_paths(detector))
    assert how["float_nodes"] == len(detector.head.gfl_cls) == 4
    float_weights = {
        i.name
        for i in quantized.graph.initializer
        if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 4
    }
    convs_on_float = [
        n for n in quantized.graph.node if n.op_type == "Conv" and n.input[1] in float_weights
    ]
    assert len(convs_on_float) == 4


def test_the_graph_post_processing_finds_what_clod_decoding_finds(
    exported: tuple[Path, dict], trained_run: Path
) -> None:
    """Same detections image by image (boxes, scores, labels, order), and the same mAP."""
    from clod.data.loaders import eval_loader

    out, report = exported
    run, detector, _, _ = load_run_checkpoint(trained_run, 0)
    graph = OnnxDetector.load(out / "task_0.post.onnx")
    assert graph.postprocess == "graph"
    assert graph.metadata["eval"] == {"score_thr": 0.05, "nms_iou": 0.6, "max_det": 100}
    classes = run.classes("seen")
    mask = torch.zeros(detector.num_classes, dtype=torch.bool)
    mask[classes] = True
    records = run.test_records(classes)
    compared = 0
    for batch in eval_loader(records, {**run.cfg["data"], "num_workers": 0}):
        with torch.inference_mode():
            expected = detector.head.decode(
                detector(batch.images).raw, (128, 128), batch.warps, batch.orig_sizes,
                score_thr=0.05, nms_iou=0.6, max_det=100, class_mask=mask,
            )  # fmt: skip
        for mine, theirs in zip(
            graph.predictor(run.cfg["eval"], classes)(batch), expected, strict=True
        ):
            assert torch.equal(mine["labels"], theirs["labels"])
            torch.testing.assert_close(mine["scores"], theirs["scores"], atol=1e-5, rtol=0)
            torch.testing.assert_close(mine["boxes"], theirs["boxes"], atol=1e-3, rtol=0)
            compared += len(theirs["scores"])
    assert compared > 20, "the model must detect something for the comparison to mean anything"
    for precision in ("fp32", "int8"):
        raw, post = (
            report["accuracy"][f"onnx_{precision}"],
            report["accuracy"][f"onnx_{precision}_graph"],
        )
        assert post["map"] == pytest.approx(raw["map"], abs=1e-6)
        assert post["map50"] == pytest.approx(raw["map50"], abs=1e-6)


def test_compaction_changes_no_output(trained_run: Path) -> None:
    """Short names, no zero points or default attributes, shared constants: same numbers."""
    import onnxruntime as ort

    from clod.deploy.onnx_graph import compact
    from clod.deploy.quantize import quantize_int8

    _, detector, _, _ = load_run_checkpoint(trained_run, 0)
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((2, 3, 128, 128), dtype=np.float32) for _ in range(2)]
    quantized, _ = quantize_int8(to_onnx(detector, (128, 128)), batches)
    compacted = onnx.ModelProto()
    compacted.CopyFrom(quantized)
    compact(compacted)
    onnx.checker.check_model(compacted)
    assert len(compacted.SerializeToString()) < 0.9 * len(quantized.SerializeToString())
    assert len(compacted.graph.initializer) < len(quantized.graph.initializer)
    images = rng.standard_normal((3, 3, 128, 128), dtype=np.float32)
    outputs = [
        ort.InferenceSession(m.SerializeToString()).run(None, {"images": images})[0]
        for m in (quantized, compacted)
    ]
    np.testing.assert_array_equal(outputs[0], outputs[1])
