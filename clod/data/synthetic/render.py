"""Drawing one image: background clutter, object colours and textures, placement.

:func:`render_synthetic_image` is a pure function of ``(spec, split, index)``: every image
draws from its own random stream, so the bytes do not depend on what was drawn before or
on the number of worker processes.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from clod.data.synthetic.shapes import _ObjectGeometry, _place_shape, _rasterise
from clod.data.synthetic.spec import _COLOURS, _SPLIT_CODES, SyntheticSpec, _appearance_table

_MAX_PLACEMENT_ATTEMPTS = 12
_MIN_VISIBLE_PIXELS = 24  # an object must show at least this many pixels inside the image


# -------------------------------------------------------------------------- colours


def _hsv_to_bgr(hue_deg: float, saturation: float, value: float) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb((hue_deg / 360.0) % 1.0, saturation, value)
    return np.array([b, g, r], dtype=np.float32) * 255.0


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A background/distractor colour: never saturated enough to pass for an object."""
    return _hsv_to_bgr(rng.uniform(0, 360), rng.uniform(0.0, 0.28), rng.uniform(0.25, 0.85))


def _object_colour(colour: str, rng: np.random.Generator, hue_jitter_deg: float) -> np.ndarray:
    hue, saturation, value = _COLOURS[colour]
    return _hsv_to_bgr(
        hue + rng.uniform(-hue_jitter_deg, hue_jitter_deg),
        min(1.0, saturation * rng.uniform(0.85, 1.05)),
        min(1.0, value * rng.uniform(0.8, 1.05)),
    )


def _texture(
    texture: str,
    colour: np.ndarray,
    geometry: _ObjectGeometry,
    left: int,
    top: int,
    shape: tuple[int, int],
    rng: np.random.Generator,
) -> np.ndarray:
    """The object's BGR pixels on its patch; patterns follow the object's rotation."""
    height, width = shape
    cx, cy = geometry.centre
    dx = np.arange(width, dtype=np.float32) + 0.5 + left - cx
    dy = np.arange(height, dtype=np.float32) + 0.5 + top - cy
    cos_a, sin_a = math.cos(geometry.angle), math.sin(geometry.angle)
    # object-frame coordinates: the inverse of the rotation applied to the shape
    u = cos_a * dx[None, :] + sin_a * dy[:, None]
    v = -sin_a * dx[None, :] + cos_a * dy[:, None]
    half_w, half_h = geometry.half_size
    # pattern period grows with the object so texture stays recognisable at every scale
    period = max(4.0, math.sqrt(4 * half_w * half_h) / 4.0)
    u_phase = u + rng.uniform(0, period)
    v_phase = v + rng.uniform(0, period)

    if texture == "solid":
        dark_weight = np.zeros((height, width), dtype=np.float32)
    elif texture == "stripes":
        wave = np.sin(2 * np.pi * u_phase / period)
        dark_weight = np.clip(wave * 2.5 + 0.5, 0, 1)
    elif texture == "checker":
        wave = np.sin(2 * np.pi * u_phase / period) * np.sin(2 * np.pi * v_phase / period)
        dark_weight = np.clip(wave * 4.0 + 0.5, 0, 1)
    elif texture == "dots":
        du = u_phase / period - np.round(u_phase / period)
        dv = v_phase / period - np.round(v_phase / period)
        distance = np.sqrt(du * du + dv * dv) * period
        dark_weight = np.clip(0.3 * period - distance + 0.5, 0, 1)
    elif texture == "gradient":
        dark_weight = np.clip(0.5 + v / (2 * half_h), 0, 1) * 0.9
    else:
        raise ValueError(f"unknown texture {texture!r}")

    dark = colour * 0.28
    pixels = colour + (dark - colour) * dark_weight[..., None]
    # a faint light direction so flat colours are not perfectly flat
    shading = 1.0 + rng.uniform(-0.12, 0.12) * np.clip(u / half_w, -1, 1)
    return pixels * shading[..., None]


# ------------------------------------------------------------------------ rendering


@dataclass
class SyntheticObject:
    """One ground-truth object of a rendered image."""

    label: int
    box: tuple[float, float, float, float]  # xyxy, full extent clipped to the image
    truncated: bool
    difficult: bool
    occluded_fraction: float  # of the in-image pixels, hidden by later objects
    hidden_fraction: float  # of the whole object, occluded or outside the image


