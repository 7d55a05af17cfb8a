"""Suite-wide hooks: parallel workers (tests/workers.py)."""

from __future__ import annotations

import pytest

from tests.workers import group_of, pin_this_worker, schedule_rank


def pytest_configure(config: pytest.Config) -> None:
    pin_this_worker()


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    groups = {item: group_of(item.path) for item in items}
    for item, group in groups.items():
        item.add_marker(pytest.mark.xdist_group(group))
    # A stable sort: the tests of a module stay together and in their order.
    items.sort(key=lambda item: schedule_rank(groups[item]))
