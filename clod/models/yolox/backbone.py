"""CSPDarknet, the YOLOX backbone (docs/yolox.md §2.1): images → (C3, C4, C5).

Stage names (``stem``, ``dark2`` … ``dark5``) and their Sequential indices follow the
official module tree, whose checkpoints store them under ``backbone.backbone.*``.
"""

from __future__ import annotations

import torch
from torch import nn

from clod.models.yolox.blocks import CSPLayer, Focus, SPPBottleneck, make_conv, set_yolox_batchnorm


def base_depth(depth: float) -> int:
    """Bottlenecks per backbone CSP unit: max(round(3·depth), 1) (dark3/dark4 use 3×)."""
    return max(round(3 * depth), 1)


def scaled(channels: int, width: float) -> int:
    """A width-scaled channel count, truncated as upstream's ``int(c·width)``."""
    return int(channels * width)


class CSPDarknet(nn.Module):
    """Focus stem and four stride-2 stages; returns the stride 8, 16 and 32 features.

    Args:
        depth: depth multiplier (0.33 for Nano and Tiny).
        width: width multiplier (0.25 Nano, 0.375 Tiny); the stem has int(64·width) channels.
        depthwise: DWConv for the stage downsampling convs and the bottleneck 3×3s (Nano).
    """

    def __init__(self, depth: float, width: float, depthwise: bool) -> None:
        super().__init__()
        base = scaled(64, width)
        n = base_depth(depth)
        self.stem = Focus(base, kernel_size=3)
        self.dark2 = self._stage(base, 2 * base, n, depthwise)
        self.dark3 = self._stage(2 * base, 4 * base, 3 * n, depthwise)
        self.dark4 = self._stage(4 * base, 8 * base, 3 * n, depthwise)
        # dark5: downsample → SPP → CSP without shortcuts (docs/yolox.md §2.1).
        self.dark5 = nn.Sequential(
            make_conv(8 * base, 16 * base, 3, 2, depthwise),
            SPPBottleneck(16 * base, 16 * base),
            CSPLayer(16 * base, 16 * base, n, shortcut=False, depthwise=depthwise),
        )
        self.out_channels: tuple[int, int, int] = (4 * base, 8 * base, 16 * base)
        set_yolox_batchnorm(self)

    @staticmethod
    def _stage(in_channels: int, out_channels: int, blocks: int, depthwise: bool) -> nn.Sequential:
        return nn.Sequential(
            make_conv(in_channels, out_channels, 3, 2, depthwise),
            CSPLayer(out_channels, out_channels, blocks, shortcut=True, depthwise=depthwise),
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.dark2(self.stem(images))
        c3 = self.dark3(x)
        c4 = self.dark4(c3)
        c5 = self.dark5(c4)
        return c3, c4, c5
