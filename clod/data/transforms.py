"""NanoDet-Plus image and box transforms, written with numpy and OpenCV (docs/detector.md §9).

Training geometry is one 3x3 matrix composed from: centre to origin, random scale
(and optional stretch), horizontal flip, random translation, then the resize to the
input size. The image is warped once with it and the boxes' corners are mapped with
it, so image and boxes can never disagree. The same matrix, inverted, maps
detections back to the original image. Validation uses the resize alone.

Colour jitter (brightness, contrast, saturation; each with p = 0.5) works on the
warped image scaled to [0, 1]. The pixel format (``data.pixels``, which follows the
model's ``pixels``) then makes the network input: ``imagenet`` (NanoDet-Plus) normalises
with the BGR ImageNet statistics, ``yolox`` keeps 0–255 values and fills the border and
the batch padding with 114, as YOLOX's letterbox does. Images stay BGR throughout, as
OpenCV reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

MEAN_BGR = np.array([103.53, 116.28, 123.675], dtype=np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], dtype=np.float32)
# Pixel formats: the border the warp fills (uint8 BGR) and the value the batch is padded
# with (network input units): imagenet pads with 0, the mean colour after normalisation.
PIXEL_FORMATS: dict[str, tuple[int, float]] = {"imagenet": (0, 0.0), "yolox": (114, 114.0)}
MIN_BOX_SIZE = 1.0  # boxes narrower or shorter than this after the warp can never be positives


@dataclass(frozen=True)
class Augment:
    """Training augmentation parameters; ``None`` switches a step off."""

    scale: tuple[float, float] = (0.6, 1.4)
    stretch: tuple[float, float] | None = None  # per-axis factor range (upstream COCO: 0.8, 1.2)
    flip: float = 0.5
    translate: float = 0.2
    brightness: float | None = 0.2
    contrast: tuple[float, float] | None = (0.8, 1.2)
    saturation: tuple[float, float] | None = (0.8, 1.2)


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def _scaling(sx: float, sy: float) -> np.ndarray:
    return np.diag([sx, sy, 1.0])


def resize_matrix(
    width: int, height: int, input_size: Sequence[int], keep_ratio: bool
) -> tuple[np.ndarray, tuple[int, int]]:
    """Matrix mapping a ``width`` x ``height`` frame to the input, and the output (w, h).

    With ``keep_ratio`` the frame is scaled by min(W/w, H/h) centre to centre and the
    output is the scaled size (500x375 -> 320x240 for a 320x320 input); otherwise it is
    stretched to the input size.
    """
    in_w, in_h = int(input_size[0]), int(input_size[1])
    if not keep_ratio:
        return _scaling(in_w / width, in_h / height), (in_w, in_h)
    ratio = min(in_w / width, in_h / height)
    out_w, out_h = max(1, round(width * ratio)), max(1, round(height * ratio))
    matrix = (
        _translation(out_w / 2, out_h / 2)
        @ _scaling(ratio, ratio)
        @ _translation(-width / 2, -height / 2)
    )
    return matrix, (out_w, out_h)


def random_geometry(
    width: int, height: int, augment: Augment, rng: np.random.Generator
) -> np.ndarray:
    """The random part of the training warp, in the original image's frame."""
    scale = rng.uniform(*augment.scale)
    sx = sy = scale
    if augment.stretch is not None:
        sx *= rng.uniform(*augment.stretch)
        sy *= rng.uniform(*augment.stretch)
    flip = _scaling(-1.0, 1.0) if rng.random() < augment.flip else np.eye(3)
    cx = rng.uniform(0.5 - augment.translate, 0.5 + augment.translate) * width
    cy = rng.uniform(0.5 - augment.translate, 0.5 + augment.translate) * height
    return _translation(cx, cy) @ flip @ _scaling(sx, sy) @ _translation(-width / 2, -height / 2)


