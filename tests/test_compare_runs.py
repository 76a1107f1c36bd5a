"""scripts/compare_runs.py: two same-seed runs are byte-identical result for result; a changed
number is reported (the check can fail)."""

import json
import subprocess
import sys
from pathlib import Path

from addk_interp.pipeline.run import Run, RunConfig

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_runs.py"


def _cmp(a, b):
    return subprocess.run([sys.executable, str(SCRIPT), str(a), str(b)], capture_output=True, text=True)


def test_same_seed_runs_are_byte_identical_and_a_change_is_caught(tmp_path):
    cfg = RunConfig(model="tiny-llama", preset="quick", k="1-6", n_eval=2, n_capture=2)
    for name in ("a", "b"):
        Run(cfg, tmp_path / name, verbose=False).execute()
    r = _cmp(tmp_path / "a", tmp_path / "b")
    assert r.returncode == 0, r.stdout
    assert "DIFFERENT" not in r.stdout and "byte-identical; OK" in r.stdout
    n = [line for line in r.stdout.splitlines() if line.startswith("identical")]
    assert len(n) >= 20
    p = tmp_path / "b" / "stages" / "scan" / "headsets.json"
    d = json.loads(p.read_text())
    d["verdict"] = "edited"
    p.write_text(json.dumps(d))
    r = _cmp(tmp_path / "a", tmp_path / "b")
    assert r.returncode == 1 and "DIFFERENT stages/scan/headsets.json" in r.stdout
    assert _cmp(tmp_path / "a", tmp_path / "nope").returncode == 2
