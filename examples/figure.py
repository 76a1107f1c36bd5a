"""Draw any report figure, running (or reusing) the pipeline first.

    python examples/figure.py fig07_dose_response --model organism-fv [--quick] [--out DIR]
    python examples/figure.py --list

Runs ``addk-interp run`` into DIR (default ``runs/MODEL[-quick]``; finished stages are reused),
then ``addk-interp figure SLUG --run DIR``, which writes ``DIR/figures/SLUG.html`` — the very
figure the report shows, drawn from the run's saved results. For a run you already have, call
``addk-interp figure SLUG --run DIR`` directly.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    from addk_interp.cli.main import main as cli

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("slug", nargs="?", help="figure slug (see --list)")
    ap.add_argument("--model", default="organism-fv", help="model spec (default organism-fv)")
    ap.add_argument("--out", default=None, help="run directory (default runs/MODEL[-quick])")
    ap.add_argument("--quick", action="store_true", help="the smoke preset")
    ap.add_argument("--list", action="store_true", help="list the figure slugs")
    a = ap.parse_args()
    if a.list or not a.slug:
        return cli(["figure", "--list"])
    out = a.out or f"runs/{a.model}" + ("-quick" if a.quick else "")
    rc = cli(["run", "--model", a.model, "--out", out, "--quiet"] + (["--quick"] if a.quick else []))
    return rc or cli(["figure", a.slug, "--run", out])


if __name__ == "__main__":
    sys.exit(main())
