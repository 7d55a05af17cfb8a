"""The run's state file: what is done, so a rerun into the same directory resumes.

``state.json`` records the status (``running``; ``interrupted`` with the signal that
stopped it, resumable; ``failed`` with its error; ``done``),
the finished tasks, and the configuration the run started with. A rerun with a
configuration that would change the results is refused, naming the keys that
differ; keys that only say where or how it runs (paths, hardware, loggers, Hydra)
may change, e.g. when SLURM requeues a job on another node.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clod.errors import ConfigError
from clod.utils.io import read_json, write_json
from clod.utils.run_config import result_config


class RunState:
    """Reads and writes ``state.json`` (rank 0 writes; every rank may read)."""

    def __init__(self, output_dir: Path, cfg: Mapping[str, Any], write: bool = True) -> None:
        self.path = Path(output_dir) / "state.json"
        self.write_enabled = write
        fresh = result_config(cfg)
        if self.path.exists():
            self.data = read_json(self.path)
            saved = self.data.get("config", {})
            changed = sorted(k for k in set(saved) | set(fresh) if saved.get(k) != fresh.get(k))
            if changed:
                shown = ", ".join(f"{k}: {saved.get(k)!r} -> {fresh.get(k)!r}" for k in changed[:6])
                raise ConfigError(
                    f"{self.path.parent} holds a run with a different configuration ({shown}"
                    f"{', ...' if len(changed) > 6 else ''}); resume with the same overrides or "
                    f"choose another hydra.run.dir"
                )
            self.data["attempts"] = int(self.data.get("attempts", 1)) + 1
        else:
            self.data = {"status": "running", "config": fresh, "tasks_done": [], "attempts": 1}
        self.data["status"] = "done" if self.data.get("status") == "done" else "running"
        for stale in ("error", "signal", "interrupted_at"):
            self.data.pop(stale, None)
        self._save()

    @property
    def done(self) -> bool:
        return self.data["status"] == "done"

    @property
    def tasks_done(self) -> list[int]:
        return sorted(int(t) for t in self.data["tasks_done"])

    def task_done(self, index: int) -> bool:
        return index in self.tasks_done

    def mark_task(self, index: int, **info: Any) -> None:
        if index not in self.data["tasks_done"]:
            self.data["tasks_done"].append(index)
        self.data.setdefault("task_info", {})[str(index)] = info
        self._save()

    def set(self, **values: Any) -> None:
        self.data.update(values)
        self._save()

    def finish(self) -> None:
        self.data["status"] = "done"
        self.data["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._save()

    def fail(self, error: BaseException) -> None:
        self.data["status"] = "failed"
        self.data["error"] = "".join(traceback.format_exception(error)).strip()
        self._save()

    def interrupt(self, signal_name: str) -> None:
        """Stopped by a signal: no error, and the next attempt resumes where it left off."""
        self.data["status"] = "interrupted"
        self.data["signal"] = signal_name
        self.data["interrupted_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._save()

    def _save(self) -> None:
        if self.write_enabled:
            write_json(self.path, self.data)
