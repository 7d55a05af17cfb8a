"""Optional: the report as a Weights & Biases run next to the sweep's own runs.

One run of job type ``report`` in the sweep's group (the sweep directory's name, as the
training runs of the sweep use), holding the runs table as a ``wandb.Table`` and each
figure as a ``wandb.Image``. Offline unless credentials are configured; ``WANDB_MODE``
in the environment wins, as it does for training runs.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clod.reporting.tables import COLUMNS


def wandb_mode() -> str:
    from clod.utils.wandb_auth import wandb_credentials_configured

    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if wandb_credentials_configured() else "offline"


def log_report(
    sweep_dir: Path,
    rows: Sequence[Mapping[str, Any]],
    images: Mapping[str, Path],
    save_dir: Path,
    project: str = "clod",
    entity: str | None = None,
) -> Path:
    """Log the table and the PNGs; return the W&B run's local directory.

    ``save_dir``: where the run's files go unless ``WANDB_DIR`` says otherwise.
    """
    import wandb

    group = sweep_dir.resolve().name
    statuses = Counter(str(row["status"]) for row in rows)
    run = wandb.init(
        project=project,
        entity=entity,
        name=f"report-{group}",
        group=group,
        job_type="report",
        dir=os.environ.get("WANDB_DIR") or str(save_dir),
        mode=wandb_mode(),  # type: ignore[arg-type]
        config={"sweep_dir": str(sweep_dir), "runs": len(rows), "statuses": dict(statuses)},
    )
    try:
        # A column mixes numbers and blanks (unfinished runs), and text such as "oops".
        table = wandb.Table(
            columns=list(COLUMNS),
            data=[[row.get(column) for column in COLUMNS] for row in rows],
            allow_mixed_types=True,
        )
        run.log(
            {
                "report/runs": table,
                **{f"report/{n}": wandb.Image(str(p)) for n, p in images.items()},
            }
        )
        run.summary["runs/total"] = len(rows)
        for status, count in statuses.items():
            run.summary[f"runs/{status}"] = count
        finished = [row for row in rows if row.get("map50") is not None]
        if finished:
            best = max(finished, key=lambda row: float(row["map50"]))
            run.summary["best/map50"] = best["map50"]
            run.summary["best/run"] = best["run"]
        run_dir = Path(run.dir).parent  # run.dir is the run's files/ folder
    finally:
        run.finish()
    return run_dir
