"""``addk-interp run``: its argument parser, kept free of heavy imports so ``--help`` is fast.

Not a step of the method: the pipeline (``addk_interp.pipeline.run``) is imported only when the
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


HEADLINE = (
    "clean 5-shot accuracy",
    "FV all_heads_unit (heldout)",
    "selected heads",
    "significant heads",
    "main heads",
    "localization verdict",
    "necessity: clean",
    "PCs for 95%",
)


def _print_stage(rec: dict) -> None:
    print(f"  {rec['name']:<12} {rec['status']:<10} {rec.get('wall_s', 0.0):7.1f} s", flush=True)


def _run_cmd(args) -> int:
    from addk_interp.pipeline.run import Run, config_from_args
    from addk_interp.report.summary import summarize_run

    cfg = config_from_args(args)
    run = Run(cfg, Path(args.out), verbose=not args.quiet, force=args.force, on_stage=_print_stage)
    report = run.execute()
    rows = [r for r in summarize_run(run.out) if any(h in r[0] for h in HEADLINE)]
    print("headline:")
    for q, v, _ in rows[:10]:
        print(f"  {q}: {v if len(v) <= 120 else v[:117] + '...'}")
    print(f"wrote {report}")
    print(f"next: addk-interp summary {run.out}   (every number with the file it comes from)")
    return 0