@dataclass
class SyntheticImage:
    image: np.ndarray  # (h, w, 3) uint8 BGR
    objects: list[SyntheticObject] = field(default_factory=list)


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split], index]))


def _background(
    rng: np.random.Generator, spec: SyntheticSpec, height: int, width: int
) -> np.ndarray:
    """Cluttered, desaturated background: gradient, blotches, lines and irregular blobs."""
    start, end = _muted_colour(rng), _muted_colour(rng)
    angle = rng.uniform(0, 2 * np.pi)
    xs = np.arange(width, dtype=np.float32)[None, :]
    ys = np.arange(height, dtype=np.float32)[:, None]
    ramp = xs * math.cos(angle) + ys * math.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    canvas = start + (end - start) * ramp[..., None]
    blotches = rng.normal(0.0, 16.0, size=(4, 4, 3)).astype(np.float32)
    canvas += cv2.resize(blotches, (width, height), interpolation=cv2.INTER_CUBIC)
    canvas = np.clip(canvas, 0, 255).astype(np.uint8)

    low, high = spec.distractors_per_image
    for _ in range(int(rng.integers(low, high + 1))):
        colour = tuple(float(c) for c in _muted_colour(rng))
        if rng.random() < 0.45:
            p0 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(canvas, p0, p1, colour, int(rng.integers(1, 4)), lineType=cv2.LINE_AA)
        else:
            # irregular blob: jittered radii at uneven angles, so it never forms a class shape
            vertices = int(rng.integers(5, 10))
            angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
            radius = rng.uniform(4, 0.15 * min(width, height) + 4)
            radii = radius * rng.uniform(0.4, 1.0, vertices)
            centre = rng.uniform(0, 1, 2) * (width, height)
            points = np.stack(
                [centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], axis=1
            )
            cv2.fillPoly(
                canvas,
                [np.round(points * 16).astype(np.int32)],
                colour,
                lineType=cv2.LINE_AA,
                shift=4,
            )
    return canvas.astype(np.float32)


def _sample_geometry(
    rng: np.random.Generator,
    spec: SyntheticSpec,
    shape: str,
    width: int,
    height: int,
    may_truncate: bool,
) -> _ObjectGeometry:
    low, high = spec.object_size_range
    # keep even a rotated object small enough to fit the image with room to move
    high = min(high, 0.55 * min(width, height))
    low = min(low, high)
    size = math.exp(rng.uniform(math.log(low), math.log(high)))
    aspect = math.exp(rng.uniform(-1, 1) * math.log(spec.max_aspect_ratio))
    half_size = (0.5 * size * math.sqrt(aspect), 0.5 * size / math.sqrt(aspect))
    angle = math.radians(rng.uniform(-spec.max_rotation_deg, spec.max_rotation_deg))
    placed = _place_shape(shape, (0.0, 0.0), half_size, angle)
    x0, y0, x1, y1 = placed.box
    # a centre that keeps the whole extent inside the image
    cx = rng.uniform(-x0, width - x1)
    cy = rng.uniform(-y0, height - y1)
    if may_truncate:
        # push the object over one border by a fraction of its extent; the caller's area
        # check keeps the part outside the image below max_truncation
        overhang = rng.uniform(0.1, max(0.1, spec.max_truncation))
        border = int(rng.integers(4))
        if border == 0:
            cx = -x0 - overhang * (x1 - x0)
        elif border == 1:
            cx = width - x1 + overhang * (x1 - x0)
        elif border == 2:
            cy = -y0 - overhang * (y1 - y0)
        else:
            cy = height - y1 + overhang * (y1 - y0)
    return _place_shape(shape, (cx, cy), half_size, angle)


