#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite, integration tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check addk_interp tests examples notebooks benchmarks
.venv/bin/python -m pytest -q "$@"
