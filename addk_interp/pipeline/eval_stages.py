"""The pipeline's first stages (method steps 1–3): clean accuracy, task-mean head outputs, and
function vectors of all heads.

  clean_eval  clean 0-shot and n-shot accuracy per task (prompts of kind ``final_eval``), with
              bootstrap CIs: acc_t = mean_i 1[greedy answer_i = k + x_i]
  capture     per-task mean head outputs h̄_t[l, h] = mean_i o_{l,h}(prompt_i) at the query
              position: training tasks (kind ``activation``, seed) and held-out tasks from
              separately seeded prompts (``heldout_activation``, seed + 1001)
  fv_eval     zero-shot prompts with FV_t = Σ_{all l,h} h̄_t[l, h] added to the residual stream
              after layer L's attention, paired with the clean n-shot outcome of the same prompt;
              controls: Σ of the mean over training tasks, and zero-shot without a vector

Each function is one cached stage (``fn(run, sdir) -> files``; see ``pipeline.stages``). Cost:
clean_eval 2 × n_eval forwards per task, capture n_capture forwards per task, fv_eval 3 × n_eval
zero-shot forwards per task.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from addk_interp.core.store import write_json, write_table  # noqa: F401


def clean_eval(run, sdir: Path) -> list[Path]:
    from addk_interp.core.scoring import accuracy_table, evaluate
    from addk_interp.pipeline.evaluation import paired_shot_examples

    per = paired_shot_examples(
        run.family,
        list(run.family.tasks),
        [0, run.cfg.shots],
        run.cfg.n_eval,
        run.cfg.seed,
    )
    frames = [
        evaluate(
            run.model,
            ex,
            run.cfg.format,
            batch_size=run.cfg.batch_size,
            verbose=run.verbose,
            desc=f"clean {s}-shot",
        )
        for s, ex in per.items()
    ]
    df = pd.concat(frames, ignore_index=True)
    table = accuracy_table(df, by=("task", "k", "shots"), seed=run.cfg.seed)
    table["split"] = ["heldout" if t in run.family.heldout else "train" for t in table["task"]]
    return [write_table(sdir / "examples.csv", df), write_table(sdir / "accuracy.csv", table)]


def capture(run, sdir: Path) -> list[Path]:
    from addk_interp.hooks.capture import capture_means

    c = run.cfg
    train = run.examples(run.family.train, c.n_capture, "activation")
    files = []
    m = capture_means(
        run.model,
        train,
        c.format,
        batch_size=c.batch_size,
        verbose=run.verbose,
        desc="capture train",
        extra_provenance={"split": "train", "seed": c.seed},
    )
    files.append(m.save(sdir / "means_train.safetensors"))
    if run.family.heldout:
        held = run.examples(
            run.family.heldout, c.n_capture, "heldout_activation", seed=c.seed + 1001
        )
        h = capture_means(
            run.model,
            held,
            c.format,
            batch_size=c.batch_size,
            verbose=run.verbose,
            desc="capture held-out",
            extra_provenance={"split": "heldout", "seed": c.seed + 1001},
        )
        files.append(h.save(sdir / "means_heldout.safetensors"))
    return files


def fv_eval(run, sdir: Path) -> list[Path]:
    from addk_interp.core.scoring import evaluate
    from addk_interp.hooks.fv import evaluate_fv, head_set_vectors

    c = run.cfg
    train_m, held_m = run.load_means()
    frames = []
    for split, tasks, means in (
        ("heldout", run.family.heldout, held_m),
        ("train", run.family.train, train_m),
    ):
        if not tasks or means is None:
            continue
        ex = run.examples(tasks, c.n_eval, "final_eval")
        clean = run.clean_results(ex)
        if clean is None:
            clean = evaluate(run.model, ex, c.format, batch_size=c.batch_size)
        for label, vecs in (
            ("all_heads_unit", head_set_vectors(means, tasks, None)),
            (
                "mean_of_train_tasks",
                head_set_vectors(train_m, tasks, None, mean_of=run.family.train),
            ),
        ):
            df = evaluate_fv(
                run.model,
                ex,
                vecs,
                layer=run.layer,
                fmt=c.format,
                batch_size=c.batch_size,
                clean=clean,
                label=label,
            )
            df["split"] = split
            frames.append(df)
        zero = evaluate(run.model, ex, c.format, zero_shot=True, batch_size=c.batch_size)
        zero["clean_correct"] = clean["correct"].to_numpy()
        zero["condition"] = "zero_shot_no_fv"
        zero["split"] = split
        frames.append(zero)
    df = pd.concat(frames, ignore_index=True)
    summary = (
        df.groupby(["split", "condition"])
        .agg(
            n=("correct", "size"),
            fv_accuracy=("correct", "mean"),
            clean_accuracy=("clean_correct", "mean"),
        )
        .reset_index()
    )
    from addk_interp.core.scoring import bootstrap_ci

    cis = [
        bootstrap_ci(g["correct"].to_numpy(), seed=c.seed)
        for _, g in df.groupby(["split", "condition"])
    ]
    summary["ci_low"] = [a for a, _ in cis]
    summary["ci_high"] = [b for _, b in cis]
    summary["layer"] = run.layer
    return [
        write_table(sdir / "fv_examples.csv", df),
        write_table(sdir / "fv_summary.csv", summary),
    ]
