"""``python -m clod.train -m strategy=<all> experiment=smoke``: runs, shares the base model, resumes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from tests.engine.conftest import kill_when_exists, run_sweep, run_train
from tests.strategies.conftest import build_model

# One sweep, in this order: the first trains task 0, the others reuse it from the cache.
STRATEGIES = ["replay", "lwf", "sid", "latent", "erd", "ilyolox", "ilyolox_shipped", "pseudo_label"]
# Four epochs in the later tasks leave time to kill a run in the middle of one; one thread
# keeps the runs quick on a machine whose cores are busy with other work; two persistent
# loader workers, as the default data config has (resume must not depend on them).
OVERRIDES = ("trainer.incremental_epochs=4", "hardware.threads=1", "data.num_workers=2")
METRICS = ["task", "map", "map50", "old/map50", "new/map50", "steps", "params_held",
           "params_trainable", "params_teacher", "buffer_images", "macs_conv_step"]  # fmt: skip


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def weights(run_dir: Path, task: int) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / f"task_{task}.pt", weights_only=True)["detector"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    sweep = tmp_path_factory.mktemp("runs") / "sweep"
    # One process for every strategy: the jobs run one after another, as a user's sweep does.
    result = run_sweep(
        sweep, data_dir, f"strategy={','.join(STRATEGIES)}", *OVERRIDES, timeout=1200
    )
    assert result.returncode == 0, result.stderr[-3000:]
    dirs = {}
    for job, name in enumerate(STRATEGIES):
        assert f"== task 3/3 [{name}]" in result.stdout
        dirs[name] = sweep / str(job)
        assert json.loads((dirs[name] / "summary.json").read_text())["strategy"] == name
    return dirs


def test_every_strategy_continues_from_one_base_model(runs: dict[str, Path]) -> None:
    first, *others = STRATEGIES
    summaries = {n: json.loads((runs[n] / "summary.json").read_text()) for n in STRATEGIES}
    assert summaries[first]["base_cache"]["status"] == "miss"
    base = weights(runs[first], 0)
    for name in others:
        assert summaries[name]["base_cache"]["status"] == "hit", name
        assert summaries[name]["base_cache"]["key"] == summaries[first]["base_cache"]["key"]
        theirs = weights(runs[name], 0)
        assert all(torch.equal(v, theirs[k]) for k, v in base.items()), name
        row = read_rows(runs[name] / "results.csv")[0]
        assert row["base_cache"] == "hit"
        assert row["map50"] == read_rows(runs[first] / "results.csv")[0]["map50"]


def test_memory_and_cost_columns(runs: dict[str, Path]) -> None:
    model = build_model()
    total = sum(p.numel() for p in model.parameters())
    neck_head = total - sum(p.numel() for p in model.backbone.parameters())
    expected = {  # (held, trainable, teacher) from task 1 on
        "replay": (total, total, 0),
        "lwf": (2 * total, total, total),
        "sid": (2 * total, total, total),
        "erd": (2 * total, total, total),
        "ilyolox": (2 * total, total, total),
        "ilyolox_shipped": (2 * total, total, total),
        "pseudo_label": (2 * total, total, total),
        "latent": (total + neck_head, neck_head, neck_head),
    }
    for name, run_dir in runs.items():
        summary = json.loads((run_dir / "summary.json").read_text())
        rows = read_rows(run_dir / "results.csv")
        assert (int(rows[0]["params_held"]), int(rows[0]["params_teacher"])) == (total, 0)
        held, trainable, teacher = expected[name]
        assert summary["memory"]["params_held"] == held, name
        assert summary["memory"]["params_trainable"] == trainable, name
        assert summary["memory"]["params_teacher"] == teacher, name
        assert summary["memory"]["peak_rss_mb"] > 0
        per_task = summary["cost"]["macs_conv_step_per_task"]
        assert per_task == [int(r["macs_conv_step"]) for r in rows]
        assert summary["cost"]["macs_conv_step"] == per_task[-1]
        assert len(summary["time"]["per_task_train_s"]) == 3
        if name not in ("replay", "latent"):  # a whole-model teacher runs every step
            assert per_task[1] == 2 * per_task[0]
        if name == "latent":
            assert per_task[0] < per_task[1] < 2 * per_task[0]
    replay = read_rows(runs["replay"] / "results.csv")
    # the buffer a task trained with: none at task 0, then task 0's 26 images (capacity 250)
    assert [int(r["buffer_images"]) for r in replay] == [0, 26, 26 + 17]
    assert int(replay[1]["buffer_bytes"]) > 0


def test_each_term_is_logged_on_its_own(runs: dict[str, Path]) -> None:
    expected = {
        "lwf": {"train/distill_output"},
        "sid": {"train/distill_cls", "train/distill_feat"},
        "latent": {"train/distill_cls", "train/distill_feat"},
        "erd": {"train/distill_cls", "train/distill_reg"},
        "ilyolox": {"train/ckd_cls", "train/ckd_loc"},
        "ilyolox_shipped": set(),
        "pseudo_label": {"train/pseudo_per_image"},
        "replay": set(),
    }
    for name, run_dir in runs.items():
        (metrics,) = (run_dir / "csv").glob("**/metrics.csv")
        columns = set(read_rows(metrics)[0])
        assert expected[name] <= columns and "train/loss_qfl" in columns, name
        strategy_terms = ("train/distill", "train/ckd")
        assert not any(c.startswith(strategy_terms) for c in columns - expected[name]), name


def test_checkpoints_hold_no_teacher_and_latent_keeps_its_backbone(runs: dict[str, Path]) -> None:
    for run_dir in runs.values():
        for task in range(3):
            assert not any(k.startswith("teacher.") for k in weights(run_dir, task))
    base, first, last = (weights(runs["latent"], t) for t in range(3))
    backbone = [k for k in base if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone)
    assert all(torch.equal(base[k], first[k]) and torch.equal(base[k], last[k]) for k in backbone)
    head = [k for k in base if k.startswith("head.")]
    assert any(not torch.equal(base[k], last[k]) for k in head)
    state = torch.load(runs["replay"] / "checkpoints" / "task_1.pt", weights_only=True)
    buffer = state["strategy"]["buffer"]
    assert buffer["capacity"] == 250 and len(buffer["items"]) == 26 + 17


@pytest.mark.parametrize("name", ["latent", "replay", "erd", "ilyolox", "pseudo_label"])
def test_killed_run_resumes_to_the_same_weights(
    name: str, runs: dict[str, Path], data_dir: Path
) -> None:
    run_dir = runs[name].parent / f"{name}_killed"
    marker = run_dir / "checkpoints" / "task_1" / "last.ckpt"  # task 2 saved an epoch
    kill_when_exists(run_dir, data_dir, marker, f"strategy={name}", *OVERRIDES)
    state = json.loads((run_dir / "state.json").read_text())
    assert state["tasks_done"] == [0], "the kill must land in the middle of task 2"

    resumed = run_train(run_dir, data_dir, f"strategy={name}", *OVERRIDES)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "tasks 1 already done" in resumed.stdout
    expected = read_rows(runs[name] / "results.csv")
    got = read_rows(run_dir / "results.csv")
    assert [{k: r[k] for k in METRICS} for r in got] == [
        {k: r[k] for k in METRICS} for r in expected
    ]
    for task in (1, 2):
        reference, resumed_weights = weights(runs[name], task), weights(run_dir, task)
        assert all(torch.equal(v, resumed_weights[k]) for k, v in reference.items())
    if name == "replay":  # the buffer went on exactly as in the uninterrupted run
        a = torch.load(runs[name] / "checkpoints" / "task_2.pt", weights_only=True)
        b = torch.load(run_dir / "checkpoints" / "task_2.pt", weights_only=True)
        assert a["strategy"]["buffer"]["items"] == b["strategy"]["buffer"]["items"]
