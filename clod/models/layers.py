"""Convolution building blocks shared by the backbone, the neck and the head.

Every block follows docs/detector.md §2: LeakyReLU(0.1) as activation, PyTorch-default
BatchNorm, and no conv bias when a BN follows. Module attribute names are chosen so that
the state-dict keys read naturally (``conv``/``bn``, ``depthwise``/``pointwise``, ...).
"""

from __future__ import annotations

import math

import torch
from torch import nn

LEAKY_SLOPE = 0.1


def make_activation() -> nn.Module:
    # In-place saves one full-size activation buffer per block; every call site feeds it a
    # fresh BN output that nothing else reads, so overwriting it is safe for autograd.
    return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)


class ConvModule(nn.Module):
    """conv k×k → BN → (LeakyReLU)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        activate: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.act: nn.Module = make_activation() if activate else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def init_kaiming(self) -> None:
        """Kaiming-normal (fan_out, leaky_relu) conv, BN weight 1 / bias 0 (docs/detector.md §4)."""
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="leaky_relu")
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)


class DWConvModule(nn.Module):
    """Depthwise k×k (stride s) → BN → act → pointwise 1×1 → BN → act."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 5, stride: int = 1
    ) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels,
            in_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=in_channels,
            bias=False,
        )
        self.dwnorm = nn.BatchNorm2d(in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pwnorm = nn.BatchNorm2d(out_channels)
        self.act = make_activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.dwnorm(self.depthwise(x)))
        return self.act(self.pwnorm(self.pointwise(x)))

    def init_kaiming(self) -> None:
        for conv, norm in ((self.depthwise, self.dwnorm), (self.pointwise, self.pwnorm)):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="leaky_relu")
            nn.init.ones_(norm.weight)
            nn.init.zeros_(norm.bias)

    def init_normal(self, std: float) -> None:
        """N(0, std) convs, BN weight 1 / bias 0: the head-tower init of docs/detector.md §5."""
        for conv, norm in ((self.depthwise, self.dwnorm), (self.pointwise, self.pwnorm)):
            nn.init.normal_(conv.weight, mean=0.0, std=std)
            nn.init.ones_(norm.weight)
            nn.init.zeros_(norm.bias)


def _conv_bn(conv: nn.Conv2d, activate: bool) -> nn.Sequential:
    layers: list[nn.Module] = [conv, nn.BatchNorm2d(conv.out_channels)]
    if activate:
        layers.append(make_activation())
    return nn.Sequential(*layers)


class GhostModule(nn.Module):
    """Half the outputs from a 1×1 conv, the other half from a cheap 3×3 depthwise conv on them."""

    def __init__(self, in_channels: int, out_channels: int, activate: bool = True) -> None:
        super().__init__()
        self.out_channels = out_channels
        primary_channels = math.ceil(out_channels / 2)
        self.primary_conv = _conv_bn(
            nn.Conv2d(in_channels, primary_channels, 1, bias=False), activate
        )
        self.cheap_operation = _conv_bn(
            nn.Conv2d(
                primary_channels,
                primary_channels,
                3,
                padding=1,
                groups=primary_channels,
                bias=False,
            ),
            activate,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        primary = self.primary_conv(x)
        cheap = self.cheap_operation(primary)
        out = torch.cat((primary, cheap), dim=1)
        # With an odd width the two halves overshoot by one channel.
        return out if out.shape[1] == self.out_channels else out[:, : self.out_channels]


class GhostBottleneck(nn.Module):
    """Stride-1 GhostBottleneck without SE: ghost(act) → ghost(no act), plus a shortcut.

    The shortcut is the identity when the widths agree, otherwise depthwise k×k + BN followed
    by 1×1 + BN. There is no activation after the sum.
    """

    def __init__(
        self, in_channels: int, mid_channels: int, out_channels: int, kernel_size: int = 5
    ) -> None:
        super().__init__()
        self.ghost1 = GhostModule(in_channels, mid_channels, activate=True)
        self.ghost2 = GhostModule(mid_channels, out_channels, activate=False)
        self.shortcut: nn.Module
        if in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(
                    in_channels,
                    in_channels,
                    kernel_size,
                    padding=kernel_size // 2,
                    groups=in_channels,
                    bias=False,
                ),
                nn.BatchNorm2d(in_channels),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ghost2(self.ghost1(x)) + self.shortcut(x)


# --------------------------------------------------------------------------- BN folding
def fold_bn_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias that equals ``bn(conv(x))`` with ``bn`` in eval mode."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=True,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    conv_bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        fused.weight.copy_(conv.weight.detach() * scale[:, None, None, None])
        fused.bias.copy_(bn.bias.detach() + (conv_bias - bn.running_mean) * scale)
    return fused


def fuse_conv_bn_(model: nn.Module) -> nn.Module:
    """Fold every conv→BN pair of the clod blocks in place; the BN becomes an Identity.

    Handles ``ConvModule``, ``DWConvModule`` and ``nn.Sequential`` runs of Conv2d followed by
    BatchNorm2d (backbone branches, Ghost modules, Ghost shortcuts). Only valid in eval mode.
    """
    for module in list(model.modules()):
        if isinstance(module, ConvModule) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = fold_bn_into_conv(module.conv, module.bn)
            module.bn = nn.Identity()  # type: ignore[assignment]
        elif isinstance(module, DWConvModule) and isinstance(module.dwnorm, nn.BatchNorm2d):
            module.depthwise = fold_bn_into_conv(module.depthwise, module.dwnorm)
            module.dwnorm = nn.Identity()  # type: ignore[assignment]
            module.pointwise = fold_bn_into_conv(module.pointwise, module.pwnorm)
            module.pwnorm = nn.Identity()  # type: ignore[assignment]
        elif isinstance(module, nn.Sequential):
            for index in range(len(module) - 1):
                conv, norm = module[index], module[index + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                    module[index] = fold_bn_into_conv(conv, norm)
                    module[index + 1] = nn.Identity()
    return model
