"""YOLOX building blocks (docs/yolox.md §1): conv/BN/SiLU units, CSP and SPP blocks, Focus.

Attribute names reproduce the module names of the official implementation (docs/yolox.md §2.6), so
an official state dict maps onto these modules key for key (``conv``/``bn``,
``dconv``/``pconv``, ``conv1``/``conv2``/``conv3``/``m``). Every conv here is followed by a
BatchNorm and has no bias; BN uses eps 1e-3 and momentum 0.03 (docs/yolox.md §1), which is also
what :func:`set_yolox_batchnorm` enforces on a whole model.
"""

from __future__ import annotations

import torch
from torch import nn

from clod.models.layers import ConvModule

BN_EPS = 1e-3
# PyTorch convention: running ← (1 − momentum)·running + momentum·batch.
BN_MOMENTUM = 0.03
SPP_KERNELS = (5, 9, 13)


class SiLU(nn.SiLU):
    """x·σ(x), in place: each call site feeds it a fresh BN output nothing else reads."""

    def __init__(self) -> None:
        super().__init__(inplace=True)


def make_batchnorm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def set_yolox_batchnorm(model: nn.Module) -> nn.Module:
    """Set every BatchNorm2d of ``model`` to eps 1e-3 / momentum 0.03, as upstream does once
    after building the whole network (docs/yolox.md §1); returns ``model``."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = BN_EPS
            module.momentum = BN_MOMENTUM
    return model


class BaseConv(ConvModule):
    """Conv2d k×k (stride s, padding (k−1)//2, no bias) → BatchNorm2d → SiLU.

    A :class:`~clod.models.layers.ConvModule` with YOLOX's BN settings and activation, so
    :func:`~clod.models.layers.fuse_conv_bn_` (``Detector.fused``) folds it like any other.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        if kernel_size % 2 != 1:
            # (k−1)//2 and ConvModule's k//2 padding agree only for odd kernels.
            raise ValueError(f"BaseConv needs an odd kernel, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, stride, groups)
        self.bn = make_batchnorm(out_channels)
        self.act = SiLU()


class DWConv(nn.Module):
    """Depthwise BaseConv k×k (stride s) → pointwise BaseConv 1×1; both with BN and SiLU."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1
    ) -> None:
        super().__init__()
        self.dconv = BaseConv(in_channels, in_channels, kernel_size, stride, groups=in_channels)
        self.pconv = BaseConv(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pconv(self.dconv(x))


def make_conv(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, depthwise: bool
) -> nn.Module:
    """The "Conv" of docs/yolox.md §1: a DWConv in depthwise models (Nano), else a BaseConv."""
    if depthwise:
        return DWConv(in_channels, out_channels, kernel_size, stride)
    return BaseConv(in_channels, out_channels, kernel_size, stride)


class Bottleneck(nn.Module):
    """BaseConv 1×1 (always dense) → Conv 3×3, plus the input when ``shortcut``."""

    def __init__(self, channels: int, shortcut: bool, depthwise: bool) -> None:
        super().__init__()
        self.conv1 = BaseConv(channels, channels, 1)
        self.conv2 = make_conv(channels, channels, 3, 1, depthwise)
        self.use_add = bool(shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class CSPLayer(nn.Module):
    """Cross-stage partial block: cat[bottlenecks(conv1(x)), conv2(x)] → conv3.

    The hidden width is int(0.5·out); the three 1×1 convs are dense even in Nano, and the
    bottleneck branch comes first in the concat (the order the official conv3 weights
    expect).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_blocks: int,
        shortcut: bool,
        depthwise: bool,
    ) -> None:
        super().__init__()
        hidden = int(out_channels * 0.5)
        self.conv1 = BaseConv(in_channels, hidden, 1)
        self.conv2 = BaseConv(in_channels, hidden, 1)
        self.conv3 = BaseConv(2 * hidden, out_channels, 1)
        self.m = nn.Sequential(
            *(Bottleneck(hidden, shortcut, depthwise) for _ in range(num_blocks))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat((self.m(self.conv1(x)), self.conv2(x)), dim=1))


class SPPBottleneck(nn.Module):
    """1×1 to half width → cat[x, maxpool5(x), maxpool9(x), maxpool13(x)] → 1×1.

    The pools have stride 1 and "same" padding, so the spatial size is kept. Never
    depthwise (docs/yolox.md §2.3).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_sizes: tuple[int, ...] = SPP_KERNELS
    ) -> None:
        super().__init__()
        hidden = in_channels // 2
        self.conv1 = BaseConv(in_channels, hidden, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes)
        self.conv2 = BaseConv(hidden * (len(kernel_sizes) + 1), out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x, *(pool(x) for pool in self.m)], dim=1))


class Focus(nn.Module):
    """Space-to-depth (3 → 12 channels, stride 2) then a dense BaseConv 3×3 stride 1.

    The four pixel phases are stacked on channels in upstream's order (docs/yolox.md §1, §8.8):
    (even row, even col), (odd row, even col), (even row, odd col), (odd row, odd col).
    Official stem weights are only correct with exactly this order. Input sides must be
    even (clod pads batches to multiples of 32).
    """

    def __init__(self, out_channels: int, kernel_size: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = BaseConv(4 * in_channels, out_channels, kernel_size)

    @staticmethod
    def space_to_depth(x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), dim=1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.space_to_depth(x))
