"""Task construction on the hand-made dataset, against counts worked out by hand.

The dataset (tests/data/conftest.py), classes 0 aeroplane, 1 bicycle, 2 bird, 3 boat:

    train  t1: aeroplane, bicycle     test  v1: aeroplane
           t2: bird                         v2: bird, boat
           t3: aeroplane, bird, boat        v3: boat
           t4: boat (difficult)             v4: (nothing)
           t5: bicycle, bicycle
           t6: (nothing)

Scenario 2p1: task 0 = {0, 1}, task 1 = {2}, task 2 = {3}.
- task 0 trains on t1 (2 boxes), t3 (aeroplane only), t5 (2): 3 images, 5 boxes;
  evaluates on v1: 1 image, 1 box.
- task 1 trains on t2, t3 (bird only): 2 images, 2 boxes; evaluates on v1, v2 (bird): 2, 2.
- task 2 trains on t3 (boat only), t4: 2 images, 2 boxes; evaluates on v1, v2, v3: 3, 4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clod.data.coco import read_coco
from clod.data.scenario import resolve_scenario
from clod.data.tasks import build_tasks
from clod.data.types import Split
from clod.data.voc import read_voc
from clod.errors import DataError
from tests.data.conftest import CLASSES

SCENARIO_2P1 = {"name": "2p1", "base": 2, "increment": 1}

HAND_COUNTS = [
    {"train_images": 3, "train_boxes": 5, "eval_images": 1, "eval_boxes": 1},
    {"train_images": 2, "train_boxes": 2, "eval_images": 2, "eval_boxes": 2},
    {"train_images": 2, "train_boxes": 2, "eval_images": 3, "eval_boxes": 4},
]


def voc_splits(root: Path) -> tuple[Split, Split]:
    return read_voc(root / "VOC2007", "trainval", CLASSES), read_voc(
        root / "VOC2007", "test", CLASSES
    )


def coco_splits(root: Path) -> tuple[Split, Split]:
    images = root / "VOC2007/JPEGImages"
    return (
        read_coco(root / "annotations/instances_trainval.json", images),
        read_coco(root / "annotations/instances_test.json", images),
    )


@pytest.mark.parametrize("reader", [voc_splits, coco_splits], ids=["voc", "coco"])
def test_task_counts_match_hand_computation(hand_made: Path, reader) -> None:
    train, test = reader(hand_made)
    tasks = build_tasks(resolve_scenario(SCENARIO_2P1, train.class_names), train, test)
    assert [t.counts() for t in tasks] == HAND_COUNTS
    assert [sorted(r.image_id for r in t.train) for t in tasks] == [
        ["t1", "t3", "t5"],
        ["t2", "t3"],
        ["t3", "t4"],
    ]
    assert [t.new for t in tasks] == [(0, 1), (2,), (3,)]
    assert tasks[2].seen == (0, 1, 2, 3) and tasks[2].old == (0, 1, 2)
    # background shift: t3 carries only its task's boxes in each task
    t3 = [next(r for r in t.train if r.image_id == "t3") for t in tasks]
    assert [r.labels.tolist() for r in t3] == [[0], [2], [3]]
    # evaluation keeps only seen-class boxes: v2 has bird and boat, only bird is seen after task 1
    v2 = next(r for r in tasks[1].eval if r.image_id == "v2")
    assert v2.labels.tolist() == [2]


def test_voc_and_coco_give_identical_tasks(hand_made: Path) -> None:
    voc_tasks = build_tasks(resolve_scenario(SCENARIO_2P1, CLASSES), *voc_splits(hand_made))
    coco_tasks = build_tasks(resolve_scenario(SCENARIO_2P1, CLASSES), *coco_splits(hand_made))
    for a, b in zip(voc_tasks, coco_tasks, strict=True):
        for part in ("train", "eval"):
            left = {r.image_id: (r.labels.tolist(), r.boxes.tolist()) for r in getattr(a, part)}
            right = {r.image_id: (r.labels.tolist(), r.boxes.tolist()) for r in getattr(b, part)}
            assert left == right


def test_all_images_policy_keeps_every_test_image(hand_made: Path) -> None:
    tasks = build_tasks(
        resolve_scenario(SCENARIO_2P1, CLASSES), *voc_splits(hand_made), test_images="all_images"
    )
    assert [len(t.eval) for t in tasks] == [4, 4, 4]
    assert [sum(r.num_boxes for r in t.eval) for t in tasks] == [1, 2, 4]


def test_difficult_boxes_can_be_dropped_from_training(hand_made: Path) -> None:
    tasks = build_tasks(
        resolve_scenario(SCENARIO_2P1, CLASSES), *voc_splits(hand_made), difficult_train="drop"
    )
    assert [r.image_id for r in tasks[2].train] == ["t3"]  # t4's only box is difficult


def test_joint_task_keeps_every_box(hand_made: Path) -> None:
    (task,) = build_tasks(
        resolve_scenario(SCENARIO_2P1, CLASSES), *voc_splits(hand_made), joint=True
    )
    assert task.counts() == {"train_images": 5, "train_boxes": 9, "eval_images": 3, "eval_boxes": 4}
    assert task.new == (0, 1, 2, 3)


def test_empty_task_is_an_error_naming_the_classes(hand_made: Path) -> None:
    train, test = voc_splits(hand_made)
    scenario = resolve_scenario(
        {"name": "x", "tasks": [["aeroplane"], ["boat"]], "allow_partial": True}, CLASSES
    )
    no_boat = Split(
        train.class_names, tuple(r for r in train.records if 3 not in r.labels), "train.txt"
    )
    with pytest.raises(
        DataError, match=r"task 1 of scenario x \(boat\) has no training image in train\.txt"
    ):
        build_tasks(scenario, no_boat, test)


def test_crowd_boxes_do_not_make_a_training_image(tmp_path: Path) -> None:
    from tests.builders import Img, Obj, write_coco, write_images

    images = [
        Img(
            "a", objects=[Obj("bird", (1, 1, 9, 9), crowd=True), Obj("aeroplane", (10, 10, 30, 30))]
        ),
        Img("b", objects=[Obj("bird", (1, 1, 20, 20))]),
    ]
    write_images(tmp_path / "img", images)
    ann = write_coco(tmp_path / "a.json", images, CLASSES, [1, 2, 3, 4])
    split = read_coco(ann, tmp_path / "img")
    tasks = build_tasks(
        resolve_scenario({"name": "x", "splits": [2, 1], "allow_partial": True}, CLASSES),
        split,
        split,
    )
    assert [r.image_id for r in tasks[1].train] == ["b"]
    # evaluation keeps the crowd region as ground truth for COCOeval
    a = next(r for r in tasks[1].eval if r.image_id == "a")
    assert a.iscrowd.tolist() == [True, False]


def test_readers_give_identical_tasks_on_the_generated_benchmark(tmp_path: Path) -> None:
    """data=synthetic_tiny and data=synthetic_coco-style reading of the same generated files."""
    from clod.data.synthetic import SYNTHETIC_TINY, ensure_synthetic

    root = ensure_synthetic(tmp_path, SYNTHETIC_TINY)
    classes = SYNTHETIC_TINY.class_names
    voc = [read_voc(root / "VOC2007", split, classes) for split in ("trainval", "test")]
    coco = [
        read_coco(
            root / f"annotations/instances_{split}.json", root / "VOC2007/JPEGImages", classes
        )
        for split in ("trainval", "test")
    ]
    scenario = resolve_scenario(SCENARIO_2P1, classes)
    voc_tasks, coco_tasks = build_tasks(scenario, *voc), build_tasks(scenario, *coco)
    assert [t.counts() for t in voc_tasks] == [t.counts() for t in coco_tasks]
    for a, b in zip(voc_tasks, coco_tasks, strict=True):
        for part in ("train", "eval"):
            left = {r.image_id: (r.labels.tolist(), r.difficult.tolist()) for r in getattr(a, part)}
            right = {
                r.image_id: (r.labels.tolist(), r.difficult.tolist()) for r in getattr(b, part)
            }
            assert left == right
            boxes_a = {r.image_id: r.boxes for r in getattr(a, part)}
            for r in getattr(b, part):
                np.testing.assert_allclose(r.boxes, boxes_a[r.image_id], atol=1e-3)
    # the generator's manifest counts agree with what the readers read
    import json

    manifest = json.loads((root / "manifest.json").read_text())
    assert sum(r.num_boxes for r in voc[0].records) == manifest["splits"]["trainval"]["boxes"]
    assert len(voc[1].records) == manifest["splits"]["test"]["images"]
