"""The base-model cache: every strategy starts task 1 from the same task-0 model.

In the paper every method continues from one base model. Task 0 trains identically under
every strategy whose task 0 is plain training (naive, replay, LwF, SID, Latent
Distillation with ``freeze_from_task: 1``), so a sweep over strategies needs to train
task 0 only once. The first run to finish task 0 publishes its weights under
``base_cache.dir/<key>``; a later run whose key matches loads them instead of training.

The key is a hash of everything that changes task 0's trained weights:

- the resolved configuration without the keys that cannot change them: where and how
  the run is logged (the run state's neutral keys), the evaluation (``eval``,
  ``data.test``, ``data.eval_batch_size``), the later tasks (``scenario`` and
  ``trainer.incremental_epochs``) and the strategy's own settings;
- instead of ``scenario``: the first task's classes and the ids of its training images
  (so changed data on disk is a different key), and its number of epochs (whichever
  key set it);
- instead of ``strategy``: what the strategy says makes its task 0 differ from plain
  training (:meth:`Strategy.base_training_signature`; None: the cache is not used);
- the hardware keys that change the arithmetic: accelerator, precision, devices and nodes
  (the global batch), channels-last.

- a digest of clod's own source files, so a base model trained by other code is never
  reused (a stale cache would silently change every strategy's starting point).

Publishing is atomic: the files are written to a temporary directory that is then renamed
to ``<key>``. When two jobs race, the rename of the second fails; it discards its own
copy and uses the winner's, so every run of a sweep continues from the same weights.
Under DDP, rank 0 publishes and every rank then continues from the published entry.
Each rank looks the entry up on its own before task 0, so a job of another sweep
publishing at that very moment could make ranks disagree: start multi-process jobs
with the entry already there (or the cache off) when several sweeps share a cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clod.data.tasks import Task
from clod.strategies.base import Strategy
from clod.utils.checkpoints import load_plain
from clod.utils.io import publish_directory, read_json, save_torch, write_json
from clod.utils.run_config import result_config

log = logging.getLogger(__name__)

CACHE_VERSION = 1
WEIGHTS_FILE = "detector.pt"
META_FILE = "meta.json"

# Result-config keys (flattened) that cannot change task 0's weights.
IGNORED_PREFIXES = (
    "eval.",
    "data.test.",
    "scenario.",
    "strategy.",
    "base_cache.",
)
IGNORED_KEYS = frozenset({"data.eval_batch_size", "trainer.incremental_epochs"})
HARDWARE_KEYS = ("accelerator", "precision", "devices", "num_nodes", "channels_last")


def base_task_material(
    resolved: Mapping[str, Any], first_task: Task, epochs: int, signature: Mapping[str, Any]
) -> dict[str, Any]:
    """Everything the cache key hashes (also stored next to the weights, for inspection)."""
    config = {
        key: value
        for key, value in result_config(resolved).items()
        if key not in IGNORED_KEYS and not key.startswith(IGNORED_PREFIXES)
    }
    # The Trainer's own copies win: `trainer.precision=...` overrides what the preset says.
    hardware = {**(resolved.get("hardware") or {}), **(resolved.get("trainer") or {})}
    images = hashlib.sha256(
        "\n".join(f"{r.image_id}:{r.num_boxes}" for r in first_task.train).encode()
    ).hexdigest()
    return {
        "version": CACHE_VERSION,
        "code": code_digest(),
        "config": config,
        "hardware": {key: hardware.get(key) for key in HARDWARE_KEYS},
        "first_task": {
            "classes": list(first_task.new),
            "class_names": [first_task.class_names[c] for c in first_task.new],
            "num_classes": len(first_task.class_names),
            "train_images": len(first_task.train),
            "train_image_digest": images,
            "epochs": int(epochs),
        },
        "strategy": dict(signature),
    }


def code_digest() -> str:
    """SHA-256 over clod's Python sources (paths and contents), in a fixed order."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_key(material: Mapping[str, Any]) -> str:
    text = json.dumps(material, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class CachedBase:
    """A published task-0 model: its weights (Detector layout) and what produced it."""

    weights: dict[str, torch.Tensor]
    meta: dict[str, Any]


class BaseModelCache:
    """One cache entry: ``root/<key>`` holding ``detector.pt`` and ``meta.json``."""

    def __init__(self, root: Path, material: Mapping[str, Any]) -> None:
        self.root = Path(root)
        self.material = dict(material)
        self.key = cache_key(material)
        self.path = self.root / self.key

    @classmethod
    def for_run(
        cls, resolved: Mapping[str, Any], strategy: Strategy, first_task: Task, epochs: int
    ) -> BaseModelCache | None:
        """The run's cache entry, or None when the cache is off or the strategy opts out."""
        settings = resolved.get("base_cache") or {}
        if not settings.get("enabled", False) or not settings.get("dir"):
            return None
        signature = strategy.base_training_signature()
        if signature is None:
            return None
        material = base_task_material(resolved, first_task, epochs, signature)
        return cls(Path(settings["dir"]), material)

    def load(self) -> CachedBase | None:
        """The published model, or None. A published entry is always complete (atomic rename)."""
        weights_path = self.path / WEIGHTS_FILE
        if not weights_path.is_file():
            return None
        weights = load_plain(weights_path)  # shared between runs and users: never unpickled
        return CachedBase(weights=weights, meta=read_json(self.path / META_FILE))

    def publish(self, weights: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> bool:
        """Publish this run's task-0 model; False when another run published first (or on error)."""

        def fill(staging: Path) -> None:
            save_torch(staging / WEIGHTS_FILE, {k: v.detach().cpu() for k, v in weights.items()})
            record = {
                **meta,
                "key": self.key,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "material": self.material,
            }
            write_json(staging / META_FILE, record)

        try:
            # atomic; any entry already at the key (another run's) wins
            return publish_directory(self.path, fill)
        except OSError as error:
            if not self.path.exists():
                log.warning("could not publish the base model to %s: %s", self.path, error)
            return False
