"""Runs that differ only in ``seed``: their mean, sample standard deviation and count.

A sweep over ``seed=1,2,3`` repeats every setting; the report groups the finished runs
whose result-determining config (:func:`clod.utils.run_config.result_config`) is the same
but for the top-level ``seed``, and shows each group as mean ± std over n runs. The
standard deviation is the sample one (n − 1 in the denominator); with one run it is
undefined and left out.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from clod.reporting.collect import Run
from clod.reporting.tables import Row, run_row

SEED_KEY = "seed"
# The table's columns a group averages (finished runs have all of them).
AGGREGATED = (
    "map",
    "map50",
    "old_map50",
    "new_map50",
    "avg_inc_map50",
    "forgetting_map50",
    "omega_map",
    "omega_map50",
    "abs_gap_map",
    "rel_gap_map",
    "rel_gap_map50",
    "train_s",
    "peak_rss_mb",
)


@dataclass
class SeedGroup:
    key: str  # a short hash of the config without the seed
    runs: list[Run]  # in the order given (the report groups finished runs)

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def seeds(self) -> list[object]:
        return [run.config.get(SEED_KEY) for run in self.runs]

    def rows(self) -> list[Row]:
        return [run_row(run) for run in self.runs]


def follows_seed(key: str, value: object, config: dict[str, object]) -> bool:
    """The top-level ``seed``, or a ``<group>.seed`` that follows it (replay's buffer seed is
    ``${seed}``): the keys a seed sweep varies."""
    return key == SEED_KEY or (key.endswith("." + SEED_KEY) and value == config.get(SEED_KEY))


def setting_key(run: Run) -> str:
    """What a run's results depend on, except its seed, as a short stable hash."""
    items = sorted(
        (key, repr(value))
        for key, value in run.config.items()
        if not follows_seed(key, value, run.config)
    )
    return hashlib.sha1(repr(items).encode()).hexdigest()[:10]


def seed_groups(runs: Sequence[Run]) -> list[SeedGroup]:
    """``runs`` grouped by :func:`setting_key`, groups in the order of their first run."""
    groups: dict[str, SeedGroup] = {}
    for run in runs:
        key = setting_key(run)
        groups.setdefault(key, SeedGroup(key, [])).runs.append(run)
    return list(groups.values())


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for fewer than two values)."""
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, None
    variance = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance)


def group_row(group: SeedGroup) -> Row:
    """The group's line: the first run's row with each aggregated column replaced by its
    mean, ``<column>_std`` beside it, ``n`` and the seeds."""
    rows = group.rows()
    row: Row = dict(rows[0])
    for column in AGGREGATED:
        values = [float(r[column]) for r in rows if r.get(column) is not None]
        # a mean over some of the seeds would pass for all n (e.g. Ω where only one seed
        # has a joint run): only a column every run has is aggregated
        mean, std = mean_std(values) if len(values) == len(rows) else (None, None)
        row[column] = mean
        row[f"{column}_std"] = std
    row.update(
        run=f"mean of {group.n}" if group.n > 1 else rows[0]["run"],
        status="mean" if group.n > 1 else rows[0]["status"],
        seed=",".join(str(s) for s in group.seeds),
        n=group.n,
        group=group.key,
    )
    return row


def per_task_mean_std(
    group: SeedGroup, metric: str = "map50"
) -> tuple[list[int], list[float], list[float | None]]:
    """Tasks, the mean of ``metric`` after each and its std over the group's runs."""
    by_task: dict[int, list[float]] = {}
    for run in group.runs:
        for row in run.rows:
            by_task.setdefault(int(row["task"]), []).append(float(row[metric]))
    tasks = sorted(by_task)
    stats = [mean_std(by_task[task]) for task in tasks]
    return tasks, [m for m, _ in stats], [s for _, s in stats]
