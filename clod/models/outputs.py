"""What a detection head computes for a batch, by name (:class:`HeadOutput`).

Strategies and the engine read these names, never offsets into ``raw``, so every head
family (NanoDet-Plus, YOLOX) fills the same fields (docs/strategies.md §0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch


class HeadOutput(NamedTuple):
    """What the head computes for a batch, by name (strategies read these, never offsets).

    raw: B×N×K, the output convs' channels in prior order (what the loss, decoding and
    export take; its layout is the head family's own); cls_logits: B×N×C class logits and
    box_logits: the box regression channels, views of ``raw``; towers: the tower outputs
    after their last activation (per level, and per branch for a decoupled head);
    obj_logits: B×N objectness logits for a head that predicts objectness (YOLOX), else
    None. Decoded boxes depend on the input size: ``head.boxes(output, input_size)``;
    confidences: ``head.scores(output)``.
    """

    raw: torch.Tensor
    towers: tuple[torch.Tensor, ...]
    cls_logits: torch.Tensor
    box_logits: torch.Tensor
    obj_logits: torch.Tensor | None = None

    @classmethod
    def from_raw(
        cls, raw: torch.Tensor, towers: Sequence[torch.Tensor], num_classes: int
    ) -> HeadOutput:
        """NanoDet-Plus's layout: class logits first, then the box bins."""
        return cls(raw, tuple(towers), raw[..., :num_classes], raw[..., num_classes:])

    def float(self) -> HeadOutput:
        """The same outputs in float32 (losses run in float32 under mixed precision)."""
        tensors = [self.raw, *self.towers]
        if all(t.dtype == torch.float32 for t in tensors):
            return self
        raw = self.raw.float()
        # Re-slice the float copy at the same offsets, so the parts stay views of ``raw``.
        offset = self.raw.storage_offset()

        def view_of(part: torch.Tensor | None) -> torch.Tensor | None:
            if part is None:
                return None
            if raw.stride() != self.raw.stride():  # the copy changed layout: plain copies
                return part.float()
            return raw.as_strided(part.shape, part.stride(), part.storage_offset() - offset)

        return HeadOutput(
            raw,
            tuple(t.float() for t in self.towers),
            view_of(self.cls_logits),  # type: ignore[arg-type]
            view_of(self.box_logits),  # type: ignore[arg-type]
            view_of(self.obj_logits),
        )
