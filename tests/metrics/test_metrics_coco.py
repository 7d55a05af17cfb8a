"""COCO AP: equality with pycocotools run directly, and the difficult policy."""

from __future__ import annotations

import numpy as np
import pytest

from clod.metrics import Detections, GroundTruth, evaluate_detections

from .cases import canonical_coco_eval, make_random_case

CANONICAL_STATS = ("map", "map50", "map75", "map_small", "map_medium", "map_large")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_classes_match_pycocotools(tmp_path, seed):
    case = make_random_case(seed)
    canonical = canonical_coco_eval(*case.write(tmp_path))

    result = evaluate_detections(
        case.detections(),
        case.ground_truth(),
        classes=None,
        num_classes=case.num_classes,
        image_ids=case.image_ids,
        difficult="gt",  # pycocotools knows no difficult flag: difficult boxes are plain GT
    )

    for position, name in enumerate(CANONICAL_STATS):
        assert getattr(result, name) == pytest.approx(canonical.stats[position], abs=1e-6), name
    for category_id in case.category_ids:
        index = case.class_of(category_id)
        assert result.ap[index] == pytest.approx(canonical.class_ap(category_id), abs=1e-6)
        assert result.ap50[index] == pytest.approx(canonical.class_ap(category_id, 0.5), abs=1e-6)
        assert result.ap75[index] == pytest.approx(canonical.class_ap(category_id, 0.75), abs=1e-6)
    # The category without GT reports -1 and stays out of the mean.
    assert result.ap[case.class_of(7)] == -1
    assert result.num_gt[case.class_of(7)] == 0
    valid = result.ap[result.ap > -1]
    assert result.map == pytest.approx(valid.mean(), abs=1e-9)


@pytest.mark.parametrize("seed", [3, 4])
def test_class_subset_matches_pycocotools_with_restricted_cat_ids(tmp_path, seed):
    case = make_random_case(seed)
    evaluated_ids = [1, 4, 7]
    canonical = canonical_coco_eval(*case.write(tmp_path), category_ids=evaluated_ids)

    result = evaluate_detections(
        case.detections(),
        case.ground_truth(),
        classes=[case.class_of(c) for c in evaluated_ids],
        num_classes=case.num_classes,
        image_ids=case.image_ids,
    )

    assert result.map == pytest.approx(canonical.stats[0], abs=1e-6)
    assert result.map50 == pytest.approx(canonical.stats[1], abs=1e-6)
    for category_id in evaluated_ids:
        assert result.ap[case.class_of(category_id)] == pytest.approx(
            canonical.class_ap(category_id), abs=1e-6
        )
    for category_id in set(case.category_ids) - set(evaluated_ids):
        assert result.ap[case.class_of(category_id)] == -1
        assert result.ap50_voc[case.class_of(category_id)] == -1


def test_image_without_gt_contributes_false_positives():
    # One GT on image 0 found by a detection with score 0.5; image 1 has no GT but a detection
    # with score 0.9. Evaluated on both images, the PR list is [FP, TP]: recall 0 then 1,
    # precision 0 then 1/2, so the envelope is 1/2 at every recall level -> AP 0.5.
    # Evaluated on image 0 only, the FP is gone -> AP 1.
    ground_truth = GroundTruth(image=[0], boxes=[[0, 0, 10, 10]], labels=[0])
    detections = Detections(
        image=[0, 1], boxes=[[0, 0, 10, 10], [0, 0, 10, 10]], scores=[0.5, 0.9], labels=[0, 0]
    )
    both = evaluate_detections(detections, ground_truth, None, 1, image_ids=[0, 1])
    only_first = evaluate_detections(detections, ground_truth, None, 1, image_ids=[0])
    assert both.map50 == pytest.approx(0.5)
    assert both.map == pytest.approx(0.5)
    assert both.map50_voc == pytest.approx(0.5)
    assert only_first.map == pytest.approx(1.0)
    assert both.num_images == 2 and only_first.num_images == 1


