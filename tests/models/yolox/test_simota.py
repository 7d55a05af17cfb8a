"""SimOTA (/work/shared/spec/yolox.md §4) on hand-worked cases and against a literal reference.

Unless a test says otherwise the logits are all 0 with one class, so every (GT, prior) pair has
the same cls cost (C·BCE(½, ·) = ln 2) and a GT's cost order over equally placed candidates is
its IoU order, highest IoU cheapest: cost = ln 2 + 3·(−ln(IoU + 1e-8)) + penalty·(1 − geometry).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clod.models.yolox.simota import simota_assign, simota_cls_cost

VERSIONS = ("legacy", "current")


def explicit_grid(cells: list[tuple[int, int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(grid, strides) for a list of (x, y, stride) priors; the centre is ((x+½)s, (y+½)s)."""
    grid = torch.tensor([[x, y] for x, y, _ in cells], dtype=torch.float32)
    strides = torch.tensor([s for _, _, s in cells], dtype=torch.float32)
    return grid, strides


def level_grid(size: int, strides: tuple[int, ...] = (8, 16, 32)) -> tuple[torch.Tensor, ...]:
    """The priors of a size×size input, level by level, row-major (the head's order)."""
    grids, prior_strides = [], []
    for s in strides:
        cells = size // s
        ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
        grids.append(torch.stack((xs.reshape(-1), ys.reshape(-1)), dim=1).double())
        prior_strides.append(torch.full((cells * cells,), float(s), dtype=torch.float64))
    return torch.cat(grids), torch.cat(prior_strides)


def assign_one(pred, gts, cells, version, valid=None, topk_iou=10):
    """One image, one class, zero logits."""
    grid, strides = explicit_grid(cells)
    n, g = len(pred), len(gts)
    return simota_assign(
        torch.zeros(1, n, 1),
        torch.zeros(1, n),
        torch.tensor([pred], dtype=torch.float32),
        grid,
        strides,
        torch.tensor([gts], dtype=torch.float32),
        torch.zeros(1, g, dtype=torch.long),
        torch.ones(1, g, dtype=torch.bool) if valid is None else torch.tensor([valid]),
        version=version,
        topk_iou=topk_iou,
    )


def positives(result, image: int = 0) -> list[int]:
    return result.positive[image].nonzero().squeeze(1).tolist()


def box_with_iou(q: float) -> list[float]:
    """A box inside GT [0, 0, 40, 40] covering the fraction q of it: IoU q exactly."""
    return [0.0, 0.0, 40.0, 40.0 * q]


# One GT [0, 0, 40, 40], centre (20, 20). Priors at cell (2, 2), stride 8, all sit on the
# centre (20, 20): inside the box and within 1.5·8 (and 2.5·8) of the centre, so they are
# candidates with geometry true under both versions, and differ only by their IoU.
# Two more priors at cell (10, 10), centre (84, 84), predict the GT itself (IoU 1) but are
# outside the box and 64 px from the centre: not candidates, so their IoUs must not count.
GT_40 = [0.0, 0.0, 40.0, 40.0]
FAR = [(10, 10, 8), (10, 10, 8)]


@pytest.mark.parametrize("version", VERSIONS)
def test_dynamic_k_sums_the_top_ten_candidate_ious(version: str) -> None:
    # 13 candidates, IoUs (scrambled): seven 0.2, two 0.3, and 0.4, 0.5, 0.6, 0.8.
    ious = [0.2, 0.5, 0.2, 0.3, 0.8, 0.2, 0.4, 0.2, 0.3, 0.2, 0.6, 0.2, 0.2]
    # Top 10: 0.8 + 0.6 + 0.5 + 0.4 + 0.3 + 0.3 + 4·0.2 = 3.7 → k = 3.
    # (All 13 would give 4.3 → 4; counting the two far priors' IoU 1 would give 5.3 → 5.)
    pred = [box_with_iou(q) for q in ious] + [GT_40, GT_40]
    result = assign_one(pred, [GT_40], [(2, 2, 8)] * 13 + FAR, version)
    # The three cheapest are the three highest IoUs: 0.8 (prior 4), 0.6 (10), 0.5 (1).
    assert positives(result) == [1, 4, 10]
    assert result.gt_index[0].tolist() == [0] * 15
    torch.testing.assert_close(result.iou[0, [1, 4, 10]], torch.tensor([0.5, 0.8, 0.6]))
    assert result.iou[0].sum() == pytest.approx(1.9)  # 0 for every negative
    # topk_iou = 3 sums 0.8 + 0.6 + 0.5 = 1.9 → k = 1: only the 0.8 prior.
    narrow = assign_one(pred, [GT_40], [(2, 2, 8)] * 13 + FAR, version, topk_iou=3)
    assert positives(narrow) == [4]


