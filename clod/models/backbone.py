"""ShuffleNetV2 feature extractor (docs/detector.md §3), without conv5 and fc.

Module names follow the layout of the ImageNet checkpoints published for torchvision
(``conv1.0``, ``stage2.0.branch1.2``, ...) so those state dicts load key for key; see
:func:`clod.models.weights.load_imagenet_backbone`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from clod.models.layers import make_activation

STEM_CHANNELS = 24
UNITS_PER_STAGE = (4, 8, 4)
STAGE_CHANNELS: dict[str, tuple[int, int, int]] = {
    "0.5x": (48, 96, 192),
    "1.0x": (116, 232, 464),
    "1.5x": (176, 352, 704),
    "2.0x": (244, 488, 976),
}


def _depthwise(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)


def _pointwise(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, bias=False)


def concat_and_shuffle(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``channel_shuffle(cat([first, second]), groups=2)`` in a single copy.

    Shuffling 2 groups interleaves the channels of the two halves: output channel 2k is
    ``first[k]`` and 2k+1 is ``second[k]``. Stacking on a new axis right after the channel
    axis and flattening produces exactly that order, so the separate concat is not needed.
    The stack is laid out to match the inputs' memory format, so a channels-last network
    stays channels-last (a plain stack would return NCHW and force conversions downstream).
    """
    if _is_channels_last(first):
        interleaved = torch.stack((first.permute(0, 2, 3, 1), second.permute(0, 2, 3, 1)), dim=-1)
        return interleaved.flatten(-2).permute(0, 3, 1, 2)
    # Python ints for the static dimensions and -1 for the batch: the same view eagerly, and an
    # exported graph (clod.export) gets a constant shape instead of Shape/Gather/Concat ops that
    # keep a dequantised copy of the activation alive in the int8 model.
    channels, height, width = (int(v) for v in first.shape[1:])
    return torch.stack((first, second), dim=2).reshape(-1, 2 * channels, height, width)


def _is_channels_last(x: torch.Tensor) -> bool:
    # The channel stride is 1 in NHWC; the passthrough half of a split is a strided view,
    # so test the stride rather than is_contiguous(memory_format=...).
    return x.dim() == 4 and x.stride(1) == 1 and x.shape[1] > 1 and x.stride(3) != 1


class ShuffleUnit(nn.Module):
    """One ShuffleNetV2 unit; stride 2 (with ``branch1``) opens a stage."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if stride == 1 and in_channels != out_channels:
            raise ValueError("a stride-1 unit keeps its width")
        self.stride = stride
        branch_channels = out_channels // 2
        if stride == 2:
            self.branch1 = nn.Sequential(
                _depthwise(in_channels, 2),
                nn.BatchNorm2d(in_channels),
                _pointwise(in_channels, branch_channels),
                nn.BatchNorm2d(branch_channels),
                make_activation(),
            )
        else:
            # An empty Sequential keeps the module tree identical to the torchvision layout.
            self.branch1 = nn.Sequential()
        branch2_in = in_channels if stride == 2 else branch_channels
        self.branch2 = nn.Sequential(
            _pointwise(branch2_in, branch_channels),
            nn.BatchNorm2d(branch_channels),
            make_activation(),
            _depthwise(branch_channels, stride),
            nn.BatchNorm2d(branch_channels),
            _pointwise(branch_channels, branch_channels),
            nn.BatchNorm2d(branch_channels),
            make_activation(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            return concat_and_shuffle(self.branch1(x), self.branch2(x))
        half = int(x.shape[1]) // 2  # a constant split in an exported graph, as above
        passthrough, processed = x[:, :half], x[:, half:]
        return concat_and_shuffle(passthrough, self.branch2(processed))


class ShuffleNetV2(nn.Module):
    """Returns the outputs of stages 2, 3 and 4 (strides 8, 16, 32).

    Args:
        width: one of ``"0.5x"``, ``"1.0x"``, ``"1.5x"``, ``"2.0x"`` (a float such as 1.0 works too).
        pretrained: optional path to a torchvision-layout ImageNet checkpoint to load.
    """

    def __init__(self, width: str | float = "1.0x", pretrained: str | None = None) -> None:
        super().__init__()
        self.width = _normalise_width(width)
        self.out_channels: tuple[int, int, int] = STAGE_CHANNELS[self.width]
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, STEM_CHANNELS, 3, 2, 1, bias=False),
            nn.BatchNorm2d(STEM_CHANNELS),
            make_activation(),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = STEM_CHANNELS
        stages: list[nn.Sequential] = []
        for units, out_channels in zip(UNITS_PER_STAGE, self.out_channels, strict=True):
            stage = [ShuffleUnit(in_channels, out_channels, 2)]
            stage += [ShuffleUnit(out_channels, out_channels, 1) for _ in range(units - 1)]
            stages.append(nn.Sequential(*stage))
            in_channels = out_channels
        self.stage2, self.stage3, self.stage4 = stages
        self.reset_parameters()
        if pretrained:
            from clod.models.weights import load_imagenet_backbone

            load_imagenet_backbone(self, pretrained)

    def reset_parameters(self) -> None:
        """Upstream's init without pretraining: conv ~ N(0, 1/fan_in_channels), BN (1, 1e-4)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, mean=0.0, std=1.0 / module.weight.shape[1])
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.constant_(module.bias, 1e-4)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.conv1(images))
        c3 = self.stage2(x)
        c4 = self.stage3(c3)
        c5 = self.stage4(c4)
        return c3, c4, c5


def _normalise_width(width: str | float) -> str:
    if isinstance(width, str):
        key = width if width.endswith("x") else f"{float(width):.1f}x"
    else:
        key = f"{float(width):.1f}x"
    if key not in STAGE_CHANNELS:
        raise ValueError(
            f"unknown ShuffleNetV2 width {width!r}; choose from {sorted(STAGE_CHANNELS)}"
        )
    return key


def stage_channels(width: str | float) -> Sequence[int]:
    """The (C3, C4, C5) widths of a ShuffleNetV2 width multiplier."""
    return STAGE_CHANNELS[_normalise_width(width)]
