"""Transforms keep boxes on their pixels; batching pads to multiples of 32."""

from __future__ import annotations

import numpy as np
import pytest

from clod.data.dataset import collate
from clod.data.transforms import Augment, DetectionTransform, denormalize, resize_matrix, warp_boxes
from clod.data.types import Sample


def painted_image(width: int, height: int, box: tuple[int, int, int, int]) -> np.ndarray:
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[...] = (60, 60, 60)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = (20, 230, 250)  # a bright rectangle exactly covering the box
    return image


def bright_extent(chw: np.ndarray) -> tuple[float, float, float, float]:
    pixels = denormalize(chw).astype(int)
    mask = (pixels[..., 2] > 180) & (pixels[..., 1] > 140)
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


@pytest.mark.parametrize("seed", range(12))
def test_training_warp_keeps_box_on_its_pixels(seed: int) -> None:
    box = (30, 20, 90, 70)
    image = painted_image(160, 120, box)
    # No colour jitter here: it would move the threshold; geometry is what is tested.
    augment = Augment(brightness=None, contrast=None, saturation=None)
    transform = DetectionTransform((128, 128), keep_ratio=True, augment=augment)
    pixels, boxes, keep, _warp = transform(
        image, np.array([box], np.float32), np.random.default_rng(seed)
    )
    if not keep[0]:
        pytest.skip("box left the image for this draw")
    x1, y1, x2, y2 = bright_extent(pixels)
    # interpolation smears one pixel at the edges
    np.testing.assert_allclose(boxes[0], [x1, y1, x2, y2], atol=1.6)
    assert pixels.shape[1:] == (96, 128)  # 160x120 scaled by 0.8


def test_flip_happens_and_mirrors_boxes() -> None:
    augment = Augment(
        scale=(1, 1), flip=1.0, translate=0.0, brightness=None, contrast=None, saturation=None
    )
    transform = DetectionTransform((160, 120), augment=augment)
    _, boxes, _, _ = transform(
        painted_image(160, 120, (10, 20, 40, 50)),
        np.array([[10, 20, 40, 50]], np.float32),
        np.random.default_rng(0),
    )
    np.testing.assert_allclose(boxes[0], [120, 20, 150, 50], atol=1e-4)


def test_validation_resize_keeps_ratio_and_inverse_maps_back() -> None:
    _matrix, size = resize_matrix(500, 375, (320, 320), keep_ratio=True)
    assert size == (320, 240)
    transform = DetectionTransform((320, 320), keep_ratio=True)
    box = np.array([[100, 50, 300, 200]], np.float32)
    pixels, boxes, _, warp = transform(painted_image(500, 375, (100, 50, 300, 200)), box)
    assert pixels.shape == (3, 240, 320)
    np.testing.assert_allclose(boxes, box * 0.64, atol=1e-4)
    corners = np.linalg.inv(warp) @ np.array(
        [[boxes[0, 0], boxes[0, 2]], [boxes[0, 1], boxes[0, 3]], [1, 1]]
    )
    np.testing.assert_allclose(corners[:2].T.reshape(-1), box[0], atol=1e-3)


def test_stretch_without_keep_ratio() -> None:
    _, size = resize_matrix(500, 375, (320, 320), keep_ratio=False)
    assert size == (320, 320)


def test_boxes_leaving_the_image_are_dropped() -> None:
    matrix = np.array([[1.0, 0, 100], [0, 1, 0], [0, 0, 1]])
    boxes, keep = warp_boxes(
        np.array([[0, 0, 10, 10], [80, 0, 120, 10]], np.float32), matrix, 128, 64
    )
    assert keep.tolist() == [True, False]
    np.testing.assert_allclose(boxes[0], [100, 0, 110, 10])


def test_normalisation_matches_bgr_statistics() -> None:
    image = np.full((32, 32, 3), (103, 116, 123), np.uint8)
    pixels, *_ = DetectionTransform((32, 32))(image, np.zeros((0, 4), np.float32))
    np.testing.assert_allclose(
        pixels[:, 0, 0],
        [(103 - 103.53) / 57.375, (116 - 116.28) / 57.12, (123 - 123.675) / 58.395],
        atol=1e-5,
    )


def test_colour_jitter_changes_pixels_but_not_boxes() -> None:
    image = painted_image(64, 64, (10, 10, 30, 30))
    box = np.array([[10, 10, 30, 30]], np.float32)
    geometry_off = dict(scale=(1, 1), flip=0.0, translate=0.0)
    plain = DetectionTransform(
        (64, 64), augment=Augment(**geometry_off, brightness=None, contrast=None, saturation=None)
    )
    jitter = DetectionTransform((64, 64), augment=Augment(**geometry_off))
    differs = 0
    for seed in range(8):
        a, boxes_a, _, _ = plain(image, box, np.random.default_rng(seed))
        b, boxes_b, _, _ = jitter(image, box, np.random.default_rng(seed))
        np.testing.assert_allclose(boxes_a, boxes_b)
        differs += not np.allclose(a, b)
    assert differs >= 4  # each step fires with p = 0.5


def test_collate_pads_to_multiple_of_32() -> None:
    def sample(h: int, w: int, n: int) -> Sample:
        return Sample(
            image=np.ones((3, h, w), np.float32),
            boxes=np.ones((n, 4), np.float32),
            labels=np.arange(n),
            warp=np.eye(3),
            image_id=f"{h}x{w}",
            orig_size=(h, w),
        )

    batch = collate([sample(100, 70, 2), sample(64, 129, 0)])
    assert tuple(batch.images.shape) == (2, 3, 128, 160)
    assert batch.images[0, :, :100, :70].eq(1).all() and batch.images[0, :, 100:].eq(0).all()
    assert batch.images[1, :, :, 129:].eq(0).all()
    assert [b.shape for b in batch.boxes] == [(2, 4), (0, 4)]
    assert batch.orig_sizes.tolist() == [[100, 70], [64, 129]]
