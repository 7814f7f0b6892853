#!/usr/bin/env bash
# Install, lint, build the docs with warnings as errors, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
bash scripts/install.sh
"$PYTHON" -m ruff check .
"$PYTHON" -m ruff format --check .
"$PYTHON" -m sphinx -W --keep-going -q -b html docs docs/_build/html
"$PYTHON" -m pytest "$@"
