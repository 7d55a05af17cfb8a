"""Means of per-class AP over class groups (all / old / new / per task).

Per-class arrays use −1 for "no ground truth" or "not evaluated" (COCO semantics); such classes
are left out of every mean. A group with no class that has a value gives −1 as well.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

NO_VALUE = -1.0

# Headline metric (summary.json's "final", "final_old", "final_new") -> the per-class array
# it averages.
METRICS: dict[str, str] = {
    "map": "ap",
    "map50": "ap50",
    "map75": "ap75",
    "map50_voc07": "ap50_voc07",
    "map50_voc": "ap50_voc",
}


def mean_over_classes(per_class: Sequence[float] | np.ndarray, classes: Iterable[int]) -> float:
    """Mean of ``per_class[c]`` over the classes ``c`` that have a value (≥ 0); −1 if none has."""
    values = np.asarray(per_class, dtype=np.float64)
    indices = np.unique(np.fromiter((int(c) for c in classes), dtype=np.int64))
    if len(indices) and (indices.min() < 0 or indices.max() >= len(values)):
        raise ValueError(
            f"class indices {indices.tolist()} do not fit a per-class array of length {len(values)}"
        )
    selected = values[indices]
    selected = selected[selected > NO_VALUE]
    return float(selected.mean()) if len(selected) else NO_VALUE


def group_means(
    per_class: Sequence[float] | np.ndarray,
    groups: Sequence[Iterable[int]] | Mapping[str, Iterable[int]],
) -> list[float] | dict[str, float]:
    """``mean_over_classes`` for every group: a list for a list of groups, a dict for a mapping."""
    if isinstance(groups, Mapping):
        return {name: mean_over_classes(per_class, members) for name, members in groups.items()}
    return [mean_over_classes(per_class, members) for members in groups]
