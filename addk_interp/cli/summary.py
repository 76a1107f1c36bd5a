"""``addk-interp summary RUN``: every headline number of a finished run with the file it comes
from (printing only; the rows are :func:`addk_interp.report.summary.summarize_run`)."""

from __future__ import annotations

from pathlib import Path


def _cmd(a) -> int:
    from addk_interp.core.store import atomic_write_text
    from addk_interp.report.summary import summarize_run, to_markdown

    if a.findings:
        from addk_interp.core.errors import AddkError
        from addk_interp.report.html import findings_text

        rep = Path(a.out) / "report.html"
        if not rep.is_file():
            raise AddkError(f"{a.out} has no report.html (run addk-interp run first)")
        text = findings_text(rep.read_text())
        if not text:
            raise AddkError(f"{rep} has no findings block (written by an older version)")
        md = "".join(f"- {line}\n" for line in text.splitlines())
    else:
        md = to_markdown(summarize_run(a.out)) + "\n"
    if a.save:
        atomic_write_text(Path(a.save), md)
        print(f"wrote {a.save}")
    else:
        print(md, end="")
    return 0


def add_parser(sub) -> None:
    sp = sub.add_parser("summary", help="headline numbers of a finished run (markdown)")
    sp.add_argument("out", help="run directory")
    sp.add_argument(
        "--markdown", action="store_true", help="markdown table (the default and only format)"
    )
    sp.add_argument(
        "--findings",
        action="store_true",
        help="print the report's findings block (one line per finding) instead of the table",
    )
    sp.add_argument(
        "--save",
        metavar="FILE",
        default=None,
        help="write the table to FILE (e.g. results/summaries/NAME.md, spliced into README by "
        "scripts/readme_results.py) instead of printing it",
    )
    sp.set_defaults(func=_cmd)
