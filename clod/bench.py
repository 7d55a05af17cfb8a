"""Model cost and speed benchmark: ``python -m clod.bench [hydra overrides]``.

Prints one JSON object on stdout: parameter counts, forward FLOPs and conv MACs per image,
the matrix-multiply throughput of this machine, and for inference and for every
benchmarked strategy the median images/s, the peak RSS and the achieved fraction of the
matmul throughput. Examples::

    python -m clod.bench
    python -m clod.bench model=nanodet_plus_m_1.5x batch_size=8 steps=5
    python -m clod.bench model=nanodet_tiny input_size=[128,128] threads=1
    python -m clod.bench hardware=gpu  # one CUDA device, bf16 autocast
    python -m clod.bench strategies=[sid,erd,ilyolox] images=synthetic weights=RUN/checkpoints/task_0.pt

How the numbers are taken (the code is in :mod:`clod.benchmarking`):

* FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the plain
  (un-fused) model, with a group-aware formula for ``convolution_backward`` (torch's
  default counts a depthwise weight gradient as a dense one; its figure is reported as
  ``train_flops_per_image_torch_default``). See :mod:`clod.metrics.flops`.
* Inference is timed on the BN-folded copy (:meth:`Detector.fused`), which does the same
  convolutions with fewer memory passes; it covers the network forward (the raw head
  output), not score thresholding and NMS.
* On the CPU the exported float32 graph (what ``clod.export`` writes) is timed in
  onnxruntime as well, against the same reference: the ``onnx_infer_*`` figures
  (:mod:`clod.benchmarking.onnx_inference`; ``onnx_inference=false`` skips it).
* One matmul sample (fp32 on the CPU) is taken right before every timed step, and each
  fraction divides the median achieved FLOP/s by the median matmul FLOP/s of the same
  window (:mod:`clod.benchmarking.timing`).
* ``hardware=gpu`` runs on the first CUDA device, under autocast for a mixed
  ``hardware.precision`` (:mod:`clod.benchmarking.device`); the default is the CPU.

Strategies (:mod:`clod.benchmarking.rows`): each row is the strategy's own training step
(``CLODModule.training_losses``, as ``clod.train`` runs it) at the second task of a
scenario that adds the last class. ``strategy=<name>`` selects one from the
``conf/strategy`` group, ``strategies=[a,b]`` gives one row each, and with neither the row
is ``naive``.

GOMP_SPINCOUNT: importing ``clod`` (clod/__init__.py, which runs before this module and
before anything imports torch) sets it to 1000 unless the environment already has one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from clod.benchmarking.inputs import synthetic_batch
from clod.benchmarking.rows import CONFIG_DIR, bench_strategy, strategy_rows
from clod.benchmarking.run import run_benchmark
from clod.errors import EXIT_USER_ERROR, ClodError
from clod.metrics.flops import flop_counter, train_step_flops
from clod.models.weights import WeightLoadError

# Re-exported: `from clod import bench; bench.flop_counter()` etc. (tests, notebooks).
__all__ = [
    "bench_strategy",
    "flop_counter",
    "load_config",
    "main",
    "run_benchmark",
    "strategy_rows",
    "synthetic_batch",
    "train_step_flops",
]


def load_config(overrides: Sequence[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="bench", overrides=list(overrides), return_hydra_config=True)
    model_name = OmegaConf.select(cfg, "hydra.runtime.choices.model")
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.model_name = model_name
    return cfg


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    cfg = load_config(sys.argv[1:] if argv is None else argv)
    result = run_benchmark(cfg)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    try:
        main()
    except (ClodError, FileNotFoundError, WeightLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
