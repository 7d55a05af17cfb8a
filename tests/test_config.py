"""Every shipped config composes; the entry point's plan mode and its errors, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from clod.engine.trainer import CLOD_KEYS, check_trainer_config

ROOT = Path(__file__).parents[1]
CONF = ROOT / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in {"hydra", "paths"})


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_train(overrides: list[str], output_dir: Path | None = None):
    """Compose as ``python -m clod.train`` would; ``output_dir`` plays Hydra's run directory."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    if output_dir is not None:
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra  # resolved through HydraConfig from here on, as in a real run
    return cfg


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_shipped_config_composes_and_resolves(
    group: str, option: str, tmp_path: Path
) -> None:
    overrides = [f"{group}={option}"]
    if option in ("voc", "coco"):
        overrides.append(f"data.root={tmp_path}")
    if option == "custom":
        overrides.append("scenario.splits=10+10")
    cfg = compose_train(overrides, output_dir=tmp_path)
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["paths"]["output_dir"] == str(tmp_path)
    assert len(container["data"]["input_size"]) == 2
    assert container["model"]["num_classes"] == container["data"]["num_classes"]
    # every composition hands Lightning a Trainer config it accepts, hardware in step
    check_trainer_config({k: v for k, v in container["trainer"].items() if k not in CLOD_KEYS})
    for key in ("accelerator", "devices", "num_nodes", "strategy", "precision"):
        assert container["trainer"][key] == container["hardware"][key], key


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CLOD_DATA_DIR": str(cwd / "data"), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "clod.train", f"hydra.run.dir={cwd / 'run'}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cfg_job_prints_the_composed_config(tmp_path: Path) -> None:
    result = run_cli("scenario=15p1", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = OmegaConf.create(result.stdout)
    assert printed.scenario.name == "15p1" and printed.scenario.base == 15
    assert printed.data.name == "synthetic" and printed.strategy.name == "naive"


def test_dry_run_prints_the_plan_per_task(tmp_path: Path) -> None:
    result = run_cli("dry_run=true", "data=synthetic_tiny", "scenario=2p1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "synthetic dataset generated" in result.stderr  # logs go to stderr
    assert lines[0].startswith(
        "plan: data=synthetic_tiny scenario=2p1 strategy=naive (3 tasks, 4 classes)"
    )
    header = lines[1].split()
    assert header[:3] == ["task", "new", "classes"]
    rows = [line for line in lines[3:] if line.strip()]
    assert len(rows) == 3
    assert "aeroplane, bicycle" in rows[0] and "bird" in rows[1] and "boat" in rows[2]
    # the counts printed are the task builder's counts
    from clod.data.build import build_experiment_tasks

    cfg = compose_train(
        ["data=synthetic_tiny", "scenario=2p1", f"paths.data_dir={tmp_path / 'data'}"]
    )
    _, tasks = build_experiment_tasks(OmegaConf.to_container(cfg, resolve=True))
    for row, task in zip(rows, tasks, strict=True):
        counts = task.counts()
        numbers = [int(x) for x in row.split()[-4:]]
        assert numbers == [
            counts["train_images"],
            counts["train_boxes"],
            counts["eval_images"],
            counts["eval_boxes"],
        ]


def test_joint_plan_is_one_task(tmp_path: Path) -> None:
    result = run_cli(
        "dry_run=true", "data=synthetic_tiny", "scenario=2p1", "strategy=joint", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "(1 task, 4 classes)" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["data=synthetic_tiny", "scenario=15p1"],
            "scenario 15p1 needs at least 15 classes for its base task, but the dataset has 4",
        ),
        (["data=voc"], "config key data.root has no value"),
        (
            ["data=voc", "data.root=/nonexistent/VOCdevkit"],
            "VOC dataset directory /nonexistent/VOCdevkit/VOC2007 does not exist",
        ),
        (
            ["data=synthetic_tiny", "scenario=custom", "scenario.splits=2+x"],
            "scenario.splits: cannot parse 'x'",
        ),
        (["data=synthetic_tiny", "scenario=2p1", "data.num_classes=5"], "data.num_classes=5 but"),
    ],
    ids=["too-few-classes", "missing-root", "missing-path", "bad-grammar", "num-classes"],
)
def test_bad_input_is_one_clear_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_cli("dry_run=true", *args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"error: {message}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("option", options("strategy"))
def test_every_strategy_instantiates(option: str, tmp_path: Path) -> None:
    from hydra.utils import instantiate

    from clod.strategies.base import Strategy

    cfg = compose_train([f"strategy={option}"], output_dir=tmp_path)
    strategy = instantiate(cfg.strategy)
    assert isinstance(strategy, Strategy) and strategy.name == cfg.strategy.name


@pytest.mark.parametrize("option", options("model"))
@pytest.mark.parametrize("data", ["synthetic", "synthetic_tiny", "coco"])
def test_every_model_instantiates_for_the_data(option: str, data: str, tmp_path: Path) -> None:
    import torch

    from clod.models.detector import build_detector

    overrides = [f"model={option}", f"data={data}"] + (["data.root=/x"] if data == "coco" else [])
    cfg = compose_train(overrides, output_dir=tmp_path)
    detector = build_detector(cfg.model)
    assert detector.num_classes == cfg.data.num_classes
    width, height = cfg.model.input_size
    raw = detector(torch.zeros(1, 3, height, width)).raw
    # NanoDet-Plus: C class logits then 4×8 box bins; YOLOX: 4 box offsets, objectness, C.
    box_channels = 5 if option.startswith("yolox") else 32
    assert raw.shape[-1] == detector.head.num_outputs == cfg.data.num_classes + box_channels
    # The data follows the model's pixel format (YOLOX: 0–255 pixels padded with 114).
    assert cfg.data.pixels == detector.pixels == cfg.model.pixels
    assert cfg.data.pixels == ("yolox" if option.startswith("yolox") else "imagenet")


@pytest.mark.parametrize("preset", ["slurm", "slurm_ddp", "slurm_cpu", "local"])
def test_cluster_presets_take_tasks_and_nodes_from_the_hardware_keys(preset: str) -> None:
    """Lightning's SLURMEnvironment requires devices == tasks per node and num_nodes ==
    nodes (docs/engineering.md §3): one override of the hardware keys moves both sides."""
    GlobalHydra.instance().clear()
    overrides = [f"hardware={preset}", "hardware.devices=3"]
    if preset != "local":
        overrides.append("hardware.num_nodes=2")
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    expected = "submitit_local" if preset == "local" else "submitit_slurm"
    assert cfg.hydra.runtime.choices["hydra/launcher"] == expected
    assert launcher["tasks_per_node"] == 3
    assert launcher["nodes"] == (1 if preset == "local" else 2)
    if preset in ("slurm", "slurm_ddp"):
        assert launcher["gpus_per_node"] == 3
        assert launcher["max_num_timeout"] > 0  # requeued jobs resume (tests/slurm)
    if preset == "slurm_ddp":
        assert cfg.hardware.strategy == "ddp"


def test_tuning_specialises_strategy_weights_to_the_data_and_overrides_win(
    tmp_path: Path,
) -> None:
    def alpha(*overrides: str) -> float:
        return compose_train(list(overrides), output_dir=tmp_path).strategy.alpha

    assert alpha("strategy=latent") == 10.0  # conf/tuning/synthetic_latent.yaml
    assert alpha("strategy=latent", "data=voc", f"data.root={tmp_path}") == 1.0  # reference
    assert alpha("strategy=latent", "experiment=smoke") == 1.0  # synthetic_tiny: no tuning
    assert alpha("strategy=latent", "strategy.alpha=3") == 3.0  # the command line wins
    assert compose_train(["strategy=sid"], output_dir=tmp_path).strategy.beta == 1.0
