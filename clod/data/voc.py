"""Reader for datasets in the Pascal VOC layout.

Expected under ``root`` (e.g. ``VOCdevkit/VOC2007``)::

    Annotations/<id>.xml
    JPEGImages/<filename from the xml>
    ImageSets/Main/<split>.txt        one image id per line

Box conventions follow the reference (docs/protocol.md §3): coordinates are parsed as
floats with no -1 shift; boxes beyond the image are clipped and degenerate boxes
dropped, both counted (see :mod:`clod.data.repairs`). The ``difficult`` flag is kept
so that training and evaluation can each decide what to do with it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clod.data.classes import VOC_CLASSES
from clod.data.repairs import BadBoxPolicy, BoxRepairs
from clod.data.types import ImageRecord, Split
from clod.errors import DataError


def read_voc(
    root: str | Path,
    split: str,
    class_names: Sequence[str] = VOC_CLASSES,
    *,
    on_bad_box: BadBoxPolicy = "repair",
) -> Split:
    """Read the images listed in ``ImageSets/Main/<split>.txt`` with their boxes."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"VOC dataset directory {root} does not exist")
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise DataError(f"VOC split file {split_file} does not exist (split {split!r})")
    image_ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
    if not image_ids:
        raise DataError(f"VOC split file {split_file} lists no images")
    duplicates = sorted(i for i, n in Counter(image_ids).items() if n > 1)
    if duplicates:
        raise DataError(f"{split_file} lists image ids more than once: {duplicates[:5]}")

    class_index = {name: i for i, name in enumerate(class_names)}
    repairs = BoxRepairs(source=f"VOC {root} [{split}]", policy=on_bad_box)
    records = tuple(
        _read_annotation(root, image_id, class_index, repairs) for image_id in image_ids
    )
    repairs.report()
    return Split(class_names=tuple(class_names), records=records, source=str(split_file))


def _read_annotation(
    root: Path, image_id: str, class_index: dict[str, int], repairs: BoxRepairs
) -> ImageRecord:
    xml_path = root / "Annotations" / f"{image_id}.xml"
    if not xml_path.is_file():
        raise DataError(f"annotation file {xml_path} does not exist (listed in the split file)")
    try:
        tree = ET.parse(xml_path)
    except ET.ParseError as exc:
        raise DataError(f"{xml_path}: malformed XML ({exc})") from None
    node = tree.getroot()

    filename = _text(node, "filename", xml_path, default=f"{image_id}.jpg")
    image_path = root / "JPEGImages" / filename
    if not image_path.is_file():
        raise DataError(f"image {image_path} does not exist (referenced by {xml_path})")
    width = _number(node, "size/width", xml_path)
    height = _number(node, "size/height", xml_path)
    if width <= 0 or height <= 0:
        raise DataError(f"{xml_path}: image size {width}x{height} is not positive")

    boxes, labels, difficult = [], [], []
    for k, obj in enumerate(node.findall("object")):
        name = _text(obj, "name", xml_path, where=f"object {k}").strip()
        if name not in class_index:
            raise DataError(
                f"{xml_path}: object {k} has unknown class {name!r}; "
                f"known classes: {', '.join(class_index)}"
            )
        box_node = obj.find("bndbox")
        if box_node is None:
            raise DataError(f"{xml_path}: object {k} ({name}) has no <bndbox>")
        boxes.append(
            [
                _number(box_node, key, xml_path, f"object {k}")
                for key in ("xmin", "ymin", "xmax", "ymax")
            ]
        )
        labels.append(class_index[name])
        flag = obj.findtext("difficult")
        difficult.append(bool(int(float(flag))) if flag and flag.strip() else False)

    box_array, keep = repairs.sanitize(
        np.array(boxes, dtype=np.float32), int(width), int(height), str(xml_path)
    )
    return ImageRecord(
        image_id=image_id,
        path=image_path,
        width=int(width),
        height=int(height),
        boxes=box_array[keep],
        labels=np.array(labels, dtype=np.int64)[keep] if labels else np.zeros(0, np.int64),
        difficult=np.array(difficult, dtype=bool)[keep] if difficult else np.zeros(0, bool),
    )


def _text(
    node: ET.Element, key: str, xml_path: Path, where: str = "", default: str | None = None
) -> str:
    value = node.findtext(key)
    if value is None or not value.strip():
        if default is not None:
            return default
        place = f" {where}" if where else ""
        raise DataError(f"{xml_path}:{place} missing <{key}>")
    return value


def _number(node: ET.Element, key: str, xml_path: Path, where: str = "") -> float:
    raw = _text(node, key, xml_path, where)
    try:
        return float(raw)
    except ValueError:
        place = f" {where}" if where else ""
        raise DataError(f"{xml_path}:{place} <{key}> is not a number: {raw!r}") from None
