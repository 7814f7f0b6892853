#!/usr/bin/env bash
# The quick start end to end (docs/quickstart.md, steps 1-4, as written there): install, generate a RecFlow-format
# release, import it into the Parquet store, train the DIN ranking baseline with `stcrank fit`, test its last
# checkpoint with `stcrank test`. Data and runs go under runs/ (ignored by git); a rerun starts afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
rm -rf runs/quickstart runs/recflow/rank/din_baseline
stcrank data synth-recflow --out runs/quickstart/recflow-release --users 600 --days 5 --seed 0
stcrank data import-recflow --src runs/quickstart/recflow-release --dst runs/quickstart/recflow-store
stcrank fit -c configs/experiments/recflow/rank/din_baseline.yaml --data.root runs/quickstart/recflow-store
stcrank test -c configs/experiments/recflow/rank/din_baseline.yaml --data.root runs/quickstart/recflow-store \
    --ckpt_path last
