"""The NanoDet-Plus detector: ``backbone`` → ``neck`` → ``head``, and its Hydra builder."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from clod.models.layers import fuse_conv_bn_
from clod.models.outputs import HeadOutput

log = logging.getLogger(__name__)


class Detector(nn.Module):
    """Holds ``backbone``, ``neck`` and ``head`` as submodules (names used by strategies).

    Args:
        backbone: images → (C3, C4, C5).
        neck: (C3, C4, C5) → (P3, P4, P5, P6).
        head: pyramid → :class:`HeadOutput` (a :class:`NanoDetPlusHead` or a YOLOXHead).
        num_classes: if given, must equal the head's class count (a config consistency check).
        input_size: the model's default input as ``[width, height]`` (the config convention).
        weights: optional local path to an official YOLOX checkpoint, loaded right after
            construction (:func:`clod.models.yolox.load_official_yolox`). NanoDet models take
            their pretrained weights through ``backbone.pretrained`` instead.
        pixels: the input pixel format the model expects (``imagenet``: normalised BGR;
            ``yolox``: BGR 0–255, padded with 114); the data config follows it
            (``data.pixels``, :mod:`clod.data.transforms`).
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        head: nn.Module,
        num_classes: int | None = None,
        input_size: Sequence[int] = (320, 320),
        weights: str | None = None,
        pixels: str = "imagenet",
    ) -> None:
        super().__init__()
        if num_classes is not None and int(num_classes) != head.num_classes:
            raise ValueError(
                f"model num_classes={num_classes} but the head has {head.num_classes} classes"
            )
        self.backbone = backbone
        self.neck = neck
        self.head = head
        width, height = (int(v) for v in input_size)
        self.input_size: tuple[int, int] = (width, height)
        self.pixels = str(pixels)
        if weights is not None:
            self._load_weights(weights)

    def _load_weights(self, weights: str) -> None:
        """Load a head family's published checkpoint; only YOLOX's are supported here."""
        # Imported here: clod.models.yolox imports this package's modules (no import cycle).
        from clod.models.yolox.checkpoint import load_official_yolox
        from clod.models.yolox.head import YOLOXHead

        if not isinstance(self.head, YOLOXHead):
            raise ValueError(
                f"weights={weights!r}: model weights are supported for official YOLOX "
                f"checkpoints only (this head is a {type(self.head).__name__}); NanoDet models "
                "load ImageNet weights through backbone.pretrained"
            )
        for note in load_official_yolox(self, weights):
            log.warning(note)

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def forward(self, images: torch.Tensor) -> HeadOutput:
        return self.head(self.neck(self.backbone(images)))

    def loss(
        self,
        images: torch.Tensor,
        boxes: Sequence[torch.Tensor],
        labels: Sequence[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Forward plus the head's ``loss`` on one batch."""
        output = self(images)
        return self.head.loss(output.raw, boxes, labels, tuple(images.shape[-2:]))

    @torch.no_grad()
    def predict(
        self,
        images: torch.Tensor,
        warps: torch.Tensor | None = None,
        orig_sizes: torch.Tensor | None = None,
        **decode_kwargs: Any,
    ) -> list[dict[str, torch.Tensor]]:
        output = self(images)
        return self.head.decode(
            output.raw, tuple(images.shape[-2:]), warps, orig_sizes, **decode_kwargs
        )

    def fused(self) -> Detector:
        """An eval-mode copy with every BatchNorm folded into the conv before it.

        The copy computes the same function as this model in eval mode (up to float
        rounding) with fewer memory passes; it is for inference only and has no BN left to
        train. The original model is not modified.
        """
        model = copy.deepcopy(self).eval()
        fuse_conv_bn_(model)
        return model


def build_detector(cfg: Mapping[str, Any] | Any) -> Detector:
    """Instantiate a detector from a Hydra model config (``conf/model/*.yaml``).

    The config's ``_target_`` points at :class:`Detector`; nested ``backbone``, ``neck`` and
    ``head`` entries carry their own ``_target_``.
    """
    from hydra.utils import instantiate

    model = instantiate(cfg, _convert_="all")
    if not isinstance(model, Detector):
        raise TypeError(f"model config built a {type(model).__name__}, not a Detector")
    return model
