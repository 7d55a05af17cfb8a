"""Markdown table of final results per scenario and strategy, from a sweep directory.

    python scripts/strategy_table.py outputs/multirun/strategy_table

Reads every ``*/summary.json`` below the directory (a joint run is listed under every
scenario, since it trains on all classes at once). A stand-in until ``clod.report``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ["naive", "replay", "lwf", "sid", "latent", "joint"]


def main(sweep: Path) -> None:
    summaries = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    if not summaries:
        sys.exit(f"error: no */summary.json under {sweep}")
    joint = [s for s in summaries if s["strategy"] == "joint"]
    scenarios = sorted({s["scenario"] for s in summaries if s["strategy"] != "joint"})
    for scenario in scenarios:
        rows = [s for s in summaries if s["scenario"] == scenario and s["strategy"] != "joint"]
        rows = sorted(rows, key=lambda s: ORDER.index(s["strategy"])) + joint
        print(f"\n**{scenario}** (after the last task; mAP = COCO AP@[.5:.95])\n")
        print(
            "| strategy | mAP50 all | mAP all | mAP50 old | mAP50 new | params held | trainable | buffer images | train time (s) |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for s in rows:
            old = s["final_old"]["map50"]
            memory = s["memory"]
            print(
                f"| {s['strategy']} | {s['final']['map50']:.3f} | {s['final']['map']:.3f} | "
                f"{'-' if old is None else f'{old:.3f}'} | {s['final_new']['map50']:.3f} | "
                f"{memory['params_held']:,} | {memory['params_trainable']:,} | "
                f"{memory.get('buffer_images', 0)} | {s['time']['train_s']:.0f} |"
            )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/multirun/strategy_table"))
