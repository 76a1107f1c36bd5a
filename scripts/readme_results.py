"""Splice the committed run summaries into README.md (or check that README matches them).

Each ``results/summaries/NAME.md`` was written by ``addk-interp summary RUN_DIR --save
results/summaries/NAME.md`` from a finished run, each ``results/validation/NAME.md`` is the
``validation.md`` that ``addk-interp validate`` wrote into its run directory, each
``results/findings/NAME.md`` is ``addk-interp summary RUN_DIR --findings --save ...`` (the
report's findings block), each ``benchmarks/results/readme/NAME.md`` is ``python
benchmarks/bench_readme.py benchmarks/results/NAME.json`` (the performance table of one
``bench_stages.py`` run); README.md holds
them verbatim between ``<!-- results:NAME -->`` / ``<!-- validation:NAME -->`` /
``<!-- findings:NAME -->`` / ``<!-- bench:NAME -->`` and the
matching closing comment. ``--check`` exits 1 when README
differs from the summaries (the test suite runs it), so README's result tables cannot drift
from what runs produce.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUMMARIES = ROOT / "results" / "summaries"
KINDS = {
    "results": SUMMARIES,
    "validation": ROOT / "results" / "validation",
    "findings": ROOT / "results" / "findings",
    "bench": ROOT / "benchmarks" / "results" / "readme",
}
BLOCK = re.compile(
    r"(<!-- (?P<kind>results|validation|findings|bench):(?P<name>[\w.-]+) -->\n)(?P<body>.*?)"
    r"(<!-- /(?P=kind):(?P=name) -->)",
    re.S,
)


def splice(readme: str) -> tuple[str, list[str]]:
    problems: list[str] = []
    seen = set()

    def repl(m: re.Match) -> str:
        kind, name = m.group("kind"), m.group("name")
        seen.add((kind, name))
        f = KINDS[kind] / f"{name}.md"
        if not f.exists():
            problems.append(f"README block {kind}:{name} has no {f.relative_to(ROOT)}")
            return m.group(0)
        return m.group(1) + f.read_text().rstrip("\n") + "\n" + m.group(5)

    out = BLOCK.sub(repl, readme)
    for kind, folder in KINDS.items():
        for f in sorted(folder.glob("*.md")):
            if (kind, f.stem) not in seen:
                problems.append(
                    f"{f.relative_to(ROOT)} is not shown in README (no {kind}:{f.stem} block)"
                )
    return out, problems


def main(argv: list[str]) -> int:
    readme = (ROOT / "README.md").read_text()
    new, problems = splice(readme)
    for p in problems:
        print(p, file=sys.stderr)
    if "--check" in argv:
        if new != readme:
            print("README.md results differ from results/summaries (run scripts/readme_results.py)", file=sys.stderr)
            return 1
        return 1 if problems else 0
    (ROOT / "README.md").write_text(new)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
