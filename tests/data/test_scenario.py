"""Every shipped scenario file against docs/protocol.md's class lists, and scenario errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from clod.data.classes import COCO_CLASSES, VOC_CLASSES
from clod.data.scenario import parse_splits, resolve_scenario
from clod.errors import ConfigError

SCENARIO_DIR = Path(__file__).parents[2] / "conf" / "scenario"


def load(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(SCENARIO_DIR / f"{name}.yaml"))


def r(a: int, b: int) -> tuple[int, ...]:
    return tuple(range(a, b))


# docs/protocol.md §2: the reference scenario table and the COCO splits.
EXPECTED = {
    "10p10": ("voc", [r(0, 10), r(10, 20)]),
    "15p5": ("voc", [r(0, 15), r(15, 20)]),
    "19p1": ("voc", [r(0, 19), (19,)]),
    "15p1": ("voc", [r(0, 15), (15,), (16,), (17,), (18,), (19,)]),
    "2p1": ("voc4", [(0, 1), (2,), (3,)]),
    "40p40": ("coco", [r(0, 40), r(40, 80)]),
    "50p30": ("coco", [r(0, 50), r(50, 80)]),
    "60p20": ("coco", [r(0, 60), r(60, 80)]),
    "70p10": ("coco", [r(0, 70), r(70, 80)]),
    "40p20": ("coco", [r(0, 40), r(40, 60), r(60, 80)]),
    "40p10": ("coco", [r(0, 40), r(40, 50), r(50, 60), r(60, 70), r(70, 80)]),
}
CLASS_LISTS = {"voc": VOC_CLASSES, "voc4": VOC_CLASSES[:4], "coco": COCO_CLASSES}


def test_every_shipped_scenario_is_checked() -> None:
    shipped = {p.stem for p in SCENARIO_DIR.glob("*.yaml")} - {"custom"}
    assert shipped == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_scenario_class_lists(name: str) -> None:
    dataset, tasks = EXPECTED[name]
    scenario = resolve_scenario(load(name), CLASS_LISTS[dataset])
    assert scenario.task_classes == tuple(tasks)
    assert scenario.class_names == CLASS_LISTS[dataset]
    assert scenario.seen(len(tasks) - 1) == tuple(range(sum(len(t) for t in tasks)))


def test_15p1_adds_the_last_five_voc_classes_in_order() -> None:
    scenario = resolve_scenario(load("15p1"), VOC_CLASSES)
    added = [scenario.names(scenario.new(t))[0] for t in range(1, 6)]
    assert added == ["pottedplant", "sheep", "sofa", "train", "tvmonitor"]
    assert scenario.old(3) == tuple(range(17))
    assert scenario.names(scenario.new(1)) == ["pottedplant"]


def test_19p1_adds_tvmonitor() -> None:
    assert resolve_scenario(load("19p1"), VOC_CLASSES).names((19,)) == ["tvmonitor"]


@pytest.mark.parametrize(
    ("split", "before", "after"),
    [
        (10, "traffic light", "fire hydrant"),
        (20, "cow", "elephant"),
        (40, "bottle", "wine glass"),
        (50, "orange", "broccoli"),
        (60, "bed", "dining table"),
        (70, "oven", "toaster"),
    ],
)
def test_coco_split_points(split: int, before: str, after: str) -> None:
    assert COCO_CLASSES[split - 1] == before and COCO_CLASSES[split] == after


def test_grammar() -> None:
    assert parse_splits("40+10x4") == [40, 10, 10, 10, 10]
    assert parse_splits("20x4") == [20, 20, 20, 20]
    assert parse_splits("40+40") == [40, 40]
    with pytest.raises(ConfigError, match=r"cannot parse 'ten'"):
        parse_splits("40+ten")


def test_custom_splits_and_partial() -> None:
    cfg = {**load("custom"), "splits": "15x4"}
    with pytest.raises(
        ConfigError, match=r"covers 60 of the dataset's 80 classes .*allow_partial=true"
    ):
        resolve_scenario(cfg, COCO_CLASSES)
    scenario = resolve_scenario({**cfg, "allow_partial": True}, COCO_CLASSES)
    assert scenario.task_classes[-1] == r(45, 60)


def test_scenario_that_does_not_fit_the_dataset() -> None:
    with pytest.raises(
        ConfigError,
        match=r"scenario 15p1 needs at least 15 classes for its base task, but the dataset has 4",
    ):
        resolve_scenario(load("15p1"), VOC_CLASSES[:4])
    with pytest.raises(ConfigError, match=r"needs 100 classes .* but the dataset has 80"):
        resolve_scenario({"name": "x", "splits": [50, 50]}, COCO_CLASSES)
    with pytest.raises(ConfigError, match=r"do not divide into tasks of 3"):
        resolve_scenario({"name": "x", "base": 15, "increment": 3}, VOC_CLASSES)
    with pytest.raises(ConfigError, match=r"every task needs > 0 classes"):
        resolve_scenario({"name": "x", "splits": [10, 0, 10]}, VOC_CLASSES)


def test_class_orders() -> None:
    reversed_ = resolve_scenario({**load("10p10"), "class_order": "reversed"}, VOC_CLASSES)
    assert reversed_.names(reversed_.new(0))[0] == "tvmonitor"
    # global labels are positions in the scenario order; the dataset's tvmonitor (19) is label 0
    assert reversed_.dataset_to_label[19] == 0
    permuted = resolve_scenario(
        {**load("10p10"), "class_order": "permuted", "order_seed": 3}, VOC_CLASSES
    )
    again = resolve_scenario(
        {**load("10p10"), "class_order": "permuted", "order_seed": 3}, VOC_CLASSES
    )
    assert permuted.class_names == again.class_names != VOC_CLASSES
    assert sorted(permuted.class_names) == sorted(VOC_CLASSES)
    with pytest.raises(ConfigError, match=r"class_order must list every dataset class once"):
        resolve_scenario({**load("10p10"), "class_order": ["cat"]}, VOC_CLASSES)


def test_explicit_tasks() -> None:
    scenario = resolve_scenario(
        {"name": "pets", "tasks": [["cat", "dog"], ["horse"]], "allow_partial": True}, VOC_CLASSES
    )
    assert scenario.names(scenario.new(0)) == ["cat", "dog"]
    assert scenario.new(1) == (2,)
    with pytest.raises(ConfigError, match=r"task 1 names unknown class\(es\) \['unicorn'\]"):
        resolve_scenario({"name": "x", "tasks": [["cat"], ["unicorn"]]}, VOC_CLASSES)
    with pytest.raises(ConfigError, match=r"\['cat'\] appear in more than one task"):
        resolve_scenario({"name": "x", "tasks": [["cat"], ["cat"]]}, VOC_CLASSES)
