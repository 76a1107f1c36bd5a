"""``addk-interp figure SLUG --run DIR``: draw one report figure of a finished run into
``DIR/figures/SLUG.html`` (plotly inlined: opens offline) from the run's saved stage results —
the same figure the report shows; the model is loaded only by a figure that needs it (the
attention view). ``--list`` prints every slug with its stage and title. Parsing and printing only.
"""

from __future__ import annotations

import json
from pathlib import Path

from addk_interp.core.errors import AddkError


def _cmd(a) -> int:
    from addk_interp.report.figures import FIGURES, build

    slugs = [f.slug for f in FIGURES]
    if a.list:
        for f in FIGURES:
            print(f"{f.slug:<28} {f.stage:<12} {f.title}")
        return 0
    if not a.slug:
        raise AddkError("give a figure slug (addk-interp figure --list shows them)")
    if a.slug not in slugs:
        raise AddkError(f"unknown figure {a.slug!r}; one of: {', '.join(slugs)}")
    if a.run is None:
        raise AddkError("--run DIR is required (a finished run directory)")
    out = Path(a.run)
    if not (out / "run.json").is_file():
        raise AddkError(f"{out} holds no addk-interp run (no run.json)")
    dest = Path(a.out) if a.out else out / "figures" / f"{a.slug}.html"
    from addk_interp.core.validate import check_writable_dir
    from addk_interp.pipeline.run import Run, RunConfig

    check_writable_dir(dest.parent)
    conf = json.loads((out / "run.json").read_text())["config"]
    for k in ("task_file", "heldout"):
        conf[k] = tuple(conf.get(k) or ())
    conf.pop("extra", None)
    run = Run(RunConfig(**conf), out, verbose=False)
    fig = build(run, a.slug)
    if fig is None:
        raise AddkError(f"{a.slug}: the run in {out} has no data for this figure (stage not run)")
    from addk_interp.core.store import atomic_write_text

    atomic_write_text(dest, fig.to_html(include_plotlyjs=True, full_html=True, div_id=a.slug))
    print(f"wrote {dest}")
    return 0


def add_parser(sub) -> None:
    sp = sub.add_parser(
        "figure",
        help="draw one report figure of a finished run (addk-interp figure --list)",
        description="Draw the report figure SLUG of the run in --run into RUN/figures/SLUG.html "
        "(self-contained, offline) from the run's saved results.",
    )
    sp.add_argument("slug", nargs="?", default=None, help="figure slug, e.g. fig07_dose_response")
    sp.add_argument("--run", default=None, help="finished run directory (default: none)")
    sp.add_argument("--out", default=None, help="output .html (default RUN/figures/SLUG.html)")
    sp.add_argument("--list", action="store_true", help="list the figure slugs and exit")
    sp.set_defaults(func=_cmd)
