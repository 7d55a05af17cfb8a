"""Prior points of a detection head: one per cell of each pyramid level (docs/detector.md §5).

Priors are ordered by level, row-major (y outer, x inner), with centres (j·s, i·s) in input
pixels and no half-stride offset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch


class Priors(NamedTuple):
    centres: torch.Tensor  # (N, 2) x, y in input pixels
    strides: torch.Tensor  # (N,)


def make_priors(
    input_size: tuple[int, int],
    strides: Sequence[int],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Priors:
    """Prior centres for an input of (height, width): ⌈H/s⌉·⌈W/s⌉ per level, row-major."""
    height, width = input_size
    centres: list[torch.Tensor] = []
    prior_strides: list[torch.Tensor] = []
    for stride in strides:
        rows, cols = math.ceil(height / stride), math.ceil(width / stride)
        ys = torch.arange(rows, device=device, dtype=dtype) * stride
        xs = torch.arange(cols, device=device, dtype=dtype) * stride
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        centres.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), dim=1))
        prior_strides.append(torch.full((rows * cols,), float(stride), device=device, dtype=dtype))
    return Priors(torch.cat(centres), torch.cat(prior_strides))
