"""Clean few-shot evaluation: accuracy per task × shots with bootstrap CIs.

Step of the method: the clean ICL baseline of docs/method.md §1.5 / §7 (clean n-shot accuracy).
Examples are sampled once per task with the largest shot count (kind ``final_eval``) and each
smaller shot count uses the first s demonstrations of the same example, so cells are paired
across shots (same queries). Cost: one teacher-forced forward per example per shot count.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from addk_interp._version import __version__
from addk_interp.core.errors import AddkError
from addk_interp.core.scoring import accuracy_table, evaluate
from addk_interp.core.store import write_json, write_table
from addk_interp.core.tasks import TaskFamily, get_format, manifest_hash, sample_family
from addk_interp.core.validate import check_writable_dir


def paired_shot_examples(
    family: TaskFamily, tasks, shots: list[int], n: int, seed: int, kind: str = "final_eval"
):
    """{shots: examples}, the same queries for every shot count (nested demonstrations)."""
    base = sample_family(family, tasks, n, max(shots), seed=seed, kind=kind)
    return {s: [e.with_demos(e.demos[:s]) for e in base] for s in shots}


def run_eval(
    model,
    family: TaskFamily,
    *,
    shots: list[int],
    n: int,
    fmt: str = "arrow",
    seed: int = 42,
    out: Path | None = None,
    batch_size: int = 32,
    verbose: bool = True,
    tasks=None,
) -> pd.DataFrame:
    """Evaluate ``model`` (a HookedModel or a spec string) on every task of ``family``."""
    from addk_interp.models.loading import load_model

    get_format(fmt)
    if n <= 0:
        raise AddkError(f"n must be positive, got {n}")
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise AddkError(f"--out {out} exists and is not a directory")
    if out is not None:
        check_writable_dir(out)
    names = list(tasks) if tasks is not None else list(family.tasks)
    per_shots = paired_shot_examples(family, names, shots, n, seed)
    if isinstance(model, str):
        model = load_model(model)
    frames = []
    for s, examples in per_shots.items():
        frames.append(
            evaluate(model, examples, fmt, batch_size=batch_size, verbose=verbose, desc=f"{s}-shot")
        )
    df = pd.concat(frames, ignore_index=True)
    table = accuracy_table(df, by=("task", "k", "shots"), seed=seed)
    table["split"] = ["heldout" if t in family.heldout else "train" for t in table["task"]]
    if out is not None:
        out = Path(out)
        write_table(out / "examples.csv", df)
        write_table(out / "eval.csv", table)
        write_json(
            out / "eval.json",
            {
                "config": {
                    "family": family.name,
                    "tasks": names,
                    "shots": shots,
                    "n": n,
                    "format": fmt,
                    "seed": seed,
                    "kind": "final_eval",
                },
                "model": model.info.to_dict(),
                "family_fingerprint": family.fingerprint(),
                "sample_manifest": manifest_hash(per_shots[max(shots)]),
                "code_version": __version__,
                "rows": table.to_dict(orient="records"),
                "by_shots": accuracy_table(df, by=("shots",), seed=seed).to_dict(orient="records"),
            },
        )
    return table
