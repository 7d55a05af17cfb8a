"""The reproduction presets (experiment=ld_voc, ilyolox_coco, erd_coco) and the reference
schedules (schedule=reference_paper, reference_head): composed as `python -m clod.train`
does, their learning rate checked at the steps docs/protocol.md §6 lists, through the real
optimiser and LambdaLR; and their dry runs on generated trees in the real layout.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from clod.data.classes import COCO_CATEGORY_IDS, COCO_CLASSES, VOC_CLASSES
from clod.engine.schedule import lr_factor
from clod.errors import ConfigError
from tests.builders import Img, Obj, write_coco, write_images, write_voc
from tests.test_config import compose_train, run_cli


def learning_rates(overrides: list[str], steps_per_epoch: int, task: int, at: list[int]):
    """The learning rate at the given steps of task ``task`` (0: the base task), with the
    composed optimiser group and Trainer epochs, as LightningModule.configure_optimizers
    builds them."""
    cfg = OmegaConf.to_container(compose_train(overrides), resolve=True)
    epochs = cfg["trainer"]["epochs" if task == 0 else "incremental_epochs"]
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = instantiate(cfg["optimizer"]["optimizer"], _convert_="all")([parameter])
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(cfg["optimizer"], steps_per_epoch * epochs, epochs)
    )
    rates = {}
    for step in range(max(at) + 1):
        if step in at:
            rates[step] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        schedule.step()
    return cfg, rates


def warmup(step: int, length: int, ratio: float) -> float:
    return 1 - (1 - step / length) * (1 - ratio)


def test_reference_paper_ends_15p1_tasks_inside_the_warmup() -> None:
    """protocol.md §6: at batch 64, 15p1's later tasks get 4, 1, 5, 4, 4 steps per epoch for
    100 epochs and end at 0.8, 0.2, 1.0, 0.8, 0.8 of lr0; the base task (69 steps per epoch)
    is at ≈ 7.6e-4 at epoch 100 (T_max 300)."""
    preset = ["experiment=ld_voc", "data.root=/nowhere"]
    cfg, _ = learning_rates(preset, 1, 1, [0])
    assert cfg["data"]["batch_size"] == 64 and cfg["model"]["input_size"] == [320, 320]
    assert cfg["trainer"]["epochs"] == cfg["trainer"]["incremental_epochs"] == 100
    for steps_per_epoch, end in ((4, 0.8), (1, 0.2), (5, 1.0), (4, 0.8)):
        last = 100 * steps_per_epoch - 1
        _, rates = learning_rates(preset, steps_per_epoch, 1, [0, last])
        assert rates[0] == pytest.approx(1e-3 * 1e-4)
        assert rates[last] == pytest.approx(1e-3 * warmup(last, 500, 1e-4))
        assert rates[last] == pytest.approx(end * 1e-3, abs=0.005e-3)
    _, rates = learning_rates(preset, 69, 0, [499, 500, 6899])
    assert rates[499] == pytest.approx(1e-3 * warmup(499, 500, 1e-4))
    cosine = 5e-5 + (1e-3 - 5e-5) * (1 + math.cos(math.pi * 99 / 300)) / 2  # epoch index 99
    assert rates[6899] == pytest.approx(cosine) and 7.6e-4 < rates[6899] < 7.7e-4


def test_reference_head_is_batch_32_and_tmax_100() -> None:
    """At batch 32, sheep gets 300 steps and ends at 0.6·lr0 (protocol.md §6)."""
    cfg, rates = learning_rates(["schedule=reference_head"], 3, 1, [299])
    assert cfg["data"]["batch_size"] == 32 and cfg["optimizer"]["cosine"]["t_max"] == 100
    assert rates[299] == pytest.approx(0.6e-3, abs=0.002e-3)
    # a task long enough to leave the warm-up: epoch 50 of T_max 100 is halfway down
    _, rates = learning_rates(["schedule=reference_head"], 20, 0, [50 * 20])
    assert rates[1000] == pytest.approx(5e-5 + (1e-3 - 5e-5) / 2)


@pytest.mark.parametrize(
    ("preset", "lr0", "warmup_steps", "size", "strategy"),
    [
        ("ilyolox_coco", 0.02, 1500, [640, 640], "ilyolox"),
        ("erd_coco", 0.01, 500, [1344, 800], "erd"),
    ],
)
def test_coco_presets_step_down_at_epochs_8_and_11(
    preset: str, lr0: float, warmup_steps: int, size: list[int], strategy: str
) -> None:
    per_epoch = 1000
    at = [
        0,
        warmup_steps // 2,
        warmup_steps,
        8 * per_epoch - 1,
        8 * per_epoch,
        11 * per_epoch,
        12 * per_epoch - 1,
    ]
    cfg, rates = learning_rates([f"experiment={preset}", "data.root=/nowhere"], per_epoch, 1, at)
    assert cfg["optimizer"]["optimizer"]["_target_"] == "torch.optim.SGD"
    assert cfg["optimizer"]["optimizer"]["momentum"] == 0.9
    assert cfg["optimizer"]["optimizer"]["weight_decay"] == 1e-4
    assert cfg["trainer"]["incremental_epochs"] == 12 and cfg["data"]["batch_size"] == 16
    assert cfg["model"]["input_size"] == size and cfg["strategy"]["name"] == strategy
    assert cfg["scenario"]["name"] == "40p40" and cfg["data"]["name"] == "coco"
    assert rates[0] == pytest.approx(lr0 * 0.001)
    assert rates[warmup_steps // 2] == pytest.approx(
        lr0 * warmup(warmup_steps // 2, warmup_steps, 0.001)
    )
    assert rates[warmup_steps] == pytest.approx(lr0)
    assert rates[8 * per_epoch - 1] == pytest.approx(lr0)
    assert rates[8 * per_epoch] == pytest.approx(lr0 * 0.1)
    assert rates[11 * per_epoch] == rates[12 * per_epoch - 1] == pytest.approx(lr0 * 0.01)


def test_a_cosine_on_top_of_sgd_is_refused() -> None:
    cfg = OmegaConf.to_container(
        compose_train(["optimizer=sgd", "schedule=reference_paper"]), resolve=True
    )
    with pytest.raises(ConfigError, match="exactly one of cosine and multistep"):
        lr_factor(cfg["optimizer"], 100, 10)


def boxes(names: list[str], count: int, prefix: str) -> list[Img]:
    """``count`` images per class, one box each, cycling through the classes."""
    return [
        Img(f"{prefix}{i:04d}", 64, 48, [Obj(names[i % len(names)], (4, 4, 40, 30))])
        for i in range(count * len(names))
    ]


def plan_rows(stdout: str) -> list[list[str]]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    return [line.split() for line in lines[3:]]


def test_ld_voc_dry_run_on_a_voc_tree(tmp_path: Path) -> None:
    voc = tmp_path / "VOCdevkit" / "VOC2007"
    write_voc(
        voc,
        {"trainval": boxes(list(VOC_CLASSES), 2, "tv"), "test": boxes(list(VOC_CLASSES), 1, "te")},
    )
    result = run_cli(
        "experiment=ld_voc", f"data.root={tmp_path / 'VOCdevkit'}", "strategy=latent",
        "dry_run=true", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(
        "plan: data=voc scenario=15p1 strategy=latent (6 tasks, 20 classes)"
    )
    rows = plan_rows(result.stdout)
    # task 0: 15 classes x 2 trainval images; later tasks one class each; test: seen classes
    assert [row[-4:] for row in rows] == [
        ["30", "30", "15", "15"],
        *(["2", "2", str(16 + k), str(16 + k)] for k in range(5)),
    ]


def test_coco_presets_dry_run_on_a_coco_tree(tmp_path: Path) -> None:
    names, root = list(COCO_CLASSES), tmp_path / "coco"
    for split, per_class in (("train2017", 2), ("val2017", 1)):
        images = boxes(names, per_class, split)
        write_coco(
            root / "annotations" / f"instances_{split}.json", images, names, list(COCO_CATEGORY_IDS)
        )
        write_images(root / split, images)
    for preset, strategy in (("ilyolox_coco", "ilyolox"), ("erd_coco", "erd")):
        result = run_cli(
            f"experiment={preset}", f"data.root={tmp_path / 'coco'}", "dry_run=true", cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.startswith(
            f"plan: data=coco scenario=40p40 strategy={strategy} (2 tasks, 80 classes)"
        )
        rows = plan_rows(result.stdout)
        assert [row[-4:] for row in rows] == [["80", "80", "40", "40"], ["80", "80", "80", "80"]]
        assert "person," in rows[0] and "toothbrush" in rows[1]


def test_an_input_size_the_neck_cannot_join_is_refused(tmp_path: Path) -> None:
    result = run_cli("experiment=smoke", "data.input_size=[100,96]", cwd=tmp_path)
    assert result.returncode == 2
    assert "data.input_size=[100, 96]: each side must be a multiple of 32" in result.stderr
