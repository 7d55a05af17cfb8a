"""The VOC and COCO readers on real files, and their errors on bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from clod.data.classes import VOC_CLASSES
from clod.data.coco import read_coco
from clod.data.voc import read_voc
from clod.errors import DataError
from tests.builders import Img, Obj, write_coco, write_voc
from tests.data.conftest import CATEGORY_IDS, CLASSES


def test_voc_reads_boxes_labels_and_difficult(hand_made: Path) -> None:
    split = read_voc(hand_made / "VOC2007", "trainval", CLASSES)
    assert [r.image_id for r in split.records] == ["t1", "t2", "t3", "t4", "t5", "t6"]
    t3 = split.records[2]
    assert (t3.width, t3.height) == (64, 48)
    np.testing.assert_array_equal(t3.labels, [0, 2, 3])
    np.testing.assert_allclose(t3.boxes[2], [45, 5, 60, 20])
    assert split.records[3].difficult.tolist() == [True]
    assert split.records[5].num_boxes == 0
    assert split.records[0].path.is_file()


def test_coco_maps_sorted_category_ids_to_contiguous_labels(hand_made: Path) -> None:
    split = read_coco(
        hand_made / "annotations/instances_trainval.json", hand_made / "VOC2007/JPEGImages"
    )
    # categories are written in reverse order with ids 3, 8, 9, 20: labels follow sorted ids
    assert split.class_names == tuple(CLASSES)
    t3 = next(r for r in split.records if r.image_id == "t3")
    np.testing.assert_array_equal(t3.labels, [0, 2, 3])
    np.testing.assert_allclose(t3.boxes, [[1, 1, 10, 10], [20, 20, 40, 40], [45, 5, 60, 20]])


def test_voc_and_coco_readers_agree(hand_made: Path) -> None:
    for split in ("trainval", "test"):
        voc = read_voc(hand_made / "VOC2007", split, CLASSES)
        coco = read_coco(
            hand_made / f"annotations/instances_{split}.json",
            hand_made / "VOC2007/JPEGImages",
            CLASSES,
        )
        assert len(voc.records) == len(coco.records)
        by_id = {r.image_id: r for r in coco.records}
        for a in voc.records:
            b = by_id[a.image_id]
            assert (a.width, a.height, a.path) == (b.width, b.height, b.path)
            np.testing.assert_array_equal(a.labels, b.labels)
            np.testing.assert_allclose(a.boxes, b.boxes)
            np.testing.assert_array_equal(a.difficult, b.difficult)


def test_coco_keeps_crowd_flag(tmp_path: Path) -> None:
    images = [
        Img("a", objects=[Obj("bird", (1, 1, 20, 20)), Obj("bird", (30, 10, 60, 40), crowd=True)])
    ]
    write_voc(tmp_path / "VOC", {"x": images})
    ann = write_coco(tmp_path / "a.json", images, CLASSES, CATEGORY_IDS)
    (record,) = read_coco(ann, tmp_path / "VOC/JPEGImages").records
    assert record.iscrowd.tolist() == [False, True]


# ---------------------------------------------------------------- bad input


def _one_image_voc(tmp_path: Path, obj: Obj) -> Path:
    return write_voc(tmp_path / "VOC", {"trainval": [Img("a", objects=[obj])]})


def test_voc_missing_dataset_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"VOC dataset directory .*nowhere does not exist"):
        read_voc(tmp_path / "nowhere", "trainval")


def test_voc_missing_split_file(tmp_path: Path) -> None:
    root = _one_image_voc(tmp_path, Obj("bird", (1, 1, 9, 9)))
    with pytest.raises(DataError, match=r"split file .*test\.txt does not exist"):
        read_voc(root, "test")


def test_voc_malformed_xml_names_the_file(tmp_path: Path) -> None:
    root = _one_image_voc(tmp_path, Obj("bird", (1, 1, 9, 9)))
    (root / "Annotations/a.xml").write_text("<annotation><size><width>4</width></annotation")
    with pytest.raises(DataError, match=r"Annotations/a\.xml: malformed XML"):
        read_voc(root, "trainval")


def test_voc_missing_image_names_the_file(tmp_path: Path) -> None:
    root = _one_image_voc(tmp_path, Obj("bird", (1, 1, 9, 9)))
    (root / "JPEGImages/a.png").unlink()
    with pytest.raises(
        DataError, match=r"image .*JPEGImages/a\.png does not exist \(referenced by .*a\.xml\)"
    ):
        read_voc(root, "trainval")


def test_voc_unknown_class_names_file_and_class(tmp_path: Path) -> None:
    root = _one_image_voc(tmp_path, Obj("unicorn", (1, 1, 9, 9)))
    with pytest.raises(DataError, match=r"a\.xml: object 0 has unknown class 'unicorn'"):
        read_voc(root, "trainval", VOC_CLASSES)


def test_voc_non_numeric_coordinate(tmp_path: Path) -> None:
    root = _one_image_voc(tmp_path, Obj("bird", (1, 1, 9, 9)))
    xml = root / "Annotations/a.xml"
    xml.write_text(xml.read_text().replace("<xmax>9</xmax>", "<xmax>nine</xmax>"))
    with pytest.raises(DataError, match=r"a\.xml: object 0 <xmax> is not a number: 'nine'"):
        read_voc(root, "trainval", CLASSES)


def test_voc_missing_size(tmp_path: Path) -> None:
    root = _one_image_voc(tmp_path, Obj("bird", (1, 1, 9, 9)))
    xml = root / "Annotations/a.xml"
    xml.write_text(xml.read_text().replace("<width>64</width>", ""))
    with pytest.raises(DataError, match=r"a\.xml: missing <size/width>"):
        read_voc(root, "trainval", CLASSES)


def test_box_outside_image_is_clipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_voc(
        tmp_path / "VOC",
        {
            "trainval": [
                Img("a", objects=[Obj("bird", (-5, 10, 30, 70)), Obj("boat", (10, 10, 20, 20))])
            ]
        },
    )
    with caplog.at_level(logging.WARNING):
        (record,) = read_voc(root, "trainval", CLASSES).records
    np.testing.assert_allclose(record.boxes, [[0, 10, 30, 48], [10, 10, 20, 20]])
    assert "clipped 1 box(es)" in caplog.text and "a.xml object 0" in caplog.text


@pytest.mark.parametrize(
    "box",
    [(10, 10, 10, 30), (20, 10, 15, 30), (70, 5, 90, 20)],
    ids=["zero-width", "negative", "outside"],
)
def test_degenerate_box_is_dropped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, box
) -> None:
    root = write_voc(
        tmp_path / "VOC",
        {"trainval": [Img("a", objects=[Obj("bird", box), Obj("boat", (1, 1, 5, 5))])]},
    )
    with caplog.at_level(logging.WARNING):
        (record,) = read_voc(root, "trainval", CLASSES).records
    assert record.labels.tolist() == [3]
    assert "dropped 1 box(es)" in caplog.text


def test_bad_box_is_an_error_when_asked(tmp_path: Path) -> None:
    root = _one_image_voc(tmp_path, Obj("bird", (20, 10, 15, 30)))
    with pytest.raises(DataError, match=r"a\.xml object 0 box .* has zero or negative size"):
        read_voc(root, "trainval", CLASSES, on_bad_box="error")


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    from clod.data.dataset import load_image

    root = _one_image_voc(tmp_path, Obj("bird", (1, 1, 9, 9)))
    (root / "JPEGImages/a.png").write_bytes(b"not an image at all")
    (record,) = read_voc(root, "trainval", CLASSES).records
    with pytest.raises(DataError, match=r"image .*a\.png cannot be read"):
        load_image(record)


def test_image_size_disagreeing_with_annotation(tmp_path: Path) -> None:
    from clod.data.dataset import load_image

    root = _one_image_voc(tmp_path, Obj("bird", (1, 1, 9, 9)))
    xml = root / "Annotations/a.xml"
    xml.write_text(xml.read_text().replace("<width>64</width>", "<width>100</width>"))
    (record,) = read_voc(root, "trainval", CLASSES).records
    with pytest.raises(DataError, match=r"a\.png is 64x48 but its annotation says 100x48"):
        load_image(record)


def _coco_file(tmp_path: Path) -> tuple[Path, Path]:
    images = [Img("a", objects=[Obj("bird", (1, 1, 9, 9))])]
    write_voc(tmp_path / "VOC", {"x": images})
    return write_coco(
        tmp_path / "a.json", images, CLASSES, CATEGORY_IDS
    ), tmp_path / "VOC/JPEGImages"


def test_coco_malformed_json(tmp_path: Path) -> None:
    ann, images = _coco_file(tmp_path)
    ann.write_text('{"images": [')
    with pytest.raises(DataError, match=r"a\.json: malformed JSON"):
        read_coco(ann, images)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["annotations"][0].update(category_id=99),
            r"annotations\[0\] \(id 1\) has unknown category_id 99",
        ),
        (
            lambda d: d["annotations"][0].update(image_id=5),
            r"annotations\[0\] \(id 1\) refers to unknown image_id 5",
        ),
        (
            lambda d: d["annotations"][0].update(bbox=[1, 2, 3]),
            r"annotations\[0\] \(id 1\) bbox must be 4 numbers",
        ),
        (lambda d: d.pop("categories"), r"missing list 'categories'"),
        (lambda d: d["images"][0].pop("width"), r"images\[0\] lacks key\(s\) \['width'\]"),
    ],
    ids=["category", "image", "bbox", "categories", "width"],
)
def test_coco_bad_entries(tmp_path: Path, edit, message: str) -> None:
    ann, images = _coco_file(tmp_path)
    data = json.loads(ann.read_text())
    edit(data)
    ann.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message):
        read_coco(ann, images)


def test_coco_missing_files(tmp_path: Path) -> None:
    ann, images = _coco_file(tmp_path)
    with pytest.raises(DataError, match=r"annotation file .*missing\.json does not exist"):
        read_coco(tmp_path / "missing.json", images)
    with pytest.raises(DataError, match=r"image directory .*nodir does not exist"):
        read_coco(ann, tmp_path / "nodir")
    (images / "a.png").unlink()
    with pytest.raises(DataError, match=r"image .*a\.png does not exist \(referenced by .*a\.json"):
        read_coco(ann, images)


def test_coco_class_names_must_match(tmp_path: Path) -> None:
    ann, images = _coco_file(tmp_path)
    with pytest.raises(DataError, match=r"categories in id order are \['aeroplane'"):
        read_coco(ann, images, ["cat", "dog", "cow", "bus"])
