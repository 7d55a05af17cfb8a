"""What the rest of clod may ask of a detection head, whatever its family.

Two families implement it: :class:`clod.models.head.NanoDetPlusHead` (class logits and
4×(reg_max+1) box-bin logits per prior, no objectness) and
:class:`clod.models.yolox.head.YOLOXHead` (box offsets, objectness and class logits). The
engine and every strategy talk to a head only through these names, never through a
family's channel offsets or an ``isinstance`` test (docs/strategies.md §0 lists what each
strategy reads and the counterparts a family supplies).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from clod.models.outputs import HeadOutput
    from clod.models.targets import Assigned, Targets


@runtime_checkable
class DetectionHead(Protocol):
    """The head interface. ``input_size`` is always ``(height, width)`` of the padded input."""

    num_classes: int
    strides: tuple[int, ...]

    def __call__(self, pyramid: Sequence[torch.Tensor]) -> HeadOutput: ...

    @property
    def num_outputs(self) -> int:
        """Channels of ``raw`` per prior."""
        ...

    def output_conv_names(self) -> tuple[str, ...]:
        """Module names, inside the head, of the convolutions that write ``raw``."""
        ...

    def num_priors(self, input_size: tuple[int, int]) -> int:
        """N, the priors of an input of this size."""
        ...

    def boxes(self, output: HeadOutput, input_size: tuple[int, int]) -> torch.Tensor:
        """B×N×4 decoded xyxy boxes of every prior, in input pixels (unclipped)."""
        ...

    def boxes_at(
        self, box_logits: torch.Tensor, prior: torch.Tensor, input_size: tuple[int, int]
    ) -> torch.Tensor:
        """K×4 xyxy boxes of K selected priors from their K×D box channels."""
        ...

    def scores(self, output: HeadOutput) -> torch.Tensor:
        """B×N×C per-class confidences, the score detections are ranked by."""
        ...

    def score_channels(self, classes: torch.Tensor) -> torch.Tensor:
        """Indices into ``raw``'s last axis of the logits the scores of ``classes`` (global
        class indices) are made of: what class distillation matches (docs/strategies.md §0)."""
        ...

    def box_confidence(self, output: HeadOutput) -> torch.Tensor:
        """B×N: how sure the head is of each prior's box (ERD's regression selection)."""
        ...

    def box_distillation(
        self, student_box: torch.Tensor, teacher_box: torch.Tensor, temperature: float
    ) -> torch.Tensor:
        """(K,) distance between student and teacher box channels of K priors (ERD's L_dreg)."""
        ...

    def assign_targets(
        self, raw: torch.Tensor, targets: Targets, input_size: tuple[int, int]
    ) -> Assigned: ...

    def loss_from_assignment(
        self,
        raw: torch.Tensor,
        assigned: Assigned,
        input_size: tuple[int, int],
        class_mask: torch.Tensor | None = None,
        qfl_weight: torch.Tensor | None = None,
        box_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]: ...

    def loss(
        self,
        raw: torch.Tensor,
        boxes: Sequence[torch.Tensor],
        labels: Sequence[torch.Tensor],
        input_size: tuple[int, int],
        class_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]: ...

    def decode(
        self,
        raw: torch.Tensor,
        input_size: tuple[int, int],
        warps: torch.Tensor | None = None,
        orig_sizes: torch.Tensor | None = None,
        score_thr: float = 0.05,
        nms_iou: float = 0.6,
        max_det: int = 100,
        class_mask: torch.Tensor | None = None,
    ) -> list[dict[str, torch.Tensor]]: ...

    def grow(self, new_num_classes: int, generator: torch.Generator | None = None) -> None: ...
