"""data=synthetic80: COCO's 80 classes and category ids, read through the COCO reader, on
which every COCO scenario of the second seed runs unchanged (planned here, on a small
generation of the same classes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from clod.data.build import build_experiment_tasks
from clod.data.classes import COCO_CATEGORY_IDS, COCO_CLASSES
from clod.data.synthetic import class_appearances
from tests.test_config import compose_train

# (overrides, number of tasks, classes of the first task)
SCENARIOS = [
    (["scenario=40p40"], 2, 40),
    (["scenario=50p30"], 2, 50),
    (["scenario=60p20"], 2, 60),
    (["scenario=70p10"], 2, 70),
    (["scenario=40p20"], 3, 40),  # 40+20+20
    (["scenario=40p10"], 5, 40),  # 40+10x4
    (["scenario=40p40", "scenario.class_order=reversed"], 2, 40),  # last40+first40
    (["scenario=custom", "scenario.splits=20+20+20+20"], 4, 20),  # 20x4
]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The preset's classes with fewer images: what the scenarios need, in seconds."""
    data = tmp_path_factory.mktemp("synthetic80")
    return [
        "data=synthetic80", f"paths.data_dir={data}",
        "+data.generate.num_trainval=240", "+data.generate.num_test=120",
    ]  # fmt: skip


@pytest.mark.parametrize(("overrides", "num_tasks", "first"), SCENARIOS)
def test_every_coco_scenario_plans_on_it(small, overrides, num_tasks, first) -> None:
    cfg = OmegaConf.to_container(compose_train([*small, *overrides]), resolve=True)
    scenario, tasks = build_experiment_tasks(cfg)
    reversed_order = "scenario.class_order=reversed" in overrides
    # labels: ranks of sorted category ids, in the scenario's class order
    assert tuple(scenario.class_names) == (COCO_CLASSES[::-1] if reversed_order else COCO_CLASSES)
    assert len(tasks) == num_tasks and len(tasks[0].new) == first
    assert sorted(c for task in tasks for c in task.new) == list(range(80))
    for task in tasks:
        counts = task.counts()
        assert counts["train_images"] > 0 and counts["eval_boxes"] > 0, task.index
    assert tasks[0].new_names[0] == ("toothbrush" if reversed_order else "person")


def test_its_json_carries_coco_s_category_ids(small) -> None:
    cfg = OmegaConf.to_container(compose_train(small), resolve=True)
    build_experiment_tasks(cfg)  # generates it
    (root,) = Path(cfg["paths"]["data_dir"]).glob("synthetic80-*")
    document = json.loads((root / "annotations" / "instances_trainval.json").read_text())
    categories = {c["name"]: c["id"] for c in document["categories"]}
    assert [categories[name] for name in COCO_CLASSES] == list(COCO_CATEGORY_IDS)
    assert max(categories.values()) == 90 and 12 not in categories.values()


def test_eighty_looks_each_its_own_and_no_cue_alone_identifies_a_class() -> None:
    looks = list(class_appearances(COCO_CLASSES).values())
    assert len(set(looks)) == 80
    for cue in ("shape", "colour", "texture"):
        values = [getattr(look, cue) for look in looks]
        assert max(values.count(v) for v in values) >= 2, cue
