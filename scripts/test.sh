#!/usr/bin/env bash
# Install, lint, build the docs with warnings as errors, then run the whole test suite (arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
step() { echo "== $1 (at ${SECONDS} s)"; }
step install
bash scripts/install.sh
step lint
"$PYTHON" -m ruff check .
"$PYTHON" -m ruff format --check .
step docs
"$PYTHON" -m sphinx -W --keep-going -q -b html docs docs/_build/html
step pytest
"$PYTHON" -m pytest "$@"
step done
