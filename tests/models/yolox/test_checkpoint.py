"""Official YOLOX checkpoints (spec yolox.md §2.6): key mapping, strictness, class rows, safety."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from clod.errors import ClodError
from clod.models import Detector
from clod.models.weights import WeightLoadError
from clod.models.yolox import load_official_yolox, save_official_yolox
from tests.models.helpers import build_model

OFFICIAL_KEYS = (
    "backbone.backbone.stem.conv.conv.weight",
    "backbone.backbone.stem.conv.bn.running_var",
    "backbone.backbone.dark2.0.dconv.conv.weight",
    "backbone.backbone.dark3.1.m.2.conv2.dconv.bn.weight",
    "backbone.backbone.dark5.1.conv1.conv.weight",
    "backbone.backbone.dark5.1.conv2.bn.bias",
    "backbone.backbone.dark5.2.conv3.conv.weight",
    "backbone.lateral_conv0.conv.weight",
    "backbone.C3_p4.m.0.conv1.conv.weight",
    "backbone.bu_conv2.pconv.bn.running_mean",
    "backbone.C3_n4.m.0.conv2.dconv.conv.weight",
    "head.stems.2.conv.weight",
    "head.cls_convs.0.1.pconv.conv.weight",
    "head.reg_convs.1.0.dconv.bn.weight",
    "head.cls_preds.0.weight",
    "head.reg_preds.1.bias",
    "head.obj_preds.2.bias",
)


def randomise(model: Detector, seed: int) -> Detector:
    """Distinct values in every parameter and BN statistic, so a wrong mapping shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=generator) * 0.2
                tensor.copy_(values + 0.9 if "running_var" in name else values - 0.1)
    return model.eval()


def outputs(model: Detector) -> torch.Tensor:
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(images).raw


@pytest.fixture(scope="module")
def nano80(tmp_path_factory: pytest.TempPathFactory) -> tuple[Detector, Path]:
    model = randomise(build_model("yolox_nano", num_classes=80), seed=1)
    path = save_official_yolox(model, tmp_path_factory.mktemp("ckpt") / "yolox_nano.pth")
    return model, path


def official_state(path: Path) -> dict[str, torch.Tensor]:
    return dict(torch.load(path, map_location="cpu", weights_only=True)["model"])


def test_round_trip_gives_identical_outputs(nano80: tuple[Detector, Path]) -> None:
    model, path = nano80
    fresh = build_model("yolox_nano", num_classes=80).eval()
    assert not torch.equal(outputs(fresh), outputs(model))
    assert load_official_yolox(fresh, path) == []
    torch.testing.assert_close(outputs(fresh), outputs(model), rtol=0, atol=0)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_saved_keys_are_the_official_names(nano80: tuple[Detector, Path]) -> None:
    model, path = nano80
    state = official_state(path)
    assert set(OFFICIAL_KEYS) <= set(state)
    assert len(state) == len(model.state_dict())
    assert all(k.startswith(("backbone.backbone.", "backbone.", "head.")) for k in state)
    assert not any(k.startswith(("neck.", "backbone.stem", "backbone.dark")) for k in state)
    assert torch.equal(state["head.obj_preds.2.bias"], model.head.obj_preds[2].bias)
    depthwise = model.neck.C3_n4.m[0].conv2.dconv.conv.weight
    assert torch.equal(state["backbone.C3_n4.m.0.conv2.dconv.conv.weight"], depthwise)


def test_a_training_checkpoint_and_a_bare_state_dict_load(
    nano80: tuple[Detector, Path], tmp_path: Path
) -> None:
    model, path = nano80
    state = official_state(path)
    training = tmp_path / "training.pth"
    torch.save(
        {
            "start_epoch": 3,
            "model": state,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]},
            "amp": None,
        },
        training,
    )
    bare = tmp_path / "bare.pth"
    # Checkpoints from before BN tracked batches have no num_batches_tracked.
    torch.save({k: v for k, v in state.items() if "num_batches_tracked" not in k}, bare)
    for source in (training, bare):
        fresh = build_model("yolox_nano", num_classes=80).eval()
        assert load_official_yolox(fresh, source) == []
        torch.testing.assert_close(outputs(fresh), outputs(model), rtol=0, atol=0)


