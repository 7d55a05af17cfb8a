"""From the ``data`` and ``scenario`` configs to readers, splits and task datasets."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clod.data.classes import VOC_CLASSES
from clod.data.coco import read_coco
from clod.data.scenario import Scenario, resolve_scenario
from clod.data.tasks import Task, build_tasks
from clod.data.types import Split
from clod.data.voc import read_voc
from clod.errors import ConfigError

log = logging.getLogger(__name__)


def dataset_root(
    data_cfg: Mapping[str, Any], data_dir: str | Path
) -> tuple[Path, tuple[str, ...] | None]:
    """The dataset's root directory and, for generated data, its class names.

    Synthetic data is generated (or reused from the cache) under ``data_dir``; other
    data lives at ``data.root``.
    """
    generate = data_cfg.get("generate")
    if generate:
        return _generated_root(dict(generate), Path(data_dir))
    root = data_cfg.get("root")
    if not root or root == "???":
        raise ConfigError(
            f"data.root is not set for dataset {data_cfg.get('name')!r}: give data.root=/path"
        )
    return Path(root).expanduser(), None


def _generated_root(generate: dict[str, Any], data_dir: Path) -> tuple[Path, tuple[str, ...]]:
    from clod.data.synthetic import PRESETS, SyntheticSpec, ensure_synthetic, synthetic_preset

    preset = generate.pop("preset", "synthetic")
    if preset not in PRESETS:
        raise ConfigError(f"data.generate.preset must be one of {sorted(PRESETS)}, got {preset!r}")
    known = set(SyntheticSpec.__dataclass_fields__)
    unknown = sorted(set(generate) - known)
    if unknown:
        raise ConfigError(f"data.generate has unknown key(s) {unknown}; known: {sorted(known)}")
    spec = synthetic_preset(preset, **generate)
    return ensure_synthetic(data_dir, spec), spec.class_names


def _under(root: Path, path: str) -> Path:
    path = Path(str(path)).expanduser()
    return path if path.is_absolute() else root / path


def read_split(
    data_cfg: Mapping[str, Any], root: Path, which: str, class_names: tuple[str, ...] | None = None
) -> Split:
    """Read ``data.<which>`` (``train`` or ``test``) with the configured reader.

    Class names: ``data.class_names`` if set, else ``class_names``, else the reader's
    default (VOC's 20 classes; a COCO file's own categories).
    """
    part = data_cfg.get(which)
    if not part:
        raise ConfigError(f"data.{which} is not set")
    fmt = data_cfg.get("format")
    class_names = data_cfg.get("class_names") or class_names
    on_bad_box = data_cfg.get("on_bad_box", "repair")
    if fmt == "voc":
        for key in ("root", "split"):
            if not part.get(key):
                raise ConfigError(f"data.{which}.{key} is required for VOC data")
        return read_voc(
            _under(root, part["root"]),
            str(part["split"]),
            tuple(class_names) if class_names else VOC_CLASSES,
            on_bad_box=on_bad_box,
        )
    if fmt == "coco":
        for key in ("ann", "images"):
            if not part.get(key):
                raise ConfigError(f"data.{which}.{key} is required for COCO data")
        return read_coco(
            _under(root, part["ann"]),
            _under(root, part["images"]),
            tuple(class_names) if class_names else None,
            on_bad_box=on_bad_box,
        )
    raise ConfigError(f"data.format must be voc or coco, got {fmt!r}")


def load_splits(data_cfg: Mapping[str, Any], data_dir: str | Path) -> tuple[Split, Split]:
    """Read the training and test splits and check them against ``data.num_classes``."""
    root, generated_classes = dataset_root(data_cfg, data_dir)
    train = read_split(data_cfg, root, "train", generated_classes)
    test = read_split(data_cfg, root, "test", generated_classes)
    if train.class_names != test.class_names:
        raise ConfigError(
            f"training classes ({train.source}) and test classes ({test.source}) differ: "
            f"{list(train.class_names)} vs {list(test.class_names)}"
        )
    expected = data_cfg.get("num_classes")
    if expected is not None and int(expected) != len(train.class_names):
        raise ConfigError(
            f"data.num_classes={expected} but {train.source} has {len(train.class_names)} classes "
            f"({', '.join(train.class_names)})"
        )
    return train, test


def is_joint(strategy_cfg: Mapping[str, Any]) -> bool:
    """One task on every class: ``joint`` unless it is the cumulative variant (a task per
    step, each on the classes seen so far)."""
    return bool(strategy_cfg.get("joint", False)) and not strategy_cfg.get("cumulative", False)


def build_experiment_tasks(cfg: Mapping[str, Any]) -> tuple[Scenario, list[Task]]:
    """Everything a run trains on: the resolved scenario and its task datasets."""
    data_cfg = cfg["data"]
    train, test = load_splits(data_cfg, cfg["paths"]["data_dir"])
    scenario = resolve_scenario(cfg["scenario"], train.class_names)
    eval_cfg = cfg.get("eval") or {}
    strategy_cfg = cfg.get("strategy") or {}
    tasks = build_tasks(
        scenario,
        train,
        test,
        joint=is_joint(strategy_cfg),
        cumulative=bool(strategy_cfg.get("cumulative", False)),
        test_images=eval_cfg.get("test_images", "seen_images"),
        difficult_train=(data_cfg.get("difficult") or {}).get("train", "keep"),
    )
    return scenario, tasks
