"""YOLOX-Nano / Tiny against spec yolox.md §1–§3: parameter and MAC pins, wiring, layout, init.

Every model is built from its shipped config (conf/model/yolox_*.yaml), so the configs are
exercised too.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from clod.metrics.flops import forward_flops
from clod.models.yolox import DWConv, YOLOXHead
from clod.models.yolox.blocks import BaseConv, Bottleneck
from clod.models.yolox.head import PRIOR_BIAS
from tests.models.helpers import build_model, parameter_count

# (config, total at C=80, total at C=20, backbone, neck, head at C=80) — spec §3.
TOTALS = [
    ("yolox_nano", 912_159, 900_459, 459_968, 347_424, 104_767),
    ("yolox_tiny", 5_055_855, 5_038_395, 2_372_304, 1_596_096, 1_087_455),
]

# Per-module counts of spec §3 (C = 80 for cls_preds), Nano and Tiny.
PER_MODULE = {
    "backbone.stem": (1_760, 2_640),
    "backbone.dark2": (3_680, 21_120),
    "backbone.dark3": (18_560, 130_176),
    "backbone.dark4": (69_888, 518_400),
    "backbone.dark5": (366_080, 1_699_968),
    "neck.lateral_conv0": (33_024, 74_112),
    "neck.C3_p4": (58_816, 203_904),
    "neck.reduce_conv1": (8_320, 18_624),
    "neck.C3_p3": (15_072, 51_264),
    "neck.bu_conv2": (4_928, 83_136),
    "neck.C3_n3": (42_432, 167_040),
    "neck.bu_conv1": (18_048, 332_160),
    "neck.C3_n4": (166_784, 665_856),
    "head.stems": (29_056, 65_088),
    "head.cls_convs": (29_568, 498_816),
    "head.reg_convs": (29_568, 498_816),
    "head.cls_preds": (15_600, 23_280),
    "head.reg_preds": (780, 1_164),
    "head.obj_preds": (195, 291),
}
MODULE_COUNTS = {"yolox_nano": (113, 104), "yolox_tiny": (83, 74)}  # Conv2d, BatchNorm2d
# Conv MACs and GFLOPs (upstream's thop convention) at 416×416, C = 80 — spec §3.
COST = {"yolox_nano": (0.5226e9, 1.079e9), "yolox_tiny": (3.2063e9, 6.451e9)}
NAMES = ["yolox_nano", "yolox_tiny"]


@pytest.mark.parametrize(("name", "total80", "total20", "backbone", "neck", "head"), TOTALS)
def test_parameter_totals(
    name: str, total80: int, total20: int, backbone: int, neck: int, head: int
) -> None:
    model = build_model(name, num_classes=80)
    assert parameter_count(model) == total80
    assert parameter_count(model.backbone) == backbone
    assert parameter_count(model.neck) == neck
    assert parameter_count(model.head) == head
    assert parameter_count(build_model(name, num_classes=20)) == total20


@pytest.mark.parametrize("index", [0, 1], ids=NAMES)
def test_per_module_parameter_counts(index: int) -> None:
    model = build_model(NAMES[index], num_classes=80)
    measured = {name: parameter_count(model.get_submodule(name)) for name in PER_MODULE}
    assert measured == {name: counts[index] for name, counts in PER_MODULE.items()}


@pytest.mark.parametrize("name", NAMES)
def test_conv_and_batchnorm_module_counts(name: str) -> None:
    model = build_model(name)
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert (convs, norms) == MODULE_COUNTS[name]


def test_depthwise_scope_of_nano_and_none_in_tiny() -> None:
    """Spec §2.3: downsampling convs, bottleneck 3×3s, bu_convs and head 3×3s are DWConv."""
    nano, tiny = build_model("yolox_nano"), build_model("yolox_tiny")
    assert not any(isinstance(m, DWConv) for m in tiny.modules())
    assert sum(isinstance(m, DWConv) for m in nano.modules()) == 4 + 8 + 4 + 2 + 12
    for stage in ("dark2", "dark3", "dark4", "dark5"):
        assert isinstance(nano.backbone.get_submodule(stage)[0], DWConv)
    for block in (m for m in nano.modules() if isinstance(m, Bottleneck)):
        assert isinstance(block.conv1, BaseConv) and isinstance(block.conv2, DWConv)
    assert isinstance(nano.neck.bu_conv2, DWConv) and isinstance(nano.neck.bu_conv1, DWConv)
    assert all(isinstance(stem, BaseConv) for stem in nano.head.stems)
    for branch in (*nano.head.cls_convs, *nano.head.reg_convs):
        assert len(branch) == 2 and all(isinstance(conv, DWConv) for conv in branch)
    # Focus, SPP and the lateral/reduce 1×1s stay dense.
    dark5 = nano.backbone.dark5
    assert isinstance(nano.backbone.stem.conv, BaseConv)
    assert isinstance(dark5[1].conv1, BaseConv) and isinstance(dark5[1].conv2, BaseConv)
    assert isinstance(nano.neck.lateral_conv0, BaseConv)


def test_shortcuts_backbone_csp_except_dark5_and_never_in_the_neck() -> None:
    model = build_model("yolox_nano")
    for stage, expected in (("dark2", True), ("dark3", True), ("dark4", True)):
        blocks = list(model.backbone.get_submodule(stage)[1].m)
        assert [b.use_add for b in blocks] == [expected] * (3 if stage != "dark2" else 1)
    assert [b.use_add for b in model.backbone.dark5[2].m] == [False]
    assert not any(b.use_add for b in model.neck.modules() if isinstance(b, Bottleneck))
    assert [p.kernel_size for p in model.backbone.dark5[1].m] == [5, 9, 13]


def cost_at_416(model: nn.Module) -> tuple[int, float]:
    """(conv MACs, upstream's GFLOPs) of one 416×416 forward pass.

    Upstream's figure (spec §3) is 2 × (conv MACs + one add per output of the biased pred
    convs + 2 ops per BatchNorm output element); the extra terms are counted with hooks.
    """
    extra = [0]

    def count(per_element: int):
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            extra[0] += per_element * output.numel()

        return hook

    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.register_forward_hook(count(2))
        elif isinstance(module, nn.Conv2d) and module.bias is not None:
            module.register_forward_hook(count(1))
    _, macs = forward_flops(model, torch.zeros(1, 3, 416, 416))
    return macs, 2 * (macs + extra[0])


@pytest.mark.parametrize("name", NAMES)
def test_conv_macs_and_gflops_at_416(name: str) -> None:
    macs, flops = cost_at_416(build_model(name, num_classes=80).eval())
    expected_macs, expected_flops = COST[name]
    assert macs == pytest.approx(expected_macs, rel=0.02)
    assert flops == pytest.approx(expected_flops, rel=0.005)


@pytest.mark.parametrize(("side", "priors"), [(416, 3549), (320, 2100)])
def test_output_and_tower_shapes(side: int, priors: int) -> None:
    model = build_model("yolox_nano", num_classes=20).eval()
    with torch.no_grad():
        features = model.backbone(torch.zeros(2, 3, side, side))
        pyramid = model.neck(features)
        output = model.head(pyramid)
    sizes = [side // s for s in (8, 16, 32)]
    assert [tuple(f.shape) for f in features] == [
        (2, c, n, n) for c, n in zip((64, 128, 256), sizes, strict=True)
    ]
    assert [tuple(p.shape) for p in pyramid] == [tuple(f.shape) for f in features]
    assert tuple(output.raw.shape) == (2, priors, 25)
    assert model.head.num_outputs == 25
    assert tuple(output.cls_logits.shape) == (2, priors, 20)
    assert tuple(output.box_logits.shape) == (2, priors, 4)
    assert tuple(output.obj_logits.shape) == (2, priors)
    assert [tuple(t.shape) for t in output.towers] == [(2, 64, n, n) for n in sizes] * 2


def test_non_square_input_prior_count() -> None:
    model = build_model("yolox_tiny", num_classes=3).eval()
    with torch.no_grad():
        raw = model(torch.zeros(1, 3, 64, 96)).raw
    assert raw.shape[1] == 8 * 12 + 4 * 6 + 2 * 3
    grid, strides = model.head.priors((64, 96), "cpu", torch.float32)
    assert grid.shape == (raw.shape[1], 2) and strides.shape == (raw.shape[1],)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_raw_channel_layout_is_reg_obj_cls_logits(train: bool) -> None:
    """raw = [t_x, t_y, t_w, t_h, obj, cls…] straight from the pred convs, in both modes."""
    torch.manual_seed(0)
    model = build_model("yolox_nano", num_classes=7).train(train)
    head = model.head
    with torch.no_grad():
        output = model(torch.randn(2, 3, 96, 64))
        cls_towers, reg_towers = output.towers[:3], output.towers[3:]
        rebuilt = torch.cat(
            [
                torch.cat((reg_p(reg_t), obj_p(reg_t), cls_p(cls_t)), dim=1)
                .flatten(2)
                .transpose(1, 2)
                for cls_t, reg_t, cls_p, reg_p, obj_p in zip(
                    cls_towers,
                    reg_towers,
                    head.cls_preds,
                    head.reg_preds,
                    head.obj_preds,
                    strict=True,
                )
            ],
            dim=1,
        )
    torch.testing.assert_close(output.raw, rebuilt, rtol=0, atol=0)
    raw = output.raw
    # The named parts are views of raw at the documented offsets.
    for part, expected in (
        (output.box_logits, raw[..., :4]),
        (output.obj_logits, raw[..., 4]),
        (output.cls_logits, raw[..., 5:]),
    ):
        assert part._base is raw
        assert part.data_ptr() == expected.data_ptr() and part.stride() == expected.stride()
    # Logits, not probabilities: the objectness starts near the prior bias, below 0.
    assert float(output.obj_logits.mean()) < -2


def test_towers_feed_the_predictions_and_are_computed_once() -> None:
    model = build_model("yolox_nano", num_classes=4).eval()
    calls: list[int] = []
    for branch in (*model.head.cls_convs, *model.head.reg_convs):
        branch.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        pyramid = model.neck(model.backbone(torch.randn(1, 3, 64, 64)))
        output = model.head(pyramid)
        assert len(calls) == 6
        for level in range(3):
            stem = model.head.stems[level](pyramid[level])
            torch.testing.assert_close(output.towers[level], model.head.cls_convs[level](stem))
            torch.testing.assert_close(output.towers[3 + level], model.head.reg_convs[level](stem))


@pytest.mark.parametrize("name", NAMES)
def test_init_batchnorm_settings_and_prior_biases(name: str) -> None:
    model = build_model(name)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-3 and m.momentum == 0.03 for m in norms)
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)
    head = model.head
    assert pytest.approx(-4.59512, abs=1e-5) == PRIOR_BIAS
    assert pytest.approx(-math.log(99), abs=1e-12) == PRIOR_BIAS
    for conv in (*head.cls_preds, *head.obj_preds):
        assert torch.all(conv.bias == PRIOR_BIAS)
    # Everything else is PyTorch's default: kaiming-uniform(a=√5), i.e. U(±1/√fan_in).
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
        fan_in = conv.weight[0].numel()
        assert float(conv.weight.abs().max()) <= 1 / math.sqrt(fan_in) + 1e-7
    for conv in head.reg_preds:
        assert float(conv.bias.abs().max()) <= 1 / math.sqrt(conv.in_channels)


def test_focus_slice_order() -> None:
    """Channels of the stem conv's input: (even, even), (odd row, even col), (even row, odd
    col), (odd, odd) phases, each with the three image channels (spec §1, §8.8)."""
    stem = build_model("yolox_nano").backbone.stem
    rows = torch.arange(8)[:, None] % 2
    cols = torch.arange(8)[None, :] % 2
    phase = 1 + rows + 2 * cols  # 1: (even, even), 2: (odd, even), 3: (even, odd), 4: (odd, odd)
    image = (100 * torch.arange(3)[:, None, None] + phase).float()[None]
    seen: list[torch.Tensor] = []
    stem.conv.conv.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.no_grad():
        stem(image)
    (focused,) = seen
    assert tuple(focused.shape) == (1, 12, 4, 4)
    for block in range(4):
        for channel in range(3):
            assert torch.all(focused[0, 3 * block + channel] == 100 * channel + block + 1)


NECK_MODULES = (
    "lateral_conv0", "C3_p4", "reduce_conv1", "C3_p3", "bu_conv2", "C3_n3", "bu_conv1", "C3_n4",
)  # fmt: skip


def upsample2(x: torch.Tensor) -> torch.Tensor:
    return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


@pytest.mark.parametrize("name", NAMES)
def test_pafpn_wiring(name: str) -> None:
    """Every concat of spec §2.2, read from the modules' actual inputs and outputs."""
    torch.manual_seed(0)
    model = build_model(name).eval()
    neck = model.neck
    ins: dict[str, torch.Tensor] = {}
    outs: dict[str, torch.Tensor] = {}
    for module_name in NECK_MODULES:

        def hook(_m: nn.Module, args: tuple, out: torch.Tensor, key: str = module_name) -> None:
            ins[key], outs[key] = args[0], out

        neck.get_submodule(module_name).register_forward_hook(hook)
    with torch.no_grad():
        c3, c4, c5 = model.backbone(torch.randn(1, 3, 128, 128))
        p3, p4, p5 = neck((c3, c4, c5))
    c0 = neck.out_channels[0]
    assert neck.C3_n3.conv1.conv.in_channels == 2 * c0
    assert torch.equal(ins["lateral_conv0"], c5)
    fpn_out0, fpn_out1 = outs["lateral_conv0"], outs["reduce_conv1"]
    assert torch.equal(ins["C3_p4"], torch.cat((upsample2(fpn_out0), c4), 1))
    assert torch.equal(ins["reduce_conv1"], outs["C3_p4"])
    assert torch.equal(ins["C3_p3"], torch.cat((upsample2(fpn_out1), c3), 1))
    assert torch.equal(ins["bu_conv2"], p3) and torch.equal(outs["C3_p3"], p3)
    assert torch.equal(ins["C3_n3"], torch.cat((outs["bu_conv2"], fpn_out1), 1))
    assert torch.equal(ins["bu_conv1"], p4) and torch.equal(outs["C3_n3"], p4)
    assert torch.equal(ins["C3_n4"], torch.cat((outs["bu_conv1"], fpn_out0), 1))
    assert torch.equal(outs["C3_n4"], p5)


