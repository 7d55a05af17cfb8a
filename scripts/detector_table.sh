#!/usr/bin/env bash
# Reproduces the README's strategy × detector table: naive, replay, lwf, sid, latent, erd and
# ilyolox on 15p1 of the embedded benchmark with NanoDet-Plus-m and YOLOX-Nano
# (conf/sweep/detectors.yaml; about 40 minutes per model on 2 CPU cores), the joint upper
# bound of each model, then the report (one row per run, Ω against the joint run of the
# same model).
#   [MODELS=nanodet_plus_m,yolox_nano] bash scripts/detector_table.sh [SWEEP_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
sweep=${1:-outputs/multirun/detector_table}
models=${MODELS:-nanodet_plus_m,yolox_nano}
python -m clod.train -m sweep=detectors model="$models" hydra.sweep.dir="$sweep" \
  trainer.enable_progress_bar=false
for model in ${models//,/ }; do
  python -m clod.train strategy=joint scenario=15p1 model="$model" \
    hydra.run.dir="$sweep/joint_$model" trainer.enable_progress_bar=false
done
python -m clod.report "$sweep"