def warp_boxes(
    boxes: np.ndarray, matrix: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Map ``boxes`` through ``matrix``: corners, then min/max, clipped to (width, height).

    Returns the boxes and a mask of those at least ``MIN_BOX_SIZE`` wide and high.
    """
    if len(boxes) == 0:
        return boxes.reshape(0, 4).astype(np.float32), np.zeros(0, dtype=bool)
    x1, y1, x2, y2 = boxes.T
    corners = np.stack(
        [np.stack([x1, y1]), np.stack([x2, y1]), np.stack([x1, y2]), np.stack([x2, y2])]
    )
    # corners: (4 corners, 2 coords, n) -> homogeneous transform per corner
    xs = matrix[0, 0] * corners[:, 0] + matrix[0, 1] * corners[:, 1] + matrix[0, 2]
    ys = matrix[1, 0] * corners[:, 0] + matrix[1, 1] * corners[:, 1] + matrix[1, 2]
    warped = np.stack([xs.min(0), ys.min(0), xs.max(0), ys.max(0)], axis=1)
    warped = np.clip(warped, 0, [width, height, width, height]).astype(np.float32)
    keep = ((warped[:, 2] - warped[:, 0]) >= MIN_BOX_SIZE) & (
        (warped[:, 3] - warped[:, 1]) >= MIN_BOX_SIZE
    )
    return warped, keep


def color_jitter(image: np.ndarray, augment: Augment, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation jitter on a float BGR image in [0, 1] (in place)."""
    if augment.brightness is not None and rng.random() < 0.5:
        image += rng.uniform(-augment.brightness, augment.brightness)
    if augment.contrast is not None and rng.random() < 0.5:
        image *= rng.uniform(*augment.contrast)
    if augment.saturation is not None and rng.random() < 0.5:
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
        hsv[..., 1] *= rng.uniform(*augment.saturation)
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    return image


class DetectionTransform:
    """Image + boxes -> network input. Training when ``augment`` is given, else validation."""

    def __init__(
        self,
        input_size: Sequence[int],
        keep_ratio: bool = True,
        augment: Augment | None = None,
        pixels: str = "imagenet",
    ):
        if len(input_size) != 2 or min(input_size) <= 0:
            raise ValueError(f"input_size must be [width, height] > 0, got {list(input_size)}")
        if pixels not in PIXEL_FORMATS:
            raise ValueError(f"pixels={pixels!r} is not one of {sorted(PIXEL_FORMATS)}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.keep_ratio = keep_ratio
        self.augment = augment
        self.pixels = pixels
        self.border, self.pad_value = PIXEL_FORMATS[pixels]

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return (CHW float32 image, boxes, keep mask over the input boxes, 3x3 warp)."""
        height, width = image.shape[:2]
        resize, (out_w, out_h) = resize_matrix(width, height, self.input_size, self.keep_ratio)
        if self.augment is not None:
            if rng is None:
                raise ValueError("a training transform needs a random generator")
            matrix = resize @ random_geometry(width, height, self.augment, rng)
        else:
            matrix = resize
        warped = cv2.warpAffine(
            image,
            matrix[:2],
            (out_w, out_h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(self.border,) * 3,
        )
        if self.augment is None and self.pixels == "yolox":
            pixels = warped.astype(np.float32)  # no jitter: the 0–255 values as they are
        else:
            pixels = warped.astype(np.float32) * np.float32(1 / 255)
            if self.augment is not None:
                pixels = color_jitter(pixels, self.augment, rng)
            if self.pixels == "yolox":
                pixels *= np.float32(255)
            else:
                # (x/255 - mean/255) / (std/255) == (x - mean) / std
                pixels = (pixels - MEAN_BGR / 255) / (STD_BGR / 255)
        new_boxes, keep = warp_boxes(np.asarray(boxes, dtype=np.float32), matrix, out_w, out_h)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1)), new_boxes[keep], keep, matrix


def denormalize(image: np.ndarray) -> np.ndarray:
    """Inverse of the normalisation: CHW float -> HWC uint8 BGR (for previews and tests)."""
    pixels = image.transpose(1, 2, 0) * STD_BGR + MEAN_BGR
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
