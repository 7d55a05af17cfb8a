"""Find the run directories of a sweep and read what each one holds.

A run directory is one Hydra job's output: it has ``state.json`` (written as soon as the
run starts), ``config.yaml`` (the resolved config) or at least ``.hydra/config.yaml``.
Runs are found at any depth, so a sweep directory may hold several sweeps, single runs
or submitit's ``.submitit/`` folder next to them. A run is never expected inside another.

Each run is read on its own: a corrupt file makes that run ``unreadable`` with a
message naming the file, and the rest of the report goes on.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clod.errors import ClodError
from clod.utils.run_config import result_config

# What a run directory can be, from the files it has.
DONE = "done"  # summary.json: every task finished
FAILED = "failed"  # state.json says failed and keeps the traceback
RUNNING = "running"  # state.json says running: still training, or killed without a word
INTERRUPTED = "interrupted"  # stopped by a signal (Ctrl-C, scancel): rerun it to resume
INCOMPLETE = "incomplete"  # no state.json yet, or a file the status needs is missing
UNREADABLE = "unreadable"  # a file is there but cannot be parsed
STATUSES = (DONE, FAILED, INTERRUPTED, RUNNING, INCOMPLETE, UNREADABLE)

RUN_MARKERS = ("state.json", "config.yaml", ".hydra/config.yaml")
# Folders that are never a run nor hold one: W&B's own run folders also have files/config.yaml.
SKIPPED_DIRS = frozenset({"wandb", "checkpoints", "results", "csv"})


class ReportError(ClodError):
    """The sweep directory cannot be reported on (missing, or no runs in it)."""


class UnreadableFile(Exception):
    """A run's file exists but cannot be parsed; the message names the file."""


@dataclass
class Run:
    """One run directory as found on disk."""

    path: Path
    name: str  # the path relative to the sweep directory
    status: str
    config: dict[str, Any] = field(default_factory=dict)  # flat, dotted keys
    summary: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per finished task
    tasks_done: int = 0
    attempts: int | None = None
    overrides: list[str] = field(default_factory=list)
    error: str | None = None  # one line: the exception, or what is wrong with the files
    traceback: str | None = None

    @property
    def strategy(self) -> str | None:
        return self._summary_or_config("strategy", "strategy.name")

    @property
    def scenario(self) -> str | None:
        return self._summary_or_config("scenario", "scenario.name")

    @property
    def data(self) -> str | None:
        return self._summary_or_config("data", "data.name")

    @property
    def alpha(self) -> Any:
        return self.config.get("strategy.alpha")

    @property
    def beta(self) -> Any:
        return self.config.get("strategy.beta")

    @property
    def num_tasks(self) -> int | None:
        return int(self.summary["num_tasks"]) if self.summary else None

    @property
    def finished(self) -> bool:
        return self.status == DONE

    def _summary_or_config(self, summary_key: str, config_key: str) -> str | None:
        if self.summary and self.summary.get(summary_key) is not None:
            return str(self.summary[summary_key])
        value = self.config.get(config_key)
        return None if value is None else str(value)


