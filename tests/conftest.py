"""Suite-wide hooks: parallel workers (tests/workers.py)."""

from __future__ import annotations

import pytest

from tests.workers import group_of, pin_this_worker


def pytest_configure(config: pytest.Config) -> None:
    pin_this_worker()


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group_of(item.path)))
