"""Deployment: a trained task model as ONNX fp32 and int8 files, and what they cost and lose.

- :mod:`~clod.deploy.onnx_graph`: export of the fused detector, metadata, compact names.
- :mod:`~clod.deploy.quantize`: static int8 post-training quantisation with onnxruntime.
- :mod:`~clod.deploy.memory`: sizes of the weights and the peak activation memory of a graph.
- :mod:`~clod.deploy.runtime`: an exported file as a raw-output model (evaluation, timing).
- :mod:`~clod.deploy.report`: the export report of ``python -m clod.export``.

Needs the optional ``clod[export]`` packages (onnx, onnxruntime); docs/deployment.md.
"""

from __future__ import annotations

from clod.errors import ConfigError


def require_export_packages() -> None:
    """A clear error when ``onnx``/``onnxruntime`` are missing (they are an optional extra)."""
    missing = []
    for name in ("onnx", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(
            f"exporting and running ONNX models needs {' and '.join(missing)}: "
            f"pip install 'clod[export]' (or make install)"
        )
