"""`python -m clod.bench`: FLOP accounting and the JSON it prints."""

from __future__ import annotations

import json

import pytest
import torch

from clod import bench
from clod.benchmarking.inputs import rendered_batch
from clod.benchmarking.onnx_inference import wants_onnx_inference
from clod.errors import ConfigError
from clod.models.detector import build_detector
from clod.models.runtime import keep_freed_memory, physical_core_count
from clod.utils.io import save_torch


def test_conv_backward_flops_are_group_aware() -> None:
    # Depthwise 3×3 on 4 channels of 8×8, batch 2, padding 1: 2·4·64·9 = 4,608 MACs forward.
    conv = torch.nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    counter = bench.flop_counter()
    with counter:
        conv(x).sum().backward()
    forward = 2 * 4_608
    # Input gradient and weight gradient each cost one forward pass.
    assert counter.get_total_flops() == forward * 3
    # Without an input gradient (e.g. the stem on images) only the weight gradient remains.
    counter = bench.flop_counter()
    with counter:
        conv(x.detach()).sum().backward()
    assert counter.get_total_flops() == forward * 2


def test_dense_conv_backward_agrees_with_torch_default() -> None:
    conv = torch.nn.Conv2d(3, 5, 3, padding=1, bias=False)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    ours, default = bench.train_step_flops(lambda: conv(x).sum().backward())
    assert ours == default == 3 * 2 * (2 * 5 * 3 * 9 * 36)


def test_bench_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    result = bench.main(
        [
            "model=nanodet_tiny",
            "batch_size=2",
            "input_size=[64,96]",
            "num_classes=3",
            "warmup=1",
            "steps=2",
            "matmul_size=128",
            "threads=1",
            "keep_freed_memory=false",
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed == result
    assert result["model"] == "nanodet_tiny"
    assert result["input_size"] == [64, 96] and result["num_classes"] == 3
    params = result["params"]
    assert params["total"] == params["backbone"] + params["neck"] + params["head"]
    assert params["trainable"] == params["total"]
    assert params["backbone"] == 143_136  # ShuffleNetV2 0.5x
    (row,) = result["rows"]
    assert row["strategy"] == "naive" and row["params_held"] == params["total"]
    # Training counts forward + both gradients of every conv except the stem's input
    # gradient, so it is just under 3× the forward FLOPs; torch's default is far above.
    assert 2.5 < row["train_flops_per_image"] / result["flops_forward_per_image"] < 3.0
    assert row["train_flops_per_image_torch_default"] > row["train_flops_per_image"]
    expected_fraction = (
        row["train_flops_per_image"] * row["train_images_per_s"] / row["train_matmul_flops_per_s"]
    )
    assert row["train_peak_fraction"] == pytest.approx(expected_fraction, rel=1e-3)
    assert result["infer_peak_fraction"] == pytest.approx(
        result["flops_forward_per_image"]
        * result["infer_images_per_s"]
        / result["infer_matmul_flops_per_s"],
        rel=1e-3,
    )
    assert result["train_peak_fraction"] == row["train_peak_fraction"]
    # the exported graph in onnxruntime, against the same reference (on by default on the CPU)
    assert result["onnx_infer_images_per_s"] > 0 and result["onnx_export_s"] > 0
    assert result["onnx_infer_peak_fraction"] == pytest.approx(
        result["flops_forward_per_image"]
        * result["onnx_infer_images_per_s"]
        / result["onnx_infer_matmul_flops_per_s"],
        rel=1e-3,
    )
    assert result["peak_rss_mb"] > 0 and result["matmul_flops_per_s"] > 0


def test_onnx_inference_choice() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert wants_onnx_inference("auto", cpu) and not wants_onnx_inference("auto", cuda)
    assert wants_onnx_inference(True, cpu) and not wants_onnx_inference(False, cpu)
    with pytest.raises(ConfigError, match="needs hardware=cpu"):
        wants_onnx_inference(True, cuda)
    with pytest.raises(ConfigError, match="onnx_inference must be auto, true or false"):
        wants_onnx_inference("maybe", cpu)
    result = bench.main(
        ["model=nanodet_tiny", "batch_size=2", "input_size=[64,64]", "num_classes=2",
         "warmup=0", "steps=1", "matmul_size=64", "threads=1", "onnx_inference=false"]
    )  # fmt: skip
    assert not any(key.startswith("onnx_") for key in result)


def test_strategy_selection() -> None:
    assert bench.strategy_rows(bench.load_config([])) == [("naive", None)]
    (row,) = bench.strategy_rows(bench.load_config(["strategy=naive"]))
    assert row[0] == "naive" and row[1] is not None and row[1].name == "naive"
    rows = bench.strategy_rows(bench.load_config(["strategies=[naive,made_up]"]))
    assert [name for name, _ in rows] == ["naive", "made_up"]
    cfg = bench.load_config(["model=nanodet_tiny"])
    with pytest.raises(KeyError, match="made_up"):
        bench.bench_strategy("made_up", None, None, None, cfg, None)  # type: ignore[arg-type]


def test_runtime_helpers() -> None:
    assert 1 <= physical_core_count() <= (torch.get_num_threads() + 64)
    assert isinstance(keep_freed_memory(), bool)


def test_rendered_images_and_trained_weights_feed_the_strategy_rows(tmp_path) -> None:
    batch = rendered_batch(3, 96, 64, num_classes=5)
    assert batch.images.shape == (3, 3, 96, 64)
    for boxes, labels in zip(batch.boxes, batch.labels, strict=True):
        assert len(boxes) == len(labels) and bool((labels < 5).all())
        assert bool((boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 96).all())
    assert sum(len(lab) for lab in batch.labels) > 0  # real objects, with their boxes

    cfg = bench.load_config(["model=nanodet_tiny", "num_classes=5"])
    weights = tmp_path / "detector.pt"
    torch.manual_seed(3)
    trained = build_detector(cfg.model)
    save_torch(weights, trained.state_dict())
    common = ["model=nanodet_tiny", "num_classes=5", "batch_size=2", "input_size=[64,64]",
              "warmup=0", "steps=1", "matmul_size=64", "threads=1"]  # fmt: skip
    result = bench.main(
        [*common, "images=synthetic", f"weights={weights}", "strategies=[erd,pseudo_label]"]
    )
    assert result["images"] == "synthetic" and result["weights"] == str(weights)
    assert [row["strategy"] for row in result["rows"]] == ["erd", "pseudo_label"]
    assert all(row["params_teacher"] == result["params"]["total"] for row in result["rows"])
    # each row says how much selection work its timed steps did
    assert "last_step/erd_reg_kept_per_image" in result["rows"][0]
    assert "last_step/pseudo_per_image" in result["rows"][1]
    with pytest.raises(ConfigError, match="images must be one of"):
        bench.main([*common, "images=noise"])
