"""The table a run prints when it ends (clod.engine.run.final_table)."""

from __future__ import annotations

from clod.data.classes import COCO_CLASSES
from clod.engine.run import final_table


def test_a_base_task_of_many_multi_word_classes_is_counted_by_class() -> None:
    base = list(COCO_CLASSES[:40])  # "traffic light", "fire hydrant", "stop sign", ...
    rows = [
        {"task": 0, "classes": ", ".join(base), "map": 0.5, "map50": 0.6},
        {"task": 1, "classes": "wine glass", "map": 0.3, "map50": 0.4},
    ]
    table = final_table({"rows": rows})
    assert f"{base[0]}, {base[1]} ... {base[-1]} (40)" in table
    assert "wine glass" in table
