"""Shape geometry: the class shapes as polygons, placed in an image and rasterised.

Objects are rasterised here rather than with ``cv2.fillPoly`` so their boxes are tight
(see :data:`_SUPERSAMPLE`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _regular_polygon(sides: int, radius: float = 1.0, phase_deg: float = -90.0) -> np.ndarray:
    angles = np.deg2rad(phase_deg) + 2 * np.pi * np.arange(sides) / sides
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _star() -> np.ndarray:
    outer = _regular_polygon(5, 1.0)
    inner = _regular_polygon(5, 0.45, phase_deg=-90.0 + 36.0)
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _cross(half_thickness: float = 0.34) -> np.ndarray:
    t = half_thickness
    return np.array(
        [
            (-t, -1),
            (t, -1),
            (t, -t),
            (1, -t),
            (1, t),
            (t, t),
            (t, 1),
            (-t, 1),
            (-t, t),
            (-1, t),
            (-1, -t),
            (-t, -t),
        ],
        dtype=np.float64,
    )


def _arrow() -> np.ndarray:
    # points right; the head is wide so it does not read as a triangle or a line
    return np.array(
        [(-1, -0.32), (0.05, -0.32), (0.05, -1), (1, 0), (0.05, 1), (0.05, 0.32), (-1, 0.32)],
        dtype=np.float64,
    )


def _crescent(inner_offset: float = 0.5, inner_radius: float = 0.85) -> np.ndarray:
    """A unit disc minus a disc shifted right: one simple polygon opening to the right."""
    d, r = inner_offset, inner_radius
    # the two circles intersect at x = (1 - r² + d²) / 2d, y = ±sqrt(1 - x²)
    x = (1 - r * r + d * d) / (2 * d)
    y = math.sqrt(1 - x * x)
    outer_start = math.atan2(y, x)
    outer = np.linspace(outer_start, 2 * np.pi - outer_start, 40)
    inner_start = math.atan2(-y, x - d)  # lower intersection, seen from the inner centre
    inner = np.linspace(inner_start + 2 * np.pi, math.atan2(y, x - d), 32)
    outer_points = np.stack([np.cos(outer), np.sin(outer)], axis=1)
    inner_points = np.stack([d + r * np.cos(inner), r * np.sin(inner)], axis=1)
    return np.concatenate([outer_points, inner_points])


# Each builder gives (outer contours, hole contours) in a [-1, 1]² frame, y pointing down.
_SHAPE_BUILDERS: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
    "circle": ([_regular_polygon(48)], []),
    "square": ([np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=np.float64)], []),
    "triangle": ([np.array([(0, -1), (1, 1), (-1, 1)], dtype=np.float64)], []),
    "star": ([_star()], []),
    "cross": ([_cross()], []),
    "ring": ([_regular_polygon(48)], [_regular_polygon(48, 0.55)]),
    "diamond": ([_regular_polygon(4)], []),
    "hexagon": ([_regular_polygon(6, phase_deg=0.0)], []),
    "arrow": ([_arrow()], []),
    "crescent": ([_crescent()], []),
}


@dataclass
class _ObjectGeometry:
    centre: tuple[float, float]
    half_size: tuple[float, float]  # half width, half height before rotation
    angle: float  # radians, counter-clockwise on screen is negative (y points down)
    outers: list[np.ndarray]
    holes: list[np.ndarray]

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The full object extent (not clipped, not reduced by occlusion)."""
        points = np.concatenate(self.outers)
        return (
            float(points[:, 0].min()),
            float(points[:, 1].min()),
            float(points[:, 0].max()),
            float(points[:, 1].max()),
        )


def _place_shape(
    shape: str, centre: tuple[float, float], half_size: tuple[float, float], angle: float
) -> _ObjectGeometry:
    outers, holes = _SHAPE_BUILDERS[shape]
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    rotation = np.array([[cos_a, -sin_a], [sin_a, cos_a]])
    scale = np.array(half_size)

    def transform(points: np.ndarray) -> np.ndarray:
        return (points * scale) @ rotation.T + np.array(centre)

    return _ObjectGeometry(
        centre=centre,
        half_size=half_size,
        angle=angle,
        outers=[transform(p) for p in outers],
        holes=[transform(p) for p in holes],
    )


# Coverage is sampled at this many points per pixel side and averaged. cv2.fillPoly is
# not used for objects: it rounds vertices and includes boundary pixels, which grows
# shapes by about half a pixel, so their boxes would not be tight.
_SUPERSAMPLE = 4


def _fill_even_odd(contours: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Boolean mask of the grid cells whose centre lies inside the contours (even-odd rule).

    Contours are (n, 2) float arrays in grid units; cell (i, j) has its centre at
    (j + 0.5, i + 0.5). A scanline fill, vectorised over rows and edges.
    """
    starts = np.concatenate(contours)
    ends = np.concatenate([np.roll(c, -1, axis=0) for c in contours])
    x0, y0, x1, y1 = starts[:, 0], starts[:, 1], ends[:, 0], ends[:, 1]
    rows = np.arange(height, dtype=np.float64)[:, None] + 0.5
    # half-open in y, so a vertex shared by two edges is crossed once; flat edges never
    crossing = (rows >= np.minimum(y0, y1)) & (rows < np.maximum(y0, y1))
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = x0 + (rows - y0) / (y1 - y0) * (x1 - x0)
    xs = np.sort(np.where(crossing, xs, np.inf), axis=1)
    # the first cell whose centre is at or right of each crossing; crossings alternate
    # between entering (+1) and leaving (-1) the shape, and unused slots land past the row
    columns = np.where(np.isfinite(xs), np.clip(np.ceil(xs - 0.5), 0, width), width)
    signs = np.where(np.arange(xs.shape[1]) % 2 == 0, 1, -1)
    flat = (np.arange(height)[:, None] * (width + 1) + columns.astype(np.int64)).ravel()
    steps = np.bincount(
        flat, weights=np.broadcast_to(signs, xs.shape).ravel(), minlength=height * (width + 1)
    )
    inside = np.cumsum(steps.reshape(height, width + 1), axis=1)[:, :width]
    return inside > 0.5


def _rasterise(geometry: _ObjectGeometry) -> tuple[np.ndarray, int, int]:
    """Anti-aliased coverage (uint8, 0..255) of the object on its own padded patch.

    Returns the patch and the image coordinates of its top-left pixel. The patch covers
    the whole object even where it lies outside the image, so truncation can be measured.
    Coordinates are continuous: pixel (i, j) spans [j, j+1) x [i, i+1).
    """
    x0, y0, x1, y1 = geometry.box
    left, top = math.floor(x0) - 1, math.floor(y0) - 1
    width, height = math.ceil(x1) + 1 - left, math.ceil(y1) + 1 - top
    origin = np.array([left, top], dtype=np.float64)
    # holes are just more contours under the even-odd rule
    fine_contours = [(p - origin) * _SUPERSAMPLE for p in geometry.outers + geometry.holes]
    fine = _fill_even_odd(fine_contours, height * _SUPERSAMPLE, width * _SUPERSAMPLE)
    samples = fine.reshape(height, _SUPERSAMPLE, width, _SUPERSAMPLE).sum(axis=(1, 3))
    coverage = np.round(samples * (255.0 / _SUPERSAMPLE**2)).astype(np.uint8)
    return coverage, left, top
