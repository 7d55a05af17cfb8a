"""Which keys of a resolved run configuration determine its results.

Keys that only say where or how a run goes (paths, hardware, loggers, Hydra) may change
between attempts of one run, e.g. when SLURM requeues a job on another node; every other
key is part of the run's identity (resume refuses a change of them; the report compares them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Top-level keys that do not change a run's results.
NEUTRAL_KEYS = frozenset(
    {
        "paths",
        "hardware",
        "logger",
        "hydra",
        "dry_run",
        "tags",
        "base_cache",
        "checkpoint",
        "plots",
        "objective",  # what a search maximises, read from the results
    }
)
NEUTRAL_SUBKEYS = frozenset(
    {
        "data.num_workers",  # the order and augmentations do not depend on the workers
        "eval.upper_bound",
        "eval.coco_backend",  # two implementations of the same numbers  # what the results are compared with, not the results
        # the Trainer's copies of the hardware keys (conf/trainer/default.yaml)
        "trainer.accelerator",
        "trainer.devices",
        "trainer.num_nodes",
        "trainer.strategy",
        "trainer.precision",
        # what is shown and logged, not what is computed
        "trainer.enable_progress_bar",
        "trainer.enable_model_summary",
        "trainer.log_every_n_steps",
    }
)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: data}


def result_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The flattened part of a resolved config that determines the results."""
    flat = _flatten({k: v for k, v in cfg.items() if k not in NEUTRAL_KEYS})
    return {k: v for k, v in flat.items() if k not in NEUTRAL_SUBKEYS}
