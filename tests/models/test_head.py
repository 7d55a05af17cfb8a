"""Priors, decoding, post-processing, head growth and BN folding (docs/detector.md §5, §8, §11)."""

from __future__ import annotations

import math

import pytest
import torch

from clod.models.head import CLS_BIAS_INIT, NanoDetPlusHead, make_priors
from tests.models.helpers import build_model


def small_head(num_classes: int = 3) -> NanoDetPlusHead:
    return NanoDetPlusHead(num_classes, in_channels=8, feat_channels=8, stacked_convs=1)


def test_priors_are_level_major_row_major_without_offset() -> None:
    priors = make_priors((64, 96), (8, 16, 32, 64))
    counts = [8 * 12, 4 * 6, 2 * 3, 1 * 2]  # ⌈H/s⌉·⌈W/s⌉, 96/64 rounds up to 2
    assert priors.centres.shape == (sum(counts), 2)
    assert priors.centres[:3].tolist() == [[0.0, 0.0], [8.0, 0.0], [16.0, 0.0]]
    assert priors.centres[12].tolist() == [0.0, 8.0]  # second row of stride 8
    start = counts[0]
    assert priors.centres[start : start + 2].tolist() == [[0.0, 0.0], [16.0, 0.0]]
    assert priors.centres[-2:].tolist() == [[0.0, 0.0], [64.0, 0.0]]
    expected_strides = [
        float(s) for s, c in zip((8, 16, 32, 64), counts, strict=True) for _ in range(c)
    ]
    assert priors.strides.tolist() == expected_strides


def test_zero_logits_decode_to_three_and_a_half_strides_per_side() -> None:
    head = small_head()
    priors = make_priors((64, 64), head.strides)
    boxes = head.decode_boxes(torch.zeros(priors.centres.shape[0], 3 + 32), priors)
    reach = 3.5 * priors.strides
    expected = torch.stack(
        (
            priors.centres[:, 0] - reach,
            priors.centres[:, 1] - reach,
            priors.centres[:, 0] + reach,
            priors.centres[:, 1] + reach,
        ),
        dim=1,
    )
    torch.testing.assert_close(boxes, expected)


def test_one_hot_bins_decode_to_their_index() -> None:
    head = small_head(1)
    logits = torch.full((4, 8), -1e4)
    for side, k in enumerate((0, 7, 2, 5)):
        logits[side, k] = 0.0
    distances = head.decode_distances(logits.reshape(1, 32), torch.tensor([16.0]))
    torch.testing.assert_close(distances, torch.tensor([[0.0, 112.0, 32.0, 80.0]]))


def make_raw(num_classes: int, hot: dict[int, dict[int, float]], input_size=(64, 64)):
    """Raw output with class logits −10 except ``hot[prior][class]`` and zero box logits."""
    n = make_priors(input_size, (8, 16, 32, 64)).centres.shape[0]
    raw = torch.zeros(1, n, num_classes + 32)
    raw[..., :num_classes] = -10.0
    for prior, classes in hot.items():
        for cls, logit in classes.items():
            raw[0, prior, cls] = logit
    return raw


def test_decode_maps_back_through_the_inverse_warp_and_clips() -> None:
    head = small_head(2)
    # Prior 10 is stride 8 at (16, 8) (row 1, column 2): zero box logits give (16 ± 28, 8 ± 28).
    raw = make_raw(2, {10: {1: 3.0}})
    # original → input: scale 0.5 then shift (4, 2); the original image is 100×80 (h×w).
    warp = torch.tensor([[[0.5, 0, 4.0], [0, 0.5, 2.0], [0, 0, 1]]], dtype=torch.float64)
    (result,) = head.decode(raw, (64, 64), warps=warp, orig_sizes=torch.tensor([[100, 80]]))
    # Input box clamped to the input first: (0, 0, 44, 36); back: ((x−4)/0.5, (y−2)/0.5),
    # then clipped to [0, 80]×[0, 100].
    expected = torch.tensor([[0.0, 0.0, 80.0, 68.0]])
    torch.testing.assert_close(result["boxes"], expected)
    assert result["labels"].tolist() == [1]
    assert result["scores"].tolist() == pytest.approx([1 / (1 + math.exp(-3.0))])


def test_decode_without_warp_returns_input_pixels() -> None:
    head = small_head(2)
    raw = make_raw(2, {10: {0: 2.0}})
    (result,) = head.decode(raw, (64, 64))
    torch.testing.assert_close(result["boxes"], torch.tensor([[0.0, 0.0, 44.0, 36.0]]))


