"""Shared by the example scripts: run (or reuse) the pipeline and write one report figure.

Every ``figNN_*.py`` script draws the figure of the same slug in ``addk_interp.report.figures`` —
the very figure the report shows — into ``RUN/figures/<slug>.html`` (and ``.png`` when a
static export works offline) and prints where. Finished pipeline stages are reused.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(slug: str, description: str) -> int:
    from addk_interp.pipeline.run import PRESETS, Run, RunConfig
    from addk_interp.report.figures import build

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", default="default", help="model spec (default: Gemma-3-270m)")
    ap.add_argument("--out", default=None, help="run directory (default runs/MODEL[-quick])")
    ap.add_argument("--quick", action="store_true", help="the smoke preset")
    args = ap.parse_args()
    preset = "quick" if args.quick else "default"
    cfg = RunConfig(model=args.model, preset=preset, **PRESETS[preset])
    out = Path(args.out or f"runs/{args.model}" + ("-quick" if args.quick else ""))
    run = Run(cfg, out, verbose=True)
    run.execute()  # every finished stage is reused
    fig = build(run, slug)
    if fig is None:
        print(f"{slug}: the run has no data for this figure (see {out / 'report.html'})")
        return 1
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    html = figdir / f"{slug}.html"
    fig.write_html(str(html), include_plotlyjs=True)
    print(f"wrote {html}")
    try:  # static export needs kaleido + a browser; optional
        png = figdir / f"{slug}.png"
        fig.write_image(str(png))
        print(f"wrote {png}")
    except Exception as e:  # noqa: BLE001 - optional export, say why and go on
        print(f"(no PNG: {type(e).__name__})", file=sys.stderr)
    return 0
