"""Random detection cases and the canonical pycocotools evaluation, shared by the metric tests.

Coordinates are multiples of 1/8 pixel: every sum and difference of them is exact in float64
(and float32), so xywh <-> xyxy conversions cannot move an IoU across a threshold and every
pipeline sees bit-identical boxes. Scores are float32 values, so the torch metric stores them
exactly too.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from clod.metrics import Detections, GroundTruth


@dataclass
class RandomCase:
    """A COCO-format ground-truth dict, a COCO result list and the same data as tables."""

    gt_dataset: dict[str, Any]
    results: list[dict[str, Any]]
    category_ids: list[int]  # sorted; class index = position
    image_ids: list[int]

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def class_of(self, category_id: int) -> int:
        return self.category_ids.index(category_id)

    def ground_truth(self) -> GroundTruth:
        annotations = self.gt_dataset["annotations"]
        xywh = np.array([a["bbox"] for a in annotations], dtype=np.float64).reshape(-1, 4)
        return GroundTruth(
            image=[a["image_id"] for a in annotations],
            boxes=np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1),
            labels=[self.class_of(a["category_id"]) for a in annotations],
            difficult=[a.get("difficult", False) for a in annotations],
            iscrowd=[bool(a["iscrowd"]) for a in annotations],
        )

    def detections(self) -> Detections:
        xywh = np.array([r["bbox"] for r in self.results], dtype=np.float64).reshape(-1, 4)
        return Detections(
            image=[r["image_id"] for r in self.results],
            boxes=np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1),
            scores=[r["score"] for r in self.results],
            labels=[self.class_of(r["category_id"]) for r in self.results],
        )

    def write(self, directory: Path) -> tuple[Path, Path]:
        gt_path, dets_path = directory / "gt.json", directory / "dets.json"
        gt_path.write_text(json.dumps(self.gt_dataset))
        dets_path.write_text(json.dumps(self.results))
        return gt_path, dets_path


def _dyadic(rng: np.random.Generator, low: float, high: float, size: int | None = None) -> Any:
    return np.round(rng.uniform(low, high, size) * 8) / 8


def make_random_case(seed: int, num_images: int = 12, with_difficult: bool = True) -> RandomCase:
    """GT and detections over several images and classes.

    Contains crowd regions, difficult flags, a category with detections but no GT, an image
    without detections, an image without GT, jittered true positives, duplicates and false
    positives with random scores.
    """
    rng = np.random.default_rng(seed)
    category_ids = [1, 3, 4, 7, 10]  # non-contiguous, as in COCO
    no_gt_category = 7
    image_ids = [
        0,
        *sorted(rng.choice(np.arange(1, 1000), size=num_images - 1, replace=False).tolist()),
    ]
    image_without_detections, image_without_gt = image_ids[1], image_ids[2]

    annotations: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []

    def add_result(image_id: int, category_id: int, xywh: list[float]) -> None:
        if image_id == image_without_detections:
            return
        score = float(np.float32(rng.uniform(0.01, 1.0)))
        results.append(
            {"image_id": image_id, "category_id": category_id, "bbox": xywh, "score": score}
        )

    for image_id in image_ids:
        if image_id != image_without_gt:
            for _ in range(rng.integers(1, 7)):
                category_id = int(rng.choice([c for c in category_ids if c != no_gt_category]))
                x, y = _dyadic(rng, 0, 400), _dyadic(rng, 0, 300)
                w, h = _dyadic(rng, 4, 200), _dyadic(rng, 4, 150)
                crowd = bool(rng.random() < 0.1)
                annotation = {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": int(crowd),
                }
                if with_difficult and not crowd and rng.random() < 0.2:
                    annotation["difficult"] = True
                annotations.append(annotation)
                # 0, 1 or 2 jittered detections of this object (2 gives a duplicate).
                for _ in range(rng.choice([0, 1, 1, 2])):
                    jitter = _dyadic(rng, -0.15, 0.15, 4) * np.array([w, h, w, h])
                    box = [
                        x + jitter[0],
                        y + jitter[1],
                        max(w + jitter[2], 1.0),
                        max(h + jitter[3], 1.0),
                    ]
                    add_result(image_id, category_id, [float(np.round(v * 8) / 8) for v in box])
        # False positives, some in the category without GT.
        for _ in range(rng.integers(0, 4)):
            category_id = int(rng.choice(category_ids))
            box = [
                _dyadic(rng, 0, 400),
                _dyadic(rng, 0, 300),
                _dyadic(rng, 4, 100),
                _dyadic(rng, 4, 100),
            ]
            add_result(image_id, category_id, [float(v) for v in box])
        add_result(image_id, no_gt_category, [10.0, 10.0, 20.0, 20.0])

    gt_dataset = {
        "images": [
            {"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in image_ids
        ],
        "annotations": annotations,
        "categories": [{"id": c, "name": f"class{c}"} for c in category_ids],
    }
    return RandomCase(gt_dataset, results, category_ids, image_ids)


@dataclass
class CanonicalResult:
    stats: np.ndarray
    precision: np.ndarray  # [T, R, K, A, M]
    category_ids: list[int]  # K order

    def class_ap(self, category_id: int, iou: float | None = None) -> float:
        """The documented COCO per-class AP: mean precision over recall levels (and IoUs)."""
        k = self.category_ids.index(category_id)
        selected = self.precision[:, :, k, 0, -1]
        if iou is not None:
            selected = selected[round((iou - 0.5) / 0.05)]
        selected = selected[selected > -1]
        return float(selected.mean()) if selected.size else -1.0


def canonical_coco_eval(
    gt_path: Path,
    dets_path: Path,
    category_ids: list[int] | None = None,
    max_dets: list[int] | None = None,
) -> CanonicalResult:
    """pycocotools' documented path: COCO(file), loadRes(file), evaluate, accumulate, summarize.

    ``max_dets`` sets ``params.maxDets`` as given (COCOeval sorts it and caps at the last entry).
    """
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        coco_dt = coco_gt.loadRes(str(dets_path))
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        if category_ids is not None:
            evaluator.params.catIds = category_ids
        if max_dets is not None:
            evaluator.params.maxDets = list(max_dets)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return CanonicalResult(
        stats=np.array(evaluator.stats),
        precision=evaluator.eval["precision"],
        category_ids=list(evaluator.params.catIds),
    )


def top_per_image_and_class(results: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The ``count`` best-scoring results of each (image, category), as COCOeval's maxDets keeps
    them (a stable sort by descending score, so ties keep their order in the file)."""
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for result in results:
        groups.setdefault((result["image_id"], result["category_id"]), []).append(result)
    return [
        result
        for group in groups.values()
        for result in sorted(group, key=lambda r: -r["score"])[:count]
    ]