def _two_box_case(detection_boxes, scores):
    """Class 0: box A = (0,0,10,10) is ordinary, box B = (50,50,60,60) is difficult."""
    ground_truth = GroundTruth(
        image=[0, 0],
        boxes=[[0, 0, 10, 10], [50, 50, 60, 60]],
        labels=[0, 0],
        difficult=[False, True],
    )
    detections = Detections(
        image=[0] * len(scores), boxes=detection_boxes, scores=scores, labels=[0] * len(scores)
    )
    return detections, ground_truth


A, B, NOWHERE = [0, 0, 10, 10], [50, 50, 60, 60], [100, 100, 110, 110]


def test_difficult_policy_changes_positives_and_false_positives():
    # Detections by score: 0.95 nowhere (FP), 0.9 on B (difficult), 0.8 on A. Boxes are exact,
    # so IoU is 1 or 0 and every COCO threshold behaves like 0.5.
    # policy gt:     FP, TP, TP with 2 positives: recall 0, 1/2, 1; precision 0, 1/2, 2/3;
    #                envelope 2/3 everywhere -> AP 2/3 (COCO 101-point, VOC07, all-point).
    # policy ignore: FP, (ignored), TP with 1 positive: recall 0, 1; precision 0, 1/2;
    #                envelope 1/2 everywhere -> AP 1/2.
    detections, ground_truth = _two_box_case([NOWHERE, B, A], [0.95, 0.9, 0.8])
    as_gt = evaluate_detections(detections, ground_truth, None, 1, difficult="gt")
    ignored = evaluate_detections(detections, ground_truth, None, 1, difficult="ignore")
    for name in ("map", "map50", "map75", "map50_voc07", "map50_voc"):
        assert getattr(as_gt, name) == pytest.approx(2 / 3), name
        assert getattr(ignored, name) == pytest.approx(1 / 2), name
    assert as_gt.num_gt[0] == 2 and ignored.num_gt[0] == 1


def test_duplicate_on_difficult_box_is_fp_in_coco_but_ignored_in_voc():
    # Detections by score: 0.9 on B (difficult), 0.8 on B again, 0.7 on A; policy ignore.
    # COCO: 0.9 is matched to the ignored B; B is then taken, so 0.8 finds no GT -> FP; 0.7 TP.
    #       Counted list: FP, TP with 1 positive -> precision 1/2 at recall 1 -> AP 1/2.
    # VOC devkit: both detections on B have the difficult B as best overlap -> both ignored;
    #       counted list: TP -> AP 1.
    detections, ground_truth = _two_box_case([B, B, A], [0.9, 0.8, 0.7])
    ignored = evaluate_detections(detections, ground_truth, None, 1, difficult="ignore")
    assert ignored.map50 == pytest.approx(0.5)
    assert ignored.map == pytest.approx(0.5)
    assert ignored.map50_voc07 == pytest.approx(1.0)
    assert ignored.map50_voc == pytest.approx(1.0)


def test_difficult_ignore_uses_plain_iou_not_crowd_overlap():
    # A small detection inside a large difficult box: IoU = 25/400 (far below 0.5), while the
    # crowd rule (intersection over detection area) would give 1 and swallow it. Plain IoU
    # leaves it an FP: list [FP, TP] on the single positive -> AP 1/2.
    ground_truth = GroundTruth(
        image=[0, 0],
        boxes=[[0, 0, 20, 20], [100, 100, 110, 110]],
        labels=[0, 0],
        difficult=[True, False],
    )
    detections = Detections(
        image=[0, 0], boxes=[[0, 0, 5, 5], [100, 100, 110, 110]], scores=[0.9, 0.8], labels=[0, 0]
    )
    ignored = evaluate_detections(detections, ground_truth, None, 1, difficult="ignore")
    assert ignored.map50 == pytest.approx(0.5)
    assert ignored.map50_voc == pytest.approx(0.5)


