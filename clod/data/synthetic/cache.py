"""The dataset cache: ``data_dir/<name>-<hash>``, reused when complete, published atomically."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from clod.data.synthetic.generate import generate_synthetic
from clod.data.synthetic.spec import GENERATOR_VERSION, SPLITS, SyntheticSpec
from clod.utils.io import publish_directory

logger = logging.getLogger(__name__)


def synthetic_root(data_dir: Path, spec: SyntheticSpec) -> Path:
    """Where ``spec``'s dataset lives under ``data_dir``."""
    return Path(data_dir) / f"{spec.name}-{spec.cache_key}"


def load_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of a complete dataset at ``root``, or None."""
    try:
        manifest = json.loads((Path(root) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("complete") is True else None


def _is_complete(root: Path, spec: SyntheticSpec) -> bool:
    manifest = load_manifest(root)
    if manifest is None:
        return False
    if (
        manifest.get("generator_version") != GENERATOR_VERSION
        or manifest.get("spec") != spec.as_dict()
    ):
        return False
    required = [f"annotations/instances_{s}.json" for s in SPLITS]
    required += [f"VOC2007/ImageSets/Main/{s}.txt" for s in SPLITS]
    return all((root / path).is_file() for path in required)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _work_dir_prefix(root: Path, kind: str) -> str:
    # host and pid identify the owner, so a later run can tell a dead run's leftovers
    # from a directory another live process is still writing; publish_directory appends
    # a random suffix without a "-", so the name splits back into host, pid and suffix
    return f".{root.name}.{kind}-{socket.gethostname()}-{os.getpid()}-"


def _remove_abandoned_work_dirs(root: Path) -> None:
    """Delete temp/trash directories left by dead processes on this host."""
    host = socket.gethostname()
    for kind in ("tmp", "trash"):
        for candidate in root.parent.glob(f".{root.name}.{kind}-*"):
            owner = candidate.name[len(f".{root.name}.{kind}-") :]
            parts = owner.rsplit("-", 2)
            if len(parts) != 3 or not parts[1].isdigit():
                continue
            owner_host, owner_pid = parts[0], int(parts[1])
            if owner_host == host and not _process_alive(owner_pid):
                logger.info("removing abandoned %s", candidate)
                shutil.rmtree(candidate, ignore_errors=True)


def ensure_synthetic(data_dir: Path, spec: SyntheticSpec, workers: int | None = None) -> Path:
    """Return the root of ``spec``'s dataset under ``data_dir``, generating it if needed.

    A complete copy (manifest matching spec and generator version) is reused as is.
    Otherwise the dataset is generated in a temporary sibling directory and renamed into
    place; if another process publishes first, its copy is used and ours discarded.
    """
    data_dir = Path(data_dir)
    root = synthetic_root(data_dir, spec)
    if data_dir.is_dir():
        _remove_abandoned_work_dirs(root)
    if _is_complete(root, spec):
        logger.info("synthetic dataset reused: %s", root)
        return root
    start = time.perf_counter()
    manifest: dict[str, Any] = {}

    def fill(work_dir: Path) -> None:
        manifest.update(generate_synthetic(work_dir, spec, workers=workers))

    published = publish_directory(
        root,
        fill,
        # an incomplete directory at the final name (e.g. an interrupted copy) is replaced
        is_complete=lambda path: _is_complete(path, spec),
        work_dir_prefix=lambda kind: _work_dir_prefix(root, kind),
    )
    elapsed = time.perf_counter() - start
    if published:
        counts = ", ".join(
            f"{split} {manifest['splits'][split]['images']} images / "
            f"{manifest['splits'][split]['boxes']} boxes"
            for split in SPLITS
        )
        logger.info("synthetic dataset generated in %.1f s (%s): %s", elapsed, counts, root)
    else:
        logger.info("synthetic dataset reused (another process generated it first): %s", root)
    return root
