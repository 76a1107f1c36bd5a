#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job: the whole pipeline on MODEL (default:
# organism-fv, the ground-truth organism with a planted function vector; MODEL=organism runs the
# natural organism, MODEL=default Gemma-3-270m)
# -> runs/$MODEL/report.html. Extra arguments go to `addk-interp run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
MODEL=${MODEL:-organism-fv}
.venv/bin/addk-interp run --model "$MODEL" --out "runs/$MODEL" "$@"
