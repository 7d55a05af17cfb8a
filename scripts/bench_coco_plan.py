"""Planning a COCO scenario at COCO's size: the time and memory of ``clod.train dry_run=true``.

    python scripts/bench_coco_plan.py [--train-images 118287] [--boxes 658000]
        [--scenario 40p40] [--rounds 3] [--root DIR] [--out FILE]

Writes a COCO 2017-sized tree in the real layout (``annotations/instances_{train,val}2017.json``
with COCO's 80 categories and their non-contiguous ids, and an empty file for every image,
since the reader checks that each referenced image exists), then runs the command a user runs
to see the plan, ``python -m clod.train data=coco data.root=DIR scenario=... dry_run=true``,
``--rounds`` times, each in a fresh process. Prints (and writes with ``--out``) one JSON
object: the median wall seconds and the largest peak resident memory of those processes, the
same for ``python -c "import clod.train"`` (the start-up every command pays), and the plan
the dry run printed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from clod.data.classes import COCO_CATEGORY_IDS, COCO_CLASSES

REPO = Path(__file__).resolve().parents[1]


def write_split(root: Path, split: str, images: int, boxes: int, seed: int) -> None:
    """``images`` images of COCO's size range and ``boxes`` boxes spread over them."""
    rng = np.random.default_rng(seed)
    image_dir = root / f"{split}2017"
    image_dir.mkdir(parents=True, exist_ok=True)
    widths = rng.integers(320, 641, images)
    heights = rng.integers(240, 481, images)
    ids = np.sort(rng.choice(10 * images, images, replace=False)) + 1  # sparse, like COCO's
    names = [f"{int(i):012d}.jpg" for i in ids]
    for name in names:
        (image_dir / name).touch()
    owner = rng.integers(0, images, boxes)
    x = rng.uniform(0, 0.9, boxes) * widths[owner]
    y = rng.uniform(0, 0.9, boxes) * heights[owner]
    w = np.minimum(rng.uniform(0.02, 0.5, boxes) * widths[owner], widths[owner] - x)
    h = np.minimum(rng.uniform(0.02, 0.5, boxes) * heights[owner], heights[owner] - y)
    categories = np.asarray(COCO_CATEGORY_IDS)[rng.integers(0, len(COCO_CLASSES), boxes)]
    crowd = rng.random(boxes) < 0.01
    document = {
        "images": [
            {"id": int(i), "file_name": n, "width": int(wd), "height": int(ht)}
            for i, n, wd, ht in zip(ids, names, widths, heights, strict=True)
        ],
        "annotations": [
            {
                "id": k + 1,
                "image_id": int(ids[o]),
                "category_id": int(cat),
                "bbox": [round(float(v), 2) for v in box],
                "area": round(float(box[2] * box[3]), 2),
                "iscrowd": int(z),
            }
            for k, (o, cat, box, z) in enumerate(
                zip(owner, categories, np.stack([x, y, w, h], axis=1), crowd, strict=True)
            )
        ],
        "categories": [
            {"id": int(c), "name": n} for c, n in zip(COCO_CATEGORY_IDS, COCO_CLASSES, strict=True)
        ],
    }
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(document))


def timed_process(command: list[str]) -> dict[str, Any]:
    """Wall seconds, peak RSS (MB, from the child's own rusage) and stdout of ``command``."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            raise SystemExit(
                f"{' '.join(command)} failed ({child.returncode}):\n{err.read()[-3000:]}"
            )
        return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "stdout": out.read()}


def median_run(command: list[str], rounds: int) -> dict[str, Any]:
    runs = [timed_process(command) for _ in range(rounds)]
    return {
        "seconds_median": statistics.median(r["seconds"] for r in runs),
        "seconds": [round(r["seconds"], 2) for r in runs],
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
        "stdout": runs[-1]["stdout"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-images", type=int, default=118_287)
    parser.add_argument("--val-images", type=int, default=5_000)
    parser.add_argument("--boxes", type=int, default=658_000, help="training boxes")
    parser.add_argument("--scenario", default="40p40")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", type=Path, help="keep the generated tree here")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        root = args.root or Path(scratch) / "coco"
        start = time.perf_counter()
        val_boxes = round(args.boxes * args.val_images / args.train_images)
        # In a child process: the timed commands are forked from this one, and a forked
        # child's peak RSS counts the parent's pages until it execs, so this one stays small.
        spawn = multiprocessing.get_context("spawn")
        for split, images, boxes, seed in (
            ("train", args.train_images, args.boxes, 0),
            ("val", args.val_images, val_boxes, 1),
        ):
            writer = spawn.Process(target=write_split, args=(root, split, images, boxes, seed))
            writer.start()
            writer.join()
            if writer.exitcode != 0:
                raise SystemExit(f"writing the {split} split failed ({writer.exitcode})")
        generate_s = time.perf_counter() - start
        startup = median_run([sys.executable, "-c", "import clod.train"], args.rounds)
        plan = median_run(
            [sys.executable, "-m", "clod.train", "data=coco", f"data.root={root}",
             f"scenario={args.scenario}", "dry_run=true", f"hydra.run.dir={root}/run"],
            args.rounds,
        )  # fmt: skip
    result = {
        "train_images": args.train_images,
        "train_boxes": args.boxes,
        "val_images": args.val_images,
        "val_boxes": val_boxes,
        "scenario": args.scenario,
        "generate_s": round(generate_s, 1),
        "startup_s": round(startup["seconds_median"], 2),
        "startup_peak_rss_mb": startup["peak_rss_mb"],
        "plan_s": round(plan["seconds_median"], 2),
        "plan_runs_s": plan["seconds"],
        "plan_peak_rss_mb": plan["peak_rss_mb"],
        "plan": plan["stdout"].strip().splitlines()[-4:],
        "cpus": os.cpu_count(),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