def collect_runs(sweep_dir: str | Path, exclude: Path | None = None) -> list[Run]:
    """Every run under ``sweep_dir`` (itself included), in natural order of their paths.

    ``exclude``: a folder to leave out, e.g. the report's own output folder.
    Raises :class:`ReportError` when the directory is missing or holds no run.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        what = "is not a directory" if sweep_dir.exists() else "does not exist"
        raise ReportError(f"sweep directory {sweep_dir} {what}")
    runs = [read_run(path, sweep_dir) for path in find_run_dirs(sweep_dir, exclude)]
    if not runs:
        raise ReportError(
            f"no runs under {sweep_dir}: a run directory holds state.json, config.yaml or "
            f".hydra/config.yaml (is it the hydra.sweep.dir of a `python -m clod.train -m` sweep?)"
        )
    return sorted(runs, key=lambda run: natural_key(run.name))


def find_run_dirs(root: Path, exclude: Path | None = None) -> Iterator[Path]:
    excluded = exclude.resolve() if exclude is not None else None
    for current, subdirs, _files in os.walk(root):
        path = Path(current)
        if is_run_dir(path):
            subdirs.clear()  # runs do not nest; a run's own folders are not runs
            yield path
            continue
        subdirs[:] = sorted(
            d
            for d in subdirs
            if not d.startswith(".")  # .hydra, .submitit
            and d not in SKIPPED_DIRS
            and (excluded is None or (path / d).resolve() != excluded)
        )


def is_run_dir(path: Path) -> bool:
    return any((path / marker).is_file() for marker in RUN_MARKERS)


def natural_key(name: str) -> list[Any]:
    """Sort key where job numbers compare as numbers: 2 before 10."""
    return [
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)
    ]


def read_run(path: Path, sweep_dir: Path) -> Run:
    name = path.relative_to(sweep_dir).as_posix() if path != sweep_dir else "."
    run = Run(path=path, name=name, status=INCOMPLETE)
    try:
        _fill(run)
    except UnreadableFile as problem:
        run.status, run.error = UNREADABLE, str(problem)
    return run


def _fill(run: Run) -> None:
    path = run.path
    state = _read_json(path / "state.json")
    run.config = _read_config(path, state)
    run.overrides = [str(o) for o in (_read_yaml(path / ".hydra" / "overrides.yaml") or [])]
    summary = _read_json(path / "summary.json")
    if state is not None:
        run.attempts = int(state.get("attempts", 1))
        run.tasks_done = len(state.get("tasks_done", []))
    if state is not None and state.get("status") == FAILED:
        run.status = FAILED
        run.traceback = str(state.get("error") or "")
        run.error = error_line(run.traceback) or "state.json records no error message"
        run.rows = _read_rows(path / "results.csv")
    elif summary is not None and (state is None or state.get("status") == DONE):
        _check_summary(summary)
        run.status = DONE
        run.summary = summary
        run.rows = list(summary.get("rows", []))
        run.tasks_done = int(summary.get("tasks_done", len(run.rows)))
    elif state is not None and state.get("status") in (RUNNING, INTERRUPTED):
        run.status = state["status"]
        run.rows = _read_rows(path / "results.csv")
        if run.status == INTERRUPTED:
            signal_name = state.get("signal") or "a signal"
            run.error = f"stopped by {signal_name}; resumable: rerun the same command"
    elif state is not None and state.get("status") == DONE:
        run.error = "state.json says done but summary.json is missing"
    else:
        run.error = "no state.json: the job has not started its run (or died before)"


# What the table and the figures read from summary.json.
SUMMARY_KEYS = {
    "final": ("map", "map50"),
    "final_old": ("map50",),
    "final_new": ("map50",),
    "avg_inc": ("map50",),
    "forgetting": ("map50",),
    "memory": (),
}


def _check_summary(summary: Mapping[str, Any]) -> None:
    """Fail on this run, naming the key, rather than in the middle of the table."""
    for section, keys in SUMMARY_KEYS.items():
        value = summary.get(section)
        missing = [key for key in keys if not isinstance(value, Mapping) or key not in value]
        if not isinstance(value, Mapping) or missing:
            what = f"{section}.{missing[0]}" if missing else section
            raise UnreadableFile(f"summary.json has no {what} (written by another clod version?)")
    rows = summary.get("rows")
    if not isinstance(rows, list) or not all(
        isinstance(row, Mapping) and "task" in row and "map50" in row for row in rows
    ):
        raise UnreadableFile("summary.json has no per-task rows with task and map50")


def error_line(traceback_text: str) -> str:
    """The exception line(s) that end a formatted traceback, as one line.

    Frames are indented and start after ``Traceback (most recent call last):``; what
    follows the last frame is the exception and its (possibly multi-line) message.
    """
    lines = [line for line in traceback_text.strip().splitlines() if line.strip()]
    last_frame = max(
        (i for i, line in enumerate(lines) if line.startswith((" ", "\t", "Traceback "))),
        default=-1,
    )
    message = lines[last_frame + 1 :] or lines[-1:]
    return " ".join(line.strip() for line in message)


def _read_config(path: Path, state: Mapping[str, Any] | None) -> dict[str, Any]:
    """The run's config as flat dotted keys: the resolved config.yaml if the run got that
    far, else the result-determining keys state.json keeps, else Hydra's unresolved one."""
    resolved = _read_yaml(path / "config.yaml")
    if isinstance(resolved, Mapping):
        return result_config(resolved)
    if state is not None and isinstance(state.get("config"), Mapping):
        return dict(state["config"])
    composed = _read_yaml(path / ".hydra" / "config.yaml")
    return result_config(composed) if isinstance(composed, Mapping) else {}


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UnreadableFile(f"{path.name} cannot be read: {error}") from error
    if not isinstance(data, dict):
        raise UnreadableFile(f"{path.name} holds a {type(data).__name__}, not a JSON object")
    return data


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        shown = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UnreadableFile(f"{_relative(path)} cannot be read: {shown}") from error


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """results.csv of an unfinished run, with numbers as numbers and blanks as None."""
    if not path.is_file():
        return []
    try:
        with path.open(newline="") as handle:
            return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UnreadableFile(f"{path.name} cannot be read: {error}") from error


def _number(text: str | None) -> Any:
    if text is None or text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _relative(path: Path) -> str:
    return f"{path.parent.name}/{path.name}" if path.parent.name == ".hydra" else path.name
