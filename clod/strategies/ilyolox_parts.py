"""ILYOLOX's mechanisms as pure, batched functions (docs/strategies.md §8).

- **Selection** of the teacher's priors (step 2): ``fixed``, ``mean_kstd``,
  ``class_mean_kstd`` and ``crs`` (centre re-sampling), each a (B, N) mask over every image
  of the batch at once, followed by class-wise NMS at a loose IoU (0.95) that keeps a
  cluster of teacher boxes around each object.
- **Collaborative knowledge distillation** (step 5) over the old positives: the class
  and box errors, their detached dynamic weights and the hybrid class targets.

Per-group statistics are segment sums over (image, class) groups and the centre
re-sampling compares each candidate only with the centres of its own (image, class)
group, so nothing loops over images, priors, boxes or classes in Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from clod.errors import ConfigError
from clod.models.boxes import aligned_giou, aligned_iou
from clod.strategies.selection import Selection, elastic_threshold, nms_per_image

SELECTION_METHODS: tuple[str, ...] = ("fixed", "mean_kstd", "class_mean_kstd", "crs")
HYBRID_TARGETS: tuple[str, ...] = ("none", "hy1", "hy2", "hy3")
LOC_LOSSES: tuple[str, ...] = ("iou2", "giou")
# The weight of each box-distillation form when ``loc_weight`` is not given: 5 for the
# reference's squared-IoU loss, 2 for GIoU (GFL's own GIoU weight).
DEFAULT_LOC_WEIGHTS: dict[str, float] = {"iou2": 5.0, "giou": 2.0}
# Added to e_cls + e_loc in the dynamic weights, so a perfect prior (both errors 0) gets
# weights 0 instead of NaN; the reference has no ε.
WEIGHT_EPS = 1e-6
# Centre re-sampling compares at most about this many (candidate, centre) pairs at once.
MAX_PAIRS = 1 << 22


@dataclass(frozen=True)
class SelectConfig:
    """``strategy.select``: which teacher priors become pseudo ground truth.

    method: ``fixed`` (s ≥ score_thr), ``mean_kstd`` (s ≥ the image's mean + k_std·std),
    ``class_mean_kstd`` (s ≥ mean + class_k_std·std of its (image, old class) group) or
    ``crs`` (centres s ≥ score_thr, their same-class neighbours with IoU ≥ neighbour_iou,
    all with s ≥ low_thr); then class-wise NMS at nms_iou; then, if ``gt_overlap_iou`` is
    set, the survivors overlapping an annotated box by more than it are dropped.
    """

    method: str = "crs"
    score_thr: float = 0.3
    low_thr: float = 0.1
    neighbour_iou: float = 0.65
    k_std: float = 2.0
    class_k_std: float = 1.0
    nms_iou: float = 0.95
    # clod option (None: the reference): drop a pseudo box whose IoU with an annotated box of
    # its image is above this, so a new object the teacher calls by an old name stays new.
    gt_overlap_iou: float | None = None

    def __post_init__(self) -> None:
        if self.method not in SELECTION_METHODS:
            raise ConfigError(
                f"strategy.select.method must be one of {SELECTION_METHODS}, got {self.method!r}"
            )
        for key in ("score_thr", "low_thr", "neighbour_iou"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(
                    f"strategy.select.{key} must be in [0, 1], got {getattr(self, key)}"
                )
        if self.low_thr > self.score_thr:
            raise ConfigError(
                f"strategy.select.low_thr ({self.low_thr}) must not exceed "
                f"strategy.select.score_thr ({self.score_thr})"
            )
        if self.gt_overlap_iou is not None and not 0.0 <= self.gt_overlap_iou <= 1.0:
            raise ConfigError(
                f"strategy.select.gt_overlap_iou must be in [0, 1] or null, got {self.gt_overlap_iou}"
            )
        if not 0.0 < self.nms_iou <= 1.0:
            raise ConfigError(f"strategy.select.nms_iou must be in (0, 1], got {self.nms_iou}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> SelectConfig:
        """The config from a mapping (Hydra's ``select:`` block); unknown keys are errors."""
        given = dict(values or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ConfigError(
                f"strategy.select has unknown keys {unknown}; expected some of {known}"
            )
        parsed: dict[str, Any] = {}
        for key, value in given.items():
            if key == "method":
                parsed[key] = str(value)
                continue
            if key == "gt_overlap_iou" and value is None:  # null: no overlap filter
                parsed[key] = None
                continue
            try:
                parsed[key] = float(value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"strategy.select.{key} must be a number, got {value!r}"
                ) from None
        return cls(**parsed)


# --------------------------------------------------------------------------- selection
def fixed_mask(score: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, N) priors whose old-class score is at least ``threshold``."""
    return score >= threshold


def mean_kstd_mask(score: torch.Tensor, k_std: float) -> torch.Tensor:
    """(B, N) priors whose score is at least their image's mean + k·std (unbiased std)."""
    return score >= elastic_threshold(score, k_std)


def image_class_groups(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, N) id of each prior's (image, label) group: image · C + label."""
    image = torch.arange(label.shape[0], device=label.device)[:, None]
    return image * num_classes + label


def class_mean_kstd_mask(
    score: torch.Tensor, label: torch.Tensor, k_std: float, num_classes: int
) -> torch.Tensor:
    """(B, N) priors with s ≥ τ of their (image, label) group, τ = mean + k·std of s there.

    ``label`` is each prior's old-class argmax c*. The std is unbiased (torch's default);
    a group of a single prior has std 0, so its prior is kept (τ = s).
    """
    group = image_class_groups(label, num_classes).reshape(-1)
    values = score.reshape(-1)
    num_groups = label.shape[0] * num_classes
    zeros = values.new_zeros(num_groups)
    count = zeros.index_add(0, group, torch.ones_like(values))
    mean = zeros.index_add(0, group, values) / count.clamp(min=1.0)
    squares = zeros.index_add(0, group, (values - mean[group]).square())
    std = (squares / (count - 1.0).clamp(min=1.0)).sqrt()
    threshold = mean + k_std * std
    return (values >= threshold[group]).view_as(score)


def crs_mask(
    score: torch.Tensor,
    label: torch.Tensor,
    boxes: torch.Tensor,
    centre_thr: float,
    low_thr: float,
    neighbour_iou: float,
    num_classes: int,
) -> torch.Tensor:
    """(B, N) centre re-sampling: (centres ∪ neighbours) ∩ {s ≥ ``low_thr``}.

    For each image and old class k (over the priors with c* = k): centres are the priors
    with s ≥ ``centre_thr``; a neighbour is a prior whose box has IoU ≥ ``neighbour_iou``
    with the box of some centre of the same image and class. Only the pairs (candidate,
    centre of its group) are compared: the pairs are enumerated group by group with
    segment offsets, never as an N×N matrix.
    """
    centre = score >= centre_thr
    # Centres pass the s ≥ low_thr floor already (low_thr ≤ centre_thr); the remaining
    # priors above the floor are the neighbour candidates.
    candidate = (score >= low_thr) & ~centre
    keep = centre.clone()
    centre_image, centre_prior = centre.nonzero(as_tuple=True)
    cand_image, cand_prior = candidate.nonzero(as_tuple=True)
    if centre_image.numel() == 0 or cand_image.numel() == 0:
        return keep
    # (image, class) group ids, only where they are needed.
    centre_group = centre_image * num_classes + label[centre_image, centre_prior]
    cand_group = cand_image * num_classes + label[cand_image, cand_prior]

    # Centres ordered by group; group g's centres are order[first[g] : first[g] + size[g]].
    order = torch.sort(centre_group, stable=True).indices
    size = torch.bincount(centre_group, minlength=label.shape[0] * num_classes)
    first = torch.cumsum(size, 0) - size
    pairs_per_candidate = size[cand_group]
    # Candidates are handled in chunks of about MAX_PAIRS (candidate, centre) pairs, which
    # bounds the memory when a teacher scores a large region high; one chunk in practice.
    pair_end = torch.cumsum(pairs_per_candidate, 0)
    total = int(pair_end[-1])
    if total == 0:  # no candidate shares an (image, class) group with a centre
        return keep
    bounds = torch.tensor(range(MAX_PAIRS, total, MAX_PAIRS), device=score.device)
    splits = torch.searchsorted(pair_end, bounds, right=True).tolist()
    near_parts = []
    for lo, hi in zip([0, *splits], [*splits, cand_group.numel()], strict=True):
        chunk = slice(lo, hi)
        pair_candidate = lo + torch.repeat_interleave(
            torch.arange(hi - lo, device=score.device), pairs_per_candidate[chunk]
        )
        # Rank of each pair among its candidate's pairs = its global pair index minus the
        # global index of the candidate's first pair; it indexes the group's centres.
        chunk_first_pair = pair_end[lo - 1] if lo > 0 else 0
        global_pair = chunk_first_pair + torch.arange(pair_candidate.numel(), device=score.device)
        rank = global_pair - (pair_end[pair_candidate] - pairs_per_candidate[pair_candidate])
        pair_centre = order[first[cand_group[pair_candidate]] + rank]
        overlap = aligned_iou(
            boxes[cand_image[pair_candidate], cand_prior[pair_candidate]],
            boxes[centre_image[pair_centre], centre_prior[pair_centre]],
        )
        near = torch.zeros(hi - lo, dtype=torch.bool, device=score.device)
        near[pair_candidate[overlap >= neighbour_iou] - lo] = True
        near_parts.append(near)
    near = torch.cat(near_parts)
    keep[cand_image[near], cand_prior[near]] = True
    return keep


def selection_mask(
    score: torch.Tensor,
    label: torch.Tensor,
    boxes: torch.Tensor,
    config: SelectConfig,
    num_classes: int,
) -> torch.Tensor:
    """(B, N) the priors ``config.method`` keeps, before NMS."""
    if config.method == "fixed":
        return fixed_mask(score, config.score_thr)
    if config.method == "mean_kstd":
        return mean_kstd_mask(score, config.k_std)
    if config.method == "class_mean_kstd":
        return class_mean_kstd_mask(score, label, config.class_k_std, num_classes)
    return crs_mask(
        score, label, boxes, config.score_thr, config.low_thr, config.neighbour_iou, num_classes
    )


def select_teacher_priors(
    score: torch.Tensor,
    label: torch.Tensor,
    boxes: torch.Tensor,
    config: SelectConfig,
    num_classes: int,
) -> Selection:
    """The teacher priors whose (box, label c*) become pseudo ground truth, best first.

    ``score``/``label`` (B, N): the max and argmax over the old classes of σ(z^T);
    ``boxes`` (B, N, 4) the teacher's decoded boxes. The method's mask, then class-wise NMS
    at ``config.nms_iou`` inside each image.
    """
    kept = Selection.from_mask(selection_mask(score, label, boxes, config, num_classes))
    return nms_per_image(kept, boxes, score, label, config.nms_iou)


def confident_old_negatives(
    score: torch.Tensor, old_classes: torch.Tensor, num_classes: int, threshold: float
) -> torch.Tensor:
    """(B, N, C) the old-class channels at priors where the teacher's score s ≥ ``threshold``.

    QFL leaves these out where their target is 0, so an old object the teacher sees but the
    selection dropped is not pushed to background there.
    """
    channel = torch.zeros(num_classes, dtype=torch.bool, device=score.device)
    channel[old_classes.to(score.device)] = True
    return (score >= threshold)[..., None] & channel


# --------------------------------------------------------------------------- CKD
class CKDTerms(NamedTuple):
    """The two weighted CKD losses and the detached per-positive weights (K,) behind them."""

    cls: torch.Tensor
    loc: torch.Tensor
    cls_weight: torch.Tensor
    loc_weight: torch.Tensor


def dynamic_weights(
    cls_error: torch.Tensor, loc_error: torch.Tensor, eps: float = WEIGHT_EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Detached w_cls = 2e_cls/(e_cls+e_loc+ε), w_loc = 2e_loc/(…): in [0, 2], summing to 2
    (up to ε); the task that is currently worse gets the larger weight."""
    cls_error, loc_error = cls_error.detach(), loc_error.detach()
    total = cls_error + loc_error + eps
    return 2.0 * cls_error / total, 2.0 * loc_error / total


def hybrid_target(
    probability: torch.Tensor, hybrid: str, onehot: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The CKD class target from the teacher's probabilities (K, C'), and a replacement class
    weight (K,) where the variant has one (hy3), else None.

    none: σ(z^T) itself; hy1: the top class set to 1; hy2: (1 − max) added to every class (the
    top class becomes 1, the others rise by the same amount); hy3: target unchanged, weight
    (1 − max)²; ``onehot`` then replaces the target by the one-hot of its argmax.
    """
    if hybrid not in HYBRID_TARGETS:
        raise ValueError(f"hybrid must be one of {HYBRID_TARGETS}, got {hybrid!r}")
    target = probability
    top, top_class = probability.max(dim=-1)
    weight: torch.Tensor | None = None
    if hybrid == "hy1":
        target = probability.scatter(-1, top_class[:, None], 1.0)
    elif hybrid == "hy2":
        target = probability + (1.0 - top)[:, None]
    elif hybrid == "hy3":
        weight = (1.0 - top).square()
    if onehot:
        target = F.one_hot(target.argmax(dim=-1), target.shape[-1]).to(target.dtype)
    return target, weight


def ckd_losses(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    student_boxes: torch.Tensor,
    teacher_boxes: torch.Tensor,
    hybrid: str = "none",
    onehot: bool = False,
    loc_loss: str = "iou2",
    cls_weight: float = 1.0,
    loc_weight: float = 5.0,
) -> CKDTerms:
    """Collaborative KD over K ≥ 1 old positives p, each with its teacher prior q.

    ``student_logits``/``teacher_logits`` (K, C'): z^S_p and z^T_q on the distilled channels;
    ``student_boxes``/``teacher_boxes`` (K, 4): b^S_p and b^T_q. With
    e_cls = Σ_c BCEwithLogits(z^S_pc, σ(z^T_qc)) and e_loc = 1 − GIoU(b^S_p, b^T_q):

    - L_cls = cls_weight · Σ_p w_cls · Σ_c BCE(z^S_pc, target_pc) / K (target: :func:`hybrid_target`);
    - L_loc = loc_weight · Σ_p w_loc · (1 − IoU²) / K, or (1 − GIoU) with ``loc_loss="giou"``.

    The weights come from the unmodified σ(z^T) and are detached (:func:`dynamic_weights`).
    """
    if loc_loss not in LOC_LOSSES:
        raise ValueError(f"loc_loss must be one of {LOC_LOSSES}, got {loc_loss!r}")
    count = student_logits.shape[0]
    if count == 0:
        raise ValueError("ckd_losses needs at least one old positive")
    probability = teacher_logits.detach().sigmoid()
    teacher_boxes = teacher_boxes.detach()
    cls_error = F.binary_cross_entropy_with_logits(
        student_logits, probability, reduction="none"
    ).sum(dim=-1)
    giou = aligned_giou(student_boxes, teacher_boxes)
    w_cls, w_loc = dynamic_weights(cls_error, 1.0 - giou)

    target, replacement = hybrid_target(probability, hybrid, onehot)
    if target is not probability:
        cls_error = F.binary_cross_entropy_with_logits(
            student_logits, target, reduction="none"
        ).sum(dim=-1)
    if replacement is not None:
        w_cls = replacement
    if loc_loss == "iou2":
        loc_error = 1.0 - aligned_iou(student_boxes, teacher_boxes).square()
    else:
        loc_error = 1.0 - giou
    return CKDTerms(
        cls=cls_weight * (w_cls * cls_error).sum() / count,
        loc=loc_weight * (w_loc * loc_error).sum() / count,
        cls_weight=w_cls,
        loc_weight=w_loc,
    )
