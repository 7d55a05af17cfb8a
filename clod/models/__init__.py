"""NanoDet-Plus in plain PyTorch (docs/detector.md): no torchvision, no compiled extensions.

Interface used by the rest of clod (B = batch, N = priors, C = allocated classes):

* ``Detector(backbone, neck, head)``; build one from ``conf/model/*.yaml`` with
  :func:`build_detector`. ``detector(images) -> HeadOutput``; ``detector.loss(images,
  boxes, labels)``; ``detector.predict(images, warps, orig_sizes, **decode_kwargs)``;
  ``detector.fused()`` is a BN-folded eval copy for fast inference.
* ``backbone(images) -> (C3, C4, C5)``; ``neck((C3, C4, C5)) -> (P3, P4, P5, P6)``;
  ``head(pyramid) -> HeadOutput(raw, towers)`` with ``raw`` B×N×(C+32) (class logits, then
  4×8 bin logits l, t, r, b) and ``towers`` the four tower maps, computed once.
* ``HeadOutput`` names its parts: ``cls_logits`` (B×N×C) and ``box_logits`` (views of
  ``raw``) and ``towers``; ``head.boxes(output, input_size)`` decodes every prior's box and
  ``head.scores(output)`` gives the class confidences. Strategies read these names.
* ``head.assign_targets(raw, targets, input_size)`` → :class:`~clod.models.targets.Assigned`
  over padded :class:`~clod.models.targets.Targets` (annotated and extra ones), and
  ``head.loss_from_assignment(raw, assigned, input_size, class_mask, qfl_weight, box_mask)``.
* ``head.loss(raw, boxes, labels, input_size, class_mask=None)`` → ``loss``, ``loss_qfl``,
  ``loss_bbox``, ``loss_dfl``; ``head.decode(raw, input_size, warps=None,
  orig_sizes=None, score_thr=0.05, nms_iou=0.6, max_det=100, class_mask=None)`` → one
  ``dict(boxes, scores, labels)`` per image; ``head.grow(new_num_classes)``.
  ``input_size`` is always ``(height, width)``, i.e. ``tuple(images.shape[-2:])``.
* Weights: :mod:`clod.models.weights` (clod checkpoints, torchvision ImageNet backbones).

Speed on CPU: put the model in channels-last memory format
(``model.to(memory_format=torch.channels_last)``) and see :mod:`clod.models.runtime`.
"""

from __future__ import annotations

from clod.models.backbone import ShuffleNetV2
from clod.models.detector import Detector, build_detector
from clod.models.head import NanoDetPlusHead
from clod.models.neck import GhostPAN
from clod.models.outputs import HeadOutput

__all__ = [
    "Detector",
    "GhostPAN",
    "HeadOutput",
    "NanoDetPlusHead",
    "ShuffleNetV2",
    "build_detector",
]
