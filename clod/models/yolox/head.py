"""YOLOXHead, the decoupled YOLOX head (docs/yolox.md §2.3–§2.5): layers, init, forward
and the grid geometry.

Conventions:

* ``raw`` is B×N×(5+C) with per-prior channels [t_x, t_y, t_w, t_h, obj, cls_0 … cls_C−1],
  all raw (no sigmoid, no decoding) in training and eval mode alike.
* Priors are ordered by level (strides 8, 16, 32), row-major (y outer, x inner). The grid
  is the integer cell index (x = column, y = row) with **no** +0.5: a box decodes to
  cx = (t_x + x)·s, so t_x = 0.5 is the cell centre (docs/yolox.md §2.4, §8.3).
* ``input_size`` is always ``(height, width)``, i.e. ``tuple(images.shape[-2:])``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from clod.models.head_base import HeadBase
from clod.models.outputs import HeadOutput
from clod.models.targets import Assigned, Targets, check_labels
from clod.models.yolox.blocks import BaseConv, make_conv, set_yolox_batchnorm
from clod.models.yolox.losses import yolox_losses
from clod.models.yolox.postprocess import detections
from clod.models.yolox.simota import simota_assign

PRIOR_PROB = 0.01
# −log((1 − p)/p) = −4.59512: every class and the objectness start at σ = 0.01 (docs/yolox.md §2.5).
PRIOR_BIAS = -math.log((1 - PRIOR_PROB) / PRIOR_PROB)
BOX_CHANNELS = 4  # t_x, t_y, t_w, t_h
OBJ_CHANNEL = 4
CLS_OFFSET = 5
ASSIGNER_KEYS = ("version",)
# "legacy": SimOTA of v0.1–v0.3.0, which trained the released weights; "current": HEAD's
# centre-only variant (docs/yolox.md §4.1, §8.1).
ASSIGNER_VERSIONS = ("legacy", "current")
DEFAULT_ASSIGNER_VERSION = "legacy"
L1_EPS = 1e-8  # inside the log of the L1 size targets, as upstream (docs/yolox.md §4.4)


class GridPriors(NamedTuple):
    """Per-prior grid geometry, in prior order."""

    grid: torch.Tensor  # (N, 2) integer cell indices (x = column, y = row), as floats
    strides: torch.Tensor  # (N,)


class YOLOXHead(HeadBase):
    """Per level: 1×1 stem, then a cls branch and a reg branch of two 3×3 convs each.

    The cls branch feeds ``cls_preds`` (C channels); the reg branch feeds ``reg_preds``
    (4) **and** ``obj_preds`` (1): objectness comes from the regression features (docs/yolox.md
    §8.5). Nothing is shared between levels.

    Args:
        num_classes: C, the allocated class channels.
        width: width multiplier; the branches have int(256·width) channels.
        in_channels: unscaled widths of the pyramid levels (scaled by ``width``).
        depthwise: DWConv for the four 3×3 convs per level (Nano); stems stay dense.
        strides: one per pyramid level.
        assigner: SimOTA options, e.g. ``{"version": "legacy"}`` (the model config's
            ``head.assigner``); the version defaults to ``legacy``.
        l1_loss: add the L1 loss on the raw box channels (upstream turns it on for the
            last, no-augmentation epochs; docs/yolox.md §5).
    """

    OUTPUT_CONVS = ("reg_preds", "obj_preds", "cls_preds")

    def __init__(
        self,
        num_classes: int,
        width: float,
        in_channels: Sequence[int] = (256, 512, 1024),
        depthwise: bool = False,
        strides: Sequence[int] = (8, 16, 32),
        assigner: Mapping[str, Any] | None = None,
        l1_loss: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if len(in_channels) != len(strides):
            raise ValueError(f"{len(in_channels)} in_channels for {len(strides)} strides")
        self.assigner_cfg = self._check_assigner(assigner)
        self.l1_loss = bool(l1_loss)
        self.num_classes = int(num_classes)
        self.strides = tuple(int(s) for s in strides)
        hidden = int(256 * width)
        self.stems = nn.ModuleList()
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        self.cls_preds = nn.ModuleList()
        self.reg_preds = nn.ModuleList()
        self.obj_preds = nn.ModuleList()
        for channels in in_channels:
            self.stems.append(BaseConv(int(channels * width), hidden, 1))
            self.cls_convs.append(self._branch(hidden, depthwise))
            self.reg_convs.append(self._branch(hidden, depthwise))
            self.cls_preds.append(nn.Conv2d(hidden, self.num_classes, 1))
            self.reg_preds.append(nn.Conv2d(hidden, BOX_CHANNELS, 1))
            self.obj_preds.append(nn.Conv2d(hidden, 1, 1))
        set_yolox_batchnorm(self)
        self.reset_parameters()

    @staticmethod
    def _check_assigner(assigner: Mapping[str, Any] | None) -> dict[str, Any]:
        cfg = {"version": DEFAULT_ASSIGNER_VERSION, **dict(assigner or {})}
        unknown = sorted(set(cfg) - set(ASSIGNER_KEYS))
        if unknown:
            raise ValueError(
                f"unknown assigner options {unknown}; expected some of {ASSIGNER_KEYS}"
            )
        if cfg["version"] not in ASSIGNER_VERSIONS:
            raise ValueError(
                f"assigner version {cfg['version']!r} is not one of {ASSIGNER_VERSIONS} "
                "(legacy: the released weights' SimOTA; current: upstream HEAD's)"
            )
        return cfg

    @staticmethod
    def _branch(channels: int, depthwise: bool) -> nn.Sequential:
        return nn.Sequential(
            make_conv(channels, channels, 3, 1, depthwise),
            make_conv(channels, channels, 3, 1, depthwise),
        )

    @property
    def num_outputs(self) -> int:
        return CLS_OFFSET + self.num_classes

    def reset_parameters(self) -> None:
        """Upstream's init: PyTorch defaults everywhere (done at construction) except the
        cls and obj biases, which start at the prior so the initial loss is not swamped by
        the many negatives (docs/yolox.md §2.5)."""
        with torch.no_grad():
            for conv in (*self.cls_preds, *self.obj_preds):
                conv.bias.fill_(PRIOR_BIAS)

    # ------------------------------------------------------------------ forward
    def forward(self, pyramid: Sequence[torch.Tensor]) -> HeadOutput:
        if len(pyramid) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} levels, got {len(pyramid)}")
        cls_towers: list[torch.Tensor] = []
        reg_towers: list[torch.Tensor] = []
        outputs: list[torch.Tensor] = []
        for level, feature in enumerate(pyramid):
            x = self.stems[level](feature)
            cls_feat = self.cls_convs[level](x)
            reg_feat = self.reg_convs[level](x)
            cls_towers.append(cls_feat)
            reg_towers.append(reg_feat)
            level_out = torch.cat(
                (
                    self.reg_preds[level](reg_feat),
                    self.obj_preds[level](reg_feat),
                    self.cls_preds[level](cls_feat),
                ),
                dim=1,
            )
            # B×K×H×W → B×(H·W)×K, row-major priors. Python ints and -1 for the batch: an
            # exported graph gets a constant shape (clod.export).
            channels, height, width = (int(v) for v in level_out.shape[1:])
            outputs.append(level_out.permute(0, 2, 3, 1).reshape(-1, height * width, channels))
        raw = torch.cat(outputs, dim=1)
        return HeadOutput(
            raw,
            (*cls_towers, *reg_towers),
            raw[..., CLS_OFFSET:],
            raw[..., :BOX_CHANNELS],
            raw[..., OBJ_CHANNEL],
        )

    # ------------------------------------------------------------------ geometry
    def priors(
        self, input_size: tuple[int, int], device: torch.device | str, dtype: torch.dtype
    ) -> GridPriors:
        """Grid cells of every level for an input of (height, width), in prior order."""
        height, width = (int(v) for v in input_size)
        grids: list[torch.Tensor] = []
        strides: list[torch.Tensor] = []
        for stride in self.strides:
            # Each stride-2 conv (k3, pad 1) rounds up, as make_priors does for NanoDet.
            rows, cols = math.ceil(height / stride), math.ceil(width / stride)
            ys = torch.arange(rows, device=device, dtype=dtype)
            xs = torch.arange(cols, device=device, dtype=dtype)
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            grids.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), dim=1))
            strides.append(torch.full((rows * cols,), float(stride), device=device, dtype=dtype))
        return GridPriors(torch.cat(grids), torch.cat(strides))

    @staticmethod
    def decode_boxes(
        box_logits: torch.Tensor, grid: torch.Tensor, strides: torch.Tensor
    ) -> torch.Tensor:
        """(..., N, 4) raw (t_x, t_y, t_w, t_h) → (..., N, 4) x1, y1, x2, y2 in input pixels.

        cx = (t_x + x)·s, w = exp(t_w)·s; no clamp, as upstream (docs/yolox.md §2.4).
        """
        s = strides[:, None]
        centre = (box_logits[..., :2] + grid) * s
        half = box_logits[..., 2:].exp() * s * 0.5
        return torch.cat((centre - half, centre + half), dim=-1)

    @staticmethod
    def encode_boxes(
        boxes: torch.Tensor, grid: torch.Tensor, strides: torch.Tensor
    ) -> torch.Tensor:
        """(..., N, 4) x1, y1, x2, y2 → the (t_x, t_y, t_w, t_h) that decode to them.

        This is the L1 target of docs/yolox.md §4.4: cx/s − x, cy/s − y, log(w/s + 1e-8),
        log(h/s + 1e-8); the inverse of :meth:`decode_boxes` up to that epsilon.
        """
        s = strides[:, None]
        centre = (boxes[..., :2] + boxes[..., 2:]) * 0.5
        size = boxes[..., 2:] - boxes[..., :2]
        return torch.cat((centre / s - grid, torch.log(size / s + L1_EPS)), dim=-1)

    def boxes(self, output: HeadOutput, input_size: tuple[int, int]) -> torch.Tensor:
        """Decoded (unclipped) boxes B×N×4 of every prior, xyxy in input pixels."""
        priors = self._check_raw(output.raw, input_size)
        return self.decode_boxes(output.box_logits, priors.grid, priors.strides)

    def boxes_at(
        self, box_logits: torch.Tensor, prior: torch.Tensor, input_size: tuple[int, int]
    ) -> torch.Tensor:
        """(K, 4) xyxy boxes of the priors ``prior`` (K,) from their (K, 4) raw offsets."""
        priors = self.priors(input_size, box_logits.device, box_logits.dtype)
        return self.decode_boxes(box_logits, priors.grid[prior], priors.strides[prior])

    def scores(self, output: HeadOutput) -> torch.Tensor:
        """Per-class confidence B×N×C: σ(obj)·σ(cls), the score YOLOX ranks detections by."""
        assert output.obj_logits is not None  # a YOLOX output always carries objectness
        return output.cls_logits.sigmoid() * output.obj_logits.sigmoid()[..., None]

    def score_channels(self, classes: torch.Tensor) -> torch.Tensor:
        """The class logits of ``classes`` and the objectness: a score is σ(obj)·σ(cls), so
        distilling the class logits alone would leave old objects free to fade through
        the objectness (docs/strategies.md §0)."""
        obj = torch.tensor([OBJ_CHANNEL], dtype=classes.dtype, device=classes.device)
        return torch.cat((classes + CLS_OFFSET, obj))

    def box_confidence(self, output: HeadOutput) -> torch.Tensor:
        """B×N objectness logits: YOLOX's own "is there a box here" (ERD's regression
        selection on this family; docs/strategies.md §7)."""
        assert output.obj_logits is not None
        return output.obj_logits

    def box_distillation(
        self, student_box: torch.Tensor, teacher_box: torch.Tensor, temperature: float
    ) -> torch.Tensor:
        """(K,) Σ over (t_x, t_y, t_w, t_h) of |student − teacher|: the head's own L1 box
        loss with the teacher's raw offsets as target (ERD's box-bin KL has no counterpart
        on direct regression; docs/strategies.md §7). ``temperature`` does not apply."""
        del temperature
        return (student_box - teacher_box).abs().sum(dim=-1)

    # ------------------------------------------------------------------ loss
    @torch.no_grad()
    def assign_targets(
        self, raw: torch.Tensor, targets: Targets, input_size: tuple[int, int]
    ) -> Assigned:
        """SimOTA (``assigner.version``) on the detached predictions, the whole batch at once."""
        priors = self._check_raw(raw, input_size)
        check_labels(targets, self.num_classes)
        raw = raw.detach()
        assignment = simota_assign(
            raw[..., CLS_OFFSET:],
            raw[..., OBJ_CHANNEL],
            self.decode_boxes(raw[..., :BOX_CHANNELS], priors.grid, priors.strides),
            priors.grid,
            priors.strides,
            targets.boxes,
            targets.labels,
            targets.valid,
            version=self.assigner_cfg["version"],
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
        """The YOLOX losses given an assignment, under the controls strategies use.

        The controls carry the NanoDet-Plus meanings over (docs/strategies.md §0):

        * ``class_mask`` (C,): the cls BCE covers only these channels.
        * ``qfl_weight`` (B, N) or (B, N, C), the weight of each element of the score loss:
          on a positive it weighs its cls BCE, and its objectness through the weight of its
          own target element; a negative's objectness keeps the smallest weight of its
          classes, so a negative left out for some class (ILYOLOX's confident old
          predictions) is not pushed to background either.
        * ``box_mask`` (B, N): positives outside it get no IoU and no L1 loss.
        """
        priors = self._check_raw(raw, input_size)
        if class_mask is not None and not bool(class_mask.any()):
            raise ValueError("class_mask selects no class channel")
        obj_weight = None
        if qfl_weight is not None:
            if qfl_weight.dim() == 2:
                obj_weight = qfl_weight
            else:
                own = qfl_weight.gather(-1, assigned.labels[..., None]).squeeze(-1)
                obj_weight = torch.where(assigned.positive, own, qfl_weight.amin(dim=-1))
        pred_boxes = self.decode_boxes(raw[..., :BOX_CHANNELS], priors.grid, priors.strides)
        targets = assigned.targets
        return yolox_losses(
            raw[..., :BOX_CHANNELS],
            pred_boxes,
            raw[..., OBJ_CHANNEL],
            raw[..., CLS_OFFSET:],
            assigned,
            targets.boxes,
            targets.labels,
            priors.grid,
            priors.strides,
            use_l1=self.l1_loss,
            class_mask=class_mask,
            cls_weight=qfl_weight,
            box_mask=box_mask,
            obj_weight=obj_weight,
        )

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
        """YOLOX post-processing (docs/yolox.md §6) into per-image detections.

        One label per prior, its best class; kept when obj × class ≥ ``score_thr``;
        class-aware NMS (suppressed when IoU > ``nms_iou``), at most ``max_det`` per image
        (the COCO evaluation's cap; YOLOX itself has none). Boxes are not clipped in input
        pixels, as upstream; mapped back through ``warps`` they are clipped to
        ``orig_sizes``. Arguments and result as :meth:`NanoDetPlusHead.decode`.
        """
        priors = self._check_raw(raw, input_size)
        boxes = self.decode_boxes(raw[..., :BOX_CHANNELS], priors.grid, priors.strides)
        return detections(
            boxes,
            raw[..., OBJ_CHANNEL],
            raw[..., CLS_OFFSET:],
            warps,
            orig_sizes,
            score_thr,
            nms_iou,
            max_det,
            class_mask,
        )

    # ------------------------------------------------------------------ growth
    @torch.no_grad()
    def grow(self, new_num_classes: int, generator: torch.Generator | None = None) -> None:
        """Grow every level's ``cls_preds`` to ``new_num_classes`` rows, old rows kept.

        New rows get PyTorch's default Conv2d weight init (kaiming-uniform a=√5, i.e.
        U(±1/√fan_in)) drawn from ``generator`` (on CPU, so the same seed gives the same
        rows on any device), and the prior bias, like a freshly built head.
        """
        new_num_classes = int(new_num_classes)
        if new_num_classes < self.num_classes:
            raise ValueError(
                f"cannot shrink the head from {self.num_classes} to {new_num_classes} classes"
            )
        if new_num_classes == self.num_classes:
            return
        added = new_num_classes - self.num_classes
        for level, conv in enumerate(self.cls_preds):
            bound = 1.0 / math.sqrt(conv.in_channels)  # kernel 1×1: fan_in = in_channels
            fresh = torch.rand(
                (added, *conv.weight.shape[1:]), generator=generator, dtype=torch.float32
            )
            # skip_init: every entry is set below, and the global RNG stays untouched.
            grown = nn.utils.skip_init(
                nn.Conv2d,
                conv.in_channels,
                new_num_classes,
                1,
                device=conv.weight.device,
                dtype=conv.weight.dtype,
            )
            grown.weight[: self.num_classes] = conv.weight
            grown.weight[self.num_classes :] = ((fresh * 2 - 1) * bound).to(conv.weight)
            grown.bias[: self.num_classes] = conv.bias
            grown.bias[self.num_classes :] = PRIOR_BIAS
            self.cls_preds[level] = grown
        self.num_classes = new_num_classes