def test_grid_decode_and_encode() -> None:
    head = build_model("yolox_nano").head
    grid, strides = head.priors((64, 96), "cpu", torch.float64)
    # Level 8: 8 rows × 12 columns, row-major, integer cells (no +0.5).
    assert grid[:13].tolist() == [[float(x), 0.0] for x in range(12)] + [[0.0, 1.0]]
    assert grid[95].tolist() == [11.0, 7.0] and strides[95] == 8 and strides[96] == 16
    assert grid[96 + 24].tolist() == [0.0, 0.0] and strides[-1] == 32
    zeros = torch.zeros(len(strides), 4, dtype=torch.float64)
    # t = 0: a stride-sized box centred on the cell's corner (x·s, y·s).
    assert head.decode_boxes(zeros, grid, strides)[13].tolist() == [4.0, 4.0, 12.0, 12.0]
    half = zeros.clone()
    half[:, :2] = 0.5  # t = 0.5 is the cell centre
    assert head.decode_boxes(half, grid, strides)[1].tolist() == [8.0, 0.0, 16.0, 8.0]
    generator = torch.Generator().manual_seed(0)
    centres = torch.rand(3, len(strides), 2, generator=generator, dtype=torch.float64) * 96
    sizes = torch.rand(3, len(strides), 2, generator=generator, dtype=torch.float64) * 80 + 1
    boxes = torch.cat((centres - sizes / 2, centres + sizes / 2), dim=-1)
    encoded = head.encode_boxes(boxes, grid, strides)
    torch.testing.assert_close(head.decode_boxes(encoded, grid, strides), boxes, atol=1e-6, rtol=0)
    # The L1 target of spec §4.4, literally.
    s = strides[:, None]
    expected = torch.cat((centres / s - grid, torch.log(sizes / s + 1e-8)), dim=-1)
    torch.testing.assert_close(encoded, expected)


