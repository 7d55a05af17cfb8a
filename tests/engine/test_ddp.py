"""Lightning DDP on two CPU processes (gloo), the stand-in for multi-GPU runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.engine.conftest import ROOT, clod_env, run_train
from tests.engine.test_run import read_rows


@pytest.mark.slow
def test_ddp_run_evaluates_like_one_process_and_only_rank_zero_writes(
    tmp_path: Path, data_dir: Path
) -> None:
    run_dir = tmp_path / "ddp"
    # One task of all four classes (batch 4 per process), long enough that the detector finds something: an
    # equality of two zero mAPs would prove nothing.
    result = run_train(
        run_dir,
        data_dir,
        "hardware=ddp_cpu",
        "strategy=joint",
        "strategy.epochs=30",
        "data.batch_size=4",
    )
    assert result.returncode == 0, result.stderr[-3000:]

    # Rank 1 trained too (its Hydra log exists) but wrote nothing else: one results row,
    # one attempt, one per-step CSV log, one banner on stdout.
    assert (run_dir / "train_ddp_process_1.log").exists()
    assert result.stdout.count("== task 1/1 [joint]") == 1
    rows = read_rows(run_dir / "results.csv")
    assert len(rows) == 1
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "done" and state["attempts"] == 1
    assert sorted(p.name for p in (run_dir / "csv").iterdir()) == ["hparams.yaml", "metrics.csv"]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["hardware"]["devices"] == 2 and config["hardware"]["strategy"] == "ddp"

    # Each rank evaluated part of the test images (DistributedSampler, padded by repeats);
    # the synchronised metric must equal one process evaluating every image once.
    row = rows[0]
    assert float(row["map50"]) > 0.05, "the tiny model should have learnt something"
    evaluation = subprocess.run(
        [sys.executable, "-m", "clod.evaluate", f"run={run_dir}", "task=0"],
        cwd=ROOT, env=clod_env(data_dir), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert evaluation.returncode == 0, evaluation.stderr
    printed = json.loads(evaluation.stdout.splitlines()[-1])
    for metric in ("map", "map50", "map75", "map50_voc07"):
        assert printed[metric] == pytest.approx(float(row[metric]), abs=1e-9), metric
    per_task = json.loads((run_dir / "results" / "task_0.json").read_text())
    assert per_task["result"]["num_images"] == int(row["eval_images"])


def test_bf16_mixed_precision_run_keeps_float32_weights(tmp_path: Path, data_dir: Path) -> None:
    """The gpu presets' mixed precision, on CPU: convolutions in bfloat16, while the losses
    and box decoding run in float32 (CLODModule) and the weights stay float32."""
    import torch

    run_dir = tmp_path / "bf16"
    result = run_train(
        run_dir, data_dir, "hardware.precision=bf16-mixed", "strategy=joint", "strategy.epochs=3"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_rows(run_dir / "results.csv")
    assert len(rows) == 1 and 0.0 <= float(rows[0]["map50"]) <= 1.0
    weights = torch.load(run_dir / "checkpoints" / "task_0.pt", weights_only=True)["detector"]
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float32}
