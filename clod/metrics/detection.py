"""Detection evaluation: one result type, one evaluation function, and a DDP-aware metric.

``evaluate_detections`` turns dataset-wide tables into a ``DetectionResult`` (COCO AP through
pycocotools, VOC AP50 through ``voc.py``). ``DetectionMetric`` accumulates the same tables per
rank as flat tensors, so torchmetrics can gather them across DDP ranks, and evaluates them in
``compute``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from clod.metrics.coco import CocoBackend, check_coco_backend, evaluate_coco
from clod.metrics.grouping import group_means, mean_over_classes
from clod.metrics.records import (
    Detections,
    DifficultPolicy,
    GroundTruth,
    check_difficult_policy,
)
from clod.metrics.voc import evaluate_voc

__all__ = [
    "DetectionMetric",
    "DetectionResult",
    "evaluate_detections",
    "group_means",
    "mean_over_classes",
]

SCALAR_NAMES: Final = (
    "map",
    "map50",
    "map75",
    "map_small",
    "map_medium",
    "map_large",
    "map50_voc07",
    "map50_voc",
)
PER_CLASS_NAMES: Final = ("ap", "ap50", "ap75", "ap50_voc07", "ap50_voc")


@dataclass
class DetectionResult:
    """Everything one evaluation produces.

    Scalars are means over the evaluated classes that have positives (−1 if none has). Per-class
    arrays have length ``num_classes`` and hold −1 where a class has no positives or was not
    evaluated. ``num_gt`` counts positive GT boxes per class on the evaluated images (crowd regions,
    and difficult boxes under the ``ignore`` policy, are not positives), for every class.
    """

    map: float  # COCO AP@[.5:.95]
    map50: float  # COCO 101-point AP@.5
    map75: float
    map_small: float
    map_medium: float
    map_large: float
    map50_voc07: float  # VOC07 11-point AP50
    map50_voc: float  # VOC2010+ all-point AP50
    ap: np.ndarray
    ap50: np.ndarray
    ap75: np.ndarray
    ap50_voc07: np.ndarray
    ap50_voc: np.ndarray
    num_gt: np.ndarray
    classes: tuple[int, ...] = field(default=())
    num_images: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.ap)

    def scalars(self) -> dict[str, float]:
        """The headline numbers, e.g. for a logger."""
        return {name: float(getattr(self, name)) for name in SCALAR_NAMES}

    def group_means(
        self,
        groups: Sequence[Iterable[int]] | Mapping[str, Iterable[int]],
        metric: str = "ap",
    ) -> list[float] | dict[str, float]:
        """Mean of one per-class metric (``ap``, ``ap50``, …) over each class group."""
        if metric not in PER_CLASS_NAMES:
            raise ValueError(f"metric must be one of {PER_CLASS_NAMES}, got {metric!r}")
        return group_means(getattr(self, metric), groups)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; ``from_dict`` reads it back."""
        result: dict[str, Any] = self.scalars()
        for name in PER_CLASS_NAMES:
            result[name] = [float(v) for v in getattr(self, name)]
        result["num_gt"] = [int(v) for v in self.num_gt]
        result["classes"] = [int(c) for c in self.classes]
        result["num_images"] = int(self.num_images)
        return result

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DetectionResult:
        arrays = {name: np.asarray(data[name], dtype=np.float64) for name in PER_CLASS_NAMES}
        return cls(
            **{name: float(data[name]) for name in SCALAR_NAMES},
            **arrays,
            num_gt=np.asarray(data["num_gt"], dtype=np.int64),
            classes=tuple(int(c) for c in data.get("classes", ())),
            num_images=int(data.get("num_images", 0)),
        )


