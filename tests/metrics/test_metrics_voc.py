"""VOC AP50: hand-computed precision-recall cases, and a loop-by-loop devkit reimplementation."""

from __future__ import annotations

import numpy as np
import pytest

from clod.metrics import Detections, GroundTruth
from clod.metrics.voc import (
    FALSE_POSITIVE,
    IGNORED,
    TRUE_POSITIVE,
    average_precision_all_point,
    average_precision_voc07,
    evaluate_voc,
    match_detections,
)

from .cases import make_random_case


def _square(x: float, y: float, size: float = 10.0) -> list[float]:
    return [x, y, x + size, y + size]


def test_hand_computed_curve_with_duplicate_and_false_positive():
    # Class 0, three GT: g1, g2 on image 0 and g3 on image 1 (n_pos = 3).
    # Detections by score and their outcome:
    #   0.9 on g1 -> TP; 0.8 nowhere -> FP; 0.7 on g2 -> TP; 0.6 on g1 again -> FP (duplicate);
    #   0.5 on g3 -> TP.
    # cumulative TP 1 1 2 2 3, FP 0 1 1 2 2
    # recall    1/3 1/3 2/3 2/3 1
    # precision 1   1/2 2/3 1/2 3/5
    # VOC07: levels 0, .1, .2, .3 reach recall >= 1/3 -> best precision from there on = 1;
    #        levels .4, .5, .6 -> points with recall 2/3 or 1 -> max(2/3, 1/2, 3/5) = 2/3;
    #        levels .7 .. 1.0 -> the last point -> 3/5.
    #        AP = (4·1 + 3·2/3 + 4·3/5) / 11 = 8.4 / 11.
    # All-point: recall steps 0->1/3 (envelope 1), 1/3->2/3 (2/3), 2/3->1 (3/5):
    #        AP = (1 + 2/3 + 3/5) / 3 = 34/45.
    g1, g2, g3 = _square(0, 0), _square(50, 50), _square(0, 0)
    ground_truth = GroundTruth(image=[0, 0, 1], boxes=[g1, g2, g3], labels=[0, 0, 0])
    detections = Detections(
        image=[0, 0, 0, 0, 1],
        boxes=[g1, _square(200, 200), g2, g1, g3],
        scores=[0.9, 0.8, 0.7, 0.6, 0.5],
        labels=[0] * 5,
    )
    outcome = match_detections(detections, ground_truth, difficult="gt")
    assert outcome.tolist() == [
        TRUE_POSITIVE,
        FALSE_POSITIVE,
        TRUE_POSITIVE,
        FALSE_POSITIVE,
        TRUE_POSITIVE,
    ]
    result = evaluate_voc(detections, ground_truth, [0], 1, difficult="gt")
    assert result.ap_voc07[0] == pytest.approx(8.4 / 11)
    assert result.ap_all_point[0] == pytest.approx(34 / 45)
    assert result.num_positives[0] == 3


def test_input_order_does_not_matter():
    # Same case as above with detections shuffled: matching goes by score, not by input order.
    g1, g2, g3 = _square(0, 0), _square(50, 50), _square(0, 0)
    ground_truth = GroundTruth(image=[1, 0, 0], boxes=[g3, g2, g1], labels=[0, 0, 0])
    detections = Detections(
        image=[1, 0, 0, 0, 0],
        boxes=[g3, g1, g2, _square(200, 200), g1],
        scores=[0.5, 0.6, 0.7, 0.8, 0.9],
        labels=[0] * 5,
    )
    result = evaluate_voc(detections, ground_truth, [0], 1, difficult="gt")
    assert result.ap_voc07[0] == pytest.approx(8.4 / 11)
    assert result.ap_all_point[0] == pytest.approx(34 / 45)


def test_recall_of_exactly_three_tenths_reaches_the_point_three_level():
    # 10 positives (one per image), 3 found with precision 1, nothing else: recall tops out at
    # 3/10. The VOC07 levels 0, .1, .2 and .3 are reached -> 4/11. (A level computed as
    # 3·0.1 = 0.30000000000000004 would miss it and give 3/11.) All-point: 0.3 · 1 = 0.3.
    boxes = [_square(0, 0)] * 10
    ground_truth = GroundTruth(image=list(range(10)), boxes=boxes, labels=[0] * 10)
    detections = Detections(
        image=[0, 1, 2], boxes=boxes[:3], scores=[0.9, 0.8, 0.7], labels=[0] * 3
    )
    result = evaluate_voc(detections, ground_truth, [0], 1)
    assert result.ap_voc07[0] == pytest.approx(4 / 11)
    assert result.ap_all_point[0] == pytest.approx(0.3)


