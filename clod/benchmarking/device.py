"""Where the bench runs and in which precision, from its ``hardware`` config (conf/hardware).

``hardware.accelerator`` ``cpu`` runs everything on the CPU in float32 (the default, and
the path every CPU figure in the README comes from). ``gpu`` (or ``cuda``) runs the model,
the batch and the matmul reference on the first CUDA device; ``hardware.precision``
``bf16-mixed`` or ``16-mixed`` then runs the forward passes under autocast, as Lightning's
mixed precision does in ``clod.train``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch

# Lightning precision names -> autocast dtype; full precision has no entry.
AUTOCAST_DTYPES = {
    "bf16-mixed": torch.bfloat16,
    "bf16": torch.bfloat16,
    "16-mixed": torch.float16,
    "16": torch.float16,
}
FULL_PRECISION = ("32-true", "32")


def bench_device(hardware: Mapping[str, Any] | None) -> torch.device:
    """``cpu`` or ``cuda`` from ``hardware.accelerator`` (no hardware config: cpu)."""
    accelerator = str((hardware or {}).get("accelerator", "cpu"))
    if accelerator == "cpu":
        return torch.device("cpu")
    if accelerator not in ("gpu", "cuda"):
        raise ValueError(f"the bench runs on hardware.accelerator cpu or gpu, not {accelerator!r}")
    if not torch.cuda.is_available():
        raise RuntimeError("hardware.accelerator=gpu but torch sees no CUDA device")
    return torch.device("cuda", torch.cuda.current_device())


def autocast_dtype(hardware: Mapping[str, Any] | None) -> torch.dtype | None:
    """The autocast dtype of ``hardware.precision``; None for full float32."""
    precision = str((hardware or {}).get("precision", "32-true"))
    if precision in FULL_PRECISION:
        return None
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(
            f"the bench supports precision {[*FULL_PRECISION, *AUTOCAST_DTYPES]}, not {precision!r}"
        )
    return AUTOCAST_DTYPES[precision]


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[object]:
    """Mixed precision on ``device`` in ``dtype``; no-op for None (float32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA runs asynchronously; CPU: nothing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