@pytest.mark.parametrize("version", VERSIONS)
def test_dynamic_k_with_fewer_than_ten_candidates(version: str) -> None:
    # 4 candidates: 0.9 + 0.8 + 0.7 + 0.4 = 2.8 → k = 2: IoU 0.9 (prior 2) and 0.8 (prior 0).
    pred = [box_with_iou(q) for q in (0.8, 0.4, 0.9, 0.7)] + [GT_40, GT_40]
    result = assign_one(pred, [GT_40], [(2, 2, 8)] * 4 + FAR, version)
    assert positives(result) == [0, 2]


@pytest.mark.parametrize("version", VERSIONS)
def test_dynamic_k_is_at_least_one(version: str) -> None:
    # 0.1 + 0.3 + 0.2 = 0.6 → trunc 0 → k = max(1, 0) = 1: the 0.3 prior.
    pred = [box_with_iou(q) for q in (0.1, 0.3, 0.2)] + [GT_40, GT_40]
    result = assign_one(pred, [GT_40], [(2, 2, 8)] * 3 + FAR, version)
    assert positives(result) == [1]


# Conflict case. Priors p0 and p1 at cell (1, 1), stride 32: centre (48, 48). p2 at cell
# (6, 6), centre (208, 208), is nobody's candidate (its IoU 1 with C must not matter).
#   p0 predicts P0 = [32, 32, 52, 52], p1 predicts P1 = [42, 42, 62, 62] (both area 400).
#   A = [47, 12, 49, 52] (area 80):  IoU(A, P0) = 2·20 / (80 + 400 − 40) = 40/440 = 1/11,
#                                    IoU(A, P1) = 2·10 / (80 + 400 − 20) = 20/460 = 1/23.
#   B = [12, 46, 52, 50] (area 160): IoU(B, P0) = 20·4 / (160 + 400 − 80) = 80/480 = 1/6,
#                                    IoU(B, P1) = 10·4 / (160 + 400 − 40) = 40/520 = 1/13.
#   C = [38, 38, 58, 58] (area 400): IoU(C, P0) = 14·14 / (800 − 196) = 196/604 = 49/151,
#                                    IoU(C, P1) = 16·16 / (800 − 256) = 256/544 = 8/17.
# (48, 48) is strictly inside A, B and C and within 1.5·32 = 48 of their centres (48, 32),
# (32, 48), (48, 48): geometry holds everywhere, under both versions.
# Dynamic k: A ⌊1/11 + 1/23⌋, B ⌊1/6 + 1/13⌋, C ⌊0.3245 + 0.4706⌋: all 0, so k = 1.
# A takes p0 (1/11 > 1/23), B takes p0 (1/6 > 1/13), C takes p1 (8/17 > 49/151).
CONFLICT_CELLS = [(1, 1, 32), (1, 1, 32), (6, 6, 32)]
P0, P1 = [32.0, 32.0, 52.0, 52.0], [42.0, 42.0, 62.0, 62.0]
A, B, C = [47.0, 12.0, 49.0, 52.0], [12.0, 46.0, 52.0, 50.0], [38.0, 38.0, 58.0, 58.0]


@pytest.mark.parametrize("version", VERSIONS)
def test_a_prior_taken_by_two_gts_goes_to_the_cheapest_of_all_gts(version: str) -> None:
    # p0 is taken by A and B, but its cost column is cheapest at C (IoU 0.3245 > 1/6 > 1/11),
    # which took p1 instead: p0 goes to C. p1 stays with C. A and B end up with nothing.
    for order in ([A, B, C], [C, B, A]):
        result = assign_one([P0, P1, C], order, CONFLICT_CELLS, version)
        assert positives(result) == [0, 1]
        assert [order[i] for i in result.gt_index[0, :2].tolist()] == [C, C]
        torch.testing.assert_close(result.iou[0], torch.tensor([49 / 151, 8 / 17, 0.0]))


@pytest.mark.parametrize("version", VERSIONS)
def test_padding_never_wins_a_conflict(version: str) -> None:
    # Same, with C's slot holding padding whose box is P0 itself (IoU 1, it would win if it
    # were counted): p0 goes to the cheaper of A and B, i.e. B (1/6 > 1/11); nobody took p1.
    result = assign_one([P0, P1, C], [A, B, P0], CONFLICT_CELLS, version, [True, True, False])
    assert positives(result) == [0]
    assert int(result.gt_index[0, 0]) == 1
    assert float(result.iou[0, 0]) == pytest.approx(1 / 6)


