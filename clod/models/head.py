"""NanoDetPlusHead (docs/detector.md §5–§8, §11): towers, priors, loss, decoding and growth.

Conventions used by every method:

* ``raw`` is B×N×(C+32): class logits first, then 4 groups of ``reg_max + 1`` bin logits in
  the order left, top, right, bottom.
* Priors are ordered by level (strides 8, 16, 32, 64), row-major (y outer, x inner), with
  centres (j·s, i·s) and no half-stride offset.
* ``input_size`` is ``(height, width)`` of the padded input, i.e. ``tuple(images.shape[-2:])``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from clod.models.assigner import assign, check_multi_match
from clod.models.boxes import box_to_distance, clip_boxes, distance_to_box
from clod.models.head_base import HeadBase
from clod.models.layers import DWConvModule
from clod.models.losses import (
    DFL_WEIGHT,
    GIOU_WEIGHT,
    QFL_WEIGHT,
    avg_factor,
    box_bin_kl,
    dfl_targets,
    distribution_focal_loss,
    giou_loss,
    quality_focal_loss,
)
from clod.models.nms import nms_detections
from clod.models.outputs import HeadOutput
from clod.models.priors import Priors, make_priors
from clod.models.targets import Assigned, Targets, check_labels

PRIOR_PROB = 0.01
# log(0.01 / 0.99) rounded as upstream rounds it (docs/detector.md §5), so every class starts at σ ≈ 0.01.
CLS_BIAS_INIT = -4.595
ASSIGNER_KEYS = ("topk", "iou_factor", "multi_match")


def expand_class_rows(
    weight: torch.Tensor,
    bias: torch.Tensor,
    old_classes: int,
    new_classes: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-lay a ``gfl_cls`` weight/bias from C_o to C_n class rows (docs/detector.md §11).

    Class rows [0, C_o) stay put, box rows [C_o, end) move to [C_n, end + C_n − C_o), and the
    new class rows [C_o, C_n) get N(0, 0.01) weights and the prior bias.
    """
    if new_classes < old_classes:
        raise ValueError(f"cannot shrink the head from {old_classes} to {new_classes} classes")
    box_rows = weight.shape[0] - old_classes
    new_weight = weight.new_empty((new_classes + box_rows, *weight.shape[1:]))
    new_bias = bias.new_empty(new_classes + box_rows)
    new_weight[:old_classes] = weight[:old_classes]
    new_bias[:old_classes] = bias[:old_classes]
    new_weight[new_classes:] = weight[old_classes:]
    new_bias[new_classes:] = bias[old_classes:]
    fresh = torch.randn(
        (new_classes - old_classes, *weight.shape[1:]), generator=generator, dtype=torch.float32
    )
    new_weight[old_classes:new_classes] = (fresh * PRIOR_PROB).to(new_weight)
    new_bias[old_classes:new_classes] = CLS_BIAS_INIT
    return new_weight, new_bias


