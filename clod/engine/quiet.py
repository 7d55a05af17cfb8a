"""Lightning's messages that clod expects, silenced once for every Trainer of a run.

Each is said at every task (a Trainer per task) and none tells the user anything wrong;
warnings and errors that could matter still show.
"""

from __future__ import annotations

import logging
import warnings

# Lightning announces accelerators and tips at INFO on every Trainer; clod prints its own
# per-task banner instead.
for _name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# ... except what a user asked for: a profiler's report (`debug=profiler`) comes at INFO.
logging.getLogger("lightning.pytorch.profilers").setLevel(logging.INFO)

EXPECTED_WARNINGS = (
    # Evaluation runs through trainer.validate with its own loader, after fitting.
    ".*defined a `validation_step` but have no `val_dataloader`.*",
    ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",
    # Under DDP the evaluation metric gathers every rank's rows and keeps each image once
    # (DetectionMetric), so the padded DistributedSampler and rank-0 logging are correct.
    ".*it is recommended to use `Trainer\\(devices=1.*",
    ".*when logging on epoch level in distributed setting.*",
    # On a SLURM login node (or the test cluster's machine) Lightning would advise srun;
    # clod's cluster path is hardware=slurm*, where submitit starts the tasks with srun.
    ".*The `srun` command is available on your system.*",
    # A strategy's teacher and frozen backbone are in eval mode on purpose (docs/strategies.md §0).
    ".*module\\(s\\) in eval mode at the start of training.*",
)
for _pattern in EXPECTED_WARNINGS:
    warnings.filterwarnings("ignore", message=_pattern)
