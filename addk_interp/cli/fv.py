"""``addk-interp fv``: evaluate a function vector built from a head set.

Step of the method: docs/method.md §3.2 / §4.5. Means are captured on training tasks (kind
``activation``) and on held-out tasks from separately seeded prompts (``heldout_activation``),
or loaded from a saved ``HeadMeans`` file (fingerprint-checked); FV accuracy is scored on
``final_eval`` prompts of the held-out tasks, paired with their clean n-shot accuracy.
Cost: capture forwards + one zero-shot and one n-shot forward per scored example.
"""

from __future__ import annotations

import math
from pathlib import Path


def add_parser(sub) -> None:
    import argparse

    sp = sub.add_parser(
        "fv",
        help="function-vector accuracy of a head set",
        description="FV of a head set on held-out (or training) tasks, with the zero-shot "
        "baseline and the paired lift; nothing is loaded before the arguments are checked.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sp.add_argument("--model", default="default", help="model spec (addk-interp info lists them)")
    sp.add_argument(
        "--heads", required=True, help="heads, L{layer}H{head} or LAYER.HEAD: L15H2,L15H1 or 15.2,15.1; or all"
    )
    sp.add_argument("--coef", default=None, help="coefficients, one per head (default: 1 each)")
    sp.add_argument("--means", default=None, help="saved HeadMeans (.safetensors) to reuse")
    sp.add_argument("--family", default="add", help="task family: add, sub or mul")
    sp.add_argument("--k", default=None, help="k values, e.g. 1-30 or 1,3,5 (default: the family's)")
    sp.add_argument("--shots", type=int, default=5, help="demonstrations per prompt")
    sp.add_argument("--n", type=int, default=20, help="scored examples per task")
    sp.add_argument("--n-capture", type=int, default=20, help="prompts per task for the means")
    sp.add_argument("--layer", type=int, default=None, help="injection layer (default round(L/3))")
    sp.add_argument("--format", default="arrow", help="prompt format: arrow, qa, io, ab, textlabel, fx")
    sp.add_argument("--seed", type=int, default=42, help="seed of every sample")
    sp.add_argument("--split", default="heldout", choices=["heldout", "train"], help="tasks scored")
    sp.add_argument("--out", default=None, help="directory for fv_examples.csv / fv_table.csv")
    sp.add_argument("--quiet", action="store_true", help="no progress bars")
    sp.set_defaults(func=run)


def run(args) -> int:
    # light imports only until every argument is checked (usage errors answer in < 2 s)
    from addk_interp.core.errors import AddkError
    from addk_interp.core.heads import parse_heads
    from addk_interp.core.tasks import arithmetic_family, get_format, parse_k_range, sample_family
    from addk_interp.core.validate import check_count, check_seed, check_writable_dir

    get_format(args.format)
    check_count(args.shots, "--shots", lo=0, hi=1000)
    if args.out:
        check_writable_dir(args.out)
    check_count(args.n, "--n")
    check_count(args.n_capture, "--n-capture")
    check_seed(args.seed)
    family = arithmetic_family(args.family, ks=parse_k_range(args.k) if args.k else None)
    tasks = family.heldout if args.split == "heldout" else family.train
    if not tasks:
        raise AddkError(f"the {args.split} split is empty for these k")
    heads = None if args.heads == "all" else parse_heads(args.heads)
    coefs = None
    if args.coef:
        try:
            coefs = [float(c) for c in args.coef.split(",")]
        except ValueError:
            raise AddkError(f"--coef must be comma-separated numbers, got {args.coef!r}") from None
        if not all(math.isfinite(c) for c in coefs):
            raise AddkError(f"--coef values must be finite, got {args.coef!r}")
        if heads is None or len(coefs) != len(heads):
            raise AddkError("--coef needs one value per head in --heads")
    if args.means and not Path(args.means).is_file():
        raise AddkError(f"--means {args.means}: no such file")
    scored = sample_family(family, tasks, args.n, args.shots, seed=args.seed, kind="final_eval")

    from addk_interp.core.scoring import accuracy_table, bootstrap_ci, evaluate
    from addk_interp.core.store import write_table
    from addk_interp.hooks.capture import HeadMeans, capture_means
    from addk_interp.hooks.fv import check_means_model, evaluate_fv, head_set_vectors
    from addk_interp.hooks.interventions import check_heads, default_injection_layer
    from addk_interp.models.loading import load_model

    model = load_model(args.model)
    if heads is not None:
        check_heads(model, heads)
    layer = default_injection_layer(model.n_layers) if args.layer is None else args.layer
    if not 0 <= layer < model.n_layers:
        raise AddkError(f"--layer {layer} out of range 0..{model.n_layers - 1}")
    model.residual_hook(layer, "resid_mid")  # refuses models without the site (parallel attn)
    if args.means:
        means = HeadMeans.load(Path(args.means))
        check_means_model(model, means)
    else:
        kind, seed = (
            ("heldout_activation", args.seed + 1001)
            if args.split == "heldout"
            else ("activation", args.seed)
        )
        ex = sample_family(family, tasks, args.n_capture, args.shots, seed=seed, kind=kind)
        means = capture_means(model, ex, args.format, verbose=not args.quiet)
    vecs = head_set_vectors(means, tasks, heads, coefs)
    df = evaluate_fv(model, scored, vecs, layer=layer, fmt=args.format, verbose=not args.quiet)
    base = evaluate(model, scored, args.format, zero_shot=True, desc="zero-shot")
    lo, hi = bootstrap_ci(df["correct"].to_numpy(), seed=args.seed)
    b = base["correct"].to_numpy().astype(float)
    blo, bhi = bootstrap_ci(b, seed=args.seed)
    lift = df["correct"].to_numpy().astype(float) - b
    llo, lhi = bootstrap_ci(lift, seed=args.seed)
    print(
        f"FV accuracy {df['correct'].mean():.3f} [{lo:.3f}, {hi:.3f}]  zero-shot without FV "
        f"{b.mean():.3f} [{blo:.3f}, {bhi:.3f}]  paired lift {lift.mean():+.3f} "
        f"[{llo:+.3f}, {lhi:+.3f}]  clean n-shot {df['clean_correct'].mean():.3f}  "
        f"(n={len(df)}, layer {layer}, {'all heads' if heads is None else len(heads)} heads)"
    )
    table = accuracy_table(df, by=("task", "k"))
    print(table[["task", "k", "n", "accuracy", "ci_low", "ci_high"]].to_string(index=False))
    if args.out:
        write_table(Path(args.out) / "fv_examples.csv", df)
        write_table(Path(args.out) / "fv_table.csv", table)
    return 0
