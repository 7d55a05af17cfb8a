#!/usr/bin/env bash
# The second seed's COCO-style table on data=synthetic80: the strategy sweep (sweep=coco_table),
# the all-class joint upper bound, the cumulative joint of 40+10x4 (a model per step), then
# the report with final mAP, Ω and RelGap against them, and mAP50 per step.
#   bash scripts/coco_table.sh [SWEEP_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
sweep=${1:-outputs/multirun/coco_table}
common=(data=synthetic80 trainer.enable_progress_bar=false)
python -m clod.train -m sweep=coco_table hydra.sweep.dir="$sweep" trainer.enable_progress_bar=false
python -m clod.train "${common[@]}" strategy=joint scenario=40p40 hydra.run.dir="$sweep/joint"
python -m clod.train "${common[@]}" strategy=joint strategy.cumulative=true scenario=40p10 \
  hydra.run.dir="$sweep/joint_cumulative_40p10"
python -m clod.report "$sweep"