# Filter case: GT [2, 14, 62, 26] (centre (32, 20), 60 × 12), stride 8 (1.5·8 = 12, 2.5·8 = 20):
#   p0 cell (3, 2), centre (28, 20): in the box, |−4|, |0| < 12   → both: candidate, geometry.
#   p1 cell (6, 2), centre (52, 20): in the box, |20| ≥ 20        → legacy: candidate without
#       geometry (in box, not in centre); current: not a candidate.
#   p2 cell (4, 4), centre (36, 36): outside (36 > 26), |4|, |16| → legacy: candidate (< 20)
#       without geometry; current: not a candidate (16 ≥ 12).
#   p3 cell (3, 1), centre (28, 12): outside (12 < 14), |−4|, |−8| < 12 → current: candidate
#       WITH geometry (no box test); legacy: candidate without geometry (not in the box).
#   p4 cell (8, 8), centre (68, 68): nothing.
FILTER_GT = [2.0, 14.0, 62.0, 26.0]
FILTER_CELLS = [(3, 2, 8), (6, 2, 8), (4, 4, 8), (3, 1, 8), (8, 8, 8)]
HALF = [2.0, 14.0, 32.0, 26.0]  # 30·12 = 360 of 720: IoU 0.5
QUARTER = [2.0, 14.0, 17.0, 26.0]  # 15·12 = 180 of 720: IoU 0.25


def test_legacy_and_current_filters_pick_different_positives() -> None:
    preds = [
        # image 0 IoUs: p0 1, p1 1, p2 0.5, p3 0.25, p4 1.
        [FILTER_GT, FILTER_GT, HALF, QUARTER, FILTER_GT],
        # image 1 IoUs: p0 1, p1 0.25, p2 1, p3 1, p4 1.
        [FILTER_GT, QUARTER, FILTER_GT, FILTER_GT, FILTER_GT],
    ]
    grid, strides = explicit_grid(FILTER_CELLS)

    def run(version: str):
        return simota_assign(
            torch.zeros(2, 5, 1),
            torch.zeros(2, 5),
            torch.tensor(preds),
            grid,
            strides,
            torch.tensor([[FILTER_GT], [FILTER_GT]]),
            torch.zeros(2, 1, dtype=torch.long),
            torch.ones(2, 1, dtype=torch.bool),
            version=version,
        )

    # current: candidates p0, p3 (geometry both).
    #   image 0: k = ⌊1 + 0.25⌋ = 1 → p0 (IoU 1 beats 0.25).   image 1: k = ⌊1 + 1⌋ = 2 → p0, p3.
    current = run("current")
    assert positives(current, 0) == [0]
    assert positives(current, 1) == [0, 3]
    # legacy: candidates p0..p3, only p0 without the 1e5 penalty.
    #   image 0: k = ⌊1 + 1 + 0.5 + 0.25⌋ = 2 → p0, then the cheapest penalised one: p1 (IoU 1;
    #     p2 and p3 pay 3·ln 2 and 3·ln 4 more).
    #   image 1: k = ⌊1 + 0.25 + 1 + 1⌋ = 3 → p0, p2, p3 (IoU 1 each; p1 pays 3·ln 4 more).
    legacy = run("legacy")
    assert positives(legacy, 0) == [0, 1]
    assert positives(legacy, 1) == [0, 2, 3]
    torch.testing.assert_close(legacy.iou, torch.tensor([[1.0, 1, 0, 0, 0], [1.0, 0, 1, 1, 0]]))


@pytest.mark.parametrize("version", VERSIONS)
def test_no_gt_no_candidate_and_all_padding_give_no_positives(version: str) -> None:
    grid, strides = level_grid(64)
    n = grid.shape[0]
    cls, obj = torch.zeros(2, n, 3), torch.zeros(2, n)
    centres = (grid + 0.5) * strides[:, None]
    pred = torch.cat((centres - 8, centres + 8), dim=1).float().expand(2, n, 4)
    grid, strides = grid.float(), strides.float()
    empty = simota_assign(
        cls, obj, pred, grid, strides, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long),
        torch.zeros(2, 0, dtype=torch.bool), version=version,
    )  # fmt: skip
    assert empty.positive.shape == (2, n) and not empty.positive.any()
    assert empty.iou.dtype == torch.float32 and empty.gt_index.dtype == torch.long
    boxes = torch.tensor([[[400.0, 400.0, 420.0, 420.0]], [[8.0, 8.0, 40.0, 40.0]]])
    labels = torch.tensor([[2], [-1]])  # padding may carry any label, even an invalid one
    padding = simota_assign(
        cls, obj, pred, grid, strides, boxes, labels, torch.zeros(2, 1, dtype=torch.bool),
        version=version,
    )  # fmt: skip
    assert not padding.positive.any()
    # Image 0's GT lies far outside the 64×64 grid (no candidate); image 1's is ordinary.
    mixed = simota_assign(
        cls, obj, pred, grid, strides, boxes, torch.tensor([[2], [1]]),
        torch.ones(2, 1, dtype=torch.bool), version=version,
    )  # fmt: skip
    assert not mixed.positive[0].any()
    assert mixed.positive[1].any()


