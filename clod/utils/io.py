"""Atomic file and directory writes: a crash or a kill never leaves a half-written result behind."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO


def _atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old or the new file, never half
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda handle: handle.write(data))


def write_text(path: Path, text: str) -> None:
    _atomic(path, lambda handle: handle.write(text.encode()))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows of dicts as CSV; the header is the union of keys in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def save_torch(path: Path, obj: Any) -> None:
    import torch  # here, not at the top: the data generator's workers use this module too

    _atomic(path, lambda handle: torch.save(obj, handle))


def publish_directory(
    target: Path,
    fill: Callable[[Path], None],
    *,
    is_complete: Callable[[Path], bool] | None = None,
    work_dir_prefix: Callable[[str], str] | None = None,
) -> bool:
    """Create the directory ``target`` atomically, holding the files ``fill`` writes.

    ``fill`` writes into a fresh staging directory next to ``target`` (the same file
    system, so the final rename is atomic), which is then renamed to ``target``: readers
    find no directory or a finished one, never a half-written one. The staging directory
    is removed whatever happens. Returns True when this call published it; False when
    ``target`` was complete already (``fill`` is not called) or another writer published
    first (the rename fails; ours is discarded, so all writers end up using one copy).
    Errors from ``fill`` and from the file system propagate.

    is_complete: whether the directory at ``target`` is a finished copy (default: it
        exists). One that is not, left by something other than this function (e.g. an
        interrupted copy), is moved aside and deleted rather than mixed with our files.
    work_dir_prefix: the name prefix, given the kind (``"tmp"``: staging, ``"trash"``:
        an unfinished occupant moved aside), of the directories made next to ``target``;
        a random suffix of hex digits is appended. Default ``.<target name>.<kind>-``.
    """
    target = Path(target)
    finished = is_complete if is_complete is not None else Path.exists
    if finished(target):
        return False

    def work_dir(kind: str) -> Path:
        prefix = f".{target.name}.{kind}-" if work_dir_prefix is None else work_dir_prefix(kind)
        return target.with_name(prefix + uuid.uuid4().hex[:8])

    target.parent.mkdir(parents=True, exist_ok=True)
    # mkdir rather than mkdtemp: the published directory gets the usual (umask) mode,
    # not mkdtemp's owner-only 0700
    staging = work_dir("tmp")
    staging.mkdir()
    try:
        fill(staging)
        for _ in range(3):
            try:
                os.rename(staging, target)  # fails if another writer's directory is there
                return True
            except OSError as error:
                if finished(target):
                    return False
                failure = error
            # Something unfinished occupies the name: move it aside rather than mixing
            # files with it. A competing writer may be doing the same, so a vanished
            # occupant is fine.
            trash = work_dir("trash")
            try:
                os.rename(target, trash)
            except FileNotFoundError:
                continue
            shutil.rmtree(trash, ignore_errors=True)
        raise failure
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