def test_missing_unknown_and_misshapen_keys_are_named(
    nano80: tuple[Detector, Path], tmp_path: Path
) -> None:
    _, path = nano80
    state = official_state(path)
    del state["head.obj_preds.2.bias"]
    state["head.extra_preds.0.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.pth"
    torch.save({"model": state}, broken)
    with pytest.raises(WeightLoadError) as error:
        load_official_yolox(build_model("yolox_nano", num_classes=80), broken)
    message = str(error.value)
    assert str(broken) in message
    assert "missing keys: 1 (head.obj_preds.2.bias)" in message
    assert "unknown keys: 1 (head.extra_preds.0.weight)" in message
    # A Nano checkpoint into Tiny: different modules and shapes, summarised with counts.
    with pytest.raises(WeightLoadError, match=r"missing keys: \d+ \(.*, …\)"):
        load_official_yolox(build_model("yolox_tiny", num_classes=80), path)
    state = official_state(path)
    state["backbone.lateral_conv0.conv.weight"] = torch.zeros(3, 3, 1, 1)
    torch.save({"model": state}, broken)
    with pytest.raises(WeightLoadError, match=r"shape mismatches: 1 .*lateral_conv0"):
        load_official_yolox(build_model("yolox_nano", num_classes=80), broken)


def test_an_80_class_checkpoint_keeps_the_models_own_class_rows(
    nano80: tuple[Detector, Path],
) -> None:
    model, path = nano80
    small = build_model("yolox_nano", num_classes=20).eval()
    own = {k: v.clone() for k, v in small.state_dict().items() if k.startswith("head.cls_preds")}
    notes = load_official_yolox(small, path)
    assert len(notes) == 1 and "80 classes" in notes[0] and "20" in notes[0]
    assert str(path) in notes[0]
    for key, value in small.state_dict().items():
        if key.startswith("head.cls_preds"):
            assert torch.equal(value, own[key]), key
        else:
            assert torch.equal(value, model.state_dict()[key]), key
    # Boxes and objectness now come from the checkpoint.
    torch.testing.assert_close(outputs(small)[..., :5], outputs(model)[..., :5], rtol=0, atol=0)


class _RunsCode:
    """Unpickling this object would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"head.obj_preds.0.bias": _RunsCode(marker)}}, path)
    assert not marker.exists()
    with pytest.raises(ClodError, match=r"evil\.pth is refused"):
        load_official_yolox(build_model("yolox_nano"), path)
    assert not marker.exists()
    with pytest.raises(ClodError, match="does not exist"):
        load_official_yolox(build_model("yolox_nano"), tmp_path / "absent.pth")


def test_the_model_config_loads_weights(
    nano80: tuple[Detector, Path], caplog: pytest.LogCaptureFixture
) -> None:
    model, path = nano80
    loaded = build_model("yolox_nano", num_classes=80, weights=str(path)).eval()
    torch.testing.assert_close(outputs(loaded), outputs(model), rtol=0, atol=0)
    with caplog.at_level(logging.WARNING, logger="clod.models.detector"):
        build_model("yolox_nano", num_classes=20, weights=str(path))
    assert any("80 classes" in record.getMessage() for record in caplog.records)


def test_weights_are_for_yolox_only(nano80: tuple[Detector, Path]) -> None:
    _, path = nano80
    nanodet = build_model("nanodet_tiny")
    with pytest.raises(ValueError, match="official YOLOX checkpoints only"):
        Detector(nanodet.backbone, nanodet.neck, nanodet.head, weights=str(path))
