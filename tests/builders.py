"""Write small VOC and COCO datasets to disk from one description, for tests.

Each object is painted as a filled rectangle in its own colour, so tests can also
check that transforms keep boxes on their pixels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np


@dataclass
class Obj:
    name: str
    box: tuple[float, float, float, float]  # xyxy
    difficult: bool = False
    crowd: bool = False


@dataclass
class Img:
    image_id: str
    width: int = 64
    height: int = 48
    objects: list[Obj] = field(default_factory=list)


def paint(img: Img) -> np.ndarray:
    pixels = np.full((img.height, img.width, 3), 40, dtype=np.uint8)
    for k, obj in enumerate(img.objects):
        x1, y1, x2, y2 = (round(v) for v in obj.box)
        colour = (50 + 40 * (k % 5), 255 - 30 * (k % 7), 90 + 25 * (k % 6))
        cv2.rectangle(
            pixels,
            (max(x1, 0), max(y1, 0)),
            (min(x2, img.width) - 1, min(y2, img.height) - 1),
            colour,
            -1,
        )
    return pixels


def write_images(image_dir: Path, images: list[Img]) -> None:
    image_dir.mkdir(parents=True, exist_ok=True)
    for img in images:
        cv2.imwrite(str(image_dir / f"{img.image_id}.png"), paint(img))


def voc_xml(img: Img) -> str:
    objects = "".join(
        f"<object><name>{o.name}</name><difficult>{int(o.difficult)}</difficult>"
        f"<bndbox><xmin>{o.box[0]}</xmin><ymin>{o.box[1]}</ymin><xmax>{o.box[2]}</xmax>"
        f"<ymax>{o.box[3]}</ymax></bndbox></object>"
        for o in img.objects
        if not o.crowd
    )
    return (
        f"<annotation><filename>{img.image_id}.png</filename><size><width>{img.width}</width>"
        f"<height>{img.height}</height><depth>3</depth></size>{objects}</annotation>"
    )


def write_voc(root: Path, splits: dict[str, list[Img]]) -> Path:
    """VOC layout under ``root``: Annotations, JPEGImages (PNG files here), ImageSets/Main."""
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for split, images in splits.items():
        write_images(root / "JPEGImages", images)
        for img in images:
            (root / "Annotations" / f"{img.image_id}.xml").write_text(voc_xml(img))
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text(
            "".join(f"{i.image_id}\n" for i in images)
        )
    return root


def coco_dict(images: list[Img], class_names: list[str], category_ids: list[int]) -> dict:
    cat_of = dict(zip(class_names, category_ids, strict=True))
    coco_images, annotations = [], []
    for number, img in enumerate(images, start=1):
        coco_images.append(
            {
                "id": number * 7,
                "file_name": f"{img.image_id}.png",
                "width": img.width,
                "height": img.height,
            }
        )
        for obj in img.objects:
            x1, y1, x2, y2 = obj.box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": number * 7,
                    "category_id": cat_of[obj.name],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(obj.crowd),
                    "difficult": int(obj.difficult),
                }
            )
    # Categories deliberately listed out of id order: the reader must sort them.
    categories = [{"id": c, "name": n} for n, c in zip(class_names, category_ids, strict=True)][
        ::-1
    ]
    return {"images": coco_images, "annotations": annotations, "categories": categories}


def write_coco(
    path: Path, images: list[Img], class_names: list[str], category_ids: list[int]
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco_dict(images, class_names, category_ids)))
    return path
