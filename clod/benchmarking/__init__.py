"""The parts of ``python -m clod.bench`` (clod/bench.py), one job each.

- :mod:`~clod.benchmarking.device`: where the bench runs (CPU or one GPU) and in which precision.
- :mod:`~clod.benchmarking.timing`: the interleaved timing harness, the matmul reference
  and the peak RSS.
- :mod:`~clod.metrics.flops`: FLOP and conv-MAC counting (also used by
  :mod:`clod.engine.cost`).
- :mod:`~clod.benchmarking.inputs`: the synthetic batch.
- :mod:`~clod.benchmarking.rows`: the inference row and one row per strategy.
- :mod:`~clod.benchmarking.run`: a whole benchmark from a config, as one JSON-ready dict.

device, timing, flops and inputs sit below the engine and never import ``clod.engine`` or
``clod.strategies``; rows and run are entry-point code and use the engine's CLODModule.
This file imports nothing, so that the engine can import the FLOP counter alone.
"""
