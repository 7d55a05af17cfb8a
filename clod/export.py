"""Export a run's task model to ONNX (fp32) and int8, and measure what deploying it costs.

    python -m clod.export run=<run dir> [task=<k>] [format=onnx|int8|all] [out=<dir>] \
        [postprocess=none|graph] \
        [calibration=minmax|entropy|percentile|distribution] [calibration_images=64] \
        [keep_float=none|output] [batches=1,16] [repeats=20] [threads=N] [evaluate=true] \
        [label=<name in the table>] [data.num_workers=0 ...]

Writes ``<out>/task_<k>.onnx``, ``<out>/task_<k>.int8.onnx`` (the head's raw output, any
batch), with ``postprocess=graph`` also ``task_<k>[.int8].post.onnx`` (decoding and NMS in
the graph, one image, detections out), and ``export.json`` and ``export.md`` (``out``
defaults to ``<run dir>/export``); prints the report as one JSON line. Dotted ``key=value`` pairs override the run's config, as in ``clod.evaluate``. Bad
input gets ``error: ...`` on stderr and exit status 2. docs/deployment.md explains the
export, the quantisation and every number of the report.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clod.errors import EXIT_USER_ERROR, ClodError

OPTION_KEYS = (
    "run",
    "task",
    "format",
    "postprocess",
    "out",
    "calibration",
    "calibration_images",
    "keep_float",
    "check_images",
    "evaluate",
    "batches",
    "repeats",
    "threads",
    "label",
)


class ArgumentError(ClodError):
    """A command-line argument is missing, unknown or has a bad value."""


def _integer(values: dict[str, str], key: str, minimum: int) -> int | None:
    if key not in values:
        return None
    text = values[key]
    if not text.lstrip("-").isdigit() or int(text) < minimum:
        raise ArgumentError(f"{key} must be an integer ≥ {minimum}, got {text!r}")
    return int(text)


def parse(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """``key=value`` options and dotted run-config overrides."""
    values: dict[str, str] = {}
    overrides: list[str] = []
    for argument in argv:
        key, separator, value = argument.partition("=")
        key = key.lstrip("+")
        if not separator or not key:
            raise ArgumentError(f"expected key=value, got {argument!r}")
        if key in OPTION_KEYS:
            values[key] = value
        elif "." in key:
            overrides.append(f"{key}={value}")
        else:
            raise ArgumentError(
                f"unknown key {key!r} (known: {', '.join(OPTION_KEYS)}, or a run config key "
                f"like data.num_workers)"
            )
    if not values.get("run"):
        raise ArgumentError("missing run=<run dir>")
    return values, overrides


def writable_directory(path: Path) -> Path:
    """``path`` created if needed; a clear error when nothing can be written there."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".clod-export-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ArgumentError(f"out={path} is not a writable directory: {error.strerror}") from None
    return path


def run_export(argv: Sequence[str]) -> dict[str, Any]:
    values, overrides = parse(argv)
    from clod.deploy import require_export_packages

    require_export_packages()
    from clod.deploy.report import ExportOptions, export_checkpoint
    from clod.engine.evaluation import load_run_checkpoint

    batches = [b for b in values.get("batches", "1,16").strip("[]").split(",") if b.strip()]
    if not all(b.strip().isdigit() and int(b) > 0 for b in batches):
        raise ArgumentError(
            f"batches must be positive integers like 1,16, got {values['batches']!r}"
        )
    evaluate = values.get("evaluate", "true").lower()
    if evaluate not in ("true", "false"):
        raise ArgumentError(f"evaluate must be true or false, got {values['evaluate']!r}")
    options = ExportOptions(
        format=values.get("format", "all"),
        postprocess=values.get("postprocess", "none"),
        calibration=values.get("calibration", "minmax"),
        calibration_images=_integer(values, "calibration_images", 1) or 64,
        keep_float=values.get("keep_float", "none"),
        check_images=_integer(values, "check_images", 1) or 16,
        evaluate=evaluate == "true",
        speed_batches=[int(b) for b in batches],
        speed_repeats=_integer(values, "repeats", 1) or 20,
        threads=_integer(values, "threads", 1),
    )
    loaded = load_run_checkpoint(Path(values["run"]), _integer(values, "task", 0), overrides)
    out = writable_directory(Path(values.get("out") or Path(values["run"]) / "export"))
    return export_checkpoint(loaded, out, options, label=values.get("label"))


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    try:
        report = run_export(arguments)
    except ClodError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
