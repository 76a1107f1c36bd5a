"""Command line: ``addk-interp info | eval | fv | run | heads | train-organism``.

Not a step of the method; a thin layer that parses arguments, validates them before any model
is loaded, calls the library and prints. Every ``AddkError`` becomes one line on stderr and
exit code 2; nothing is written before the inputs are known to be valid.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

from addk_interp.core.errors import AddkError
from addk_interp.core.validate import check_count, check_seed, check_task_files


def _family(args):
    from addk_interp.core.tasks import arithmetic_family, json_family, parse_k_range

    if getattr(args, "task_file", None):
        return json_family(args.task_file, heldout=tuple(args.heldout or ()))
    ks = parse_k_range(args.k) if args.k else None
    return arithmetic_family(args.family, ks=ks)


def _shots(text: str) -> list[int]:
    from addk_interp.core.tasks import parse_k_range

    shots = parse_k_range(text)
    if any(s < 0 for s in shots):
        raise AddkError("shots must be ≥ 0")
    return shots


def cmd_info(args) -> int:
    from addk_interp.models.loading import load_model

    m = load_model(args.model, backend=args.backend)
    info = m.info.to_dict()
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        for k, v in info.items():
            print(f"{k:>22}: {v}")
    return 0


def cmd_eval(args) -> int:
    from addk_interp.pipeline.evaluation import run_eval

    check_count(args.n, "--n")
    check_count(args.batch_size, "--batch-size", hi=65_536)
    check_seed(args.seed)
    check_task_files(args.task_file)
    family = _family(args)
    shots = _shots(args.shots)
    out = Path(args.out) if args.out else None
    table = run_eval(
        args.model,
        family,
        shots=shots,
        n=args.n,
        fmt=args.format,
        seed=args.seed,
        out=out,
        batch_size=args.batch_size,
        verbose=not args.quiet,
    )
    with_cols = ["task", "k", "shots", "n", "accuracy", "ci_low", "ci_high", "mean_answer_prob"]
    print(table[with_cols].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if out:
        print(f"wrote {out / 'eval.csv'} and {out / 'eval.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="addk-interp", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    def model_args(sp):
        sp.add_argument(
            "--model",
            default="default",
            help="default | smollm2-135m | organism | tiny-* | HF dir | .gguf | hub name",
        )
        sp.add_argument(
            "--backend",
            default="bridge",
            choices=["bridge", "hooked"],
            help="TransformerBridge (default) or classic HookedTransformer where TL supports it",
        )

    def task_args(sp):
        sp.add_argument("--family", default="add", help="add | sub | mul")
        sp.add_argument("--k", default=None, help="k values, e.g. 1-30 or 1,2,5")
        sp.add_argument("--task-file", nargs="*", help="JSON task files / directory")
        sp.add_argument("--heldout", nargs="*", help="held-out task names (JSON families)")
        sp.add_argument(
            "--format", default="arrow", help="prompt format: arrow, qa, io, ab, textlabel, fx"
        )
        sp.add_argument("--seed", type=int, default=42, help="seed of every sample")
        sp.add_argument("--batch-size", type=int, default=32, help="prompts per forward")
        sp.add_argument("--quiet", action="store_true", help="no progress bars")

    sp = sub.add_parser("info", help="model facts (ModelInfo)", formatter_class=fmt)
    model_args(sp)
    sp.add_argument("--json", action="store_true", help="print ModelInfo as JSON")
    sp.set_defaults(func=cmd_info)

    sp = sub.add_parser("eval", help="few-shot accuracy per task x shots", formatter_class=fmt)
    model_args(sp)
    task_args(sp)
    sp.add_argument("--shots", default="0,2,5,10", help="shot counts, e.g. 0,2,5,10 or 0-10")
    sp.add_argument("--n", type=int, default=30, help="examples per task")
    sp.add_argument("--out", default=None, help="directory for the CSV + JSON (default: print only)")
    sp.set_defaults(func=cmd_eval)

    for extra in (
        "addk_interp.cli.run",
        "addk_interp.cli.fv",
        "addk_interp.cli.heads",
        "addk_interp.cli.organism",
        "addk_interp.cli.summary",
        "addk_interp.cli.validate",
        "addk_interp.cli.figure",
        "addk_interp.cli.sweep",
    ):
        importlib.import_module(extra).add_parser(sub)
    return p


def main(argv=None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AddkError as e:
        print(f"addk-interp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("addk-interp: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `addk-interp figure --list | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
