"""The small model learns to detect the objects of a handful of synthetic images."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from clod.models import Detector
from tests.models.helpers import build_model

SIZE = 128
MEAN_BGR = np.array([103.53, 116.28, 123.675], dtype=np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], dtype=np.float32)
# class → (shape, BGR colour)
CLASSES = {0: ("rect", (40, 40, 220)), 1: ("circle", (60, 200, 60)), 2: ("circle", (230, 60, 40))}
SCENES = [
    [(0, (10, 12, 60, 50)), (1, (70, 64, 118, 112))],
    [(2, (20, 70, 64, 114)), (0, (66, 8, 120, 40))],
    [(1, (8, 8, 52, 52)), (2, (60, 30, 112, 82)), (0, (12, 84, 56, 120))],
    [(0, (40, 40, 96, 80))],
]


def paint_scene(objects, rng: np.random.Generator) -> np.ndarray:
    image = rng.normal(120.0, 10.0, (SIZE, SIZE, 3)).clip(0, 255).astype(np.uint8)
    for label, (x1, y1, x2, y2) in objects:
        shape, colour = CLASSES[label]
        if shape == "rect":
            cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), colour, thickness=-1)
        else:
            centre = ((x1 + x2) // 2, (y1 + y2) // 2)
            axes = ((x2 - x1) // 2, (y2 - y1) // 2)
            cv2.ellipse(image, centre, axes, 0, 0, 360, colour, thickness=-1)
    return image


def make_batch() -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    rng = np.random.default_rng(0)
    images, boxes, labels = [], [], []
    for objects in SCENES:
        pixels = (paint_scene(objects, rng).astype(np.float32) - MEAN_BGR) / STD_BGR
        images.append(torch.from_numpy(pixels).permute(2, 0, 1))
        boxes.append(torch.tensor([box for _, box in objects], dtype=torch.float32))
        labels.append(torch.tensor([label for label, _ in objects], dtype=torch.long))
    return torch.stack(images), boxes, labels


def box_iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def map50(detections, gt_boxes, gt_labels) -> float:
    """Mean over classes of all-point-interpolated AP with greedy IoU ≥ 0.5 matching."""
    aps = []
    for cls in sorted({int(v) for labels in gt_labels for v in labels}):
        gts = {
            image: [b.tolist() for b, lab in zip(boxes, labels, strict=True) if int(lab) == cls]
            for image, (boxes, labels) in enumerate(zip(gt_boxes, gt_labels, strict=True))
        }
        total = sum(len(v) for v in gts.values())
        found = sorted(
            (
                (float(score), image, box.tolist())
                for image, det in enumerate(detections)
                for box, score, lab in zip(det["boxes"], det["scores"], det["labels"], strict=True)
                if int(lab) == cls
            ),
            key=lambda item: -item[0],
        )
        used = {image: [False] * len(v) for image, v in gts.items()}
        hits = []
        for _, image, box in found:
            ious = [box_iou(box, gt) for gt in gts[image]]
            best = max(range(len(ious)), key=lambda j: ious[j], default=None)
            hit = best is not None and ious[best] >= 0.5 and not used[image][best]
            if hit:
                used[image][best] = True
            hits.append(hit)
        true_pos = np.cumsum(hits)
        precision = true_pos / np.arange(1, len(hits) + 1)
        recall = true_pos / total
        ap, previous_recall = 0.0, 0.0
        for k in range(len(hits)):
            if hits[k]:
                ap += (recall[k] - previous_recall) * precision[k:].max()
                previous_recall = recall[k]
        aps.append(ap)
    return float(np.mean(aps))


def evaluate(model: Detector, images, boxes, labels) -> float:
    model.eval()
    detections = model.predict(images)
    model.train()
    return map50(detections, boxes, labels)


def test_map50_helper_on_known_detections() -> None:
    boxes = [torch.tensor([[0.0, 0, 10, 10], [20.0, 20, 30, 30]])]
    labels = [torch.tensor([0, 0])]
    perfect = [{"boxes": boxes[0], "scores": torch.tensor([0.9, 0.8]), "labels": labels[0]}]
    assert map50(perfect, boxes, labels) == 1.0
    # A false positive ranked first: precision 1/2 at recall 1/2 and 2/3 at recall 1 → AP 2/3
    # (each recall step takes the best precision at or beyond it).
    with_fp = [
        {
            "boxes": torch.tensor([[50.0, 50, 60, 60], [0.0, 0, 10, 10], [20.0, 20, 30, 30]]),
            "scores": torch.tensor([0.95, 0.9, 0.8]),
            "labels": torch.tensor([0, 0, 0]),
        }
    ]
    assert abs(map50(with_fp, boxes, labels) - 2 / 3) < 1e-9


def overfit(
    model: Detector, images, boxes, labels, max_steps: int, every: int
) -> tuple[float, float, float, int]:
    """AdamW at 3e-3 on the one batch until mAP50 > 0.9 (checked every ``every`` steps);
    returns the first and last loss, the last mAP50 and the steps taken."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    first_loss = last_loss = score = 0.0
    for step in range(1, max_steps + 1):
        optimizer.zero_grad(set_to_none=True)
        loss = model.loss(images, boxes, labels)["loss"]
        loss.backward()
        optimizer.step()
        last_loss = float(loss.detach())
        first_loss = first_loss or last_loss
        if step % every == 0:
            score = evaluate(model, images, boxes, labels)
            if score > 0.9:
                break
    return first_loss, last_loss, score, step


def test_tiny_model_overfits_a_few_synthetic_images() -> None:
    torch.manual_seed(0)
    images, boxes, labels = make_batch()
    model = build_model("nanodet_tiny", num_classes=len(CLASSES))
    first_loss, loss, score, step = overfit(model, images, boxes, labels, 400, 50)
    assert loss < 0.5 * first_loss
    assert score > 0.9, f"mAP50 {score:.3f} after {step} steps"
