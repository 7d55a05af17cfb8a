"""What every head family shares: the raw-output check and the loss on annotated boxes.

A family subclasses :class:`HeadBase` and supplies ``num_outputs``, ``priors``,
``assign_targets`` and ``loss_from_assignment`` (the interface is
:class:`clod.models.head_protocol.DetectionHead`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from clod.models.targets import pad_targets


class HeadBase(nn.Module):
    """Shared methods of the detection heads (NanoDet-Plus, YOLOX)."""

    num_outputs: int
    # The attributes (nn.ModuleList, one conv per level) whose convolutions write ``raw``.
    OUTPUT_CONVS: tuple[str, ...] = ()

    def output_conv_names(self) -> tuple[str, ...]:
        """Module names, inside the head, of the convolutions that write ``raw`` (what
        ``clod.export``'s ``int8.keep_float=output`` leaves in float32)."""
        return tuple(
            f"{attr}.{level}"
            for attr in self.OUTPUT_CONVS
            for level in range(len(getattr(self, attr)))
        )

    def priors(self, input_size: tuple[int, int], device: Any, dtype: torch.dtype) -> Any:
        raise NotImplementedError

    def _check_raw(self, raw: torch.Tensor, input_size: tuple[int, int]) -> Any:
        """The priors of ``input_size`` ((height, width)), after checking that ``raw`` has
        this head's channels and one row per prior."""
        if raw.shape[-1] != self.num_outputs:
            raise ValueError(f"raw has {raw.shape[-1]} channels, head expects {self.num_outputs}")
        priors = self.priors(input_size, raw.device, raw.dtype)
        if raw.shape[-2] != priors.strides.shape[0]:
            raise ValueError(
                f"raw has {raw.shape[-2]} priors but input_size {tuple(input_size)} (H, W) "
                f"gives {priors.strides.shape[0]}"
            )
        return priors

    def num_priors(self, input_size: tuple[int, int]) -> int:
        return int(self.priors(input_size, "cpu", torch.float32).strides.numel())

    def loss(
        self,
        raw: torch.Tensor,
        boxes: Sequence[torch.Tensor],
        labels: Sequence[torch.Tensor],
        input_size: tuple[int, int],
        class_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The family's detection loss on annotated boxes: assignment, then
        ``loss_from_assignment`` (its docstring lists the terms).

        Args:
            raw: B×N×K head output.
            boxes: per image (n_i, 4) xyxy GT boxes in input pixels.
            labels: per image (n_i,) int64 global labels (< C).
            input_size: (height, width) of the padded input.
            class_mask: optional bool (C,), see ``loss_from_assignment``.
        """
        targets = pad_targets(boxes, labels, raw.device, raw.dtype)
        assigned = self.assign_targets(raw, targets, input_size)  # type: ignore[attr-defined]
        return self.loss_from_assignment(raw, assigned, input_size, class_mask=class_mask)  # type: ignore[attr-defined]
