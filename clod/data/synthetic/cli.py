"""``python -m clod.data.synthetic``: generate (or reuse) a preset, print its statistics."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from clod.data.synthetic.cache import ensure_synthetic, load_manifest
from clod.data.synthetic.preview import render_preview
from clod.data.synthetic.spec import PRESETS, SPLITS, synthetic_preset


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clod.data.synthetic",
        description="Generate (or reuse) clod's synthetic detection benchmark.",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="data directory (parent of the dataset root)"
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="synthetic")
    parser.add_argument("--seed", type=int, default=None, help="override the preset's seed")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: automatic)")
    parser.add_argument("--preview", type=Path, default=None, help="save a contact sheet PNG here")
    parser.add_argument("--preview-split", choices=SPLITS, default="trainval")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)

    overrides = {} if args.seed is None else {"seed": args.seed}
    spec = synthetic_preset(args.preset, **overrides)
    start = time.perf_counter()
    root = ensure_synthetic(args.out, spec, workers=args.workers)
    elapsed = time.perf_counter() - start
    manifest = load_manifest(root)
    assert manifest is not None
    print(f"root: {root}")
    for split in SPLITS:
        stats = manifest["splits"][split]
        print(
            f"{split}: {stats['images']} images, {stats['boxes']} boxes, "
            f"{stats['difficult_boxes']} difficult, {stats['truncated_boxes']} truncated"
        )
        per_class = ", ".join(f"{k} {v}" for k, v in stats["images_per_class"].items())
        print(f"  images per class: {per_class}")
    print(f"time: {elapsed:.2f} s")
    if args.preview is not None:
        print(f"preview: {render_preview(root, args.preview, split=args.preview_split)}")
    return 0