def test_difficult_under_both_policies():
    # Image 0, class 0: A ordinary, B difficult. Detections: 0.9 on B, 0.8 on B (duplicate),
    # 0.7 on A.
    # policy ignore (devkit): both detections on B are ignored, A is found: list [TP], n_pos 1
    #   -> AP 1 for both variants.
    # policy gt: B is ordinary. 0.9 TP, 0.8 FP (duplicate), 0.7 TP; n_pos 2.
    #   recall 1/2 1/2 1, precision 1 1/2 2/3; envelope 1, 2/3, 2/3.
    #   VOC07: levels 0..0.5 -> 1 (six levels), 0.6..1.0 -> 2/3 (five) -> (6 + 10/3)/11 = 28/33.
    #   All-point: 1/2 · 1 + 1/2 · 2/3 = 5/6.
    a, b = _square(0, 0), _square(50, 50)
    ground_truth = GroundTruth(image=[0, 0], boxes=[a, b], labels=[0, 0], difficult=[False, True])
    detections = Detections(
        image=[0, 0, 0], boxes=[b, b, a], scores=[0.9, 0.8, 0.7], labels=[0] * 3
    )

    assert match_detections(detections, ground_truth, difficult="ignore").tolist() == [
        IGNORED,
        IGNORED,
        TRUE_POSITIVE,
    ]
    ignored = evaluate_voc(detections, ground_truth, [0], 1, difficult="ignore")
    assert ignored.ap_voc07[0] == pytest.approx(1.0)
    assert ignored.ap_all_point[0] == pytest.approx(1.0)
    assert ignored.num_positives[0] == 1

    as_gt = evaluate_voc(detections, ground_truth, [0], 1, difficult="gt")
    assert as_gt.ap_voc07[0] == pytest.approx(28 / 33)
    assert as_gt.ap_all_point[0] == pytest.approx(5 / 6)
    assert as_gt.num_positives[0] == 2


def test_best_overlap_decides_even_when_that_box_is_taken():
    # Devkit rule: a detection is judged on its highest-IoU GT only. g1 = (0,0,10,10),
    # g2 = (5,0,15,10). Detection 0.9 = g1 exactly -> TP on g1. Detection 0.8 = (1,0,11,10):
    # IoU 9/11 with g1 (taken), 6/14 with g2 (< 0.5 anyway) -> FP, duplicate of g1.
    # Detection 0.7 = (4,0,14,10): IoU with g1 6/14, with g2 9/11 -> TP on g2.
    # List TP FP TP, n_pos 2: recall 1/2 1/2 1, precision 1 1/2 2/3 -> all-point 5/6.
    ground_truth = GroundTruth(image=[0, 0], boxes=[[0, 0, 10, 10], [5, 0, 15, 10]], labels=[0, 0])
    detections = Detections(
        image=[0, 0, 0],
        boxes=[[0, 0, 10, 10], [1, 0, 11, 10], [4, 0, 14, 10]],
        scores=[0.9, 0.8, 0.7],
        labels=[0] * 3,
    )
    assert match_detections(detections, ground_truth, difficult="gt").tolist() == [
        TRUE_POSITIVE,
        FALSE_POSITIVE,
        TRUE_POSITIVE,
    ]
    assert evaluate_voc(detections, ground_truth, [0], 1).ap_all_point[0] == pytest.approx(5 / 6)


def test_iou_threshold_inclusive_by_default_and_legacy_variant():
    gt_box = [0, 0, 10, 10]
    half = [0, 0, 10, 5]  # IoU 50/100 = 0.5 exactly: a TP with the inclusive default
    ground_truth = GroundTruth(image=[0], boxes=[gt_box], labels=[0])
    detections = Detections(image=[0], boxes=[half], scores=[0.9], labels=[0])
    assert match_detections(detections, ground_truth, "gt").tolist() == [TRUE_POSITIVE]

    # Legacy: widths are x2 - x1 + 1. GT (0,0,9,9) has area 10·10 = 100; detection (0,0,9,4)
    # has area 10·5 = 50, all inside: IoU 0.5 exactly, which the strict > 0.5 rejects.
    legacy_gt = GroundTruth(image=[0], boxes=[[0, 0, 9, 9]], labels=[0])
    at_half = Detections(image=[0], boxes=[[0, 0, 9, 4]], scores=[0.9], labels=[0])
    assert match_detections(at_half, legacy_gt, "gt", legacy_voc=True).tolist() == [FALSE_POSITIVE]
    # Detection (0,0,9,4.4): plain IoU 9·4.4/81 = 0.489 (FP), legacy 10·5.4/100 = 0.54 (TP).
    taller = Detections(image=[0], boxes=[[0, 0, 9, 4.4]], scores=[0.9], labels=[0])
    assert match_detections(taller, legacy_gt, "gt").tolist() == [FALSE_POSITIVE]
    assert match_detections(taller, legacy_gt, "gt", legacy_voc=True).tolist() == [TRUE_POSITIVE]