def test_grow_keeps_old_outputs_and_starts_new_classes_at_the_prior() -> None:
    torch.manual_seed(0)
    model = build_model("yolox_nano", num_classes=5).eval()
    twin = copy.deepcopy(model)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(images).raw
        rng_state = torch.random.get_rng_state()
        model.head.grow(9, generator=torch.Generator().manual_seed(1))
        assert torch.equal(torch.random.get_rng_state(), rng_state)  # global RNG untouched
        output = model(images)
    after = output.raw
    assert model.num_classes == 9 and after.shape[-1] == 5 + 9
    torch.testing.assert_close(after[..., :10], before, rtol=0, atol=0)
    bound = 1 / math.sqrt(64)
    for conv in model.head.cls_preds:
        assert conv.out_channels == 9
        assert torch.all(conv.bias[5:] == PRIOR_BIAS)
        fresh = conv.weight[5:].detach()
        assert float(fresh.abs().max()) <= bound and float(fresh.std()) > bound / 4
    # New classes start near σ = 0.01 like freshly built ones.
    assert float(output.cls_logits[..., 5:].sigmoid().mean()) < 0.05
    # Deterministic given the generator; a different seed gives different rows.
    same, other = copy.deepcopy(twin), twin
    same.head.grow(9, generator=torch.Generator().manual_seed(1))
    other.head.grow(9, generator=torch.Generator().manual_seed(2))
    for grown, again, different in zip(
        model.head.cls_preds, same.head.cls_preds, other.head.cls_preds, strict=True
    ):
        assert torch.equal(grown.weight, again.weight) and torch.equal(grown.bias, again.bias)
        assert not torch.equal(grown.weight, different.weight)
    model.head.grow(9)  # no-op at equal size
    with pytest.raises(ValueError, match="shrink"):
        model.head.grow(4)


