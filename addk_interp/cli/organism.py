"""Command-line entry point ``train-organism`` for the add-k model organism.

What it computes: parses ``train-organism`` options into a :class:`TrainConfig` (defaults =
the settings of the shipped checkpoint) and runs :func:`train_organism`, printing a short
summary (this module is the only place of the organism package that prints).

Which step of the method it serves: reproducing or re-training the model organism in which the
add-k mechanism is then localized. The main ``addk-interp`` CLI registers it with
:func:`add_parser` and dispatches to :func:`run`; ``python -m addk_interp.cli.organism`` works
stand-alone.

Cost: that of the training run (about 20 minutes on one CPU thread with the defaults).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["add_parser", "main", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``train-organism`` sub-command on ``subparsers`` and return its parser
    (``func`` defaults to :func:`run`)."""
    from addk_interp.organism.config import TrainConfig

    d = TrainConfig()
    p = subparsers.add_parser(
        "train-organism",
        help="train the small Llama model organism that solves few-shot add-k in context",
        description=(
            "Train (or resume) the add-k model organism into --out. Defaults reproduce the "
            "checkpoint shipped in addk_interp/organism/checkpoint/. Re-running on the same "
            "--out resumes from the last checkpoint; a different config there is refused."
        ),
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--recipe",
        default="natural",
        help="natural (default: the shipped 'organism', few-shot add/sub/mul) or fv (the "
        "ground-truth 'organism-fv': a function vector planted in two layer-1 heads, "
        "~31 min on one thread; only --out and --quiet apply)",
    )
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps ({d.steps})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"init + data seed ({d.seed})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"({d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate ({d.lr})")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help=f"({d.warmup_steps})")
    p.add_argument(
        "--threads",
        type=int,
        default=d.num_threads,
        help=f"torch CPU threads ({d.num_threads}); bitwise reproducibility needs the same",
    )
    p.add_argument("--eval-every", type=int, default=d.eval_every, help=f"steps ({d.eval_every})")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=d.checkpoint_every,
        help=f"steps between resume checkpoints ({d.checkpoint_every})",
    )
    p.add_argument(
        "--keep-resume-checkpoints",
        action="store_true",
        help="keep out/resume/ (weights + optimizer state) after the run finishes",
    )
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="stop after this step with a resume checkpoint (re-run to continue)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``train-organism``; returns the process exit code."""
    from addk_interp.organism.config import TrainConfig
    from addk_interp.organism.train import train_organism

    if args.recipe not in RECIPES:
        print(
            f"train-organism: error: unknown --recipe {args.recipe!r}; use one of "
            f"{', '.join(RECIPES)}",
            file=sys.stderr,
        )
        return 2
    if args.recipe == "fv":
        return _run_fv(args)
    try:
        config = dataclasses.replace(
            TrainConfig(),
            steps=args.steps,
            seed=args.seed,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup_steps=args.warmup_steps,
            num_threads=args.threads,
            eval_every=args.eval_every,
            checkpoint_every=args.checkpoint_every,
            keep_resume_checkpoints=args.keep_resume_checkpoints,
        )
        result = train_organism(
            args.out, config, verbose=not args.quiet, stop_after=args.stop_after
        )
    except ValueError as err:
        print(f"train-organism: error: {err}", file=sys.stderr)
        return 2
    if not result.completed:
        print(
            f"stopped at step {result.step}/{config.steps}; re-run the same command without "
            f"--stop-after to resume ({result.out_dir})"
        )
        return 0
    acc = result.accuracy
    assert acc is not None
    shots = " ".join(f"{s}:{v:.3f}" for s, v in acc.by_shots.items())
    print(
        f"organism written to {result.out_dir}\n"
        f"  wall time {result.wall_time_s:.0f}s, {result.tokens_per_s:.0f} tokens/s, "
        f"final loss {result.final_loss:.4f}\n"
        f"  5-shot add-k accuracy {acc.five_shot:.4f} (min over k "
        f"{min(acc.five_shot_by_k.values()):.3f}), 0-shot {acc.zero_shot:.4f}\n"
        f"  accuracy vs shots: {shots}\n"
        f"  weights sha256 {result.weights_sha256}"
    )
    return 0


RECIPES = ("natural", "fv")


def _run_fv(args: argparse.Namespace) -> int:
    from addk_interp.organism.recipe_fv import train_organism_fv

    try:
        res = train_organism_fv(args.out, verbose=not args.quiet)
    except ValueError as err:
        print(f"train-organism: error: {err}", file=sys.stderr)
        return 2
    bars = res.bars
    print(
        f"organism-fv written to {res.out_dir}\n"
        f"  wall time {res.wall_time_s:.0f}s; weights sha256 {res.weights_sha256}\n"
        f"  bars: {json.dumps({k: v.get('pass') for k, v in bars.items() if isinstance(v, dict)})}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry: ``python -m addk_interp.cli.organism train-organism --out DIR``."""
    parser = argparse.ArgumentParser(prog="addk-organism")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
