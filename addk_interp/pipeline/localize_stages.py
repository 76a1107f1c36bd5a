"""The pipeline's localization stages (method step 4): gates over all heads, the recovery scan
and the head sets.

  localize  gate learning over all L × H heads on training tasks (``localize.gates``), then a cut
            rule on the learned coefficients → selected heads
  scan      recovery (dose-response) scan of the top selected heads: accuracy of FV_c = c · Σ h̄
            over a coefficient grid; McNemar + Benjamini–Hochberg → significant heads; the
            quarter-of-best-gain rule → main heads; the localization verdict
  headsets  head-set FVs on held-out tasks (selected, significant, main) and necessity: n-shot
            accuracy with the main heads mean-ablated vs random head subsets of the same size

Each function is one cached stage (``fn(run, sdir) -> files``; see ``pipeline.stages``). Cost:
localize dominates (epochs × items forwards of the upper layers); scan |grid| × heads forwards
per prompt; necessity (1 + n_random) n-shot forwards per prompt.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from addk_interp.core.store import write_json, write_table


def localize(run, sdir: Path) -> list[Path]:
    from addk_interp.localize.gates import fit_gates, gate_config
    from addk_interp.localize.headsets import select_heads

    train_m, held_m = run.load_means()
    cfg = gate_config(
        run.budget["gates"],
        layer=run.layer,
        seed=run.cfg.seed,
        fmt=run.cfg.format,
        **run.budget["gate_overrides"],
    )
    # checkpoints are per stage key: an interrupted run resumes, a changed config starts over
    ckpt = sdir / f"checkpoints-{run.stage_key('localize')}"
    for stale in sdir.glob("checkpoints-*") if sdir.exists() else []:
        if stale != ckpt:
            shutil.rmtree(stale)
    fit = fit_gates(
        run.model,
        run.family,
        train_m,
        held_m,
        cfg,
        checkpoint_dir=ckpt,
        verbose=run.verbose,
    )
    run.note(gates=dict(fit.timing))
    sel = select_heads(fit)
    return [
        fit.save(sdir / "gates.safetensors"),
        write_json(sdir / "selected.json", sel.to_dict()),
    ]


def scan(run, sdir: Path) -> list[Path]:
    from addk_interp.localize.headsets import head_sets, recovery_scan
    from addk_interp.localize.selectors import save_scan_json

    selected = run.selected_heads()
    # cost control: scan the top heads of the selected set by |coef| (all when it is small)
    heads = selected[: run.budget["max_scan_heads"]]
    files = []
    if not heads:
        return [
            write_json(
                sdir / "headsets.json", {"verdict": "empty selection", "main": {"main": []}}
            )
        ]
    train_m, _ = run.load_means()
    ex = run.examples(run.family.train, run.budget["n_scan"], "scan")
    scan = recovery_scan(
        run.context,
        ex,
        train_m,
        heads,
        train_tasks=run.family.train,
        c_max=run.budget["c_max"],
        logprob=True,  # graded dose-response beside exact match
    )
    files.append(save_scan_json(scan, sdir / "scan.json"))
    hs = head_sets(scan)
    d = hs.to_dict()
    d["scanned"] = [list(h) for h in heads]
    d["not_scanned"] = [list(h) for h in selected[len(heads) :]]
    files.append(write_json(sdir / "headsets.json", d))
    return files


def headsets(run, sdir: Path) -> list[Path]:
    from addk_interp.localize.gates import GateFit
    from addk_interp.localize.headsets import headset_evals, necessity

    sel = run.selected_heads()
    main = run.main_heads()
    train_m, held_m = run.load_means()
    files = []
    tasks = run.family.heldout if held_m is not None else run.family.train
    means = held_m if held_m is not None else train_m
    ex = run.examples(tasks, run.cfg.n_eval, "final_eval")
    fit = GateFit.load(run.out / "stages" / "localize" / "gates.safetensors", run.model)
    clean = run.clean_results(ex)
    ev = headset_evals(
        run.context,
        ex,
        means,
        train_m,
        train_tasks=run.family.train,
        selected=sel,
        main=main,
        raw_coef=fit,
        clean=clean,
    )
    files.append(write_table(sdir / "headset_summary.csv", ev.table()))
    files.append(write_table(sdir / "headset_examples.csv", ev.per_example))
    # necessity runs 1 + n_random full n-shot forwards per prompt: its own smaller subset
    per_task: dict[str, int] = {}
    nec_ex = []
    for e in ex:
        if per_task.get(e.task, 0) < run.budget["n_necessity"]:
            per_task[e.task] = per_task.get(e.task, 0) + 1
            nec_ex.append(e)
    nec = necessity(
        run.context,
        nec_ex,
        train_m,
        clean=run.clean_results(nec_ex),
        train_tasks=run.family.train,
        main=main,
        selected=sel,
        n_random=run.budget["n_random"],
        # single-head ablations: every head when the model has at most max_single_heads
        # heads, else the selected ones (budget); the manifest records the choice
        single_heads=(
            None
            if run.model.n_layers * run.model.n_heads <= run.budget["max_single_heads"]
            else sel
        ),
    )
    files.append(write_json(sdir / "necessity.json", nec.to_dict()))
    return files
