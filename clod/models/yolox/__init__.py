"""YOLOX-Nano / YOLOX-Tiny in plain PyTorch (docs/yolox.md).

YOLOX (Megvii, 2021) is an anchor-free one-stage detector: a CSPDarknet backbone with a
Focus stem (:class:`CSPDarknet`), a PAFPN neck (:class:`YOLOPAFPN`) and a decoupled head
with a separate objectness output (:class:`YOLOXHead`), trained with SimOTA assignment.
Nano (depth 0.33, width 0.25, depthwise convs, 0.91 M parameters at 80 classes) and Tiny
(0.33 / 0.375, dense, 5.06 M) run at 416×416; build them from ``conf/model/yolox_nano.yaml``
and ``conf/model/yolox_tiny.yaml`` with :func:`clod.models.build_detector`. They plug into
:class:`clod.models.Detector` like NanoDet-Plus: ``backbone(images) -> (C3, C4, C5)``,
``neck(...) -> (P3, P4, P5)``, ``head(pyramid) -> HeadOutput`` with ``raw`` B×N×(5+C)
laid out [t_x, t_y, t_w, t_h, obj, classes…].

Module names follow the official implementation, so its released checkpoints load with
:func:`load_official_yolox` (or the model config's ``weights:``).
"""

from __future__ import annotations

from clod.models.yolox.backbone import CSPDarknet
from clod.models.yolox.blocks import (
    BaseConv,
    Bottleneck,
    CSPLayer,
    DWConv,
    Focus,
    SiLU,
    SPPBottleneck,
    set_yolox_batchnorm,
)
from clod.models.yolox.checkpoint import load_official_yolox, save_official_yolox
from clod.models.yolox.head import GridPriors, YOLOXHead
from clod.models.yolox.neck import YOLOPAFPN

__all__ = [
    "YOLOPAFPN",
    "BaseConv",
    "Bottleneck",
    "CSPDarknet",
    "CSPLayer",
    "DWConv",
    "Focus",
    "GridPriors",
    "SPPBottleneck",
    "SiLU",
    "YOLOXHead",
    "load_official_yolox",
    "save_official_yolox",
    "set_yolox_batchnorm",
]
