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
