"""Generating a dataset into a directory, serially or in worker processes, and verifying it.

Each image is rendered from its own seed, so the output is byte-identical for any number
of workers; only the order of the records has to be restored.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2

from clod.data.synthetic.spec import (
    GENERATOR_VERSION,
    SPLITS,
    SyntheticSpec,
    class_appearances,
)
from clod.data.synthetic.writers import (
    _coco_json,
    _content_hash,
    _generate_one,
    _sha256,
    _split_statistics,
    _write_bytes,
    coco_category_id,
)

_AUTO_PARALLEL_MIN_IMAGES = 256  # below this, process start-up costs more than it saves


def _run_worker(job_file: str, record_file: str) -> None:
    """Entry point of a worker process: render the listed images, save their records."""
    cv2.setNumThreads(1)  # the parallelism is across processes
    task = json.loads(Path(job_file).read_text())
    spec, out_dir = SyntheticSpec(**task["spec"]), Path(task["out_dir"])
    records = [_generate_one(spec, out_dir, tuple(job)) for job in task["jobs"]]
    Path(record_file).write_text(json.dumps(records))


def _generate_in_subprocesses(
    spec: SyntheticSpec, out_dir: Path, jobs: list[tuple[str, int, int]], workers: int
) -> list[dict[str, Any]]:
    """Share the images among fresh interpreter processes.

    Plain subprocesses rather than multiprocessing: fork is unsafe under the threads a
    caller may hold (torch, cv2), and spawn re-runs the caller's main module, which fails
    for stdin scripts and costs a torch import in a training script.
    """
    package_parent = str(Path(__file__).resolve().parents[3])  # the directory above clod/
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    code = (
        "import sys; from clod.data.synthetic.generate import _run_worker; "
        "_run_worker(*sys.argv[1:])"
    )
    with tempfile.TemporaryDirectory(prefix="clod-synthetic-") as scratch:
        processes, record_files = [], []
        for worker in range(workers):
            # interleaved shares balance the load; records are put back in order below
            job_file = Path(scratch) / f"jobs-{worker}.json"
            record_file = Path(scratch) / f"records-{worker}.json"
            task = {"spec": spec.as_dict(), "out_dir": str(out_dir), "jobs": jobs[worker::workers]}
            job_file.write_text(json.dumps(task))
            command = [sys.executable, "-c", code, str(job_file), str(record_file)]
            processes.append(subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL))
            record_files.append(record_file)
        try:
            failed = [p.args for p in processes if p.wait() != 0]
        except BaseException:
            # e.g. Ctrl-C: do not leave workers writing into a directory about to vanish
            for process in processes:
                process.kill()
            raise
        if failed:
            raise RuntimeError(f"synthetic data worker failed: {failed[0]}")
        records = [r for f in record_files for r in json.loads(f.read_text())]
    return sorted(records, key=lambda record: record["number"])


def _auto_workers(total_images: int) -> int:
    if total_images < _AUTO_PARALLEL_MIN_IMAGES:
        return 1
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(available or 1, 8))


def generate_synthetic(
    out_dir: Path, spec: SyntheticSpec, workers: int | None = None
) -> dict[str, Any]:
    """Write the dataset described by ``spec`` into ``out_dir`` (new or empty) directly.

    Prefer :func:`ensure_synthetic`, which caches and publishes atomically. Returns the
    manifest. The output is byte-identical for any ``workers`` (``None``: automatic).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty")
    voc = out_dir / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    (out_dir / "annotations").mkdir()

    # image numbers run over both splits, so ids are unique in the shared JPEGImages
    jobs = []
    for split in SPLITS:
        for index in range(spec.num_images(split)):
            jobs.append((split, index, len(jobs) + 1))
    workers = _auto_workers(len(jobs)) if workers is None else max(1, int(workers))
    if workers == 1:
        records = [_generate_one(spec, out_dir, job) for job in jobs]
    else:
        records = _generate_in_subprocesses(spec, out_dir, jobs, workers)

    digests: dict[str, str] = {}
    splits: dict[str, Any] = {}
    for split in SPLITS:
        split_records = [r for r in records if r["split"] == split]
        for record in split_records:
            digests.update(record["digests"])
        image_set = "".join(f"{r['image_id']}\n" for r in split_records).encode()
        coco = _coco_json(spec, split_records).encode()
        digests[f"VOC2007/ImageSets/Main/{split}.txt"] = _write_bytes(
            voc / "ImageSets" / "Main" / f"{split}.txt", image_set
        )
        digests[f"annotations/instances_{split}.json"] = _write_bytes(
            out_dir / "annotations" / f"instances_{split}.json", coco
        )
        splits[split] = _split_statistics(spec, split_records)

    manifest = {
        "generator": "clod.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "cache_key": spec.cache_key,
        "spec": spec.as_dict(),
        "categories": [
            {
                "label": label,
                "name": name,
                "coco_id": coco_category_id(label, spec.class_names),
                **asdict(class_appearances(spec.class_names)[name]),
            }
            for label, name in enumerate(spec.class_names)
        ],
        "splits": splits,
        "content_hash": _content_hash(digests),
        "complete": True,
    }
    # written last: its presence marks a finished dataset
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def verify_synthetic(root: Path) -> bool:
    """Re-hash every file and compare with the manifest's content hash."""
    root = Path(root)
    manifest = json.loads((root / "manifest.json").read_text())
    digests = {
        path.relative_to(root).as_posix(): _sha256(path.read_bytes())
        for path in root.rglob("*")
        if path.is_file() and path.name != "manifest.json"
    }
    return _content_hash(digests) == manifest["content_hash"]
