"""The export report as a Markdown table row (``export.md``, the README's deployment table)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

COLUMNS = (
    "model",
    "params",
    "fp32 file",
    "int8 file",
    "int8 weights",
    "mAP50 PyTorch / fp32 / int8",
    "mAP PyTorch / fp32 / int8",
    "img/s b1 PyTorch / ORT fp32 / ORT int8",
    "img/s b16 PyTorch / ORT fp32 / ORT int8",
    "peak act. int8",
)


def _megabytes(count: int | None) -> str:
    return "–" if count is None else f"{count / 1e6:.3f} MB ({count / 2**20:.2f} MiB)"


def _triple(values: Sequence[float | None], precision: int) -> str:
    return " / ".join("–" if v is None else f"{v:.{precision}f}" for v in values)


def best_pytorch(speed: Mapping[str, Mapping[str, float]], batch: str) -> float | None:
    """The faster PyTorch layout (NCHW or channels-last) at ``batch``: the baseline."""
    rates = [speed[k][batch] for k in ("pytorch_nchw", "pytorch_nhwc") if batch in speed.get(k, {})]
    return max(rates) if rates else None


def export_row(report: Mapping[str, Any]) -> dict[str, str]:
    files = report.get("bytes", {})
    accuracy = report.get("accuracy", {})
    speed = report.get("images_per_s", {})
    names = ("pytorch", "onnx_fp32", "onnx_int8")

    def metric(key: str) -> str:
        return _triple([accuracy.get(n, {}).get(key) for n in names], 3)

    def rates(batch: str) -> str:
        values = [best_pytorch(speed, batch)]
        values += [speed.get(n, {}).get(batch) for n in names[1:]]
        return _triple(values, 1)

    width, height = report["input_size"]
    return {
        "model": f"{report.get('label') or report['run']} task {report['task']} ({width}×{height})",
        "params": f"{report['params']:,}",
        "fp32 file": _megabytes(files.get("onnx_fp32", {}).get("file")),
        "int8 file": _megabytes(files.get("onnx_int8", {}).get("file")),
        "int8 weights": _megabytes(files.get("onnx_int8", {}).get("int8_weights")),
        "mAP50 PyTorch / fp32 / int8": metric("map50"),
        "mAP PyTorch / fp32 / int8": metric("map"),
        "img/s b1 PyTorch / ORT fp32 / ORT int8": rates("1"),
        "img/s b16 PyTorch / ORT fp32 / ORT int8": rates("16"),
        "peak act. int8": _megabytes(report["peak_activation"]["int8"]["peak_bytes"]),
    }


def markdown_table(reports: Sequence[Mapping[str, Any]]) -> str:
    rows = [export_row(r) for r in reports]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row[c] for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)
