"""GhostPAN neck (docs/detector.md §4): reduce, top-down and bottom-up Ghost fusion, one extra level."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from clod.models.layers import ConvModule, DWConvModule, GhostBottleneck


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class GhostPAN(nn.Module):
    """Maps (C3, C4, C5) to four ``out_channels`` maps at strides 8, 16, 32, 64.

    Args:
        in_channels: widths of C3, C4, C5.
        out_channels: width of every output level (96 for 0.5x/1.0x, 128 for 1.5x).
        kernel_size: kernel of the downsampling convs and of the Ghost shortcuts.
    """

    def __init__(
        self, in_channels: Sequence[int], out_channels: int = 96, kernel_size: int = 5
    ) -> None:
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"GhostPAN expects three input levels, got {list(in_channels)}")
        self.in_channels = tuple(int(c) for c in in_channels)
        self.out_channels = out_channels
        c = out_channels
        self.reduce_layers = nn.ModuleList(ConvModule(ci, c, 1) for ci in self.in_channels)

        def fusion() -> GhostBottleneck:
            return GhostBottleneck(2 * c, c, c, kernel_size)

        def downsample() -> DWConvModule:
            return DWConvModule(c, c, kernel_size, stride=2)

        self.top_down_blocks = nn.ModuleList([fusion(), fusion()])
        self.downsamples = nn.ModuleList([downsample(), downsample()])
        self.bottom_up_blocks = nn.ModuleList([fusion(), fusion()])
        self.extra_lvl_in_conv = downsample()
        self.extra_lvl_out_conv = downsample()
        for module in self.modules():
            if isinstance(module, ConvModule | DWConvModule):
                module.init_kaiming()

    def forward(
        self, features: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        r3, r4, r5 = (reduce(f) for reduce, f in zip(self.reduce_layers, features, strict=True))
        # Concatenation order (resampled map first) matches upstream checkpoints.
        t4 = self.top_down_blocks[0](torch.cat((upsample2x(r5), r4), dim=1))
        t3 = self.top_down_blocks[1](torch.cat((upsample2x(t4), r3), dim=1))
        o4 = self.bottom_up_blocks[0](torch.cat((self.downsamples[0](t3), t4), dim=1))
        o5 = self.bottom_up_blocks[1](torch.cat((self.downsamples[1](o4), r5), dim=1))
        p6 = self.extra_lvl_in_conv(r5) + self.extra_lvl_out_conv(o5)
        return t3, o4, o5, p6
