"""NanoDet-Plus in plain PyTorch: backbone, neck, head, losses, assigner, NMS and weights."""

from __future__ import annotations

from clod.models.backbone import ShuffleNetV2
from clod.models.detector import Detector, build_detector
from clod.models.head import HeadOutput, NanoDetPlusHead
from clod.models.neck import GhostPAN

__all__ = [
    "Detector",
    "GhostPAN",
    "HeadOutput",
    "NanoDetPlusHead",
    "ShuffleNetV2",
    "build_detector",
]