def test_score_threshold_is_strict_and_one_prior_may_give_several_classes() -> None:
    head = small_head(3)
    at_threshold = math.log(0.05 / 0.95)  # σ = 0.05 exactly (up to rounding)
    raw = make_raw(3, {5: {0: 2.0, 2: 1.0}, 40: {1: at_threshold - 1e-4}})
    (result,) = head.decode(raw, (64, 64), score_thr=0.05)
    assert sorted(result["labels"].tolist()) == [0, 2]


def test_class_mask_drops_unseen_channels_before_nms_and_top_k() -> None:
    head = small_head(3)
    raw = make_raw(3, {5: {0: 2.0, 2: 4.0}, 40: {2: 3.0}, 60: {1: 1.0}})
    mask = torch.tensor([True, True, False])
    (result,) = head.decode(raw, (64, 64), class_mask=mask, max_det=1)
    # Without the mask, class 2 would fill the single slot.
    assert result["labels"].tolist() == [0]


def test_decode_keeps_the_top_max_det_in_score_order() -> None:
    head = small_head(1)
    hot = {prior: {0: 1.0 + 0.01 * prior} for prior in range(0, 80, 9)}  # far-apart priors
    raw = make_raw(1, hot)
    raw[..., 1:] = -1e4  # every side has bin 0 (distance 0): degenerate boxes never overlap
    raw[..., 1::8] = 0.0
    (result,) = head.decode(raw, (64, 64), max_det=3)
    scores = result["scores"]
    assert scores.shape == (3,)
    assert torch.all(scores[:-1] >= scores[1:])
    assert scores[0] == pytest.approx(1 / (1 + math.exp(-(1.0 + 0.01 * 72))))


def test_growing_keeps_old_class_and_all_box_logits() -> None:
    torch.manual_seed(0)
    head = NanoDetPlusHead(5, in_channels=16, feat_channels=16, stacked_convs=1).eval()
    # Make the output rows distinguishable (the init gives every class the same bias).
    for conv in head.gfl_cls:
        torch.nn.init.normal_(conv.bias)
        torch.nn.init.normal_(conv.weight)
    pyramid = [torch.randn(2, 16, s, s) for s in (8, 4, 2, 1)]
    with torch.no_grad():
        before = head(pyramid).raw
        head.grow(9, generator=torch.Generator().manual_seed(1))
        after = head(pyramid).raw
    assert head.num_classes == 9 and after.shape[-1] == 9 + 32
    torch.testing.assert_close(after[..., :5], before[..., :5], rtol=0, atol=0)
    torch.testing.assert_close(after[..., 9:], before[..., 5:], rtol=0, atol=0)
    for conv in head.gfl_cls:
        assert torch.all(conv.bias[5:9] == CLS_BIAS_INIT)
        assert 0 < float(conv.weight[5:9].detach().std()) < 0.03  # N(0, 0.01) rows, every level
    # Growing is a no-op at equal size and refuses to shrink.
    head.grow(9)
    with pytest.raises(ValueError, match="shrink"):
        head.grow(4)


def randomise_batch_norms(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(c, generator=gen) * 0.1)


def test_fused_model_matches_the_eval_model() -> None:
    model = build_model("nanodet_tiny", num_classes=4)
    randomise_batch_norms(model, seed=3)
    model.eval()
    fused = model.fused()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # original intact
    images = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        expected, got = model(images), fused(images)
        got_cl = fused.to(memory_format=torch.channels_last)(
            images.contiguous(memory_format=torch.channels_last)
        )
    for reference, candidate in ((expected, got), (expected, got_cl)):
        scale = reference.raw.abs().max()
        torch.testing.assert_close(candidate.raw, reference.raw, atol=1e-4 * scale, rtol=1e-4)
        for tower, tower_ref in zip(candidate.towers, reference.towers, strict=True):
            torch.testing.assert_close(
                tower, tower_ref, atol=1e-4 * tower_ref.abs().max(), rtol=1e-4
            )


def test_channels_last_training_loss_matches_contiguous() -> None:
    torch.manual_seed(0)
    model = build_model("nanodet_tiny", num_classes=4).train()
    images = torch.randn(2, 3, 64, 64)
    boxes = [torch.tensor([[4.0, 6.0, 40.0, 50.0]]), torch.tensor([[20.0, 20.0, 60.0, 44.0]])]
    labels = [torch.tensor([1]), torch.tensor([3])]
    reference = model.loss(images, boxes, labels)["loss"]
    cl_model = model.to(memory_format=torch.channels_last)
    got = cl_model.loss(images.contiguous(memory_format=torch.channels_last), boxes, labels)["loss"]
    torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-5)
