"""Running the suite on several pytest-xdist workers (``make test``: one per core).

Each worker is pinned to its own share of the cores. clod takes as many threads as the cores
it may run on, and so do the training subprocesses a test starts (they inherit the pinning):
unpinned, every process on a 2-core machine would start two threads and wait in each parallel
region for the other process's threads, which makes small models many times slower.

Tests whose directory shares trained runs between its modules through session fixtures (the
report's sweeps, the deploy tests' trained run, the SLURM cluster) run on one worker, so each
fixture is made once; every other module is a unit of its own (like ``--dist loadfile``).
"""

from __future__ import annotations

import os
from pathlib import Path

# The cores this session may use, read before any pinning (tests/conftest.py imports this
# module first): a daemon the tests start for the whole machine gets them all back.
ALL_CPUS = frozenset(os.sched_getaffinity(0))
SHARED_FIXTURE_DIRS = frozenset({"report", "deploy", "slurm"})
TESTS = Path(__file__).parent
# The units that take minutes, longest first: handed out before the rest, so that no worker
# starts one of them while the other has nothing left (``make test`` passes
# --no-loadscope-reorder, which keeps this order). Only the schedule depends on it.
LONG_UNITS = (
    "slurm",
    "engine/test_run.py",
    "report",
    "strategies/test_end_to_end.py",
    "strategies/test_end_to_end_yolox.py",
    "deploy",
    "engine/test_upper_bound.py",
    "engine/test_ddp.py",
    "strategies/test_ddp_selection.py",
    "engine/test_trainer_config.py",
)


def worker_cpus(worker: str, workers: int, cpus: frozenset[int] = ALL_CPUS) -> set[int]:
    """The cores of xdist worker ``gw<i>`` of ``workers``: every ``workers``-th one from i."""
    index = int(worker.removeprefix("gw"))
    ordered = sorted(cpus)
    if workers < 2 or len(ordered) < workers:
        return set(ordered)
    return set(ordered[index % workers :: workers])


def pin_this_worker() -> None:
    """Pin an xdist worker process to its cores; a no-op outside xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        return
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.sched_setaffinity(0, worker_cpus(worker, workers))


def unpinned() -> None:
    """``preexec_fn`` for a process that serves the whole session (the SLURM daemons)."""
    os.sched_setaffinity(0, ALL_CPUS)


def group_of(path: Path) -> str:
    """The xdist work unit of the test file ``path``: its directory or the file itself."""
    relative = path.resolve().relative_to(TESTS)
    if len(relative.parts) > 1 and relative.parts[0] in SHARED_FIXTURE_DIRS:
        return relative.parts[0]
    return relative.as_posix()


def schedule_rank(group: str) -> int:
    """Where a unit goes in the queue: the long ones in LONG_UNITS order, then the rest."""
    return LONG_UNITS.index(group) if group in LONG_UNITS else len(LONG_UNITS)
