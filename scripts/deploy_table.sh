#!/usr/bin/env bash
# Reproduces the README's deployment table: the last task of a Latent Distillation 15p1
# run on the embedded benchmark (what `make train` writes), exported at its own input size
# (192²) with the graph's NMS, and at NanoDet-Plus-m's 320² (the same weights). Trains
# the run first if it is missing (about 15 minutes on 2 cores); the exports take ~2 minutes.
#   bash scripts/deploy_table.sh [RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:-outputs/train/strategy-latent_scenario-15p1}
if [ ! -f "$run/checkpoints/task_5.pt" ]; then
  python -m clod.train strategy=latent scenario=15p1 hydra.run.dir="$run" trainer.enable_progress_bar=false
fi
python -m clod.export run="$run" task=5 out="$run/export" postprocess=graph repeats=30 \
  "label=latent 15p1, embedded default" > /dev/null
python -m clod.export run="$run" task=5 out="$run/export_320" repeats=30 \
  "data.input_size=[320,320]" "label=NanoDet-Plus-m 320², same weights" > /dev/null
python - "$run/export/export.json" "$run/export_320/export.json" <<'PY'
import json, sys
from clod.deploy.table import markdown_table
print(markdown_table([json.load(open(path)) for path in sys.argv[1:]]))
PY
