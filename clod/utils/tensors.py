"""Small torch helpers shared by the engine, the bench and the strategies."""

from __future__ import annotations

import torch
from torch import nn


def float32(like: torch.Tensor) -> torch.autocast:
    """A region outside mixed precision: box regression, the loss terms and box decoding
    need float32 (bfloat16's 8-bit mantissa is about one pixel at 320 px)."""
    return torch.autocast(device_type=like.device.type, enabled=False)


def count_parameters(module: nn.Module | None, trainable_only: bool = False) -> int:
    """Parameters of ``module`` (0 for None); ``trainable_only``: those with gradients."""
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
