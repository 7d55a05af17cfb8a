"""clod: continual-learning object detection experiments (Hydra, Lightning, NanoDet-Plus)."""

from __future__ import annotations

import os

# OpenMP's default spin-wait collapses throughput when data workers or other processes
# share the cores (measured with clod.bench: training fraction 0.22 -> 0.36 on a loaded
# 2-core machine); a short spin costs 2-5% when idle. It only takes effect if set before
# torch loads libgomp, which is why it lives here, before any clod module imports torch.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

__version__ = "0.1.0"
