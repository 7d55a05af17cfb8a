"""COCO evaluation at COCO's size: faster-coco-eval against pycocotools, same numbers.

    python scripts/bench_coco_eval.py [--images 5000] [--per-image 100] [--rounds 3] [--out FILE]

A validation set the size of COCO 2017's (5,000 images, 80 classes, about 7.3 boxes per
image, 1% crowd) and a detector's output on it (100 detections per image: jittered true
positives and false positives with random scores) are generated from a seed, then
``clod.metrics.coco.evaluate_coco`` runs on every class with each backend, alternating, for
``--rounds`` rounds. Prints (and writes with ``--out``) one JSON object: the median seconds
of each backend, their ratio, the peak resident memory of a separate process per backend,
and the largest difference between the two backends' numbers.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from clod.metrics.coco import STATS_NAMES, evaluate_coco
from clod.metrics.records import Detections, GroundTruth

BACKENDS = ("pycocotools", "faster")
NUM_CLASSES = 80


def make_case(images: int, per_image: int, seed: int = 0) -> tuple[Detections, GroundTruth]:
    rng = np.random.default_rng(seed)
    boxes_per_image = rng.poisson(7.3, images)
    gt_image = np.repeat(np.arange(images), boxes_per_image)
    count = len(gt_image)
    xy = rng.uniform(0, 500, (count, 2))
    wh = np.exp(rng.uniform(np.log(8), np.log(300), (count, 2)))
    gt_boxes = np.concatenate([xy, xy + wh], axis=1)
    gt_labels = rng.integers(0, NUM_CLASSES, count)
    crowd = rng.random(count) < 0.01
    ground_truth = GroundTruth(gt_image, gt_boxes, gt_labels, iscrowd=crowd)
    # detections: each GT found with probability 0.7 (jittered), the rest false positives
    found = rng.random(count) < 0.7
    jitter = rng.normal(0, 0.08, (int(found.sum()), 4)) * np.repeat(wh[found], 2, axis=1)
    true_boxes = gt_boxes[found] + jitter
    true_boxes[:, 2:] = np.maximum(true_boxes[:, 2:], true_boxes[:, :2] + 1)
    per_image_true = np.bincount(gt_image[found], minlength=images)
    false_count = np.maximum(per_image - per_image_true, 0)
    false_image = np.repeat(np.arange(images), false_count)
    fxy = rng.uniform(0, 500, (len(false_image), 2))
    fwh = np.exp(rng.uniform(np.log(8), np.log(300), (len(false_image), 2)))
    detections = Detections(
        np.concatenate([gt_image[found], false_image]),
        np.concatenate([true_boxes, np.concatenate([fxy, fxy + fwh], axis=1)]),
        np.concatenate(
            [rng.uniform(0.3, 1.0, int(found.sum())), rng.uniform(0.0, 0.6, len(false_image))]
        ),
        np.concatenate([gt_labels[found], rng.integers(0, NUM_CLASSES, len(false_image))]),
    )
    return detections, ground_truth


def evaluate(case: tuple[Detections, GroundTruth], images: int, backend: str) -> Any:
    detections, ground_truth = case
    return evaluate_coco(
        detections, ground_truth, np.arange(images), np.arange(NUM_CLASSES), NUM_CLASSES,
        backend=backend,  # type: ignore[arg-type]
    )  # fmt: skip


def _high_water_mb() -> float:
    """This process's peak resident memory (VmHWM). Not getrusage's ru_maxrss, which a
    spawned child inherits from its parent across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _peak_in_child(args: tuple[int, int, str], queue: Any) -> None:
    images, per_image, backend = args
    case = make_case(images, per_image)
    before = _high_water_mb()
    evaluate(case, images, backend)
    queue.put((before, _high_water_mb()))


def peak_memory_mb(images: int, per_image: int, backend: str) -> tuple[float, float]:
    """Peak RSS (MB) of a fresh process before and after one evaluation with ``backend``."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_peak_in_child, args=((images, per_image, backend), queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--per-image", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    case = make_case(args.images, args.per_image)
    seconds: dict[str, list[float]] = {backend: [] for backend in BACKENDS}
    results: dict[str, Any] = {}
    for _ in range(args.rounds):
        for backend in BACKENDS:  # alternating, so load on the machine hits both alike
            start = time.perf_counter()
            results[backend] = evaluate(case, args.images, backend)
            seconds[backend].append(time.perf_counter() - start)
    reference, faster = results["pycocotools"], results["faster"]
    difference = max(
        max(abs(faster.stats[n] - reference.stats[n]) for n in STATS_NAMES),
        *(
            float(np.abs(getattr(faster, f) - getattr(reference, f)).max())
            for f in ("ap", "ap50", "ap75")
        ),
    )
    memory = {backend: peak_memory_mb(args.images, args.per_image, backend) for backend in BACKENDS}
    report = {
        "images": args.images,
        "gt_boxes": len(case[1]),
        "detections": len(case[0]),
        "rounds": args.rounds,
        "median_s": {b: statistics.median(s) for b, s in seconds.items()},
        "seconds": seconds,
        "speedup": statistics.median(seconds["pycocotools"]) / statistics.median(seconds["faster"]),
        "peak_rss_mb": {b: {"before": m[0], "after": m[1]} for b, m in memory.items()},
        "map": {b: r.stats["map"] for b, r in results.items()},
        "max_abs_difference": difference,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
