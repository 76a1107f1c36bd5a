"""Compare the artifacts of two run directories file by file: byte-identical, or the same numbers
(JSON equal once the volatile keys — timings — are dropped; safetensors tensors bitwise equal
and metadata equal), or different.

    python scripts/compare_runs.py RUN_A RUN_B

Skips what is not a result: done.json / manifest.json / run.json (keys, timings, versions),
gate checkpoints (named by the stage key, which hashes the code) and report.html (it embeds the
code version). Exit 0 when every result file of A is in B with the same numbers, else 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

VOLATILE = {"wall_s", "peak_rss_mb", "timing", "status", "code_version", "notes"}
SKIP = {"done.json", "manifest.json", "run.json", "report.html"}


def _drop(x):
    if isinstance(x, dict):
        return {k: _drop(v) for k, v in x.items() if k not in VOLATILE}
    if isinstance(x, list):
        return [_drop(v) for v in x]
    return x


def _same_numbers(a: Path, b: Path) -> bool:
    if a.suffix == ".json":
        return _drop(json.loads(a.read_text())) == _drop(json.loads(b.read_text()))
    if a.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
            ma, mb = (json.loads((f.metadata() or {}).get("_meta_json", "{}")) for f in (fa, fb))
            if _drop(ma) != _drop(mb) or sorted(fa.keys()) != sorted(fb.keys()):
                return False
            import torch

            return all(torch.equal(fa.get_tensor(k), fb.get_tensor(k)) for k in fa.keys())
    return False


def compare(a: Path, b: Path) -> tuple[list[str], bool]:
    lines, ok = [], True
    files = sorted(
        p.relative_to(a)
        for p in a.rglob("*")
        if p.is_file() and p.name not in SKIP and not any("checkpoints-" in s for s in p.parts)
    )
    for rel in files:
        pa, pb = a / rel, b / rel
        if not pb.exists():
            lines.append(f"MISSING   {rel}")
            ok = False
        elif pa.read_bytes() == pb.read_bytes():
            lines.append(f"identical {rel}")
        elif _same_numbers(pa, pb):
            lines.append(f"same numbers (timings differ) {rel}")
        else:
            lines.append(f"DIFFERENT {rel}")
            ok = False
    return lines, ok


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python scripts/compare_runs.py RUN_A RUN_B", file=sys.stderr)
        return 2
    a, b = (Path(x) for x in argv)
    for d in (a, b):
        if not (d / "stages").is_dir():
            print(f"compare_runs: {d} is not a run directory (no stages/)", file=sys.stderr)
            return 2
    lines, ok = compare(a, b)
    print("\n".join(lines))
    n_id = sum(line.startswith("identical") for line in lines)
    print(f"{n_id} of {len(lines)} result files byte-identical; {'OK' if ok else 'DIFFERENT'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
