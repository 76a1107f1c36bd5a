"""``addk-interp validate``: score every localization method against a model's planted ground
truth (parsing and printing only; the work is :func:`addk_interp.pipeline.validation.validate`)."""

from __future__ import annotations

import json
from pathlib import Path

from addk_interp.core.errors import AddkError


def add_parser(sub) -> None:
    sp = sub.add_parser(
        "validate",
        help="score every localization method against a model's planted ground truth",
        description=(
            "Run (or reuse) the pipeline on --model in --run, then score gate coefficients, "
            "mask-logit gates, AIE, attribution patching and single-head ablation against the "
            "planted heads (organism-fv); on a model without ground truth, report only the "
            "agreement between methods. Writes RUN/validation.json and RUN/validation.md."
        ),
    )
    sp.add_argument("--model", default="organism-fv", help="model spec (default organism-fv)")
    sp.add_argument("--run", required=True, help="run directory (created or reused)")
    sp.add_argument("--quick", action="store_true", help="the quick preset for the run")
    sp.add_argument(
        "--n-prompts",
        type=int,
        default=4,
        help="n-shot prompts per training task for attribution patching and ablation (4)",
    )
    sp.add_argument(
        "--reuse",
        action="store_true",
        help="use the finished run in --run as it is (no stage is recomputed, even if the code "
        "changed since it ran); without it, stale stages are recomputed first",
    )
    sp.add_argument("--quiet", action="store_true", help="no progress bars")
    sp.set_defaults(func=_cmd)


def _cmd(a) -> int:
    from addk_interp.pipeline.run import PRESETS, Run, RunConfig

    if a.n_prompts < 1:
        raise AddkError(f"--n-prompts must be ≥ 1, got {a.n_prompts}")
    preset = "quick" if a.quick else "default"
    cfg = RunConfig(model=a.model, preset=preset, **PRESETS[preset])
    run = Run(cfg, Path(a.run), verbose=not a.quiet)
    if a.reuse:
        if not (run.out / "manifest.json").exists():
            raise AddkError(f"--reuse needs a finished run in {run.out} (no manifest.json)")
        man = json.loads((run.out / "manifest.json").read_text())
        if man["model"]["fingerprint"] != run.model.info.fingerprint:
            raise AddkError(f"{run.out} holds a run of another model ({man['model']['name']})")
    else:
        run.execute()
    from addk_interp.pipeline.validation import validate

    res = validate(run, n_prompts=a.n_prompts, verbose=not a.quiet)
    res.save(run.out / "validation.json")
    from addk_interp.report.html import write_report

    write_report(run)  # the report gains the validation table
    md = res.markdown() + "\n"
    from addk_interp.core.store import atomic_write_text

    atomic_write_text(run.out / "validation.md", md)
    print(md, end="")
    print(f"wrote {run.out / 'validation.json'}")
    return 0
