#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite, integration tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# optional: headless Chromium for tests/test_browser.py (it skips without one); installed only
# when missing and we are root or have passwordless sudo; never fails the script
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then as_root=""; elif sudo -n true 2>/dev/null; then as_root="sudo -n"; else as_root=none; fi
  if [ "$as_root" = none ]; then
    echo "chromium not installed (no root or passwordless sudo): the browser test will skip"
  else
    { $as_root apt-get update -qq && $as_root apt-get install -y --no-install-recommends chromium; } \
      >/dev/null 2>&1 || echo "chromium could not be installed: the browser test will skip"
  fi
fi
.venv/bin/ruff check addk_interp tests examples notebooks benchmarks
.venv/bin/python -m pytest -q "$@"
