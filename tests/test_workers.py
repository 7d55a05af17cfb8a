"""The parallel suite's pinning and grouping (tests/workers.py)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.workers import ALL_CPUS, group_of, worker_cpus

TESTS = Path(__file__).parent


def test_workers_split_the_cores_between_them() -> None:
    cpus = frozenset({0, 1, 2, 3})
    assert worker_cpus("gw0", 2, cpus) == {0, 2}
    assert worker_cpus("gw1", 2, cpus) == {1, 3}
    assert worker_cpus("gw0", 1, cpus) == set(cpus)
    # More workers than cores: nobody is pinned (each would otherwise get no core at all).
    assert worker_cpus("gw2", 3, frozenset({0, 1})) == {0, 1}


def test_this_worker_runs_on_its_own_cores() -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    expected = (
        worker_cpus(worker, int(os.environ["PYTEST_XDIST_WORKER_COUNT"])) if worker else ALL_CPUS
    )
    assert os.sched_getaffinity(0) == set(expected)


def test_directories_that_share_trained_fixtures_are_one_unit() -> None:
    assert group_of(TESTS / "report" / "test_cli.py") == "report"
    assert group_of(TESTS / "report" / "test_seeds.py") == "report"
    assert group_of(TESTS / "slurm" / "test_slurm_sweep.py") == "slurm"
    assert group_of(TESTS / "engine" / "test_run.py") == "engine/test_run.py"
    assert group_of(TESTS / "test_config.py") == "test_config.py"
