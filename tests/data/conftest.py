"""A small hand-made dataset written in both VOC and COCO format."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.builders import Img, Obj, write_coco, write_voc

CLASSES = ["aeroplane", "bicycle", "bird", "boat"]
# Non-contiguous and listed out of order in the file: labels must follow sorted ids.
CATEGORY_IDS = [3, 8, 9, 20]


def hand_made_splits() -> dict[str, list[Img]]:
    """Counts per task for scenario 2p1 are worked out in test_tasks.py."""
    train = [
        Img("t1", objects=[Obj("aeroplane", (2, 2, 20, 20)), Obj("bicycle", (30, 5, 60, 40))]),
        Img("t2", objects=[Obj("bird", (10, 10, 30, 30))]),
        Img(
            "t3",
            objects=[
                Obj("aeroplane", (1, 1, 10, 10)),
                Obj("bird", (20, 20, 40, 40)),
                Obj("boat", (45, 5, 60, 20)),
            ],
        ),
        Img("t4", objects=[Obj("boat", (5, 5, 50, 40), difficult=True)]),
        Img("t5", objects=[Obj("bicycle", (0, 0, 20, 20)), Obj("bicycle", (25, 25, 50, 45))]),
        Img("t6", objects=[]),
    ]
    test = [
        Img("v1", objects=[Obj("aeroplane", (5, 5, 25, 25))]),
        Img("v2", objects=[Obj("bird", (3, 3, 13, 13)), Obj("boat", (20, 20, 60, 40))]),
        Img("v3", objects=[Obj("boat", (10, 10, 30, 30))]),
        Img("v4", objects=[]),
    ]
    return {"trainval": train, "test": test}


@pytest.fixture
def hand_made(tmp_path: Path) -> Path:
    """Root holding VOC2007/ and annotations/instances_{trainval,test}.json of the same data."""
    splits = hand_made_splits()
    write_voc(tmp_path / "VOC2007", splits)
    for split, images in splits.items():
        write_coco(
            tmp_path / "annotations" / f"instances_{split}.json", images, CLASSES, CATEGORY_IDS
        )
    return tmp_path
