"""Loading torchvision-layout ImageNet ShuffleNetV2 weights and clod checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clod.models.backbone import ShuffleNetV2
from clod.models.weights import WeightLoadError, load_detector_state, load_imagenet_backbone
from tests.models.helpers import build_model

UNITS = {"stage2": 4, "stage3": 8, "stage4": 4}
CONV_PARAMS = ("weight",)
BN_ENTRIES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_layout_keys() -> list[str]:
    """ShuffleNetV2 keys written out from torchvision's module layout (docs/detector.md §3)."""
    keys = [f"conv1.0.{p}" for p in CONV_PARAMS] + [f"conv1.1.{p}" for p in BN_ENTRIES]
    for stage, units in UNITS.items():
        for unit in range(units):
            layout = {"branch2": {0: "conv", 1: "bn", 3: "conv", 4: "bn", 5: "conv", 6: "bn"}}
            if unit == 0:
                layout["branch1"] = {0: "conv", 1: "bn", 2: "conv", 3: "bn"}
            for branch, layers in layout.items():
                for index, kind in layers.items():
                    entries = CONV_PARAMS if kind == "conv" else BN_ENTRIES
                    keys += [f"{stage}.{unit}.{branch}.{index}.{p}" for p in entries]
    return keys


def imagenet_checkpoint(backbone: ShuffleNetV2, seed: int) -> dict[str, torch.Tensor]:
    """A checkpoint as torchvision publishes it: our tensors under torchvision's names
    (with fresh values) plus the conv5/fc classifier that clod does not build."""
    gen = torch.Generator().manual_seed(seed)
    state = {
        key: torch.randn(value.shape, generator=gen) if value.is_floating_point() else value.clone()
        for key, value in backbone.state_dict().items()
    }
    last = backbone.out_channels[-1]
    state["conv5.0.weight"] = torch.randn(1024, last, 1, 1, generator=gen)
    for entry in ("weight", "bias", "running_mean", "running_var"):
        state[f"conv5.1.{entry}"] = torch.randn(1024, generator=gen)
    state["fc.weight"] = torch.randn(1000, 1024, generator=gen)
    state["fc.bias"] = torch.randn(1000, generator=gen)
    return state


@pytest.mark.parametrize("width", ["0.5x", "1.0x", "1.5x", "2.0x"])
def test_module_names_follow_the_torchvision_layout(width: str) -> None:
    assert sorted(ShuffleNetV2(width).state_dict()) == sorted(torchvision_layout_keys())


def test_torchvision_checkpoint_loads_leaving_only_conv5_and_fc(tmp_path: Path) -> None:
    backbone = ShuffleNetV2("1.0x")
    state = imagenet_checkpoint(backbone, seed=0)
    path = tmp_path / "shufflenetv2_x1.pth"
    torch.save(state, path)
    dropped = load_imagenet_backbone(backbone, path)
    assert dropped == sorted(k for k in state if k.startswith(("conv5.", "fc.")))
    for key, value in backbone.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_missing_num_batches_tracked_is_tolerated() -> None:
    backbone = ShuffleNetV2("0.5x")
    state = {
        k: v for k, v in imagenet_checkpoint(backbone, seed=1).items() if "num_batches" not in k
    }
    load_imagenet_backbone(backbone, state)
    torch.testing.assert_close(backbone.conv1[0].weight, state["conv1.0.weight"])


def test_unexpected_and_missing_keys_fail_loudly_by_name() -> None:
    backbone = ShuffleNetV2("0.5x")
    state = imagenet_checkpoint(backbone, seed=2)
    state["stage2.0.branch3.0.weight"] = torch.zeros(1)
    with pytest.raises(WeightLoadError, match=r"stage2\.0\.branch3\.0\.weight"):
        load_imagenet_backbone(backbone, state)
    state = imagenet_checkpoint(backbone, seed=2)
    del state["stage3.5.branch2.3.weight"]
    with pytest.raises(WeightLoadError, match=r"missing keys: stage3\.5\.branch2\.3\.weight"):
        load_imagenet_backbone(backbone, state)


def test_wrong_width_checkpoint_reports_shape_mismatch() -> None:
    state = imagenet_checkpoint(ShuffleNetV2("1.0x"), seed=3)
    with pytest.raises(WeightLoadError, match="shape mismatches"):
        load_imagenet_backbone(ShuffleNetV2("0.5x"), state)


def test_pretrained_path_in_the_constructor(tmp_path: Path) -> None:
    state = imagenet_checkpoint(ShuffleNetV2("0.5x"), seed=4)
    torch.save(state, tmp_path / "w.pth")
    backbone = ShuffleNetV2("0.5x", pretrained=str(tmp_path / "w.pth"))
    torch.testing.assert_close(
        backbone.stage4[3].branch2[5].weight, state["stage4.3.branch2.5.weight"]
    )


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        load_imagenet_backbone(ShuffleNetV2("0.5x"), tmp_path / "nope.pth")


def test_lightning_checkpoint_with_teacher_loads_the_student_only(tmp_path: Path) -> None:
    source = build_model("nanodet_tiny", num_classes=4)
    state = {f"model.{k}": v for k, v in source.state_dict().items()}
    state.update({f"teacher.{k}": torch.zeros_like(v) for k, v in source.state_dict().items()})
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "last.ckpt")
    target = build_model("nanodet_tiny", num_classes=4)
    skipped = load_detector_state(target, tmp_path / "last.ckpt")
    assert skipped and all(k.startswith("teacher.") for k in skipped)
    for key, value in target.state_dict().items():
        torch.testing.assert_close(value, source.state_dict()[key])


def test_checkpoint_with_fewer_classes_keeps_class_and_box_rows_apart() -> None:
    source = build_model("nanodet_tiny", num_classes=3)
    for conv in source.head.gfl_cls:
        torch.nn.init.normal_(conv.weight)
        torch.nn.init.normal_(conv.bias)
    target = build_model("nanodet_tiny", num_classes=5)
    load_detector_state(target, source.state_dict())
    for old, new in zip(source.head.gfl_cls, target.head.gfl_cls, strict=True):
        torch.testing.assert_close(new.weight[:3], old.weight[:3])
        torch.testing.assert_close(new.weight[5:], old.weight[3:])
        torch.testing.assert_close(new.bias[5:], old.bias[3:])
        assert torch.all(new.bias[3:5] == -4.595)


def test_detector_checkpoint_with_a_stray_key_fails() -> None:
    model = build_model("nanodet_tiny", num_classes=4)
    state = dict(model.state_dict())
    state["neck.surprise"] = torch.zeros(1)
    with pytest.raises(WeightLoadError, match=r"neck\.surprise"):
        load_detector_state(build_model("nanodet_tiny", num_classes=4), state)