def test_unknown_version_is_rejected() -> None:
    with pytest.raises(ValueError, match="version"):
        assign_one([GT_40], [GT_40], [(2, 2, 8)], "v2")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- cls cost
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cls_cost_matches_a_direct_bce_over_all_classes(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    batch, n, c, g = 2, 7, 5, 3
    cls = 4 * torch.randn(batch, n, c, generator=gen, dtype=dtype)
    obj = 4 * torch.randn(batch, n, generator=gen, dtype=dtype)
    # Saturate some probabilities to exactly 0 and 1 so that BCE's log clamp at −100 matters.
    cls[0, 0] = -200.0
    cls[1, 1] = 200.0
    obj[1, 1] = 200.0
    labels = torch.randint(0, c, (batch, g), generator=gen)
    prob = (cls.sigmoid() * obj.sigmoid()[..., None]).sqrt()
    direct = F.binary_cross_entropy(
        prob[:, :, None, :].expand(batch, n, g, c),
        F.one_hot(labels, c).to(dtype)[:, None, :, :].expand(batch, n, g, c),
        reduction="none",
    ).sum(dim=3)  # (B, N, G)
    assert direct.max() >= 100.0  # a clamped log was hit
    got = simota_cls_cost(cls, obj, labels)
    assert got.dtype == dtype
    torch.testing.assert_close(got, direct.permute(0, 2, 1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_assigned_in_float32(dtype: torch.dtype) -> None:
    batch = random_batch(torch.Generator().manual_seed(5))
    (cls, obj, pred, grid, strides, gts, labels, valid), _ = batch
    half = [t.to(dtype) for t in (cls, obj, pred, gts)]
    upcast = [t.float() for t in half]
    cost = simota_cls_cost(half[0], half[1], labels.clamp(min=0))
    assert cost.dtype == torch.float32
    torch.testing.assert_close(cost, simota_cls_cost(upcast[0], upcast[1], labels.clamp(min=0)))
    for version in VERSIONS:
        got = simota_assign(*half[:3], grid, strides, half[3], labels, valid, version=version)
        want = simota_assign(*upcast[:3], grid, strides, upcast[3], labels, valid, version=version)
        assert got.iou.dtype == torch.float32
        assert torch.equal(got.positive, want.positive)
        assert torch.equal(got.gt_index, want.gt_index)
        assert torch.equal(got.iou, want.iou)  # half arithmetic would round these


# --------------------------------------------------------------------------- literal reference
def reference_iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def clamped_log(x: float) -> float:
    return max(math.log(x), -100.0) if x > 0 else -100.0


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def reference_simota(cls, obj, pred, grid, strides, gts, labels, version):
    """Spec §4 for one image, literally: loops over GTs, priors and classes, Python floats.

    ``gts``/``labels`` hold the real GTs only. Returns ({prior: (gt, iou)}, number of priors
    taken by several GTs, number of those won by a GT that did not take them).
    """
    radius, penalty = (2.5, 1e5) if version == "legacy" else (1.5, 1e6)
    n = len(pred)
    centre = [((grid[a][0] + 0.5) * strides[a], (grid[a][1] + 0.5) * strides[a]) for a in range(n)]

    def in_box(g: int, a: int) -> bool:
        x, y = centre[a]
        return gts[g][0] < x < gts[g][2] and gts[g][1] < y < gts[g][3]

    def in_centre(g: int, a: int) -> bool:
        x, y = centre[a]
        cx, cy = (gts[g][0] + gts[g][2]) / 2, (gts[g][1] + gts[g][3]) / 2
        r = radius * strides[a]
        return abs(x - cx) < r and abs(y - cy) < r

    def geometry(g: int, a: int) -> bool:
        return in_box(g, a) and in_centre(g, a) if version == "legacy" else in_centre(g, a)

    def candidate(a: int) -> bool:
        if version == "legacy":
            return any(in_box(g, a) or in_centre(g, a) for g in range(len(gts)))
        return any(in_centre(g, a) for g in range(len(gts)))

    cands = [a for a in range(n) if candidate(a)]
    if not gts or not cands:
        return {}, 0, 0
    iou, cost = {}, {}
    for g in range(len(gts)):
        for a in cands:
            iou[g, a] = reference_iou(pred[a], gts[g])
            cls_cost = 0.0
            for c in range(len(cls[a])):
                p = math.sqrt(sigmoid(cls[a][c]) * sigmoid(obj[a]))
                y = 1.0 if c == labels[g] else 0.0
                cls_cost += -(y * clamped_log(p) + (1 - y) * clamped_log(1 - p))
            cost[g, a] = (
                cls_cost
                + 3.0 * -math.log(iou[g, a] + 1e-8)
                + penalty * (0.0 if geometry(g, a) else 1.0)
            )
    takers: dict[int, list[int]] = {}
    for g in range(len(gts)):
        top = sorted((iou[g, a] for a in cands), reverse=True)[: min(10, len(cands))]
        k = max(1, int(sum(top)))
        for a in sorted(cands, key=lambda a: cost[g, a])[:k]:
            takers.setdefault(a, []).append(g)
    result, contested, outsider = {}, 0, 0
    for a, gs in takers.items():
        g = gs[0]
        if len(gs) > 1:
            g = min(range(len(gts)), key=lambda g: cost[g, a])
            contested += 1
            outsider += g not in gs
        result[a] = (g, iou[g, a])
    return result, contested, outsider


def random_batch(gen: torch.Generator, batch: int = 4, slots: int = 6, classes: int = 3):
    """Random float64 batch on a 64×64 input (84 priors); GT padding at random slots, with
    garbage boxes and label −1; image 1 is all padding."""
    grid, strides = level_grid(64)
    n = grid.shape[0]
    cls = 3 * torch.randn(batch, n, classes, generator=gen, dtype=torch.float64)
    obj = 3 * torch.randn(batch, n, generator=gen, dtype=torch.float64)
    centres = (grid + 0.5) * strides[:, None]
    shift = (torch.rand(batch, n, 2, generator=gen, dtype=torch.float64) - 0.5) * strides[:, None]
    half = 2 + 18 * torch.rand(batch, n, 2, generator=gen, dtype=torch.float64)
    pred = torch.cat((centres + shift - half, centres + shift + half), dim=2)
    corner = 56 * torch.rand(batch, slots, 2, generator=gen, dtype=torch.float64)
    size = 4 + 36 * torch.rand(batch, slots, 2, generator=gen, dtype=torch.float64)
    gts = torch.cat((corner, corner + size), dim=2)
    valid = torch.rand(batch, slots, generator=gen) < 0.6
    valid[1] = False
    valid[0, 0] = True
    labels = torch.randint(0, classes, (batch, slots), generator=gen)
    labels = torch.where(valid, labels, -1)
    return (cls, obj, pred, grid, strides, gts, labels, valid), (batch, slots)


@pytest.mark.parametrize("version", VERSIONS)
def test_batched_assignment_matches_the_reference_per_image(version: str) -> None:
    total_pos = total_contested = 0
    for seed in range(6):
        inputs, (batch, slots) = random_batch(torch.Generator().manual_seed(seed))
        cls, obj, pred, grid, strides, gts, labels, valid = inputs
        result = simota_assign(*inputs, version=version)
        for image in range(batch):
            real = [j for j in range(slots) if valid[image, j]]  # padded slot of each real GT
            expected, contested, _ = reference_simota(
                cls[image].tolist(), obj[image].tolist(), pred[image].tolist(), grid.tolist(),
                strides.tolist(), [gts[image, j].tolist() for j in real],
                [int(labels[image, j]) for j in real], version,
            )  # fmt: skip
            assert positives(result, image) == sorted(expected)
            for prior, (g, iou) in expected.items():
                assert int(result.gt_index[image, prior]) == real[g]
                assert float(result.iou[image, prior]) == pytest.approx(iou, rel=1e-12)
            negative = ~result.positive[image]
            assert not result.gt_index[image, negative].any()
            assert not result.iou[image, negative].any()
            total_pos += len(expected)
            total_contested += contested
    # The batches exercise multi-positive GTs and conflicts. A conflict won by a GT that did
    # not take the prior is too rare in random batches to count on: the hand-built case
    # test_a_prior_taken_by_two_gts_goes_to_the_cheapest_of_all_gts covers it.
    assert total_pos > 40
    assert total_contested > 0
