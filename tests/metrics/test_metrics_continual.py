"""Continual-learning aggregates on hand-computed sequences and the published Ω / RelGap anchors."""

from __future__ import annotations

import json

import pytest

from clod.metrics import DetectionResult, evaluate_detections, group_means, mean_over_classes
from clod.metrics.continual import (
    absolute_gap,
    omega,
    relative_gap,
    seen_classes,
    summarize_continual,
)

from .cases import make_random_case

# Three tasks: New_0 = {0, 1}, New_1 = {2}, New_2 = {3}; five classes allocated (class 4 never
# seen). −1 marks "no GT / not evaluated": class 1 has no GT in the second evaluation.
TASKS = [[0, 1], [2], [3]]
PER_TASK_AP = [
    [0.6, 0.4, -1.0, -1.0, -1.0],
    [0.5, -1.0, 0.8, -1.0, -1.0],
    [0.2, 0.4, 0.6, 0.9, -1.0],
]


def test_hand_computed_sequence():
    summary = summarize_continual(PER_TASK_AP, TASKS)
    # R[t][g] = mean over New_g after task t:
    #   t0: g0 (0.6+0.4)/2 = 0.5
    #   t1: g0 only class 0 has a value -> 0.5; g1 0.8
    #   t2: g0 (0.2+0.4)/2 = 0.3; g1 0.6; g2 0.9
    expected_r = [[0.5, None, None], [0.5, 0.8, None], [0.3, 0.6, 0.9]]
    for row, expected_row in zip(summary.R, expected_r, strict=True):
        assert row == [pytest.approx(v) if v is not None else None for v in expected_row]
    # mAP_all over S_t: 0.5; (0.5+0.8)/2 = 0.65; (0.2+0.4+0.6+0.9)/4 = 0.525
    assert summary.map_all == pytest.approx([0.5, 0.65, 0.525])
    # mAP_old over S_{t-1}: none; class 0 -> 0.5; classes 0,1,2 -> (0.2+0.4+0.6)/3 = 0.4
    assert summary.map_old[0] is None
    assert summary.map_old[1:] == pytest.approx([0.5, 0.4])
    assert summary.map_new == pytest.approx([0.5, 0.8, 0.9])
    assert summary.final_map == pytest.approx(0.525)
    # Average incremental mAP = (0.5 + 0.65 + 0.525) / 3 = 0.558333…
    assert summary.avg_inc_map == pytest.approx(1.675 / 3)
    # Forgetting of classes not in the last task (0, 1, 2):
    #   class 0: max(0.6, 0.5) − 0.2 = 0.4
    #   class 1: max(0.4) − 0.4 = 0 (the −1 of the second evaluation is skipped)
    #   class 2: max(0.8) − 0.6 = 0.2
    assert summary.forgetting_per_class == pytest.approx({0: 0.4, 1: 0.0, 2: 0.2})
    assert summary.forgetting == pytest.approx(0.2)
    # Group forgetting: g0 max(0.5, 0.5) − 0.3 = 0.2; g1 0.8 − 0.6 = 0.2
    assert summary.forgetting_per_group == pytest.approx({0: 0.2, 1: 0.2})
    assert summary.group_forgetting == pytest.approx(0.2)
    assert summary.omega is None and summary.rel_gap is None


def test_partial_run_and_single_evaluation():
    first_two = summarize_continual(PER_TASK_AP[:2], TASKS)
    assert first_two.final_map == pytest.approx(0.65)
    # Class 0 and 1 are not in task 1: class 0 drops 0.6 -> 0.5; class 1 has no final value.
    assert first_two.forgetting_per_class == pytest.approx({0: 0.1})
    only_base = summarize_continual(PER_TASK_AP[:1], TASKS)
    assert only_base.forgetting is None and only_base.forgetting_per_class == {}
    assert only_base.avg_inc_map == pytest.approx(0.5)
    with pytest.raises(ValueError, match="evaluations"):
        summarize_continual(PER_TASK_AP + PER_TASK_AP, TASKS)