def test_class_with_only_ignored_gt_reports_minus_one():
    ground_truth = GroundTruth(
        image=[0, 0], boxes=[A, B], labels=[0, 1], difficult=[False, True], iscrowd=[False, False]
    )
    detections = Detections(image=[0, 0], boxes=[A, B], scores=[0.9, 0.9], labels=[0, 1])
    ignored = evaluate_detections(detections, ground_truth, None, 2, difficult="ignore")
    assert ignored.ap[1] == -1 and ignored.ap50_voc[1] == -1 and ignored.ap50_voc07[1] == -1
    assert ignored.map == pytest.approx(1.0)  # class 1 is left out of the mean
    as_gt = evaluate_detections(detections, ground_truth, None, 2, difficult="gt")
    assert as_gt.ap[1] == pytest.approx(1.0)


def test_nothing_to_evaluate_gives_minus_one_everywhere():
    result = evaluate_detections(Detections.empty(), GroundTruth.empty(), None, 3, image_ids=[])
    assert result.map == -1 and result.map50_voc == -1
    assert np.all(result.ap == -1) and np.all(result.ap50_voc07 == -1)


def test_max_det_caps_detections_per_image_and_class():
    # Three FPs outscore the TP on the single image. With max_det=3 (maxDets [1, 3, 3]) the TP
    # is cut off -> recall never above 0 -> AP 0. With 100 it is kept: list FP, FP, FP, TP ->
    # precision 1/4 at recall 1 -> AP 1/4. VOC has no cap: 1/4 in both runs.
    ground_truth = GroundTruth(image=[0], boxes=[A], labels=[0])
    boxes = [NOWHERE, [200, 200, 210, 210], [300, 300, 310, 310], A]
    detections = Detections(image=[0] * 4, boxes=boxes, scores=[0.9, 0.8, 0.7, 0.6], labels=[0] * 4)
    capped = evaluate_detections(detections, ground_truth, None, 1, max_det=3)
    uncapped = evaluate_detections(detections, ground_truth, None, 1, max_det=100)
    assert capped.map50 == pytest.approx(0.0) and capped.map == pytest.approx(0.0)
    assert uncapped.map50 == pytest.approx(0.25)
    assert capped.map50_voc == pytest.approx(0.25) and uncapped.map50_voc == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("seed", "difficult", "max_det", "subset"),
    [
        (10, "gt", 100, False),
        (11, "ignore", 100, False),
        (12, "ignore", 5, True),
        (13, "gt", 3, True),
    ],
)
def test_faster_coco_eval_and_pycocotools_give_the_same_numbers(seed, difficult, max_det, subset):
    """The default backend (faster-coco-eval) against pycocotools on random cases of 200
    images with crowd and difficult boxes: every summary number and per-class AP to 1e-6."""
    from clod.metrics.coco import STATS_NAMES, evaluate_coco

    case = make_random_case(seed, num_images=200)
    classes = [case.class_of(c) for c in case.category_ids]
    if subset:
        classes = classes[::2]
    inputs = (case.detections(), case.ground_truth(), case.image_ids, classes, case.num_classes)
    results = {
        backend: evaluate_coco(*inputs, difficult, max_det, backend)
        for backend in ("faster", "pycocotools")
    }
    faster, reference = results["faster"], results["pycocotools"]
    assert reference.stats["map"] > 0.05  # a case with something to find
    for name in STATS_NAMES:
        assert faster.stats[name] == pytest.approx(reference.stats[name], abs=1e-6), name
    for field in ("ap", "ap50", "ap75"):
        np.testing.assert_allclose(getattr(faster, field), getattr(reference, field), atol=1e-6)


def test_an_unknown_coco_backend_is_refused():
    from clod.metrics.coco import evaluate_coco

    case = make_random_case(0)
    with pytest.raises(ValueError, match="coco backend must be one of faster, pycocotools"):
        evaluate_coco(
            case.detections(), case.ground_truth(), case.image_ids, [0], case.num_classes,
            backend="cocoapi",  # type: ignore[arg-type]
        )  # fmt: skip
