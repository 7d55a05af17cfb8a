"""YOLOPAFPN as clod's neck (docs/yolox.md §2.2): (C3, C4, C5) → (P3, P4, P5).

Upstream's YOLOPAFPN also owns the backbone; clod keeps the two apart (``Detector.backbone``
and ``Detector.neck``) and :mod:`clod.models.yolox.checkpoint` maps the official key
prefixes. The bottom-up concats take the outputs of the 1×1 lateral/reduce convs
(``fpn_out1``, ``fpn_out0``), not the top-down CSP outputs (docs/yolox.md §8.4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from clod.models.yolox.blocks import BaseConv, CSPLayer, make_conv, set_yolox_batchnorm


class YOLOPAFPN(nn.Module):
    """Top-down FPN then bottom-up PAN, every CSPLayer with n = round(3·depth), no shortcut.

    Args:
        depth: depth multiplier.
        width: width multiplier applied to ``in_channels``.
        depthwise: DWConv for the two stride-2 bottom-up convs and the CSP 3×3s (Nano).
        in_channels: the unscaled widths of C3, C4, C5 (upstream's 256, 512, 1024).
    """

    def __init__(
        self,
        depth: float,
        width: float,
        depthwise: bool,
        in_channels: Sequence[int] = (256, 512, 1024),
    ) -> None:
        super().__init__()
        c0, c1, c2 = (int(c * width) for c in in_channels)
        n = round(3 * depth)  # no max(·, 1) here, unlike the backbone (docs/yolox.md §1)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        # top-down
        self.lateral_conv0 = BaseConv(c2, c1, 1)
        self.C3_p4 = CSPLayer(2 * c1, c1, n, shortcut=False, depthwise=depthwise)
        self.reduce_conv1 = BaseConv(c1, c0, 1)
        self.C3_p3 = CSPLayer(2 * c0, c0, n, shortcut=False, depthwise=depthwise)
        # bottom-up
        self.bu_conv2 = make_conv(c0, c0, 3, 2, depthwise)
        self.C3_n3 = CSPLayer(2 * c0, c1, n, shortcut=False, depthwise=depthwise)
        self.bu_conv1 = make_conv(c1, c1, 3, 2, depthwise)
        self.C3_n4 = CSPLayer(2 * c1, c2, n, shortcut=False, depthwise=depthwise)
        self.out_channels: tuple[int, int, int] = (c0, c1, c2)
        set_yolox_batchnorm(self)

    def forward(
        self, features: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3, c4, c5 = features
        fpn_out0 = self.lateral_conv0(c5)  # stride 32, c1
        f_out0 = self.C3_p4(torch.cat((self.upsample(fpn_out0), c4), dim=1))
        fpn_out1 = self.reduce_conv1(f_out0)  # stride 16, c0
        p3 = self.C3_p3(torch.cat((self.upsample(fpn_out1), c3), dim=1))
        # [new, lateral] order, with the lateral outputs of the top-down path.
        p4 = self.C3_n3(torch.cat((self.bu_conv2(p3), fpn_out1), dim=1))
        p5 = self.C3_n4(torch.cat((self.bu_conv1(p4), fpn_out0), dim=1))
        return p3, p4, p5
