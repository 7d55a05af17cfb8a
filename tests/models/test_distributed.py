"""Loss normalisers are averaged over DDP ranks (docs/detector.md §6), with two real
gloo processes; a rank without positives must not stall the others."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from clod.models.assigner import assign
from clod.models.head import NanoDetPlusHead
from clod.models.targets import pad_targets

INPUT = (64, 64)


def rank_inputs(rank: int):
    gen = torch.Generator().manual_seed(100 + rank)
    raw = torch.randn(2, 85, 2 + 32, generator=gen, dtype=torch.float64)
    if rank == 0:
        boxes = [torch.tensor([[4.0, 4.0, 40.0, 44.0]]), torch.tensor([[20.0, 8.0, 60.0, 60.0]])]
        labels = [torch.tensor([1]), torch.tensor([0])]
    else:  # no objects at all on this rank
        boxes = [torch.zeros(0, 4), torch.zeros(0, 4)]
        labels = [torch.zeros(0, dtype=torch.long)] * 2
    return raw, boxes, labels


def local_statistics(head: NanoDetPlusHead, raw, boxes, labels) -> tuple[int, float]:
    """(#positives, Σ weights) of one rank, from the public assigner."""
    priors = head.priors(INPUT, raw.device, raw.dtype)
    gt_boxes, gt_labels, valid, _, _ = pad_targets(boxes, labels, raw.device, raw.dtype)
    pred = head.decode_boxes(raw, priors)
    result = assign(raw[..., :2], pred, priors.centres, gt_boxes, gt_labels, valid)
    weights = raw[..., :2][result.positive].sigmoid().amax(dim=-1)
    return int(result.positive.sum()), float(weights.sum())


def worker(rank: int, init_file: str, results) -> None:
    head = NanoDetPlusHead(2, in_channels=8, feat_channels=8, stacked_convs=1).double()
    raw, boxes, labels = rank_inputs(rank)
    local = head.loss(raw, boxes, labels, INPUT)
    stats = local_statistics(head, raw, boxes, labels)
    # A short timeout turns a mismatched collective (a deadlock) into a quick failure.
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=2,
        timeout=timedelta(seconds=60),
    )
    try:
        shared = head.loss(raw, boxes, labels, INPUT)
    finally:
        dist.destroy_process_group()
    results[rank] = (
        {k: float(v.detach()) for k, v in local.items()},
        {k: float(v.detach()) for k, v in shared.items()},
        stats,
    )


def test_avg_factors_are_averaged_over_ranks(tmp_path: Path) -> None:
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(worker, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
    (local0, shared0, (pos0, w0)), (local1, shared1, (pos1, w1)) = results[0], results[1]
    assert pos0 > 0 and pos1 == 0
    pos_factor = max((pos0 + pos1) / 2, 1.0)
    weight_factor = max((w0 + w1) / 2, 1.0)
    # Same sums, divided by the rank mean instead of the local count.
    assert abs(shared0["loss_qfl"] - local0["loss_qfl"] * max(pos0, 1) / pos_factor) < 1e-9
    assert abs(shared1["loss_qfl"] - local1["loss_qfl"] * 1.0 / pos_factor) < 1e-9
    assert abs(shared0["loss_bbox"] - local0["loss_bbox"] * max(w0, 1.0) / weight_factor) < 1e-9
    assert abs(shared0["loss_dfl"] - local0["loss_dfl"] * max(w0, 1.0) / weight_factor) < 1e-9
    assert shared1["loss_bbox"] == 0.0 and shared1["loss_dfl"] == 0.0
