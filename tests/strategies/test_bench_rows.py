"""`python -m clod.bench strategies=[...]`: each row runs the strategy's own training step."""

from __future__ import annotations

import pytest

from clod import bench

TINY = ["model=nanodet_tiny", "batch_size=2", "input_size=[64,64]", "num_classes=4", "warmup=0",
        "steps=1", "matmul_size=64", "threads=1", "keep_freed_memory=false"]  # fmt: skip


def test_strategy_rows_report_their_own_costs(capsys: pytest.CaptureFixture[str]) -> None:
    result = bench.main([*TINY, "strategies=[naive,replay,lwf,sid,latent]"])
    capsys.readouterr()
    rows = {row["strategy"]: row for row in result["rows"]}
    params = result["params"]
    neck_head = params["neck"] + params["head"]
    assert rows["naive"]["params_held"] == rows["replay"]["params_held"] == params["total"]
    assert rows["lwf"]["params_held"] == rows["sid"]["params_held"] == 2 * params["total"]
    assert rows["latent"]["params_held"] == params["total"] + neck_head
    assert rows["latent"]["params_trainable"] == rows["latent"]["params_teacher"] == neck_head
    # forward conv MACs of a step: the model once, twice with a whole teacher, and the
    # backbone once plus two neck+heads for latent
    naive = rows["naive"]["macs_conv_step"]
    assert naive == result["macs_conv_per_image"]
    assert rows["lwf"]["macs_conv_step"] == rows["sid"]["macs_conv_step"] == 2 * naive
    assert naive < rows["latent"]["macs_conv_step"] < 2 * naive
    # no backbone backward for latent: fewer training FLOPs than naive despite the teacher
    assert rows["latent"]["train_flops_per_image"] < rows["naive"]["train_flops_per_image"]
    assert rows["latent"]["train_flops_per_image"] < rows["lwf"]["train_flops_per_image"]
    for row in rows.values():
        assert row["train_images_per_s"] > 0


def test_bench_strategy_reads_the_strategy_config() -> None:
    (row,) = bench.strategy_rows(bench.load_config(["strategy=replay"]))
    assert row[0] == "replay" and row[1].capacity == 250
    ((_, node),) = bench.strategy_rows(bench.load_config(["strategies=[replay]", "seed=5"]))
    assert node.seed == 5  # ${seed} resolves against the bench config
