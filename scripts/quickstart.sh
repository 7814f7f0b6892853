#!/usr/bin/env bash
# End to end on generated data: install, generate a RecFlow-format release, import it into the Parquet store,
# train the DIN ranking baseline with `stcrank fit`, evaluate the last checkpoint with `stcrank test`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WORK=${STCRANK_WORK:-runs/quickstart}
bash scripts/install.sh
rm -rf "$WORK"
stcrank data synth-recflow --out "$WORK/recflow-release" --users 600 --days 5 --seed 0
stcrank data import-recflow --src "$WORK/recflow-release" --dst "$WORK/recflow-store"
EXPERIMENT=configs/experiments/recflow/rank/din_baseline.yaml
COMMON=(-c "$EXPERIMENT" --data.root "$WORK/recflow-store" --trainer.default_root_dir "$WORK"
        --trainer.logger.init_args.save_dir "$WORK" --seed_everything 0)
stcrank fit "${COMMON[@]}"
CHECKPOINT=$(ls -t "$WORK"/lightning_logs/version_*/checkpoints/last.ckpt | head -n 1)
stcrank test "${COMMON[@]}" --ckpt_path "$CHECKPOINT"
