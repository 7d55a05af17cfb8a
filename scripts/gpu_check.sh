#!/usr/bin/env bash
# The GPU check (about 5 minutes at most on one GPU): the bench on the GPU, a bf16-mixed
# smoke run, and a one-GPU DDP smoke run, each timed; then ONE JSON summary on stdout.
#   bash scripts/gpu_check.sh    # logs in $OUT if set, else in a fresh mktemp directory
# Each step's stdout and stderr go to <logs>/<step>.out and .err, and every smoke run
# writes under <logs> only (its run directory and the generated synthetic data). Exits 1
# with one line on stderr where torch sees no CUDA device, and 1 after the summary when a
# step failed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}

if ! "$python" -c 'import torch; assert torch.cuda.is_available()' >/dev/null 2>&1; then
  echo "gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing was run" >&2
  exit 1
fi

logs=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/clod_gpu_check.XXXXXX")}
mkdir -p "$logs"

# step NAME LIMIT_S CMD...: runs CMD under a time limit; "exit_status start end" to NAME.status.
step() {
  local name=$1 limit=$2 start rc=0
  shift 2
  start=$EPOCHREALTIME
  echo "gpu_check: $name ..." >&2
  timeout --kill-after=10 "$limit" "$@" >"$logs/$name.out" 2>"$logs/$name.err" || rc=$?
  echo "$rc $start $EPOCHREALTIME" >"$logs/$name.status"
  echo "gpu_check: $name exit status $rc (logs: $logs/$name.err)" >&2
}

# Shared by both smoke runs: no base-model cache, no progress bar, nothing outside $logs.
smoke=(experiment=smoke base_cache.enabled=false trainer.enable_progress_bar=false
  "paths.log_dir=$logs" "paths.data_dir=$logs/data")

step bench 150 "$python" -m clod.bench hardware=gpu "strategies=[naive,lwf,latent]" matmul_size=4096
step smoke_gpu 75 "$python" -m clod.train "${smoke[@]}" hardware=gpu "hydra.run.dir=$logs/smoke_gpu"
step smoke_ddp 75 "$python" -m clod.train "${smoke[@]}" hardware=ddp hardware.devices=1 \
  "hydra.run.dir=$logs/smoke_ddp"

"$python" - "$logs" <<'EOF'
import json
import sys
from pathlib import Path

import torch

logs = Path(sys.argv[1])


def status(name):
    rc, start, end = (logs / f"{name}.status").read_text().split()
    return {"exit_status": int(rc), "wall_s": round(float(end) - float(start), 1)}


def bench():
    result = status("bench")
    try:
        out = json.loads((logs / "bench.out").read_text())
    except (OSError, ValueError):
        return result
    result["infer_images_per_s"] = out.get("infer_images_per_s")
    result["matmul_flops_per_s"] = out.get("matmul_flops_per_s")
    result["rows"] = [
        {"strategy": row["strategy"], "train_images_per_s": row["train_images_per_s"]}
        for row in out.get("rows", [])
    ]
    return result


def smoke(name):
    result = status(name)
    try:
        summary = json.loads((logs / name / "summary.json").read_text())
        result["map50"] = summary["final"]["map50"]
    except (OSError, ValueError, KeyError):
        result["map50"] = None
    return result


steps = {"bench": bench(), "smoke_gpu": smoke("smoke_gpu"), "smoke_ddp": smoke("smoke_ddp")}
ok = all(s["exit_status"] == 0 for s in steps.values()) and all(
    steps[name]["map50"] is not None for name in ("smoke_gpu", "smoke_ddp")
)
print(
    json.dumps(
        {
            "ok": ok,
            "gpu": torch.cuda.get_device_name(0),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "logs": str(logs),
            **steps,
        }
    )
)
sys.exit(0 if ok else 1)
EOF
