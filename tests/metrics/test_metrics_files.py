"""File-based evaluation: COCO-format files on disk, clear input errors, the CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clod.evaluate import main
from clod.metrics import EvaluationInputError, evaluate_coco_files

from .cases import canonical_coco_eval, make_random_case

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("seed", [20, 21])
def test_files_match_pycocotools(tmp_path, seed):
    case = make_random_case(seed)
    gt_path, dets_path = case.write(tmp_path)
    canonical = canonical_coco_eval(gt_path, dets_path)

    result = evaluate_coco_files(gt_path, dets_path)

    assert result["map"] == pytest.approx(canonical.stats[0], abs=1e-6)
    assert result["map50"] == pytest.approx(canonical.stats[1], abs=1e-6)
    assert result["map75"] == pytest.approx(canonical.stats[2], abs=1e-6)
    for category in case.gt_dataset["categories"]:
        assert result["per_class_ap50"][category["name"]] == pytest.approx(
            canonical.class_ap(category["id"], 0.5), abs=1e-6
        )
        assert result["per_class"][category["name"]]["category_id"] == category["id"]
    # Class indices follow the sorted category ids.
    assert [v["class_index"] for v in result["per_class"].values()] == list(range(5))
    assert result["num_images"] == len(case.image_ids)
    assert result["num_detections"] == len(case.results)
    json.dumps(result)  # JSON-able as promised


def test_gt_area_from_file_drives_size_ranges(tmp_path):
    # One GT whose box is 100x100 (large) but whose annotated (segment) area is 20x20 (small):
    # COCOeval sizes GT by `area`, so the found object counts in map_small only.
    gt = {
        "images": [{"id": 1}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 5,
                "bbox": [0, 0, 100, 100],
                "area": 400,
                "iscrowd": 0,
            }
        ],
        "categories": [{"id": 5, "name": "thing"}],
    }
    dets = [{"image_id": 1, "category_id": 5, "bbox": [0, 0, 100, 100], "score": 0.9}]
    gt_path, dets_path = tmp_path / "gt.json", tmp_path / "dets.json"
    gt_path.write_text(json.dumps(gt))
    dets_path.write_text(json.dumps(dets))
    canonical = canonical_coco_eval(gt_path, dets_path)
    result = evaluate_coco_files(gt_path, dets_path)
    assert result["map_small"] == pytest.approx(canonical.stats[3]) == pytest.approx(1.0)
    assert result["map_large"] == pytest.approx(canonical.stats[5]) == pytest.approx(-1.0)


def test_difficult_flag_in_gt_file(tmp_path):
    # A COCO-format VOC file: one ordinary and one difficult box of class "cat", and detections
    # 0.95 nowhere, 0.9 on the difficult box, 0.8 on the ordinary one (worked out in
    # test_metrics_coco.py: AP 2/3 with difficult as GT, 1/2 with difficult ignored).
    gt = {
        "images": [{"id": 7}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 8, "bbox": [0, 0, 10, 10], "iscrowd": 0},
            {
                "id": 2,
                "image_id": 7,
                "category_id": 8,
                "bbox": [50, 50, 10, 10],
                "iscrowd": 0,
                "difficult": 1,
            },
        ],
        "categories": [{"id": 8, "name": "cat"}],
    }
    dets = [
        {"image_id": 7, "category_id": 8, "bbox": [100, 100, 10, 10], "score": 0.95},
        {"image_id": 7, "category_id": 8, "bbox": [50, 50, 10, 10], "score": 0.9},
        {"image_id": 7, "category_id": 8, "bbox": [0, 0, 10, 10], "score": 0.8},
    ]
    gt_path, dets_path = tmp_path / "gt.json", tmp_path / "dets.json"
    gt_path.write_text(json.dumps(gt))
    dets_path.write_text(json.dumps(dets))
    as_gt = evaluate_coco_files(gt_path, dets_path, difficult="gt")
    ignored = evaluate_coco_files(gt_path, dets_path, difficult="ignore")
    assert as_gt["map50"] == pytest.approx(2 / 3) and as_gt["map50_voc07"] == pytest.approx(2 / 3)
    assert ignored["map50"] == pytest.approx(1 / 2) and ignored["map50_voc"] == pytest.approx(1 / 2)
    assert ignored["per_class"]["cat"]["num_gt"] == 1


def _write_pair(tmp_path: Path, dets) -> tuple[Path, Path]:
    gt = {
        "images": [{"id": 1}, {"id": 2}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "iscrowd": 0}
        ],
        "categories": [{"id": 3, "name": "a"}, {"id": 9, "name": "b"}],
    }
    gt_path, dets_path = tmp_path / "gt.json", tmp_path / "dets.json"
    gt_path.write_text(json.dumps(gt))
    dets_path.write_text(dets if isinstance(dets, str) else json.dumps(dets))
    return gt_path, dets_path


GOOD = {"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "score": 0.5}


@pytest.mark.parametrize(
    ("dets", "message"),
    [
        ('[{"image_id": 1,', "malformed JSON"),
        ({"image_id": 1}, "JSON list"),
        ([{**GOOD, "image_id": 5}], "image_id 5 is not in the ground truth"),
        ([{**GOOD, "category_id": 4}], "category_id 4 is not in the ground truth"),
        ([GOOD, {**GOOD, "bbox": [0, 0, 10]}], "detection 1: bbox must be a list of 4"),
        ([{**GOOD, "bbox": [0, 0, -1, 10]}], "must not be negative"),
        ([{**GOOD, "score": "high"}], "score must be a finite number"),
    ],
)
def test_bad_detection_file_is_reported_with_its_path(tmp_path, dets, message):
    gt_path, dets_path = _write_pair(tmp_path, dets)
    with pytest.raises(EvaluationInputError, match=message) as raised:
        evaluate_coco_files(gt_path, dets_path)
    assert isinstance(raised.value, ValueError)
    assert str(dets_path) in str(raised.value)


def test_bad_or_missing_gt_file_is_reported_with_its_path(tmp_path):
    gt_path, dets_path = _write_pair(tmp_path, [GOOD])
    missing = tmp_path / "nope.json"
    with pytest.raises(EvaluationInputError, match="does not exist") as raised:
        evaluate_coco_files(missing, dets_path)
    assert str(missing) in str(raised.value)
    gt_path.write_text(json.dumps({"images": [{"id": 1}], "categories": [{"id": 3}]}))
    with pytest.raises(EvaluationInputError, match="'annotations'"):
        evaluate_coco_files(gt_path, dets_path)
    gt_path.write_text(
        json.dumps(
            {
                "images": [{"id": 1}],
                "categories": [{"id": 3}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 1]}],
            }
        )
    )
    with pytest.raises(EvaluationInputError, match=r"annotations\[0\]: bbox"):
        evaluate_coco_files(gt_path, dets_path)


def test_empty_detection_file_scores_zero(tmp_path):
    gt_path, dets_path = _write_pair(tmp_path, [])
    result = evaluate_coco_files(gt_path, dets_path)
    assert result["map"] == 0.0 and result["map50_voc"] == 0.0
    assert result["per_class_ap50"] == {"a": 0.0, "b": -1.0}


def test_cli_prints_json_last(tmp_path):
    case = make_random_case(22)
    gt_path, dets_path = case.write(tmp_path)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "clod.evaluate",
            f"gt={gt_path}",
            f"dets={dets_path}",
            "difficult=ignore",
        ],
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    printed = json.loads(completed.stdout.strip().splitlines()[-1])
    assert printed == evaluate_coco_files(gt_path, dets_path, difficult="ignore")


def test_cli_errors_are_one_line_and_nonzero(tmp_path, capsys):
    gt_path, dets_path = _write_pair(tmp_path, [{**GOOD, "image_id": 5}])
    assert main([f"gt={gt_path}", f"dets={dets_path}"]) != 0
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "image_id 5" in error and str(dets_path) in error

    assert main([f"gt={gt_path}"]) != 0
    assert "missing dets" in capsys.readouterr().err
    assert main([f"gt={gt_path}", f"dets={dets_path}", "difficult=maybe"]) != 0
    assert "difficult must be gt or ignore" in capsys.readouterr().err
    assert main(["oops"]) != 0
    assert "expected key=value" in capsys.readouterr().err
