"""Per-box repairs shared by the dataset readers.

Recoverable per-box problems are repaired, never silently: a box that extends beyond
its image is clipped to it, and a box with zero or negative size (before or after
clipping) is dropped. Every repair is counted and the reader logs one warning with
the counts and the first few places, so a user can find them. With
``on_bad_box="error"`` the first such box raises :class:`~clod.errors.DataError`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from clod.errors import DataError

log = logging.getLogger(__name__)

BadBoxPolicy = Literal["repair", "error"]
_EXAMPLES_KEPT = 3


@dataclass
class BoxRepairs:
    """Counts of repaired boxes for one reader call, with a few examples each."""

    source: str
    policy: BadBoxPolicy = "repair"
    clipped: int = 0
    dropped: int = 0
    clipped_examples: list[str] = field(default_factory=list)
    dropped_examples: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.policy not in ("repair", "error"):
            raise DataError(f"data.on_bad_box must be 'repair' or 'error', got {self.policy!r}")

    def sanitize(
        self, boxes: np.ndarray, width: int, height: int, where: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Clip ``boxes`` (n, 4 xyxy) to the image; return (clipped boxes, keep mask).

        ``where`` names the file (and object) for messages.
        """
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return boxes, np.zeros(0, dtype=bool)
        if not np.isfinite(boxes).all():
            raise DataError(f"{where}: box coordinates are not finite numbers: {boxes.tolist()}")
        limits = np.array([width, height, width, height], dtype=np.float32)
        clipped = np.clip(boxes, 0.0, limits)
        keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        changed = (np.abs(clipped - boxes) > 0).any(axis=1) & keep
        for i in np.flatnonzero(~keep):
            self._record("dropped", f"{where} object {i} box {boxes[i].tolist()}")
        for i in np.flatnonzero(changed):
            self._record("clipped", f"{where} object {i} box {boxes[i].tolist()}")
        return clipped, keep

    def _record(self, kind: str, example: str) -> None:
        if self.policy == "error":
            what = (
                "has zero or negative size, or lies outside the image"
                if kind == "dropped"
                else "extends beyond the image"
            )
            raise DataError(f"{example} {what} (data.on_bad_box=error)")
        setattr(self, kind, getattr(self, kind) + 1)
        examples = getattr(self, f"{kind}_examples")
        if len(examples) < _EXAMPLES_KEPT:
            examples.append(example)

    def report(self) -> str | None:
        """One warning line, or None when nothing was repaired. Also logs it."""
        if not (self.clipped or self.dropped):
            return None
        parts = []
        if self.clipped:
            parts.append(
                f"clipped {self.clipped} box(es) extending beyond their image "
                f"(e.g. {'; '.join(self.clipped_examples)})"
            )
        if self.dropped:
            parts.append(
                f"dropped {self.dropped} box(es) with zero or negative size inside the image "
                f"(e.g. {'; '.join(self.dropped_examples)})"
            )
        message = f"{self.source}: " + " and ".join(parts)
        log.warning(message)
        return message
