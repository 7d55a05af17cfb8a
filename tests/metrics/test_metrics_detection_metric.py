"""DetectionMetric: chunked updates, repeated (padded) images, and a real 2-process gloo sync."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from clod.metrics import DetectionMetric, evaluate_detections
from clod.metrics.coco import STATS_NAMES, evaluate_coco

from .cases import RandomCase, canonical_coco_eval, make_random_case, top_per_image_and_class

SEED = 7


def per_image_inputs(seed: int = SEED):
    """The random case as the metric sees it: per image, a prediction dict and a target dict."""
    case = make_random_case(seed, num_images=11)  # odd: two DDP ranks need a padded image
    detections, ground_truth = case.detections(), case.ground_truth()
    inputs = {}
    for image_id in case.image_ids:
        det = detections.image == image_id
        gt = ground_truth.image == image_id
        prediction = {
            "boxes": torch.tensor(detections.boxes[det], dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(detections.scores[det], dtype=torch.float32),
            "labels": torch.tensor(detections.labels[det], dtype=torch.int64),
        }
        target = {
            "boxes": torch.tensor(ground_truth.boxes[gt], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(ground_truth.labels[gt], dtype=torch.int64),
            "difficult": torch.tensor(ground_truth.difficult[gt]),
            "iscrowd": torch.tensor(ground_truth.iscrowd[gt]),
        }
        inputs[image_id] = (prediction, target)
    return case, inputs


def update_with(metric: DetectionMetric, inputs, image_ids) -> None:
    metric.update([inputs[i][0] for i in image_ids], [inputs[i][1] for i in image_ids], image_ids)


def perturbed(prediction):
    """A different prediction for the same image: padded copies come from another batch and
    need not be bit-identical, so only the first copy of an image may count."""
    return {**prediction, "scores": prediction["scores"] * 0.5, "boxes": prediction["boxes"] + 3.0}


def test_single_update_matches_pycocotools(tmp_path):
    case, inputs = per_image_inputs()
    canonical = canonical_coco_eval(*case.write(tmp_path))
    metric = DetectionMetric(num_classes=case.num_classes)
    update_with(metric, inputs, case.image_ids)
    result = metric.compute()
    assert result.map == pytest.approx(canonical.stats[0], abs=1e-6)
    assert result.map50 == pytest.approx(canonical.stats[1], abs=1e-6)
    assert result.num_images == len(case.image_ids)


def test_max_det_is_the_maxdets_of_every_reported_number(tmp_path):
    # max_det = M means COCO's figures at maxDets = M (per image and class). Checked two ways
    # against pycocotools: its precision with maxDets [1, 2, 2], and its stock summary on the
    # results cut to the top 2 per image and class (what maxDets = 2 keeps).
    case, inputs = per_image_inputs()
    per_group = Counter((r["image_id"], r["category_id"]) for r in case.results)
    assert max(per_group.values()) > 2  # the cap removes detections
    results = {}
    for max_det in (2, 100):
        metric = DetectionMetric(num_classes=case.num_classes, max_det=max_det)
        update_with(metric, inputs, case.image_ids)
        results[max_det] = metric.compute()
    capped = results[2]
    assert capped.map != pytest.approx(results[100].map, abs=1e-3)

    (tmp_path / "all").mkdir()
    at_two = canonical_coco_eval(*case.write(tmp_path / "all"), max_dets=[1, 2, 2])
    precision = at_two.precision[:, :, :, 0, -1]
    assert capped.map == pytest.approx(float(precision[precision > -1].mean()), abs=1e-12)
    names = ("map50", "map75", "map_small", "map_medium", "map_large")
    for index, name in enumerate(names, start=1):  # summarize reads these at maxDets[2]
        assert getattr(capped, name) == pytest.approx(at_two.stats[index], abs=1e-12), name
    assert at_two.stats[0] == -1  # ...but the headline AP at a fixed maxDets of 100

    top_two = RandomCase(
        case.gt_dataset, top_per_image_and_class(case.results, 2), case.category_ids, case.image_ids
    )
    (tmp_path / "top2").mkdir()
    stock = canonical_coco_eval(*top_two.write(tmp_path / "top2"))
    coco = evaluate_coco(
        case.detections(), case.ground_truth(), case.image_ids, range(case.num_classes),
        case.num_classes, max_det=2,
    )  # fmt: skip
    for index, name in enumerate(STATS_NAMES):
        assert coco.stats[name] == pytest.approx(stock.stats[index], abs=1e-12), name
    assert capped.map == pytest.approx(coco.stats["map"], abs=1e-12)

    # Passing [1, 10, 2] would not do: COCOeval sorts it into [1, 2, 10] and keeps 10.
    unsorted = canonical_coco_eval(*case.write(tmp_path / "all"), max_dets=[1, 10, 2])
    ten = DetectionMetric(num_classes=case.num_classes, max_det=10)
    update_with(ten, inputs, case.image_ids)
    assert unsorted.stats[1] == pytest.approx(ten.compute().map50, abs=1e-12)
    assert unsorted.stats[1] != pytest.approx(capped.map50, abs=1e-3)


def test_chunked_updates_with_repeated_images_equal_one_clean_update():
    case, inputs = per_image_inputs()
    ids = case.image_ids
    clean = DetectionMetric(num_classes=case.num_classes, difficult="ignore")
    update_with(clean, inputs, ids)

    chunked = DetectionMetric(num_classes=case.num_classes, difficult="ignore")
    third = len(ids) // 3
    update_with(chunked, inputs, ids[:third])
    update_with(chunked, inputs, ids[third : 2 * third])
    update_with(chunked, inputs, ids[2 * third :])
    # Sampler padding: the first two images come again, with (deliberately) different outputs.
    repeats = ids[:2]
    chunked.update(
        [perturbed(inputs[i][0]) for i in repeats], [inputs[i][1] for i in repeats], repeats
    )

    assert chunked.compute().to_dict() == clean.compute().to_dict()


def test_metric_equals_evaluate_detections_on_a_class_subset():
    case, inputs = per_image_inputs()
    metric = DetectionMetric(num_classes=case.num_classes, classes=[0, 2])
    update_with(metric, inputs, case.image_ids)
    direct = evaluate_detections(
        case.detections(), case.ground_truth(), [0, 2], case.num_classes, case.image_ids
    )
    assert metric.compute().to_dict() == direct.to_dict()
    # Changing the classes must not return the cached result of the old ones.
    metric.set_classes(None)
    assert metric.compute().classes == tuple(range(case.num_classes))


def test_reset_and_empty_metric():
    case, inputs = per_image_inputs()
    metric = DetectionMetric(num_classes=case.num_classes)
    update_with(metric, inputs, case.image_ids)
    metric.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics warns about compute before update
        result = metric.compute()
    assert result.map == -1 and result.num_images == 0


def test_module_call_only_accumulates():
    case, inputs = per_image_inputs()
    metric = DetectionMetric(num_classes=case.num_classes)
    ids = case.image_ids
    assert metric([inputs[i][0] for i in ids], [inputs[i][1] for i in ids], ids) is None
    reference = DetectionMetric(num_classes=case.num_classes)
    update_with(reference, inputs, ids)
    assert metric.compute().to_dict() == reference.compute().to_dict()


def test_update_rejects_inconsistent_input():
    metric = DetectionMetric(num_classes=2)
    prediction = {"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.tensor([5])}
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    with pytest.raises(ValueError, match="labels"):
        metric.update([prediction], [target], [0])
    with pytest.raises(ValueError, match="image indices"):
        metric.update([prediction], [target], [0, 1])
    metric.update([], [], [])  # an empty batch adds nothing
    assert metric.gathered_tables()[2].size == 0


def _ddp_worker(rank: int, world_size: int, store_path: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store_path}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60),  # fail fast instead of hanging on a collective mismatch
    )
    try:
        case, inputs = per_image_inputs()
        ids = case.image_ids
        # DistributedSampler without shuffling: pad the index list by repeating its head until
        # it divides by the world size, then rank r takes every world_size-th entry from r.
        padded = ids + ids[: (-len(ids)) % world_size]
        mine = padded[rank::world_size]
        metric = DetectionMetric(num_classes=case.num_classes, difficult="ignore")
        half = len(mine) // 2
        update_with(metric, inputs, mine[:half])
        update_with(metric, inputs, mine[half:])
        synced = metric.compute().to_dict()

        # A rank without any batch must not break the gather (states keep one dtype).
        lopsided = DetectionMetric(num_classes=case.num_classes, difficult="ignore")
        if rank == 0:
            update_with(lopsided, inputs, ids)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # compute before update on rank 1
            lopsided_result = lopsided.compute().to_dict()
        Path(out_dir, f"rank{rank}.json").write_text(
            json.dumps({"synced": synced, "lopsided": lopsided_result, "mine": mine})
        )
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_sync_equals_single_process(tmp_path):
    case, inputs = per_image_inputs()
    assert len(case.image_ids) % 2 == 1  # so the sampler pads rank 1 with a repeated image
    world_size = 2
    mp.spawn(
        _ddp_worker,
        args=(world_size, str(tmp_path / "store"), str(tmp_path)),
        nprocs=world_size,
        join=True,
    )
    single = DetectionMetric(num_classes=case.num_classes, difficult="ignore")
    update_with(single, inputs, case.image_ids)
    expected = single.compute().to_dict()
    for rank in range(world_size):
        reported = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert reported["synced"] == expected
        assert reported["lopsided"] == expected
    # Each rank saw only part of the data, so the sync really gathered something.
    rank0 = json.loads((tmp_path / "rank0.json").read_text())["mine"]
    assert 0 < len(rank0) < len(case.image_ids)
    assert np.all(np.asarray(expected["ap"])[[0, 1, 2, 4]] > -1)
