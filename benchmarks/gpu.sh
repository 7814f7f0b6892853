#!/usr/bin/env bash
# The GPU run: training, candidate scoring, re-ranking (and serving, when benchmarks/bench_serving.py exists)
# benchmarks with --device cuda, then a one-GPU `stcrank fit` + `stcrank test` of the DIN baseline on a generated
# store. Every step prints one JSON object (one per line, prefixed by its name); the whole run takes a few minutes.
#
#   bash benchmarks/gpu.sh [WORKDIR]        # PYTHON=python3 by default; needs a CUDA build of torch
#
# DEVICE=cpu runs the same steps on the CPU (a check of the script itself), STEPS sets the training steps (20).
#
# Each step has its own time limit (STEP_TIMEOUT seconds, 150 by default), so that one slow step cannot hold the
# machine: a step that fails or runs out of time prints {"step": ..., "error": ...} and the run goes on.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WORK=${1:-${STCRANK_GPU_WORK:-/tmp/stcrank-gpu}}
STEP_TIMEOUT=${STEP_TIMEOUT:-150}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-20}
ACCELERATOR=$([ "$DEVICE" = cpu ] && echo cpu || echo gpu)
export PYTHONPATH="$PWD:$PWD/plugins${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$WORK"
started=$(date +%s)

if [ "$DEVICE" != cpu ] && ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo '{"step": "cuda", "error": "torch sees no CUDA device: run this on a GPU machine with a CUDA build of torch"}'
  exit 1
fi
"$PYTHON" - <<'EOF'
import json, torch
cuda = torch.cuda.is_available()
print("cuda", json.dumps({"step": "cuda", "device": torch.cuda.get_device_name(0) if cuda else None,
                          "torch": torch.__version__, "cuda": torch.version.cuda,
                          "devices": torch.cuda.device_count()}))
EOF

step() {  # step NAME COMMAND...: run with a time limit, print its last line (the JSON) or the error
  local name=$1; shift
  local out="$WORK/$name.out" err="$WORK/$name.err" t0 t1
  t0=$(date +%s)
  if timeout "$STEP_TIMEOUT" "$@" >"$out" 2>"$err"; then
    t1=$(date +%s)
    # the step's JSON object, on one line (commands that print no JSON print only their time)
    "$PYTHON" -c 'import json,sys; print(sys.argv[2], json.dumps(json.loads(open(sys.argv[1]).read())))' \
      "$out" "$name" 2>/dev/null
    echo "$name {\"step\": \"$name\", \"seconds\": $((t1 - t0))}"
  else
    echo "$name {\"step\": \"$name\", \"error\": \"exit $? after $(( $(date +%s) - t0 )) s, see $err\"}"
    tail -n 5 "$err" >&2
  fi
}

# The store the benchmarks share (generated once; reused on a second run).
step store "$PYTHON" -c "
import json, sys
sys.path.insert(0, 'benchmarks')
from pathlib import Path
from bench_ranking_models import ensure_store
print(json.dumps({'store': str(ensure_store(Path('$WORK'), 600))}))
"
step ranking_models "$PYTHON" benchmarks/bench_ranking_models.py --workdir "$WORK" --device "$DEVICE" --steps "$STEPS"
step din_reference "$PYTHON" benchmarks/bench_din_reference.py --workdir "$WORK" --device "$DEVICE" --steps "$STEPS"
step rerank "$PYTHON" benchmarks/bench_rerank.py --device "$DEVICE" --repeats 3
if [ -f benchmarks/bench_serving.py ]; then
  step serving "$PYTHON" benchmarks/bench_serving.py --device "$DEVICE"
else
  echo 'serving {"step": "serving", "skipped": "benchmarks/bench_serving.py is not there"}'
fi

# One-GPU fit and test of the DIN baseline on the generated store.
FIT=(-c configs/experiments/recflow/rank/din_baseline.yaml --data.root "$WORK/store-600"
     --trainer.accelerator "$ACCELERATOR" --trainer.devices 1 --trainer.default_root_dir "$WORK/fit"
     --trainer.logger.init_args.save_dir "$WORK/fit" --trainer.enable_progress_bar false --seed_everything 0)
step fit "$PYTHON" -m stcrank fit "${FIT[@]}"
CHECKPOINT=$(ls -t "$WORK"/fit/lightning_logs/version_*/checkpoints/last.ckpt 2>/dev/null | head -n 1)
if [ -n "$CHECKPOINT" ]; then
  step test "$PYTHON" -m stcrank test "${FIT[@]}" --ckpt_path "$CHECKPOINT"
  "$PYTHON" - "$WORK/fit" <<'EOF'
import csv, glob, json, os, sys
files = sorted(glob.glob(os.path.join(sys.argv[1], "lightning_logs", "version_*", "metrics.csv")), key=os.path.getmtime)
rows = list(csv.DictReader(open(files[-1]))) if files else []
metrics = {key: float(value) for row in rows for key, value in row.items() if key.startswith("test/") and value}
print("test_metrics", json.dumps({"step": "test_metrics", "metrics": metrics}))
EOF
fi
echo "total {\"step\": \"total\", \"seconds\": $(( $(date +%s) - started ))}"
