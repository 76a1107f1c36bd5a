"""``addk-interp run``: its argument parser, kept free of heavy imports so ``--help`` is fast.

Not a step of the method: the pipeline (``addk_interp.pipeline``) is imported only when the
command runs. Cost: negligible.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PRESET_NAMES = ("default", "paper", "quick")  # = sorted(pipeline.PRESETS); a test checks it
FORMAT_NAMES = ("arrow", "qa", "io", "ab", "textlabel", "fx")  # = tasks.FORMATS (tested)


def add_parser(sub) -> None:
    sp = sub.add_parser(
        "run",
        help="the whole pipeline -> DIR/report.html",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sp.add_argument("--model", default="default", help="model spec (see addk-interp info --help)")
    sp.add_argument("--out", required=True, help="run directory (created; stages cached there)")
    sp.add_argument("--family", default="add", help="task family: add, sub or mul")
    sp.add_argument("--k", default=None, help="k values, e.g. 1-30 or 1,3,5 (preset's by default)")
    sp.add_argument("--task-file", nargs="*", help="JSON task files instead of --family")
    sp.add_argument("--heldout", nargs="*", help="task names held out (with --task-file)")
    sp.add_argument(
        "--format", default="arrow", help="prompt format: " + ", ".join(FORMAT_NAMES)
    )
    sp.add_argument("--shots", type=int, default=5, help="demonstrations per prompt")
    sp.add_argument("--n-eval", type=int, default=None, help="evaluation prompts per task")
    sp.add_argument("--n-capture", type=int, default=None, help="prompts per task for head means")
    sp.add_argument("--seed", type=int, default=42, help="sampling and training seed")
    sp.add_argument("--layer", type=int, default=None, help="injection layer (default ≈ depth/3)")
    sp.add_argument("--batch-size", type=int, default=32, help="prompts per forward")
    sp.add_argument("--quick", action="store_true", help="smoke preset (k=1..10, few prompts)")
    sp.add_argument(
        "--preset",
        choices=PRESET_NAMES,
        default="default",
        help="budgets: default (≈10 min CPU on Gemma-3-270m), quick, paper (GPU; spec sizes)",
    )
    sp.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    sp.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    sp.add_argument("--force", action="store_true", help="reuse an --out holding another model")
    sp.add_argument("--quiet", action="store_true", help="no progress bars")
    sp.set_defaults(func=_run_cmd)


def _run_cmd(args) -> int:
    from addk_interp.pipeline import Run, config_from_args

    cfg = config_from_args(args)
    report = Run(cfg, Path(args.out), verbose=not args.quiet, force=args.force).execute()
    print(f"wrote {report}")
    return 0
