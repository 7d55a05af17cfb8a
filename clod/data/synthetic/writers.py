"""Writing files: per-image JPEG and VOC xml, COCO json, split statistics, digests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import cv2

from clod.data.classes import COCO_CATEGORY_IDS, COCO_CLASSES
from clod.data.synthetic.render import SyntheticObject, render_synthetic_image
from clod.data.synthetic.spec import GENERATOR_VERSION, SyntheticSpec

# A class gets a gap in the COCO category ids after every this many classes, so readers
# must map sorted category ids to contiguous labels (as with real COCO ids 1..90).
_CATEGORY_ID_GAP_EVERY = 3


def coco_category_id(label: int, class_names: Sequence[str] = ()) -> int:
    """The COCO category id written for global class index ``label`` (increasing, gapped):
    COCO's own ids when the classes are COCO's 80, in COCO's order."""
    if tuple(class_names) == COCO_CLASSES:
        return COCO_CATEGORY_IDS[label]
    return label + 1 + label // _CATEGORY_ID_GAP_EVERY


def _voc_xml(
    image_id: str,
    width: int,
    height: int,
    objects: list[SyntheticObject],
    class_names: Sequence[str],
) -> str:
    lines = [
        "<annotation>",
        "\t<folder>VOC2007</folder>",
        f"\t<filename>{image_id}.jpg</filename>",
        "\t<source>",
        "\t\t<database>clod synthetic</database>",
        "\t</source>",
        "\t<size>",
        f"\t\t<width>{width}</width>",
        f"\t\t<height>{height}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
        "\t<segmented>0</segmented>",
    ]
    for obj in objects:
        x0, y0, x1, y1 = obj.box
        lines += [
            "\t<object>",
            f"\t\t<name>{escape(class_names[obj.label])}</name>",
            "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{int(obj.truncated)}</truncated>",
            f"\t\t<difficult>{int(obj.difficult)}</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{x0:.1f}</xmin>",
            f"\t\t\t<ymin>{y0:.1f}</ymin>",
            f"\t\t\t<xmax>{x1:.1f}</xmax>",
            f"\t\t\t<ymax>{y1:.1f}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_bytes(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return _sha256(data)


def _generate_one(spec: SyntheticSpec, root: Path, job: tuple[str, int, int]) -> dict[str, Any]:
    """Render one image and write its JPEG and VOC xml; runs in a worker process."""
    split, index, number = job
    image_id = f"{number:06d}"
    rendered = render_synthetic_image(spec, split, index)
    ok, jpeg = cv2.imencode(".jpg", rendered.image, [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for image {image_id}")
    height, width = rendered.image.shape[:2]
    voc = root / "VOC2007"
    xml = _voc_xml(image_id, width, height, rendered.objects, spec.class_names)
    return {
        "split": split,
        "image_id": image_id,
        "number": number,
        "width": width,
        "height": height,
        "objects": [(o.label, o.box, o.truncated, o.difficult) for o in rendered.objects],
        "digests": {
            f"VOC2007/JPEGImages/{image_id}.jpg": _write_bytes(
                voc / "JPEGImages" / f"{image_id}.jpg", jpeg.tobytes()
            ),
            f"VOC2007/Annotations/{image_id}.xml": _write_bytes(
                voc / "Annotations" / f"{image_id}.xml", xml.encode()
            ),
        },
    }


def _coco_json(spec: SyntheticSpec, records: list[dict[str, Any]]) -> str:
    images, annotations = [], []
    for record in records:
        images.append(
            {
                "id": record["number"],
                "file_name": f"{record['image_id']}.jpg",
                "width": record["width"],
                "height": record["height"],
            }
        )
        for label, (x0, y0, x1, y1), _truncated, difficult in record["objects"]:
            box_width, box_height = round(x1 - x0, 1), round(y1 - y0, 1)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": record["number"],
                    "category_id": coco_category_id(label, spec.class_names),
                    "bbox": [x0, y0, box_width, box_height],
                    "area": round(box_width * box_height, 2),
                    "iscrowd": 0,
                    "difficult": int(difficult),
                }
            )
    categories = [
        {"id": coco_category_id(label, spec.class_names), "name": name, "supercategory": "shape"}
        for label, name in enumerate(spec.class_names)
    ]
    document = {
        "info": {
            "description": f"clod synthetic benchmark {spec.name}",
            "version": str(GENERATOR_VERSION),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    return json.dumps(document, separators=(",", ":")) + "\n"


def _split_statistics(spec: SyntheticSpec, records: list[dict[str, Any]]) -> dict[str, Any]:
    boxes_per_class = dict.fromkeys(spec.class_names, 0)
    images_per_class = dict.fromkeys(spec.class_names, 0)
    difficult = truncated = 0
    for record in records:
        for label in {obj[0] for obj in record["objects"]}:
            images_per_class[spec.class_names[label]] += 1
        for label, _box, is_truncated, is_difficult in record["objects"]:
            boxes_per_class[spec.class_names[label]] += 1
            difficult += int(is_difficult)
            truncated += int(is_truncated)
    return {
        "images": len(records),
        "boxes": sum(boxes_per_class.values()),
        "difficult_boxes": difficult,
        "truncated_boxes": truncated,
        "images_per_class": images_per_class,
        "boxes_per_class": boxes_per_class,
    }


def _content_hash(digests: Mapping[str, str]) -> str:
    listing = "".join(f"{path}\t{digests[path]}\n" for path in sorted(digests))
    return _sha256(listing.encode())