@pytest.mark.parametrize(
    ("final", "upper_bound", "expected"),
    [
        (31.10, 33.61, 0.963),  # ILYOLOX 40+40 (its own joint model)
        (34.9, 40.2, 0.934),  # ERD 70+10
        (17.2, 40.2, 0.714),  # LwF 40+40
    ],
)
def test_omega_anchors(final, upper_bound, expected):
    # Two tasks, base step counted as 1.0: Ω = (1 + final/UB) / 2, whatever the base value.
    assert round(omega([12.3, final], upper_bound), 3) == pytest.approx(expected)
    # The same through a summary: class 0 has no GT in the last evaluation, so mAP_all there is
    # class 1's value alone.
    summary = summarize_continual(
        [[12.3, -1.0], [-1.0, final]], [[0], [1]], upper_bound=upper_bound
    )
    assert summary.final_map == pytest.approx(final)
    assert round(summary.omega, 3) == pytest.approx(expected)


def test_omega_per_step_bounds_without_base_convention():
    # x = (30, 20) against UB_t = (40, 50): (30/40 + 20/50) / 2 = (0.75 + 0.4) / 2 = 0.575.
    assert omega([30.0, 20.0], [40.0, 50.0], base_as_one=False) == pytest.approx(0.575)
    # With the base counted as 1: (1 + 0.4) / 2 = 0.7.
    assert omega([30.0, 20.0], [40.0, 50.0]) == pytest.approx(0.7)


@pytest.mark.parametrize(
    ("final", "upper_bound", "rel_gap_percent"),
    [(36.9, 40.2, 8.21), (36.6, 40.2, 8.96), (34.9, 40.2, 13.18), (31.83, 33.61, 5.30)],
)
def test_relative_gap_anchors(final, upper_bound, rel_gap_percent):
    assert round(100 * relative_gap(final, upper_bound), 2) == pytest.approx(rel_gap_percent)
    assert absolute_gap(final, upper_bound) == pytest.approx(upper_bound - final)


def test_summary_with_upper_bound_is_json_serialisable():
    summary = summarize_continual(PER_TASK_AP, TASKS, upper_bound=0.7, metric="map50")
    # Ω = (1 + 0.65/0.7 + 0.525/0.7) / 3; AbsGap = 0.7 − 0.525; RelGap = 0.175 / 0.7 = 0.25.
    assert summary.omega == pytest.approx((1 + 0.65 / 0.7 + 0.525 / 0.7) / 3)
    assert summary.abs_gap == pytest.approx(0.175)
    assert summary.rel_gap == pytest.approx(0.25)
    restored = json.loads(json.dumps(summary.to_dict()))
    assert restored["metric"] == "map50"
    assert restored["forgetting_per_class"]["0"] == pytest.approx(0.4)
    assert restored["R"][0][1] is None


def test_group_helpers():
    values = [0.6, -1.0, 0.2, 0.5]
    assert mean_over_classes(values, [0, 1, 2]) == pytest.approx(0.4)  # class 1 skipped
    assert mean_over_classes(values, [1]) == -1.0
    assert group_means(values, [[0], [2, 3]]) == pytest.approx([0.6, 0.35])
    assert group_means(values, {"old": [0, 1], "new": [3]}) == pytest.approx(
        {"old": 0.6, "new": 0.5}
    )
    assert seen_classes(TASKS, 1) == [0, 1, 2]
    with pytest.raises(ValueError):
        mean_over_classes(values, [4])


def test_detection_result_group_means_match_its_mean_over_evaluated_classes():
    case = make_random_case(5)
    result = evaluate_detections(
        case.detections(), case.ground_truth(), [0, 1, 2], case.num_classes, case.image_ids
    )
    # Over the evaluated classes the group mean is exactly the headline COCO mAP.
    assert result.group_means([[0, 1, 2]])[0] == pytest.approx(result.map, abs=1e-9)
    assert result.group_means({"all": [0, 1, 2]}, "ap50_voc")["all"] == pytest.approx(
        result.map50_voc
    )
    restored = DetectionResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert restored.to_dict() == result.to_dict()