class NanoDetPlusHead(HeadBase):
    """Per-level towers of depthwise-separable convs and one 1×1 output conv per level.

    Args:
        num_classes: C, the allocated class channels.
        in_channels: width of the neck outputs.
        feat_channels: width of the towers (equal to ``in_channels`` upstream).
        stacked_convs: DWConvModules per tower.
        kernel_size: tower kernel.
        strides: one per pyramid level.
        reg_max: the largest distance bin; a side is predicted over ``reg_max + 1`` bins.
            The DFL target is clamped to ``reg_max − 0.1`` bins.
        assigner: optional keyword arguments of :func:`~clod.models.assigner.assign`
            (``topk``, ``iou_factor``, ``multi_match``), e.g. ``{"multi_match": "selecting_gts"}``
            from the model config's ``head.assigner``; unset keys keep the upstream defaults.
    """

    OUTPUT_CONVS = ("gfl_cls",)

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 96,
        feat_channels: int = 96,
        stacked_convs: int = 2,
        kernel_size: int = 5,
        strides: Sequence[int] = (8, 16, 32, 64),
        reg_max: int = 7,
        assigner: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.assigner_cfg = dict(assigner or {})
        unknown = sorted(set(self.assigner_cfg) - set(ASSIGNER_KEYS))
        if unknown:
            raise ValueError(
                f"unknown assigner options {unknown}; expected some of {ASSIGNER_KEYS}"
            )
        if "multi_match" in self.assigner_cfg:
            check_multi_match(self.assigner_cfg["multi_match"])
        self.num_classes = int(num_classes)
        self.strides = tuple(int(s) for s in strides)
        self.reg_max = int(reg_max)
        self.num_bins = self.reg_max + 1
        self.cls_convs = nn.ModuleList()
        for _ in self.strides:
            tower = [
                DWConvModule(in_channels if i == 0 else feat_channels, feat_channels, kernel_size)
                for i in range(stacked_convs)
            ]
            self.cls_convs.append(nn.Sequential(*tower))
        self.gfl_cls = nn.ModuleList(
            nn.Conv2d(feat_channels, self.num_classes + 4 * self.num_bins, 1) for _ in self.strides
        )
        self.register_buffer(
            "bin_values", torch.arange(self.num_bins, dtype=torch.float32), persistent=False
        )
        self.reset_parameters()

    @property
    def num_outputs(self) -> int:
        return self.num_classes + 4 * self.num_bins

    def reset_parameters(self) -> None:
        for tower in self.cls_convs:
            for module in tower:
                module.init_normal(0.01)
        for conv in self.gfl_cls:
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.constant_(conv.bias, CLS_BIAS_INIT)

    # ------------------------------------------------------------------ forward
    def forward(self, pyramid: Sequence[torch.Tensor]) -> HeadOutput:
        if len(pyramid) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} levels, got {len(pyramid)}")
        towers: list[torch.Tensor] = []
        outputs: list[torch.Tensor] = []
        for feature, tower, out_conv in zip(pyramid, self.cls_convs, self.gfl_cls, strict=True):
            tower_out = tower(feature)
            towers.append(tower_out)
            level_out = out_conv(tower_out)
            # B×C×H×W → B×(H·W)×C, row-major priors; a free view for channels-last maps. Python
            # ints and -1 for the batch: an exported graph gets a constant shape (clod.export).
            channels, height, width = (int(v) for v in level_out.shape[1:])
            outputs.append(level_out.permute(0, 2, 3, 1).reshape(-1, height * width, channels))
        raw = torch.cat(outputs, dim=1)
        return HeadOutput.from_raw(raw, towers, self.num_classes)

    # ------------------------------------------------------------------ geometry
    def priors(
        self, input_size: tuple[int, int], device: torch.device | str, dtype: torch.dtype
    ) -> Priors:
        return make_priors(input_size, self.strides, device, dtype)

    def decode_distances(self, reg_logits: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
        """(..., 4·(reg_max+1)) bin logits → (..., 4) distances l, t, r, b in pixels."""
        bins = reg_logits.unflatten(-1, (4, self.num_bins)).softmax(dim=-1)
        expectation = bins @ self.bin_values.to(bins.dtype)
        return expectation * strides[..., None]

    def decode_boxes(self, raw: torch.Tensor, priors: Priors) -> torch.Tensor:
        """Unclamped predicted boxes (..., N, 4) from ``raw``."""
        distances = self.decode_distances(raw[..., self.num_classes :], priors.strides)
        return distance_to_box(priors.centres, distances)

    def boxes(self, output: HeadOutput, input_size: tuple[int, int]) -> torch.Tensor:
        """Decoded (unclamped) boxes B×N×4 of every prior, in input pixels."""
        priors = self._check_raw(output.raw, input_size)
        return distance_to_box(
            priors.centres, self.decode_distances(output.box_logits, priors.strides)
        )

    def boxes_at(
        self, box_logits: torch.Tensor, prior: torch.Tensor, input_size: tuple[int, int]
    ) -> torch.Tensor:
        """(K, 4) xyxy boxes of the priors ``prior`` (K,) from their (K, 4·bins) logits."""
        priors = self.priors(input_size, box_logits.device, box_logits.dtype)
        distances = self.decode_distances(box_logits, priors.strides[prior])
        return distance_to_box(priors.centres[prior], distances)

    def stride_free_boxes_at(
        self, box_logits: torch.Tensor, prior: torch.Tensor, input_size: tuple[int, int]
    ) -> torch.Tensor:
        """ERD's defective decoding (``strategy.reference_decoding``, fidelity only): the
        expected distances stay in stride units while the centres are in pixels."""
        priors = self.priors(input_size, box_logits.device, box_logits.dtype)
        distances = self.decode_distances(box_logits, torch.ones_like(priors.strides[prior]))
        return distance_to_box(priors.centres[prior], distances)

    def scores(self, output: HeadOutput) -> torch.Tensor:
        """Per-class confidence B×N×C: σ of the class logits (QFL's IoU-aware score)."""
        return output.cls_logits.sigmoid()

    def score_channels(self, classes: torch.Tensor) -> torch.Tensor:
        """The class logits themselves: a score is σ of its class logit."""
        return classes

    def box_confidence(self, output: HeadOutput) -> torch.Tensor:
        """B×N: the largest box-bin logit of each prior (ERD's regression selection: a
        peaked distribution is a sure box)."""
        return output.box_logits.amax(dim=-1)

    def box_distillation(
        self, student_box: torch.Tensor, teacher_box: torch.Tensor, temperature: float
    ) -> torch.Tensor:
        """(K,) ERD's KL between the priors' box-bin distributions at temperature T."""
        return box_bin_kl(student_box, teacher_box, temperature)

    # ------------------------------------------------------------------ loss
    @torch.no_grad()
    def assign_targets(
        self, raw: torch.Tensor, targets: Targets, input_size: tuple[int, int]
    ) -> Assigned:
        """Which prior learns which target: :func:`assign` on the detached predictions."""
        priors = self._check_raw(raw, input_size)
        check_labels(targets, self.num_classes)
        raw = raw.detach()
        assignment = assign(
            raw[..., : self.num_classes],
            self.decode_boxes(raw, priors),
            priors.centres,
            targets.boxes,
            targets.labels,
            targets.valid,
            **self.assigner_cfg,
        )
        return Assigned(targets, assignment.positive, assignment.gt_index, assignment.iou)

    def loss_from_assignment(
        self,
        raw: torch.Tensor,
        assigned: Assigned,
        input_size: tuple[int, int],
        class_mask: torch.Tensor | None = None,
        qfl_weight: torch.Tensor | None = None,
        box_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """QFL + 2·GIoU + 0.25·DFL given an assignment, with the controls strategies use.

        Args:
            class_mask: bool (C,): QFL covers only these channels, and the GIoU/DFL weight of
                a positive is its max score over them (ERD's new-class supervision). The
                assigner has seen every channel.
            qfl_weight: (B, N) or (B, N, C) multiplier of each QFL element; 0 leaves an element
                out. QFL is normalised by the positives whose target element keeps a weight.
            box_mask: (B, N) bool: positives outside it get no GIoU/DFL.
        """
        priors = self._check_raw(raw, input_size)
        if class_mask is not None and not bool(class_mask.any()):
            raise ValueError("class_mask selects no class channel")
        num_classes = self.num_classes
        cls_logits = raw[..., :num_classes]
        reg_logits = raw[..., num_classes:]
        positive = assigned.positive
        batch_idx, prior_idx = positive.nonzero(as_tuple=True)
        matched_gt = assigned.gt_index[batch_idx, prior_idx]
        pos_labels = assigned.targets.labels[batch_idx, matched_gt]

        qfl_targets = torch.zeros_like(cls_logits)
        qfl_targets[batch_idx, prior_idx, pos_labels] = assigned.iou[batch_idx, prior_idx].to(
            raw.dtype
        )
        qfl_elements = quality_focal_loss(cls_logits, qfl_targets, reduction="none")
        counted = torch.ones_like(batch_idx, dtype=torch.bool)
        if qfl_weight is not None:
            weight = qfl_weight.to(raw.dtype)
            weight = weight[..., None] if weight.dim() == 2 else weight
            qfl_elements = qfl_elements * weight
            counted = weight.expand_as(cls_logits)[batch_idx, prior_idx, pos_labels] > 0
        if class_mask is not None:
            qfl_elements = qfl_elements[..., class_mask]
        num_pos = avg_factor(counted.sum().to(raw.dtype))
        loss_qfl = QFL_WEIGHT * qfl_elements.sum() / num_pos

        if box_mask is not None:
            keep = box_mask[batch_idx, prior_idx]
            batch_idx, prior_idx, matched_gt = batch_idx[keep], prior_idx[keep], matched_gt[keep]
        pos_cls = cls_logits[batch_idx, prior_idx].detach()
        if class_mask is not None:
            pos_cls = pos_cls[:, class_mask]
        weights = pos_cls.sigmoid().amax(dim=1) if pos_cls.shape[0] else pos_cls.new_zeros(0)
        # Every rank joins this all-reduce, positives or not, or DDP would deadlock.
        weight_factor = avg_factor(weights.sum())
        if batch_idx.numel() == 0:
            # Zero, but attached to the graph so DDP sees a gradient for every parameter.
            loss_bbox = reg_logits.sum() * 0.0
            loss_dfl = reg_logits.sum() * 0.0
        else:
            pos_gt_boxes = assigned.targets.boxes[batch_idx, matched_gt].to(raw.dtype)
            pos_reg = reg_logits[batch_idx, prior_idx]
            pos_centres = priors.centres[prior_idx]
            pos_strides = priors.strides[prior_idx]
            pos_pred_boxes = distance_to_box(
                pos_centres, self.decode_distances(pos_reg, pos_strides)
            )
            loss_bbox = (
                GIOU_WEIGHT
                * (weights * giou_loss(pos_pred_boxes, pos_gt_boxes)).sum()
                / weight_factor
            )
            target_bins = dfl_targets(
                box_to_distance(pos_centres, pos_gt_boxes) / pos_strides[:, None], self.reg_max
            )
            dfl = distribution_focal_loss(
                pos_reg.reshape(-1, self.num_bins), target_bins.reshape(-1)
            )
            loss_dfl = (
                DFL_WEIGHT * (dfl * weights.repeat_interleave(4)).sum() / (4.0 * weight_factor)
            )
        return {
            "loss": loss_qfl + loss_bbox + loss_dfl,
            "loss_qfl": loss_qfl,
            "loss_bbox": loss_bbox,
            "loss_dfl": loss_dfl,
        }

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
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
    ) -> list[dict[str, torch.Tensor]]:
        """Post-process ``raw`` into per-image detections (docs/detector.md §8).

        Args:
            raw: B×N×(C+32).
            input_size: (height, width) of the padded input.
            warps: optional (B, 3, 3) original→input matrices; with them the boxes are mapped
                back to original-image pixels (and clipped to ``orig_sizes`` if given).
            orig_sizes: optional (B, 2) (height, width) of the original images.
            class_mask: optional bool (C,); channels that are False are never detected
                (protocol ``eval.restrict_to_seen``). Labels stay global indices.
        Returns:
            One dict per image with ``boxes`` (k, 4) float32, ``scores`` (k,), ``labels``
            (k,) int64, sorted by descending score, k ≤ ``max_det``.
        """
        priors = self._check_raw(raw, input_size)
        height, width = input_size
        scores = raw[..., : self.num_classes].sigmoid()
        if class_mask is not None:
            scores = scores * class_mask.to(device=scores.device, dtype=scores.dtype)
        boxes = clip_boxes(self.decode_boxes(raw, priors), height, width)
        results: list[dict[str, torch.Tensor]] = []
        for image in range(raw.shape[0]):
            # Every (prior, class) pair above the threshold is a candidate (multi-label).
            prior_idx, class_idx = (scores[image] > score_thr).nonzero(as_tuple=True)
            results.append(
                nms_detections(
                    boxes[image, prior_idx],
                    scores[image, prior_idx, class_idx],
                    class_idx,
                    nms_iou,
                    max_det,
                    None if warps is None else warps[image],
                    None if orig_sizes is None else orig_sizes[image],
                )
            )
        return results

    # ------------------------------------------------------------------ growth
    @torch.no_grad()
    def grow(self, new_num_classes: int, generator: torch.Generator | None = None) -> None:
        """Grow every level's output conv to ``new_num_classes`` class rows (docs/detector.md §11)."""
        new_num_classes = int(new_num_classes)
        if new_num_classes == self.num_classes:
            return
        for level, conv in enumerate(self.gfl_cls):
            weight, bias = expand_class_rows(
                conv.weight, conv.bias, self.num_classes, new_num_classes, generator
            )
            grown = nn.Conv2d(conv.in_channels, weight.shape[0], 1).to(weight)
            grown.weight.copy_(weight)
            grown.bias.copy_(bias)
            self.gfl_cls[level] = grown
        self.num_classes = new_num_classes
