"""Offline evaluation entry point, in two modes.

Detection files (from clod or any other tool) against COCO-format ground truth::

    python -m clod.evaluate gt=<coco_annotations.json> dets=<coco_results.json> \
        [difficult=gt|ignore] [max_det=100] [legacy_voc=false] [coco_backend=faster|pycocotools]

A run's task checkpoint on its test set (the run directory's ``config.yaml`` says
which data and scenario; extra ``key.sub=value`` pairs override it)::

    python -m clod.evaluate run=<run dir> [task=<k>] [classes=seen|all|name,name] [eval.test_images=all_images]
    python -m clod.evaluate ckpt=<run dir>/checkpoints/task_<k>.pt [classes=...]

A model exported by ``clod.export`` (fp32 or int8 ONNX), scored on the run's test set by the
same rules as its checkpoint (needs ``clod[export]``; docs/deployment.md)::

    python -m clod.evaluate model=<file.onnx> run=<run dir> [classes=...] [threads=N]

Arguments are ``key=value`` pairs (Hydra-style, without Hydra: this mode needs no config). The
last line of stdout is one JSON object (see ``clod.metrics.files.evaluate_coco_files``). On bad
arguments or a bad input file it prints a one-line error to stderr and exits with status 2, the
status clod's entry points use for user errors.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from clod.errors import EXIT_USER_ERROR
from clod.metrics.coco import COCO_BACKENDS
from clod.metrics.files import EvaluationInputError, evaluate_coco_files

USAGE = (
    "usage: python -m clod.evaluate gt=<gt.json> dets=<dets.json> [difficult=gt|ignore] "
    "[max_det=100] [legacy_voc=false] [coco_backend=faster|pycocotools]"
)
KNOWN_KEYS = ("gt", "dets", "difficult", "max_det", "legacy_voc", "coco_backend")


class ArgumentError(ValueError):
    """A command-line argument is missing, unknown or has a bad value."""


def parse_arguments(argv: Sequence[str]) -> dict[str, object]:
    """Turn ``key=value`` arguments into ``evaluate_coco_files`` keyword arguments."""
    values: dict[str, str] = {}
    for argument in argv:
        key, separator, value = argument.partition("=")
        key = key.lstrip("+")  # accept Hydra's "+key=value" spelling too
        if not separator or not key:
            raise ArgumentError(f"expected key=value, got {argument!r}")
        if key not in KNOWN_KEYS:
            raise ArgumentError(f"unknown key {key!r} (known: {', '.join(KNOWN_KEYS)})")
        values[key] = value
    missing = [key for key in ("gt", "dets") if not values.get(key)]
    if missing:
        raise ArgumentError(f"missing {' and '.join(missing)}")

    options: dict[str, object] = {"gt_json": values["gt"], "dets_json": values["dets"]}
    difficult = values.get("difficult", "gt")
    if difficult not in ("gt", "ignore"):
        raise ArgumentError(f"difficult must be gt or ignore, got {difficult!r}")
    options["difficult"] = difficult
    try:
        options["max_det"] = int(values.get("max_det", "100"))
    except ValueError as error:
        raise ArgumentError(f"max_det must be an integer, got {values['max_det']!r}") from error
    if options["max_det"] < 1:  # type: ignore[operator]
        raise ArgumentError("max_det must be positive")
    legacy = values.get("legacy_voc", "false").lower()
    if legacy not in ("true", "false", "1", "0"):
        raise ArgumentError(f"legacy_voc must be true or false, got {values['legacy_voc']!r}")
    options["legacy_voc"] = legacy in ("true", "1")
    backend = values.get("coco_backend", COCO_BACKENDS[0])
    if backend not in COCO_BACKENDS:
        raise ArgumentError(
            f"coco_backend must be one of {', '.join(COCO_BACKENDS)}, got {backend!r}"
        )
    options["coco_backend"] = backend
    return options


def evaluate_checkpoint(arguments: Sequence[str]) -> dict[str, object]:
    """The checkpoint mode: ``run=``/``ckpt=``, ``task=``, ``classes=``, config overrides."""
    from pathlib import Path

    from clod.engine.evaluation import evaluate_run_checkpoint

    values: dict[str, str] = {}
    overrides: list[str] = []
    for argument in arguments:
        key, separator, value = argument.partition("=")
        if not separator or not key:
            raise ArgumentError(f"expected key=value, got {argument!r}")
        if key in ("run", "ckpt", "task", "classes", "model", "threads"):
            values[key] = value
        elif "." in key:
            overrides.append(argument)
        else:
            raise ArgumentError(
                f"unknown key {key!r} (run, ckpt, task, classes, model, threads, or a config key "
                f"like eval.test_images)"
            )
    if "model" in values:
        if "run" not in values:
            raise ArgumentError("model= needs run=<run dir> (whose test set scores it)")
        if "task" in values or "ckpt" in values:
            raise ArgumentError("model= takes its task from the file; drop task=/ckpt=")
        threads = values.get("threads", "")
        if threads and not threads.isdigit():
            raise ArgumentError(f"threads must be a positive integer, got {threads!r}")
        from clod.deploy import require_export_packages

        require_export_packages()
        from clod.deploy.evaluation import evaluate_onnx

        return evaluate_onnx(
            values["model"],
            values["run"],
            values.get("classes", "seen"),
            overrides,
            int(threads) if threads else None,
        )
    task: int | None = None
    if "ckpt" in values:
        checkpoint = Path(values["ckpt"])
        run_dir = checkpoint.parent.parent
        stem = checkpoint.stem
        if not stem.startswith("task_") or not stem[5:].isdigit():
            raise ArgumentError(f"ckpt must be a run's checkpoints/task_<k>.pt, got {checkpoint}")
        task = int(stem[5:])
    else:
        run_dir = Path(values["run"])
    if "task" in values:
        if not values["task"].isdigit():
            raise ArgumentError(f"task must be a task index, got {values['task']!r}")
        task = int(values["task"])
    return evaluate_run_checkpoint(run_dir, task, values.get("classes", "seen"), overrides)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if any(a.startswith(("run=", "ckpt=", "model=")) for a in arguments):
        from clod.errors import ClodError

        try:
            result = evaluate_checkpoint(arguments)
        except ArgumentError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_USER_ERROR
        except ClodError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_USER_ERROR
        print(json.dumps(result))
        return 0
    try:
        options = parse_arguments(arguments)
    except ArgumentError as error:
        print(f"error: {error}. {USAGE}", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        result = evaluate_coco_files(**options)  # type: ignore[arg-type]
    except EvaluationInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
