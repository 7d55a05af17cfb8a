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
