"""scripts/gpu_check.sh: on a machine without CUDA it stops at once with one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="would run the whole GPU check")
def test_gpu_check_fails_clearly_without_cuda(tmp_path: Path) -> None:
    out = tmp_path / "logs"
    done = subprocess.run(
        ["bash", str(SCRIPT)],
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("gpu_check: no CUDA device")
    assert not out.exists()  # nothing was run
