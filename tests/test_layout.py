"""The package's layering: imports point one way, and modules stay small.

entry points -> deploy -> engine -> strategies -> models / data / metrics -> utils. Every ``import``
in clod/ is read from the source (top-level, inside functions, under TYPE_CHECKING alike).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "clod"
ENTRY_POINTS = (
    "clod.train", "clod.evaluate", "clod.export", "clod.bench", "clod.report", "clod.cli",
)  # fmt: skip

# package -> what it must never import
FORBIDDEN = {
    "clod.utils": ("clod.engine", "clod.strategies", "clod.models", "clod.data",
                   "clod.metrics", "clod.reporting", "clod.benchmarking", "clod.deploy",
                   *ENTRY_POINTS),
    "clod.models": ("clod.engine", "clod.deploy", "clod.strategies", "clod.reporting", "clod.benchmarking",
                    *ENTRY_POINTS),
    "clod.data": ("clod.engine", "clod.deploy", "clod.strategies", "clod.models", "clod.reporting",
                  "clod.benchmarking", *ENTRY_POINTS),
    "clod.metrics": ("clod.engine", "clod.deploy", "clod.strategies", "clod.models", "clod.reporting",
                     "clod.benchmarking", *ENTRY_POINTS),
    "clod.strategies": ("clod.engine", "clod.deploy", "clod.reporting", "clod.benchmarking", *ENTRY_POINTS),
    "clod.engine": ("clod.reporting", "clod.benchmarking", "clod.deploy", *ENTRY_POINTS),
    "clod.deploy": ("clod.reporting", "clod.benchmarking", *ENTRY_POINTS),
    "clod.reporting": ("clod.engine", "clod.deploy", "clod.strategies", "clod.benchmarking", *ENTRY_POINTS),
}  # fmt: skip
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n == "clod" or n.startswith("clod.")}


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_the_rules_see_every_package() -> None:
    packages = {module_name(p).split(".")[1] for p in SOURCES if "." in module_name(p)}
    assert {"utils", "models", "data", "metrics", "strategies", "engine", "deploy"} <= packages
    # the reader finds imports in function bodies too (a lazy import is still a dependency)
    assert "clod.engine.run" in imported(PACKAGE / "train.py")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_imports_point_one_way(path: Path) -> None:
    name = module_name(path)
    for package, forbidden in FORBIDDEN.items():
        if not under(name, package):
            continue
        wrong = sorted(i for i in imported(path) if any(under(i, f) for f in forbidden))
        assert not wrong, f"{name} ({package}) must not import {wrong}"


def test_no_module_is_over_the_size_limit() -> None:
    long = {
        module_name(p): n for p in SOURCES if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"