def test_classes_are_matched_separately_and_missing_classes_give_minus_one():
    # Class 1's detection sits exactly on class 0's GT: it must not match it.
    box = _square(0, 0)
    ground_truth = GroundTruth(image=[0, 0], boxes=[box, _square(30, 30)], labels=[0, 1])
    detections = Detections(image=[0, 0], boxes=[box, box], scores=[0.9, 0.95], labels=[0, 1])
    result = evaluate_voc(detections, ground_truth, [0, 1, 2], 4)
    assert result.ap_all_point[0] == pytest.approx(1.0)
    assert result.ap_all_point[1] == pytest.approx(0.0)  # positives exist, none found
    assert result.ap_all_point[2] == -1  # evaluated, no positives
    assert result.ap_all_point[3] == -1  # not evaluated


def test_average_precision_of_empty_curve_is_zero():
    assert average_precision_voc07(np.array([]), np.array([])) == 0.0
    assert average_precision_all_point(np.array([]), np.array([])) == 0.0


def _devkit_ap(detections, ground_truth, class_index, ignore_difficult):
    """The VOC devkit's loop, written out directly: per class, detections by descending score."""
    in_class = np.flatnonzero(ground_truth.labels == class_index)
    is_ignored = ground_truth.iscrowd | (ground_truth.difficult & ignore_difficult)
    n_pos = int(np.sum(~is_ignored[in_class]))
    if n_pos == 0:
        return -1.0, -1.0
    taken = set()
    tp, fp = [], []
    det_rows = np.flatnonzero(detections.labels == class_index)
    for row in sorted(det_rows, key=lambda r: -detections.scores[r]):
        best_iou, best_gt = 0.0, -1
        for gt_row in in_class:
            if ground_truth.image[gt_row] != detections.image[row]:
                continue
            d, g = detections.boxes[row], ground_truth.boxes[gt_row]
            iw = max(min(d[2], g[2]) - max(d[0], g[0]), 0.0)
            ih = max(min(d[3], g[3]) - max(d[1], g[1]), 0.0)
            inter = iw * ih
            union = (d[2] - d[0]) * (d[3] - d[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
            iou = inter / union
            if iou > best_iou:
                best_iou, best_gt = iou, gt_row
        if best_iou >= 0.5:
            if is_ignored[best_gt]:
                continue
            if best_gt not in taken:
                taken.add(best_gt)
                tp.append(1)
                fp.append(0)
            else:
                tp.append(0)
                fp.append(1)
        else:
            tp.append(0)
            fp.append(1)
    tp_c, fp_c = np.cumsum(tp), np.cumsum(fp)
    rec = tp_c / n_pos
    prec = tp_c / np.maximum(tp_c + fp_c, 1)
    ap07 = 0.0
    for t in range(11):
        reached = prec[rec >= t / 10]
        ap07 += (reached.max() if reached.size else 0.0) / 11
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    changes = np.flatnonzero(mrec[1:] != mrec[:-1])
    return ap07, float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


@pytest.mark.parametrize("seed", [10, 11, 12])
@pytest.mark.parametrize("difficult", ["gt", "ignore"])
def test_vectorised_matching_equals_devkit_loop(seed, difficult):
    case = make_random_case(seed, num_images=15)
    detections, ground_truth = case.detections(), case.ground_truth()
    result = evaluate_voc(
        detections, ground_truth, list(range(case.num_classes)), case.num_classes, difficult
    )
    for class_index in range(case.num_classes):
        ap07, ap_all = _devkit_ap(detections, ground_truth, class_index, difficult == "ignore")
        assert result.ap_voc07[class_index] == pytest.approx(ap07, abs=1e-12)
        assert result.ap_all_point[class_index] == pytest.approx(ap_all, abs=1e-12)
