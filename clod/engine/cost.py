"""Compute cost of a strategy's training step: conv MACs of its forward passes per image.

The count runs the module's own training-step code (:meth:`CLODModule.training_losses`),
so it includes exactly the forwards the strategy makes: the backbone once, the student,
and the teacher (a whole model for LwF and SID, only neck+head for Latent Distillation).
Backward passes are not counted (docs/strategies.md §0, "forward MACs").

It is measured on one blank image at the training input size, in eval mode and without
gradients, so BatchNorm statistics and the random generators are left untouched: the
measurement does not change the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch.utils.flop_counter import FlopCounterMode

from clod.data.dataset import pad_size
from clod.data.types import Batch
from clod.metrics.flops import conv_flops

if TYPE_CHECKING:
    from clod.engine.module import CLODModule


def probe_batch(input_size: Sequence[int], num_classes: int, device: torch.device) -> Batch:
    """One blank image of ``input_size`` = [width, height] (padded as the collate pads) and one box."""
    width, height = (pad_size(int(v)) for v in input_size)
    box = torch.tensor([[0.25 * width, 0.25 * height, 0.75 * width, 0.75 * height]], device=device)
    return Batch(
        images=torch.zeros(1, 3, height, width, device=device),
        boxes=[box],
        labels=[torch.tensor([num_classes - 1], device=device)],
        warps=torch.eye(3, dtype=torch.float64, device=device).unsqueeze(0),
        orig_sizes=torch.tensor([[height, width]]),
        image_ids=["probe"],
        indices=torch.zeros(1, dtype=torch.int64),
    )


def training_step_conv_macs(module: CLODModule, input_size: Sequence[int]) -> int:
    """Conv multiply-accumulates of one training step's forward passes, per image."""
    device = next(module.parameters()).device
    batch = probe_batch(input_size, module.head.num_classes, device)
    was_training = module.training
    counter = FlopCounterMode(display=False)
    module.eval()  # same convolutions, but BatchNorm does not update its running stats
    try:
        with torch.no_grad(), counter:
            module.training_losses(batch)
    finally:
        module.train(was_training)
    return conv_flops(counter) // 2
