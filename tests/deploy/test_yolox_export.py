"""``python -m clod.export`` and ``clod.evaluate model=FILE.onnx`` on a YOLOX-Nano run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.deploy.conftest import clod_command
from tests.engine.conftest import run_train

YOLOX = ("model=yolox_nano", "model.input_size=[96,96]", "hardware.threads=1")


@pytest.fixture(scope="module")
def yolox_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    run_dir = tmp_path_factory.mktemp("yolox") / "run"
    # YOLOX from scratch learns slowly: 40 epochs at 4× the default rate reach mAP50 ≈ 0.15.
    result = run_train(
        run_dir, data_dir, *YOLOX, "trainer.epochs=40", "trainer.incremental_epochs=1",
        "optimizer.optimizer.lr=0.004",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_yolox_exports_scores_and_refuses_the_graph_nms(yolox_run: Path, data_dir: Path) -> None:
    out = yolox_run.parent / "export"
    result = clod_command(
        data_dir, "clod.export", f"run={yolox_run}", "task=0", f"out={out}", "batches=1",
        "repeats=2", "calibration_images=8", "threads=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["raw_max_abs_diff"]["onnx_fp32"] < 1e-4
    accuracy = report["accuracy"]
    assert accuracy["pytorch"]["map50"] > 0.05  # the run detects something
    assert accuracy["onnx_fp32"]["map50"] == pytest.approx(accuracy["pytorch"]["map50"], abs=1e-6)
    assert accuracy["onnx_int8"]["map50"] == pytest.approx(accuracy["pytorch"]["map50"], abs=0.1)
    # The exported file is scored by clod.evaluate exactly as the export reported it.
    scored = clod_command(
        data_dir, "clod.evaluate", f"model={out / 'task_0.onnx'}", f"run={yolox_run}"
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert json.loads(scored.stdout.strip().splitlines()[-1])["map50"] == pytest.approx(
        accuracy["onnx_fp32"]["map50"], abs=1e-6
    )
    refused = clod_command(
        data_dir,
        "clod.export",
        f"run={yolox_run}",
        "task=0",
        f"out={out}_graph",
        "postprocess=graph",
    )
    assert refused.returncode == 2
    assert "postprocess=graph" in refused.stderr and "YOLOXHead" in refused.stderr


def test_keep_float_leaves_yolox_s_nine_output_convs_in_float() -> None:
    """YOLOX writes ``raw`` with three convs per level (box, objectness, classes); with
    20 classes none of them has the width of the whole output, which is how they are found
    by name, not by shape."""
    import numpy as np
    import onnx
    import torch

    from clod.deploy.onnx_graph import output_conv_paths, to_onnx
    from clod.deploy.quantize import quantize_int8
    from clod.models.detector import build_detector
    from tests.test_config import compose_train

    cfg = compose_train(["model=yolox_nano", "model.num_classes=20"])
    torch.manual_seed(0)
    detector = build_detector(cfg.model).eval()
    paths = output_conv_paths(detector)
    assert paths[:2] == ("detector.head.reg_preds.0", "detector.head.reg_preds.1")
    assert len(paths) == 9
    proto = to_onnx(detector, (64, 64))
    batches = [np.random.default_rng(0).uniform(0, 255, (2, 3, 64, 64)).astype(np.float32)]
    quantized, how = quantize_int8(proto, batches, "minmax", "output", paths)
    assert how["float_nodes"] == 9
    float_filters = {
        i.name: int(i.dims[0])
        for i in quantized.graph.initializer
        if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 4
    }
    kept = [float_filters[n.input[1]] for n in quantized.graph.node
            if n.op_type == "Conv" and n.input[1] in float_filters]  # fmt: skip
    assert sorted(kept) == [1, 1, 1, 4, 4, 4, 20, 20, 20]  # obj, box, classes at 3 levels
    with pytest.raises(ValueError, match="found 0 of the 1 output convolutions"):
        quantize_int8(proto, batches, "minmax", "output", ("detector.head.no_such_conv",))
