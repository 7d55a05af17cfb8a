"""FLOP and conv-MAC counting with ``torch.utils.flop_counter.FlopCounterMode``.

Counts are taken on the plain (un-fused) model, so they are the network's own work. Torch's
default formula for ``convolution_backward`` ignores ``groups`` and counts a depthwise
weight gradient as a dense one (about 4× the true training FLOPs of these networks);
:func:`flop_counter` replaces it with a group-aware one. :func:`conv_flops` is the one sum
of a counter's convolution entries, for ``clod.bench`` and ``clod.engine.cost`` alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from clod.data.types import Batch

LossFn = Callable[[Batch], torch.Tensor]


def _conv_backward_flops(
    grad_out_shape: Sequence[int],
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    _bias: object,
    _stride: object,
    _padding: object,
    _dilation: object,
    transposed: bool,
    _output_padding: object,
    _groups: int,
    output_mask: Sequence[bool],
    out_shape: object = None,
    **_: object,
) -> int:
    """Group-aware FLOPs of ``aten.convolution_backward``.

    Each gradient (input and weight) of a convolution takes exactly as many multiply-adds
    as its forward pass; torch's default formula instead multiplies the weight gradient by
    all input channels, ignoring ``groups``.
    """
    if transposed:
        raise NotImplementedError("transposed convolutions are not used by clod models")
    batch = x_shape[0]
    out_channels, in_per_group, *kernel = w_shape
    forward = (
        2 * batch * out_channels * in_per_group * math.prod(kernel) * math.prod(grad_out_shape[2:])
    )
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def flop_counter() -> FlopCounterMode:
    """A silent FlopCounterMode with the group-aware convolution-backward formula."""
    return FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten.convolution_backward: _conv_backward_flops}
    )


def conv_flops(counter: FlopCounterMode) -> int:
    """The FLOPs a counter attributed to convolutions (forward and backward)."""
    return sum(
        count
        for op, count in counter.get_flop_counts()["Global"].items()
        if "convolution" in str(op)
    )


def forward_flops(detector: nn.Module, images: torch.Tensor) -> tuple[int, int]:
    """(FLOPs, conv MACs) of one forward pass, counted on the un-fused model."""
    counter = flop_counter()
    with torch.no_grad(), counter:
        detector(images)
    return counter.get_total_flops(), conv_flops(counter) // 2


def step_conv_macs_per_image(loss: LossFn, batch: Batch) -> int:
    """Conv MACs of the forward passes of one training step, per image (``cost/macs_conv_step``).

    Counted on the whole batch (BatchNorm in train mode needs more than one value per
    channel) and divided by its size.
    """
    counter = flop_counter()
    with torch.no_grad(), counter:
        loss(batch)
    return conv_flops(counter) // 2 // batch.images.shape[0]


def train_step_flops(step: Callable[[], object]) -> tuple[int, int]:
    """FLOPs of one training step (forward + backward): (group-aware, torch's default)."""
    counter = flop_counter()
    with counter:
        step()
    default_counter = FlopCounterMode(display=False)
    with default_counter:
        step()
    return counter.get_total_flops(), default_counter.get_total_flops()
