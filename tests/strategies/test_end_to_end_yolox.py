"""``python -m clod.train -m model=yolox_nano strategy=<every one> experiment=smoke``: every
strategy runs end to end on the second head family, through the default data path (two
loader workers, YOLOX's pixel format) and the base-model cache."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from tests.engine.conftest import run_sweep
from tests.strategies.conftest import build_model

# naive first: it trains task 0 and the others (but joint) reuse it from the cache.
STRATEGIES = ["naive", "joint", "replay", "lwf", "sid", "latent", "erd", "ilyolox"]
STRATEGIES += ["ilyolox_shipped", "pseudo_label"]
OVERRIDES = (
    "model=yolox_nano",
    "model.input_size=[96,96]",
    "trainer.epochs=1",
    "hardware.threads=1",
    "data.num_workers=2",
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    sweep = tmp_path_factory.mktemp("yolox_runs") / "sweep"
    result = run_sweep(
        sweep, data_dir, f"strategy={','.join(STRATEGIES)}", *OVERRIDES, timeout=1200
    )
    assert result.returncode == 0, result.stderr[-3000:]
    dirs = {}
    for job, name in enumerate(STRATEGIES):
        last = "1/1" if name == "joint" else "3/3"  # joint: one task on every class
        assert f"== task {last} [{name}]" in result.stdout, name
        dirs[name] = sweep / str(job)
    return dirs


@pytest.mark.slow
def test_every_strategy_finishes_every_task_on_yolox(runs: dict[str, Path]) -> None:
    model = build_model("yolox_nano")
    total = sum(p.numel() for p in model.parameters())
    neck_head = total - sum(p.numel() for p in model.backbone.parameters())
    for name, run_dir in runs.items():
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["strategy"] == name
        config = (run_dir / "config.yaml").read_text()
        assert "_target_: clod.models.yolox.head.YOLOXHead" in config
        assert "pixels: yolox" in config
        with (run_dir / "results.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        tasks = [0] if name == "joint" else [0, 1, 2]
        assert [int(r["task"]) for r in rows] == tasks
        assert all(math.isfinite(float(r["map50"])) for r in rows)
        held = int(rows[-1]["params_held"])
        teacher = {"latent": neck_head, "naive": 0, "joint": 0, "replay": 0}.get(name, total)
        backbone_shared = total - neck_head if name == "latent" else 0
        assert held == (neck_head if name == "latent" else total) + teacher + backbone_shared
        checkpoint = run_dir / "checkpoints" / f"task_{tasks[-1]}.pt"
        weights = torch.load(checkpoint, weights_only=True)
        assert weights["detector"]["head.obj_preds.0.bias"].shape == (1,)
        if name != "joint":
            assert summary["base_cache"]["status"] == ("miss" if name == "naive" else "hit")