def render_synthetic_image(spec: SyntheticSpec, split: str, index: int) -> SyntheticImage:
    """Draw image ``index`` of ``split``; a pure function of its arguments."""
    rng = _image_rng(spec.seed, split, index)
    appearances = _appearance_table(len(spec.class_names))
    num_classes = len(spec.class_names)

    low, high = spec.image_size_range
    width, height = (int(v) for v in rng.integers(low, high + 1, size=2))
    canvas = _background(rng, spec, height, width)

    low, high = spec.objects_per_image
    num_objects = int(rng.integers(low, high + 1))
    # The first object cycles through the classes, so every split of at least
    # num_classes images contains every class; the rest are uniform.
    labels = [(index + spec.seed) % num_classes]
    labels += [int(c) for c in rng.integers(0, num_classes, size=num_objects - 1)]

    # owner[y, x] = which object shows at this pixel (-1: background); later objects
    # occlude earlier ones, and the per-object visible counts follow from it.
    owner = np.full((height, width), -1, dtype=np.int32)
    # label, geometry, pixels of the whole object, pixels inside the image
    accepted: list[tuple[int, _ObjectGeometry, int, int]] = []
    visible: list[int] = []
    for position, label in enumerate(labels):
        look = appearances[label]
        # the guaranteed first object is never truncated, so it can always be placed
        may_truncate = position > 0 and rng.random() < spec.truncation_probability
        for _ in range(_MAX_PLACEMENT_ATTEMPTS):
            geometry = _sample_geometry(rng, spec, look.shape, width, height, may_truncate)
            coverage, left, top = _rasterise(geometry)
            full_pixels = int(np.count_nonzero(coverage >= 128))
            # the part of the patch that lies inside the image
            ix0, iy0 = max(left, 0), max(top, 0)
            ix1, iy1 = min(left + coverage.shape[1], width), min(top + coverage.shape[0], height)
            if ix0 >= ix1 or iy0 >= iy1:
                continue
            inside = coverage[iy0 - top : iy1 - top, ix0 - left : ix1 - left]
            solid = inside >= 128
            inside_pixels = int(np.count_nonzero(solid))
            # (tiny objects that lie fully inside are always visible enough)
            enough = max(
                min(_MIN_VISIBLE_PIXELS, full_pixels), (1 - spec.max_truncation) * full_pixels
            )
            if inside_pixels < enough:
                continue
            covered = owner[iy0:iy1, ix0:ix1][solid]
            newly_hidden = np.bincount(covered[covered >= 0], minlength=len(accepted))
            still_visible = np.array(visible, dtype=np.int64) - newly_hidden
            totals = np.array([a[3] for a in accepted], dtype=np.int64)
            if np.any(still_visible < (1 - spec.max_occlusion) * totals):
                continue
            visible = [int(v) for v in still_visible] + [inside_pixels]
            owner[iy0:iy1, ix0:ix1][solid] = len(accepted)
            accepted.append((label, geometry, full_pixels, inside_pixels))

            colour = _object_colour(look.colour, rng, spec.hue_jitter_deg)
            pixels = _texture(look.texture, colour, geometry, left, top, coverage.shape, rng)
            alpha = inside.astype(np.float32)[..., None] / 255.0
            region = canvas[iy0:iy1, ix0:ix1]
            patch = pixels[iy0 - top : iy1 - top, ix0 - left : ix1 - left]
            canvas[iy0:iy1, ix0:ix1] = region + (patch - region) * alpha
            break

    noise = rng.standard_normal(size=canvas.shape, dtype=np.float32) * spec.noise_sigma
    image = np.clip(canvas + noise, 0, 255).round().astype(np.uint8)

    objects = []
    for (label, geometry, full_pixels, inside_pixels), visible_pixels in zip(
        accepted, visible, strict=True
    ):
        x0, y0, x1, y1 = geometry.box
        clipped = (
            round(min(max(x0, 0.0), width), 1),
            round(min(max(y0, 0.0), height), 1),
            round(min(max(x1, 0.0), width), 1),
            round(min(max(y1, 0.0), height), 1),
        )
        truncated = x0 < 0 or y0 < 0 or x1 > width or y1 > height
        occluded = 1.0 - visible_pixels / inside_pixels
        # what a viewer misses, whether behind other objects or beyond the border
        hidden = 1.0 - visible_pixels / full_pixels
        too_small = min(clipped[2] - clipped[0], clipped[3] - clipped[1]) < spec.difficult_min_size
        objects.append(
            SyntheticObject(
                label=label,
                box=clipped,
                truncated=truncated,
                difficult=too_small or hidden > spec.difficult_occlusion,
                occluded_fraction=occluded,
                hidden_fraction=hidden,
            )
        )
    return SyntheticImage(image=image, objects=objects)
