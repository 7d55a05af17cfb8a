"""The timing harness of ``clod.bench``: interleaved timing against a matmul reference, peak RSS.

On a shared machine the speed of both the model and the matmul reference drifts from
second to second. :func:`time_interleaved` therefore takes one matmul sample right before
every timed run, and a peak fraction divides the median achieved FLOP/s by the median
matmul FLOP/s of the same window. On a GPU every timer is read after the device has
finished its queued work (:func:`clod.benchmarking.device.synchronize`).
"""

from __future__ import annotations

import math
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from clod.benchmarking.device import synchronize


class MatmulProbe:
    """Times one ``n×n @ n×n`` product (2·n³ FLOPs) per :meth:`sample` call.

    float32 on the CPU; on a GPU in the dtype the model's convolutions run in (the
    autocast dtype, else float32), on the device the timed work runs on.
    """

    def __init__(
        self,
        size: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        generator = torch.Generator().manual_seed(0)
        self.size = size
        self.device = torch.device(device)
        self.a = torch.randn(size, size, generator=generator).to(self.device, dtype)
        self.b = torch.randn(size, size, generator=generator).to(self.device, dtype)
        self.out = torch.empty(size, size, device=self.device, dtype=dtype)
        self.samples: list[float] = []
        for _ in range(2):  # let MKL (or cuBLAS) pick its kernels and threads
            torch.mm(self.a, self.b, out=self.out)
        self.synchronize()

    def synchronize(self) -> None:
        """Wait for the work queued on the probe's device (that of the timed runs)."""
        synchronize(self.device)

    def sample(self) -> float:
        self.synchronize()
        start = time.perf_counter()
        torch.mm(self.a, self.b, out=self.out)
        self.synchronize()
        rate = 2.0 * self.size**3 / (time.perf_counter() - start)
        self.samples.append(rate)
        return rate


@dataclass
class Timing:
    seconds: float  # median time of one run
    matmul_flops_per_s: float  # median matmul rate sampled between those runs


def time_interleaved(
    run: Callable[[], object], warmup: int, repeats: int, probe: MatmulProbe
) -> Timing:
    """Median time of ``run`` after ``warmup`` calls, one matmul sample before each run.

    ``run`` works on the probe's device; each time ends when that device is done.
    """
    for _ in range(warmup):
        run()
    times, rates = [], []
    for _ in range(max(1, repeats)):
        rates.append(probe.sample())
        start = time.perf_counter()
        run()
        probe.synchronize()
        times.append(time.perf_counter() - start)
    return Timing(statistics.median(times), statistics.median(rates))


def onednn_conv_flops_per_second(size: int, repeats: int = 5) -> float:
    """The same n×n×n product as a 1×1 convolution on the CPU (oneDNN rather than MKL's sgemm).

    Reported for context only: on some CPUs (e.g. AMD with MKL) oneDNN's GEMM is markedly
    faster than ``torch.mm``, which bounds how high the peak fractions can go.
    """
    generator = torch.Generator().manual_seed(1)
    side = max(1, math.isqrt(size))
    pixels = side * side
    x = torch.randn(1, size, side, side, generator=generator).contiguous(
        memory_format=torch.channels_last
    )
    w = torch.randn(size, size, 1, 1, generator=generator)
    F.conv2d(x, w)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        F.conv2d(x, w)
        times.append(time.perf_counter() - start)
    return 2.0 * size * size * pixels / statistics.median(times)


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """Peak resident set size since the last reset (VmHWM), else since process start."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
