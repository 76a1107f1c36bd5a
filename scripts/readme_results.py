"""Splice the committed run summaries into README.md (or check that README matches them).

Each ``results/summaries/NAME.md`` was written by ``addk-interp summary RUN_DIR --markdown
--out results/summaries/NAME.md`` from a finished run; README.md holds it verbatim between
``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``. ``--check`` exits 1 when README
differs from the summaries (the test suite runs it), so README's result tables cannot drift
from what runs produce.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUMMARIES = ROOT / "results" / "summaries"
BLOCK = re.compile(r"(<!-- results:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)


def splice(readme: str) -> tuple[str, list[str]]:
    problems: list[str] = []
    seen = set()

    def repl(m: re.Match) -> str:
        name = m.group("name")
        seen.add(name)
        f = SUMMARIES / f"{name}.md"
        if not f.exists():
            problems.append(f"README block {name!r} has no {f.relative_to(ROOT)}")
            return m.group(0)
        return m.group(1) + f.read_text().rstrip("\n") + "\n" + m.group(4)

    out = BLOCK.sub(repl, readme)
    for f in sorted(SUMMARIES.glob("*.md")):
        if f.stem not in seen:
            problems.append(f"{f.relative_to(ROOT)} is not shown in README (no results:{f.stem} block)")
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