def evaluate_detections(
    detections: Detections,
    ground_truth: GroundTruth,
    classes: Sequence[int] | np.ndarray | None,
    num_classes: int,
    image_ids: Sequence[int] | np.ndarray | None = None,
    difficult: DifficultPolicy = "gt",
    max_det: int = 100,
    legacy_voc: bool = False,
    coco_backend: CocoBackend = "faster",
) -> DetectionResult:
    """Evaluate detections against ground truth with COCO and VOC metrics.

    Args:
        detections: every detection of the evaluated images.
        ground_truth: every GT box of the evaluated images.
        classes: the evaluated class indices (e.g. the seen classes S_t); ``None`` means all.
            Detections and GT of other classes are dropped before matching.
        num_classes: length of the per-class arrays (classes allocated in the head).
        image_ids: the evaluated images; ``None`` means every image that has a detection or a GT
            box. Images without GT matter: their detections are false positives.
        difficult: ``gt`` or ``ignore`` (see ``records.DifficultPolicy``).
        max_det: COCO's largest maxDets (per image and class).
        legacy_voc: VOC matching with IoU > 0.5 and +1-pixel widths.
        coco_backend: COCOeval's implementation, ``faster`` (faster-coco-eval) or
            ``pycocotools``: the same numbers (``clod.metrics.coco``).
    """
    check_difficult_policy(difficult)
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    evaluated = (
        np.arange(num_classes)
        if classes is None
        else np.unique(np.asarray(classes, dtype=np.int64))
    )
    if image_ids is None:
        images = np.union1d(detections.image, ground_truth.image)
    else:
        images = np.unique(np.asarray(image_ids, dtype=np.int64))
    detections = detections.select(np.isin(detections.image, images))
    ground_truth = ground_truth.select(np.isin(ground_truth.image, images))

    coco = evaluate_coco(
        detections, ground_truth, images, evaluated, num_classes, difficult, max_det, coco_backend
    )
    voc = evaluate_voc(detections, ground_truth, evaluated, num_classes, difficult, legacy_voc)
    return DetectionResult(
        map=coco.stats["map"],
        map50=coco.stats["map50"],
        map75=coco.stats["map75"],
        map_small=coco.stats["map_small"],
        map_medium=coco.stats["map_medium"],
        map_large=coco.stats["map_large"],
        map50_voc07=mean_over_classes(voc.ap_voc07, evaluated),
        map50_voc=mean_over_classes(voc.ap_all_point, evaluated),
        ap=coco.ap,
        ap50=coco.ap50,
        ap75=coco.ap75,
        ap50_voc07=voc.ap_voc07,
        ap50_voc=voc.ap_all_point,
        num_gt=ground_truth.positives_per_class(num_classes, difficult),
        classes=tuple(int(c) for c in evaluated),
        num_images=len(images),
    )


# Layout of the flat metric states: every state is a 1-D float64 tensor of concatenated rows.
# float64 keeps image indices and float32 inputs exact.
PREDICTION_ROW: Final = 7  # image, x1, y1, x2, y2, score, label
TARGET_ROW: Final = 8  # image, x1, y1, x2, y2, label, difficult, iscrowd
IMAGE_ROW: Final = 3  # image, number of prediction rows, number of target rows
_STATE_DTYPE: Final = torch.float64
_STATE_NAMES: Final = ("prediction_rows", "target_rows", "image_rows")


