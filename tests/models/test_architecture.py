"""Parameter counts, conv MACs and output shapes against docs/detector.md §1, §2, §12."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from clod.models.layers import DWConvModule, GhostBottleneck
from tests.models.helpers import build_model, parameter_count

# (config, backbone, neck, head, total) at C = 20 — the table of docs/detector.md §12.
PARAMETER_TABLE = [
    ("nanodet_plus_m", 776_420, 282_048, 116_176, 1_174_644),
    ("nanodet_plus_m_0.5x", 143_136, 236_352, 116_176, 495_664),
    ("nanodet_plus_m_1.5x", 1_755_680, 503_552, 187_600, 2_446_832),
]


@pytest.mark.parametrize(("name", "backbone", "neck", "head", "total"), PARAMETER_TABLE)
def test_parameter_counts_match_the_spec_table(
    name: str, backbone: int, neck: int, head: int, total: int
) -> None:
    model = build_model(name)
    assert parameter_count(model.backbone) == backbone
    assert parameter_count(model.neck) == neck
    assert parameter_count(model.head) == head
    assert parameter_count(model) == total


def test_latent_distillation_student_is_neck_plus_head() -> None:
    model = build_model("nanodet_plus_m")
    assert parameter_count(model.neck) + parameter_count(model.head) == 398_224


def test_per_part_counts_of_the_1x_model() -> None:
    model = build_model("nanodet_plus_m")
    backbone = model.backbone
    assert parameter_count(backbone.conv1) == 696
    assert parameter_count(backbone.stage2) == 30_192
    assert parameter_count(backbone.stage3) == 244_180
    assert parameter_count(backbone.stage4) == 501_352
    assert parameter_count(backbone.stage4[0]) == 167_968
    assert all(parameter_count(unit) == 111_128 for unit in backbone.stage4[1:])
    neck = model.neck
    assert [parameter_count(m) for m in neck.reduce_layers] == [11_328, 22_464, 44_736]
    # Every head level: a 24,000-parameter tower and a 97·(C+32) output conv.
    for tower, out_conv in zip(model.head.cls_convs, model.head.gfl_cls, strict=True):
        assert parameter_count(tower) == 24_000
        assert parameter_count(out_conv) == 97 * (20 + 32)


def test_building_block_counts() -> None:
    assert parameter_count(DWConvModule(96, 96, 5)) == 2_400 + 192 + 9_216 + 192
    assert parameter_count(GhostBottleneck(192, 96, 96, 5)) == 38_880


def test_bn_running_buffers_are_not_parameters_and_number_23156() -> None:
    model = build_model("nanodet_plus_m")
    running = sum(b.numel() for name, b in model.named_buffers() if "running_" in name)
    bn_affine = sum(
        p.numel()
        for m in model.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
        for p in m.parameters()
    )
    assert running == 23_156
    assert bn_affine == 23_156


def test_80_class_counts() -> None:
    model = build_model("nanodet_plus_m", num_classes=80)
    assert parameter_count(model.head) == 139_456
    assert parameter_count(model) == 1_197_924
    assert parameter_count(build_model("nanodet_plus_m_1.5x", num_classes=80)) == 2_477_792


def conv_macs(module: torch.nn.Module, *inputs: object) -> tuple[float, object]:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = module(*inputs)
    flops = sum(
        v for op, v in counter.get_flop_counts()["Global"].items() if "convolution" in str(op)
    )
    return flops / 2, out


# (config, side, backbone, neck, head, total) conv MACs in millions — docs/detector.md §12.
MAC_TABLE = [
    ("nanodet_plus_m", 320, 246.13, 132.37, 59.98, 438.47),
    ("nanodet_plus_m_0.5x", 320, 60.85, 114.09, 59.98, 234.92),
    ("nanodet_plus_m_1.5x", 320, 529.41, 236.09, 97.38, 862.88),
    ("nanodet_plus_m", 416, 415.95, 223.86, 101.55, 741.37),
]


@pytest.mark.parametrize(("name", "side", "backbone", "neck", "head", "total"), MAC_TABLE)
def test_conv_macs_within_two_percent_of_the_spec(
    name: str, side: int, backbone: float, neck: float, head: float, total: float
) -> None:
    model = build_model(name).eval()
    images = torch.zeros(1, 3, side, side)
    backbone_macs, features = conv_macs(model.backbone, images)
    neck_macs, pyramid = conv_macs(model.neck, features)
    head_macs, _ = conv_macs(model.head, pyramid)
    measured = (backbone_macs, neck_macs, head_macs, backbone_macs + neck_macs + head_macs)
    for got, expected in zip(measured, (backbone, neck, head, total), strict=True):
        assert got / 1e6 == pytest.approx(expected, rel=0.02)


def test_data_flow_shapes_at_320() -> None:
    model = build_model("nanodet_plus_m", num_classes=20).eval()
    images = torch.randn(2, 3, 320, 320)
    with torch.no_grad():
        c3, c4, c5 = model.backbone(images)
        pyramid = model.neck((c3, c4, c5))
        output = model.head(pyramid)
    assert [tuple(c.shape) for c in (c3, c4, c5)] == [
        (2, 116, 40, 40),
        (2, 232, 20, 20),
        (2, 464, 10, 10),
    ]
    assert [tuple(p.shape) for p in pyramid] == [
        (2, 96, 40, 40),
        (2, 96, 20, 20),
        (2, 96, 10, 10),
        (2, 96, 5, 5),
    ]
    assert tuple(output.raw.shape) == (2, 2125, 20 + 32)
    assert [tuple(t.shape) for t in output.towers] == [tuple(p.shape) for p in pyramid]


def test_prior_count_at_416_and_non_square_inputs() -> None:
    model = build_model("nanodet_plus_m_0.5x", num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 416, 416)).raw.shape[1] == 3598
        # 320×256 (an all-landscape batch): Σ ⌈H/s⌉·⌈W/s⌉ = 1280 + 320 + 80 + 20.
        assert model(torch.zeros(1, 3, 256, 320)).raw.shape[1] == 1700


def test_towers_are_computed_once_and_feed_the_output() -> None:
    """The exposed tower maps are exactly what the output convs consume."""
    model = build_model("nanodet_tiny", num_classes=4).eval()
    calls = []
    for tower in model.head.cls_convs:
        tower.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        pyramid = model.neck(model.backbone(torch.randn(1, 3, 128, 128)))
        output = model.head(pyramid)
        assert len(calls) == 4
        for level, tower in enumerate(model.head.cls_convs):
            torch.testing.assert_close(output.towers[level], tower(pyramid[level]))
        rebuilt = torch.cat(
            [
                conv(t).flatten(2).transpose(1, 2)
                for conv, t in zip(model.head.gfl_cls, output.towers, strict=True)
            ],
            dim=1,
        )
    torch.testing.assert_close(rebuilt, output.raw)
