"""A PNG contact sheet of a generated dataset: a legend of the classes, annotated images."""

from __future__ import annotations

import colorsys
import json
import math
from collections.abc import Sequence
from pathlib import Path
from xml.etree import ElementTree

import cv2
import numpy as np

from clod.data.synthetic.render import _hsv_to_bgr, _texture
from clod.data.synthetic.shapes import _place_shape, _rasterise
from clod.data.synthetic.spec import _COLOURS, _appearance_table


def _label_colour(label: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.9, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def _read_voc_boxes(xml_path: Path) -> list[tuple[str, tuple[float, ...], bool]]:
    boxes = []
    for obj in ElementTree.parse(xml_path).getroot().iter("object"):
        bndbox = obj.find("bndbox")
        assert bndbox is not None
        coords = tuple(float(bndbox.findtext(k, "0")) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append((obj.findtext("name", ""), coords, obj.findtext("difficult") == "1"))
    return boxes


def _legend_tiles(class_names: Sequence[str], tile: int) -> list[np.ndarray]:
    """One plain tile per class showing its canonical look, named."""
    tiles = []
    rng = np.random.default_rng(0)
    for label, look in enumerate(_appearance_table(len(class_names))[: len(class_names)]):
        canvas = np.full((tile, tile, 3), 128, dtype=np.float32)
        half = tile * 0.3
        geometry = _place_shape(look.shape, (tile / 2, tile * 0.42), (half, half), 0.0)
        coverage, left, top = _rasterise(geometry)
        colour = _hsv_to_bgr(*_COLOURS[look.colour])
        pixels = _texture(look.texture, colour, geometry, left, top, coverage.shape, rng)
        ys = slice(top, top + coverage.shape[0])
        xs = slice(left, left + coverage.shape[1])
        alpha = coverage.astype(np.float32)[..., None] / 255.0
        canvas[ys, xs] += (pixels - canvas[ys, xs]) * alpha
        image = np.clip(canvas, 0, 255).astype(np.uint8)
        cv2.putText(
            image,
            f"{label}:{class_names[label]}"[:14],
            (2, tile - 5),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.33,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
        tiles.append(image)
    return tiles


def _grid(tiles: list[np.ndarray], columns: int, pad: int = 4) -> np.ndarray:
    cell_h = max(t.shape[0] for t in tiles) + pad
    cell_w = max(t.shape[1] for t in tiles) + pad
    rows = math.ceil(len(tiles) / columns)
    sheet = np.full((rows * cell_h + pad, columns * cell_w + pad, 3), 40, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        y, x = pad + (i // columns) * cell_h, pad + (i % columns) * cell_w
        sheet[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return sheet


def render_preview(
    root: Path,
    out_path: Path,
    split: str = "trainval",
    num_images: int = 12,
    columns: int = 4,
    scale: int = 2,
) -> Path:
    """Save a PNG contact sheet: a legend of every class, then annotated images.

    Reads the images and VOC xml back from disk, so it also shows what readers will see.
    Difficult boxes are drawn white on a black halo and marked with ``*``.
    """
    root, out_path = Path(root), Path(out_path)
    voc = root / "VOC2007"
    manifest = json.loads((root / "manifest.json").read_text())
    class_names = manifest["spec"]["class_names"]
    ids = (voc / "ImageSets" / "Main" / f"{split}.txt").read_text().split()[:num_images]
    tiles = []
    for image_id in ids:
        image = cv2.imread(str(voc / "JPEGImages" / f"{image_id}.jpg"))
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        for name, (x0, y0, x1, y1), difficult in _read_voc_boxes(
            voc / "Annotations" / f"{image_id}.xml"
        ):
            label = class_names.index(name)
            colour = _label_colour(label)
            p0 = (round(x0 * scale), round(y0 * scale))
            p1 = (round(x1 * scale) - 1, round(y1 * scale) - 1)
            if difficult:
                # a black halo makes the white difficult boxes visible on any background
                cv2.rectangle(image, p0, p1, (0, 0, 0), 3)
                colour = (255, 255, 255)
            cv2.rectangle(image, p0, p1, colour, 1)
            text = f"{name}{'*' if difficult else ''}"
            cv2.putText(
                image,
                text,
                (p0[0] + 2, max(p0[1] + 10, 10)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.33,
                colour,
                1,
                cv2.LINE_AA,
            )
        tiles.append(image)
    legend = _grid(_legend_tiles(class_names, 64 * scale // 2 + 24), columns=10)
    images = _grid(tiles, columns=columns)
    width = max(legend.shape[1], images.shape[1])

    def widen(part: np.ndarray) -> np.ndarray:
        return cv2.copyMakeBorder(
            part, 0, 0, 0, width - part.shape[1], cv2.BORDER_CONSTANT, value=(40, 40, 40)
        )

    out_path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_path), np.concatenate([widen(legend), widen(images)]))
    return out_path