class DetectionMetric(Metric):
    """COCO and VOC detection metrics whose state is synchronised across DDP ranks.

    ``update`` appends flat rows; with DDP, ``compute`` gathers every rank's rows (``cat``) and
    evaluates them once. Lightning's DistributedSampler pads the last batches by repeating images,
    and the same image can also arrive in two updates; ``compute`` keeps only the first occurrence
    of each image index, with the rows stored together with it, so every image counts once.

    Call ``update`` (or the module call, which only updates: per-batch AP would be meaningless and
    slow) and then ``compute``, which returns a ``DetectionResult``; log ``result.scalars()``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    prediction_rows: list[torch.Tensor] | torch.Tensor
    target_rows: list[torch.Tensor] | torch.Tensor
    image_rows: list[torch.Tensor] | torch.Tensor

    def __init__(
        self,
        num_classes: int,
        classes: Sequence[int] | None = None,
        difficult: DifficultPolicy = "gt",
        max_det: int = 100,
        legacy_voc: bool = False,
        coco_backend: CocoBackend = "faster",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.difficult = check_difficult_policy(difficult)
        self.max_det = int(max_det)
        self.legacy_voc = bool(legacy_voc)
        self.coco_backend = check_coco_backend(coco_backend)
        self.classes: tuple[int, ...] | None = None
        self.set_classes(classes)
        for name in _STATE_NAMES:
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self._seed_states()

    def _seed_states(self) -> None:
        # A rank that never saw a batch would otherwise contribute torchmetrics' empty placeholder
        # in the metric's default dtype (float32), and all_gather cannot mix dtypes across ranks.
        for name in _STATE_NAMES:
            setattr(self, name, [torch.zeros(0, dtype=_STATE_DTYPE, device=self.device)])

    def reset(self) -> None:
        super().reset()
        self._seed_states()

    def set_classes(self, classes: Sequence[int] | None) -> None:
        """Choose the evaluated classes (e.g. the seen classes S_t); ``None`` means all."""
        if classes is not None:
            chosen = tuple(sorted({int(c) for c in classes}))
            if chosen and (chosen[0] < 0 or chosen[-1] >= self.num_classes):
                raise ValueError(f"classes must lie in [0, {self.num_classes}), got {list(chosen)}")
            self.classes = chosen
        else:
            self.classes = None
        self._computed = None  # a cached result was computed for other classes

    def forward(self, *args: Any, **kwargs: Any) -> None:
        self.update(*args, **kwargs)

    def update(
        self,
        preds: Sequence[Mapping[str, torch.Tensor]],
        targets: Sequence[Mapping[str, torch.Tensor]],
        image_indices: Sequence[int] | torch.Tensor,
    ) -> None:
        """Add one batch.

        Args:
            preds: per image, ``boxes`` (n, 4) xyxy, ``scores`` (n,), ``labels`` (n,) int.
            targets: per image, ``boxes`` (m, 4) xyxy, ``labels`` (m,), and optionally
                ``difficult`` and ``iscrowd`` (m,) bool.
            image_indices: dataset-global index of each image; it identifies repeated images.
        """
        indices = torch.as_tensor(image_indices).reshape(-1).tolist()
        if not (len(preds) == len(targets) == len(indices)):
            raise ValueError(
                f"got {len(preds)} predictions, {len(targets)} targets and {len(indices)} image indices"
            )
        if not indices:
            return
        prediction_chunks, target_chunks, image_chunks = [], [], []
        for image_index, prediction, target in zip(indices, preds, targets, strict=True):
            prediction_chunk = self._prediction_rows(int(image_index), prediction)
            target_chunk = self._target_rows(int(image_index), target)
            prediction_chunks.append(prediction_chunk)
            target_chunks.append(target_chunk)
            image_chunks.append(
                torch.tensor(
                    [image_index, len(prediction_chunk), len(target_chunk)],
                    dtype=_STATE_DTYPE,
                    device=self.device,
                )
            )
        self.prediction_rows.append(torch.cat(prediction_chunks).reshape(-1))
        self.target_rows.append(torch.cat(target_chunks).reshape(-1))
        self.image_rows.append(torch.cat(image_chunks))

    def _column(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().to(device=self.device, dtype=_STATE_DTYPE).reshape(-1, 1)

    def _check_labels(self, labels: torch.Tensor, what: str) -> None:
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"{what} labels must lie in [0, {self.num_classes})")

    def _prediction_rows(
        self, image_index: int, prediction: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        boxes = prediction["boxes"].detach().reshape(-1, 4)
        scores, labels = prediction["scores"].reshape(-1), prediction["labels"].reshape(-1)
        if not (len(boxes) == len(scores) == len(labels)):
            raise ValueError("prediction boxes, scores and labels differ in length")
        self._check_labels(labels, "prediction")
        image_column = torch.full(
            (len(boxes), 1), float(image_index), dtype=_STATE_DTYPE, device=self.device
        )
        return torch.cat(
            [
                image_column,
                boxes.to(device=self.device, dtype=_STATE_DTYPE),
                self._column(scores),
                self._column(labels),
            ],
            dim=1,
        )

    def _target_rows(self, image_index: int, target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        boxes = target["boxes"].detach().reshape(-1, 4)
        labels = target["labels"].reshape(-1)
        flags = []
        for name in ("difficult", "iscrowd"):
            values = target.get(name)
            flag = (
                torch.zeros(len(boxes)) if values is None else torch.as_tensor(values).reshape(-1)
            )
            if len(flag) != len(boxes):
                raise ValueError(f"target {name} has {len(flag)} entries for {len(boxes)} boxes")
            flags.append(self._column(flag))
        if len(labels) != len(boxes):
            raise ValueError("target boxes and labels differ in length")
        self._check_labels(labels, "target")
        image_column = torch.full(
            (len(boxes), 1), float(image_index), dtype=_STATE_DTYPE, device=self.device
        )
        return torch.cat(
            [
                image_column,
                boxes.to(device=self.device, dtype=_STATE_DTYPE),
                self._column(labels),
                *flags,
            ],
            dim=1,
        )

    def gathered_tables(self) -> tuple[Detections, GroundTruth, np.ndarray]:
        """Detections, GT and evaluated image indices from the (synchronised) states, each image once."""
        predictions = _as_rows(self.prediction_rows, PREDICTION_ROW)
        targets = _as_rows(self.target_rows, TARGET_ROW)
        images = _as_rows(self.image_rows, IMAGE_ROW)
        image_index = images[:, 0].astype(np.int64)
        prediction_counts = images[:, 1].astype(np.int64)
        target_counts = images[:, 2].astype(np.int64)
        if prediction_counts.sum() != len(predictions) or target_counts.sum() != len(targets):
            raise RuntimeError("metric states are inconsistent: row counts do not match the images")

        # Every state is concatenated in the same order (rank, then update order), so the rows of
        # image entry i are the i-th block of each table.
        _, first_entry = np.unique(image_index, return_index=True)
        keep_entry = np.zeros(len(image_index), dtype=bool)
        keep_entry[first_entry] = True
        prediction_owner = np.repeat(np.arange(len(image_index)), prediction_counts)
        target_owner = np.repeat(np.arange(len(image_index)), target_counts)
        if not (
            np.array_equal(predictions[:, 0], image_index[prediction_owner])
            and np.array_equal(targets[:, 0], image_index[target_owner])
        ):
            raise RuntimeError("metric states are out of order: rows do not follow their images")
        predictions = predictions[keep_entry[prediction_owner]]
        targets = targets[keep_entry[target_owner]]

        detections = Detections(
            image=predictions[:, 0],
            boxes=predictions[:, 1:5],
            scores=predictions[:, 5],
            labels=predictions[:, 6],
        )
        ground_truth = GroundTruth(
            image=targets[:, 0],
            boxes=targets[:, 1:5],
            labels=targets[:, 5],
            difficult=targets[:, 6] > 0,
            iscrowd=targets[:, 7] > 0,
        )
        return detections, ground_truth, image_index[first_entry]

    def compute(self) -> DetectionResult:
        detections, ground_truth, images = self.gathered_tables()
        return evaluate_detections(
            detections,
            ground_truth,
            classes=self.classes,
            num_classes=self.num_classes,
            image_ids=images,
            difficult=self.difficult,
            max_det=self.max_det,
            legacy_voc=self.legacy_voc,
            coco_backend=self.coco_backend,
        )


def _as_rows(state: list[torch.Tensor] | torch.Tensor, width: int) -> np.ndarray:
    flat = dim_zero_cat(state) if isinstance(state, list) else state
    return flat.detach().cpu().to(_STATE_DTYPE).reshape(-1, width).numpy()