def test_head_options_are_validated() -> None:
    head = YOLOXHead(3, 0.25, depthwise=True, l1_loss=True)
    assert head.assigner_cfg == {"version": "legacy"} and head.l1_loss is True
    assert YOLOXHead(3, 0.25, assigner={"version": "current"}).assigner_cfg["version"] == "current"
    with pytest.raises(ValueError, match="version"):
        YOLOXHead(3, 0.25, assigner={"version": "v2"})
    with pytest.raises(ValueError, match="unknown assigner options"):
        YOLOXHead(3, 0.25, assigner={"radius": 2.5})
    model = build_model("yolox_tiny")
    assert model.head.assigner_cfg == {"version": "legacy"} and model.head.l1_loss is False


def test_fused_and_channels_last_give_the_same_outputs() -> None:
    """BaseConv is a ConvModule, so Detector.fused() folds every YOLOX BatchNorm."""
    torch.manual_seed(0)
    model = build_model("yolox_nano", num_classes=3).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):  # non-trivial statistics
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(images).raw
        fused = model.fused()
        assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
        torch.testing.assert_close(fused(images).raw, reference, rtol=1e-4, atol=1e-4)
        last = copy.deepcopy(model).to(memory_format=torch.channels_last)
        last_raw = last(images.to(memory_format=torch.channels_last)).raw
        torch.testing.assert_close(last_raw, reference, rtol=1e-4, atol=1e-4)
