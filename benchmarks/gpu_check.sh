#!/usr/bin/env bash
# GPU check: what a CUDA machine must pass before a GPU result is trusted.
#
#   (a) the effect / identity / hook-audit / placement tests (tests/test_effects.py,
#       tests/test_hooks_identity.py, tests/test_hook_audit.py, tests/test_placement.py).
#       They run in fp32 (and fp64 where test_hooks_identity parametrizes it); they have no dtype
#       switch, so bf16 is NOT covered by them (the bf16 path is exercised by (b)). Their models
#       are the tiny CPU ones; on CUDA test_placement adds its cuda placement test
#       (parameters, cache, logits on the GPU).
#   (b) addk-interp run --model organism-fv --device cuda --dtype bfloat16          (default preset)
#       addk-interp run --model default --device cuda --dtype bfloat16 --quick      (Gemma-3-270m)
#   (c) per run: every stage's wall time and peak host RSS (manifest.json stages[]) and the
#       GPU memory seen by nvidia-smi (sampled every 200 ms during the run: peak used MiB,
#       whole GPU, other processes included), then one PASS/FAIL line per step.
#
# Usage (repository root, after bash scripts/setup.sh and a CUDA build of torch in .venv):
#   bash benchmarks/gpu_check.sh [OUT_DIR]          # default OUT_DIR: a new /tmp/addk_gpu_check.*
# Environment: PY (default .venv/bin/python), ADDK (default .venv/bin/addk-interp).
# Exit codes: 0 every step passed; 1 a step failed; 3 no usable CUDA here (nothing was run).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ADDK=${ADDK:-.venv/bin/addk-interp}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

no_cuda() {
  echo "gpu_check: no CUDA: $*" >&2
  echo "gpu_check: nothing was run (this script needs an NVIDIA GPU and a CUDA build of torch)" >&2
  exit 3
}

[ -x "$PY" ] || no_cuda "$PY not found (run bash scripts/setup.sh first)"
command -v nvidia-smi >/dev/null 2>&1 || no_cuda "nvidia-smi not found (no NVIDIA driver on this machine)"
nvidia-smi -L >/dev/null 2>&1 || no_cuda "nvidia-smi finds no GPU ($(nvidia-smi -L 2>&1 | head -1))"
why=$("$PY" - <<'EOF'
import torch
if torch.version.cuda is None:
    print(f"torch {torch.__version__} is a CPU-only build: install a CUDA build of torch into .venv "
          "(scripts/setup.sh pins the CPU wheel via constraints.txt)")
elif not torch.cuda.is_available():
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU "
          "(driver too old, or CUDA_VISIBLE_DEVICES hides it)")
EOF
) || no_cuda "could not import torch with $PY"
[ -z "$why" ] || no_cuda "$why"

OUT=${1:-$(mktemp -d /tmp/addk_gpu_check.XXXXXX)}
mkdir -p "$OUT"
echo "== gpu_check: results in $OUT"
nvidia-smi --query-gpu=index,name,memory.total,memory.used,driver_version --format=csv
"$PY" -c "import torch; print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, device 0: {torch.cuda.get_device_name(0)}, bf16 supported: {torch.cuda.is_bf16_supported()}')"

declare -a RESULTS=()
FAIL=0
record() {  # record NAME RC
  if [ "$2" -eq 0 ]; then RESULTS+=("PASS  $1"); else RESULTS+=("FAIL  $1 (exit $2)"); FAIL=1; fi
}

# ---------------------------------------------------------------- (a) tests, fp32
echo "== (a) effect / identity / hook-audit / placement tests (fp32; fp64 where parametrized; no bf16 switch)"
"$PY" -m pytest -q tests/test_effects.py tests/test_hooks_identity.py tests/test_hook_audit.py \
  tests/test_placement.py
record "tests fp32 (effects, hooks identity, hook audit, placement incl. cuda placement)" $?

# ---------------------------------------------------------------- (b) + (c) runs
report_run() {  # report_run RUN_DIR MEM_FILE
  "$PY" - "$1" "$2" <<'EOF'
import json, sys
from pathlib import Path
run, mem = Path(sys.argv[1]), Path(sys.argv[2])
m = json.loads((run / "manifest.json").read_text())
print(f"  model {m['model']['name']}, dtype {m['config']['dtype']}, device {m['config']['device']}, "
      f"preset {m['config']['preset']}")
print(f"  {'stage':<12} {'status':<10} {'wall s':>8} {'peak RSS MB':>12}")
for s in m["stages"]:
    print(f"  {s['name']:<12} {s['status']:<10} {s.get('wall_s', 0):8.2f} {s.get('peak_rss_mb', 0):12.1f}")
print(f"  {'total':<12} {'':<10} {m['wall_s']:8.2f} {m['peak_rss_mb']:12.1f}")
vals = [int(v) for v in mem.read_text().split() if v.strip().isdigit()] if mem.exists() else []
if vals:
    print(f"  GPU memory used (nvidia-smi, GPU 0, every 200 ms): start {vals[0]} MiB, "
          f"peak {max(vals)} MiB, end {vals[-1]} MiB ({len(vals)} samples)")
else:
    print("  GPU memory: no nvidia-smi samples")
EOF
}

gpu_run() {  # gpu_run NAME ARGS...
  local name=$1; shift
  local dir="$OUT/$name" mem="$OUT/$name.gpu_mem.txt"
  echo "== (b) addk-interp run $* --out $dir"
  nvidia-smi --id=0 --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$mem" 2>/dev/null &
  local smi=$!
  "$ADDK" run "$@" --out "$dir" --quiet
  local rc=$?
  kill "$smi" 2>/dev/null; wait "$smi" 2>/dev/null
  if [ "$rc" -eq 0 ] && [ -f "$dir/manifest.json" ]; then
    echo "== (c) $name: stage times and memory"
    report_run "$dir" "$mem"
  fi
  record "run $name: $*" "$rc"
}

gpu_run organism-fv_bf16 --model organism-fv --device cuda --dtype bfloat16
gpu_run default_bf16_quick --model default --device cuda --dtype bfloat16 --quick

echo "== gpu_check summary"
printf '%s\n' "${RESULTS[@]}"
nvidia-smi --query-gpu=memory.used,memory.total --format=csv
exit "$FAIL"
