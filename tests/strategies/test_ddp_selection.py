"""Selection strategies under DDP (2 CPU processes, gloo): one rank selects teacher
predictions, the other selects nothing, and both still train in step.

A term over an empty selection must be a zero attached to the graph, and every rank must
join the same collectives (the detection loss's normalisers) whatever it selected;
otherwise DDP reports parameters without gradient, or the ranks wait for each other
forever (the short process-group timeout turns that into a failure).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from tests.strategies.conftest import batch, build_model, build_strategy, make_module, make_task

# (strategy, overrides on the selecting rank, overrides on the rank that selects nothing)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "erd": ({}, {"k_std": 1e6}),
    "ilyolox": (
        {"select": {"method": "fixed", "score_thr": 0.0, "low_thr": 0.0}},
        {"select": {"method": "fixed", "score_thr": 0.999}},
    ),
    "pseudo_label": ({"score_thr": 0.0}, {"score_thr": 0.999}),
}
STEPS = 2


def worker(rank: int, name: str, init_file: str, results: Any) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the same initial model on both ranks
    selecting, empty = CASES[name]
    strategy = build_strategy(name, **(selecting if rank == 0 else empty))
    module = make_module(build_model(), strategy, make_task(1, [3]))
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
        timeout=timedelta(seconds=60),
    )  # fmt: skip
    try:
        # As Lightning does: the training step runs through the DDP wrapper's forward.
        ddp = DistributedDataParallel(TrainingStep(module))  # find_unused_parameters=False
        optimizer = torch.optim.SGD([p for p in ddp.parameters() if p.requires_grad], lr=0.01)
        counts = []
        for step in range(STEPS):
            optimizer.zero_grad()
            total, terms = ddp(batch(seed=10 * step + rank))
            total.backward()
            optimizer.step()
            counts.append({k: float(v) for k, v in strategy.diagnostics().items()})
        student = {"backbone": module.backbone, "student": module.student}
        results[rank] = {
            "weights": {
                f"{part}.{k}": v.detach().clone()
                for part, model in student.items()
                for k, v in model.named_parameters()  # BN statistics stay per rank
            },
            "terms": sorted(terms),
            "counts": counts,
        }
    finally:
        dist.destroy_process_group()


class TrainingStep(torch.nn.Module):
    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, images: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.module.training_losses(images)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_rank_that_selects_nothing_trains_in_step_with_one_that_does(
    name: str, tmp_path: Path
) -> None:
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(worker, args=(name, str(tmp_path / "init"), results), nprocs=2, join=True)
    selecting, empty = results[0], results[1]
    assert selecting["terms"] == empty["terms"]  # the same named terms on both ranks
    for key, value in selecting["weights"].items():  # DDP kept the replicas identical
        assert torch.equal(value, empty["weights"][key]), key
    # the selection counts show that only rank 0 selected anything
    count = "erd_reg_kept_per_image" if name == "erd" else "pseudo_per_image"
    assert all(c[count] > 0 for c in selecting["counts"])
    assert all(c[count] == 0 for c in empty["counts"])
