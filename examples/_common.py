"""Shared by the example scripts: run (or reuse) the pipeline and write a figure."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run_dir(description: str):
    """Parse ``--model/--out/--quick``, run or reuse the pipeline, return the Run."""
    from addk_interp.pipeline import PRESETS, Run, RunConfig

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", default=None, help="run directory (default runs/MODEL)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    preset = "quick" if args.quick else "default"
    cfg = RunConfig(model=args.model, preset=preset, **PRESETS[preset])
    run = Run(cfg, Path(args.out or f"runs/{args.model}"), verbose=True)
    run.execute()  # every finished stage is reused
    return run


def save(fig, run, name: str) -> None:
    out = run.out / "figures"
    out.mkdir(parents=True, exist_ok=True)
    html = out / f"{name}.html"
    fig.write_html(str(html), include_plotlyjs=True)
    print(f"wrote {html}")
    try:  # static export needs kaleido + a browser; optional
        png = out / f"{name}.png"
        fig.write_image(str(png))
        print(f"wrote {png}")
    except Exception:
        pass
