"""The pipeline's analysis stages after localization: AIE baseline, OV/QK circuits, demos.

Each function is one cached stage of :class:`addk_interp.pipeline.run.Run` (``fn(run, sdir) ->
files``); the science lives in the modules they call:

  aie       ``localize.aie``: CIE/AIE on label-permuted n-shot prompts of training tasks
            (``n_aie`` prompts spread round-robin over the training tasks), top-k FV on held-out
            zero-shot prompts for k = |selected| and k ≈ 2 % of all heads (spec §4.7)
  circuits  ``analyses.circuits``: per analysis head, the OV map of number-token embeddings and
            of demonstration-label residuals into the head's fitted 6-D subspace, split into
            unit / magnitude parts, and the QK role profile from the query row (spec §5)
  demos     ``analyses.demos``: offset read-out on mixed-offset prompts and the self-correction
            experiment (wrong label at every demo position + shuffled control) per analysis head
            (spec §6.4–6.5); add-k families only (offsets need numeric labels), else a reason

Cost (Gemma-3-270m, 2 CPU cores): aie ≈ 3–6 s per corrupted prompt (all heads), circuits one
forward up to the head's layer per batch, demos ≈ (shots + 3) forwards per prompt.
"""

from __future__ import annotations

from pathlib import Path

from addk_interp.core.heads import HeadLike as Head  # the one head type: Head or (l, h)
from addk_interp.core.heads import head_str
from addk_interp.core.store import write_json


def _hkey(h: Head) -> str:
    return head_str(h)


def fits_path(out: Path) -> Path:
    return Path(out) / "stages" / "subspaces" / "fits.safetensors"


def head_fits(run, heads: list[Head]) -> dict[Head, object]:
    """The persisted six-target subspace fits (``subspaces`` stage, ``fits.safetensors``) of
    those ``heads`` that have one; heads whose fit is not identifiable have none (their error is
    in subspaces.json)."""
    from addk_interp.analyses.periodic import load_fits

    fits = load_fits(fits_path(run.out))
    return {h: fits[h] for h in heads if h in fits}


# ----------------------------------------------------------------------------- subspaces (§5.2)
def subspaces(run, sdir: Path) -> list[Path]:
    from addk_interp.analyses.summary import angle_matrix, merged_means, summarize_heads

    heads = run.analysis_heads()
    train_m, held_m = run.load_means()
    means, tasks = merged_means(train_m, held_m)
    ks = [run.family.tasks[t].k for t in tasks]
    res = {"heads": [list(h) for h in heads], "numeric_k": all(k is not None for k in ks)}
    if heads and res["numeric_k"]:
        subs = summarize_heads(means, ks, heads)
        res["per_head"] = [s.to_dict() for s in subs]
        # angles: the analysis heads and the top selected heads (up to 6 in all)
        extra = [h for h in run.selected_heads() if h not in heads][: max(0, 6 - len(heads))]
        res["angle_heads"] = [list(h) for h in heads + extra]
        res["angles"] = angle_matrix(
            subs + (summarize_heads(means, ks, extra) if extra else [])
        )
    # the fitted subspaces later stages project onto (``projection.fit_for_head`` on the train +
    # held-out task means, by k), persisted so projections, extraction, circuits, demos and the
    # figures load them instead of refitting
    from addk_interp.analyses.periodic import save_fits
    from addk_interp.analyses.projection import fit_for_head

    fits = {}
    parts = [train_m] if held_m is None else [train_m, held_m]
    if res["numeric_k"]:
        kmap = {t: run.family.tasks[t].k for m in parts for t in m.tasks}
        for h in heads:
            try:
                fits[h] = fit_for_head(parts, kmap, h)
            except ValueError:
                pass
    return [
        write_json(sdir / "subspaces.json", res),
        save_fits(
            fits,
            sdir / "fits.safetensors",
            {"model_fingerprint": train_m.provenance.get("model_fingerprint")},
        ),
    ]


# ----------------------------------------------------------------------------- extraction (§5.5)
def extraction(run, sdir: Path) -> list[Path]:
    from addk_interp.analyses.extraction import (
        directions_from_means,
        group_shares,
        iter_extractions,
        label_peaking,
    )

    heads = run.analysis_heads()
    res: dict = {"heads": [list(h) for h in heads], "per_head": {}}
    if heads:
        train_m, _ = run.load_means()
        ex = run.examples(run.family.train, run.budget["n_extract"], "extraction", seed=0)
        collected: dict = {h: ([], []) for h in heads}
        for results in iter_extractions(
            run.model, ex, heads, run.cfg.format, batch_size=run.cfg.batch_size
        ):
            for h, r in results.items():
                collected[h][0].append(r)
                collected[h][1].append(directions_from_means(train_m, h, r))
        fits = head_fits(run, heads)
        for h, (rs, ds) in collected.items():
            gs = group_shares(rs, ds)
            d = gs.to_dict()
            basis = fits[h].basis("full", "onto") if h in fits else None
            d["peaking"] = label_peaking(rs, ds, basis, seed=run.cfg.seed).to_dict()
            d["identity_max_rel_error"] = max(float(r.identity_rel_error) for r in rs)
            d["identity_min_cos"] = min(float(r.identity_min_cos) for r in rs)
            res["per_head"][head_str(h)] = d
    return [write_json(sdir / "extraction.json", res)]


# ----------------------------------------------------------------------------- AIE (§4.7)
def aie(run, sdir: Path):
    from addk_interp.core.tasks import sample_family
    from addk_interp.localize.aie import aie_scan, aie_topk_eval

    b = run.budget
    train = list(run.family.train)
    n = min(b["n_aie"], 25 * len(train))
    per_task = {t: 0 for t in train}
    for i in range(n):
        per_task[train[i % len(train)]] += 1
    examples = []
    for t, m in per_task.items():
        if m:
            examples += sample_family(
                run.family, [t], m, run.cfg.shots, seed=run.cfg.seed, kind="aie_corrupted"
            )
    train_m, held_m = run.load_means()
    res = aie_scan(
        run.context,
        examples,
        train_m,
        train_tasks=train,
    )
    files = [res.save(sdir / "aie.safetensors")]
    n_all = run.model.n_layers * run.model.n_heads
    ks = sorted({max(1, len(run.selected_heads())), max(1, round(0.02 * n_all))})
    summary: dict = {
        "n_corrupted_prompts": len(examples),
        "ranking_top": [list(h) for h in res.ranking()[: max(ks)]],
        "selected": [list(h) for h in run.selected_heads()],
    }
    sel = {tuple(h) for h in run.selected_heads()}
    summary["overlap_with_selected"] = {str(k): len(sel & set(res.top(k))) for k in ks}
    if held_m is None:
        # the ranking used every training task: scoring them would leak; say so instead
        summary["topk"] = {}
        summary["reason"] = "no held-out tasks: the top-k FV needs tasks not used for ranking"
    else:
        ex = run.examples(run.family.heldout, run.cfg.n_eval, "final_eval")
        top = aie_topk_eval(
            run.context,
            res,
            ex,
            held_m,
            ks=ks,
            clean=run.clean_results(ex),
        )
        summary["topk"] = {str(k): s.to_dict() for k, s in top.items()}
    files.append(write_json(sdir / "aie_summary.json", summary))
    return files


# ----------------------------------------------------------------------------- projections (§5.4)
def projections(run, sdir: Path):
    """Causal projection tests of the scanned analysis heads at their scan c*."""
    from addk_interp.analyses.projection import c_stars, projection_tests
    from addk_interp.core.errors import AddkError
    from addk_interp.core.store import write_table
    from addk_interp.localize.headsets import head_sets
    from addk_interp.localize.selectors import load_scan_json

    scan_p = run.out / "stages" / "scan" / "scan.json"
    heads = run.analysis_heads()[: run.budget["max_proj_heads"]]
    res: dict = {"heads": [list(h) for h in heads]}
    fits = head_fits(run, heads)
    heads = [h for h in heads if h in fits]
    if not heads or not scan_p.exists():
        res["reason"] = "no scanned analysis head with an identifiable subspace fit"
        return [write_json(sdir / "projections.json", res)]
    hs = head_sets(load_scan_json(scan_p))
    try:
        cs = c_stars(hs, heads, rule="significant")
        rule = "significant"
    except AddkError:
        cs = c_stars(hs, heads, rule="main")
        rule = "main"
    train_m, held_m = run.load_means()
    tasks = run.family.heldout if held_m is not None else run.family.train
    means = held_m if held_m is not None else train_m
    ex = run.examples(tasks, run.budget["n_proj"], "final_eval")
    arms = [f"{v}_{s}" for v in ("onto", "out") for s in ("full", "parity", "unit", "magnitude")]
    pr = projection_tests(
        run.context,
        ex,
        means,
        train_m,
        heads=heads,
        c_star=cs,
        selected=run.selected_heads(),
        train_tasks=run.family.train,
        fits=fits,
        arms=arms,
        decode_extra=1,  # one token past the answer: enough to see a longer number
    )
    d = pr.to_dict()
    d["c_star_rule"] = rule
    return [
        write_json(sdir / "projections.json", d),
        write_table(sdir / "projections.csv", pr.table()),
    ]


# ----------------------------------------------------------------------------- circuits (§5)
def circuits(run, sdir: Path):
    from addk_interp.analyses.circuits import (
        decompose_ov,
        label_vectors,
        ov_apply,
        ov_embedding_map,
        ov_label_map,
        qk_role_profile,
    )
    from addk_interp.core.errors import AddkError
    from addk_interp.core.prompts import encode_examples, make_batches

    heads = run.analysis_heads()[: run.budget["max_proj_heads"]]
    fits = head_fits(run, heads)
    res: dict = {"heads": [list(h) for h in heads], "per_head": {}}
    if not heads:
        res["reason"] = "no analysis heads"
        return [write_json(sdir / "circuits.json", res)]
    ex = run.examples(run.family.train, run.budget["n_circuit"], "circuits", seed=1)
    batches = make_batches(encode_examples(run.model, ex, run.cfg.format), run.cfg.batch_size)
    numbers = list(range(0, 131))
    try:
        from addk_interp.analyses.circuits import number_token_ids

        number_token_ids(run.model, numbers, "single")
        which = "single"
    except AddkError:
        which = "last"  # digit-split tokenizers: the units-digit token
    for h in heads:
        d: dict = {}
        qk = qk_role_profile(run.model, batches, h)
        d["qk"] = qk.to_dict()
        fit = fits.get(h)
        if fit is None:
            d["ov_reason"] = "no identifiable subspace fit for this head"
        else:
            basis = fit.basis("full", "onto")
            emb = ov_embedding_map(run.model, h, numbers, basis, which=which)
            d["ov_embedding"] = emb.to_dict()
            d["ov_embedding"]["token"] = which
            lv = label_vectors(run.model, batches, h[0])
            lab = ov_label_map(run.model, h, lv, basis)
            d["ov_label"] = lab.to_dict()
            outs = ov_apply(run.model, h, lv.vectors)
            # centered on the mean OV output over labels: the number-dependent part
            d["ov_decomposition"] = decompose_ov(fit, outs, center=outs.mean(0)).to_dict()
            d["ov_decomposition"]["source"] = "label residuals, centered over labels"
        res["per_head"][_hkey(h)] = d
    return [write_json(sdir / "circuits.json", res)]


# ----------------------------------------------------------------------------- demos (§6.4–6.5)
def demos(run, sdir: Path):
    from addk_interp.analyses.demos import (
        mixed_offset_examples,
        offset_readout,
        offset_reference,
        self_correction,
    )

    heads = run.analysis_heads()[: run.budget["max_demo_heads"]]
    res: dict = {"heads": [list(h) for h in heads], "per_head": {}}
    if run.family.name != "add" or run.cfg.task_file:
        res["reason"] = (
            "offset read-out and self-correction need add-k tasks (numeric labels whose "
            f"offset y - x is the task's k); family {run.family.name!r} is not one"
        )
        return [write_json(sdir / "demos.json", res)]
    fits = head_fits(run, heads)
    train_m, held_m = run.load_means()
    from addk_interp.analyses.summary import merged_means

    means, tasks = merged_means(train_m, held_m)
    ks = [run.family.tasks[t].k for t in tasks]
    grid = sorted(k for k in ks if k is not None)
    n = run.budget["n_demo"]
    for h in heads:
        d: dict = {}
        fit = fits.get(h)
        if fit is None:
            d["reason"] = "no identifiable subspace fit for this head"
            res["per_head"][_hkey(h)] = d
            continue
        basis = fit.basis("full", "onto")
        ref = offset_reference({k: means[i, h[0], h[1]] for i, k in enumerate(ks)}, basis=basis)
        mixed = mixed_offset_examples(
            grid, max(1, n // len(grid) + 1), run.cfg.shots, seed=run.cfg.seed, max_value=99
        )[: max(n, len(grid))]
        ro = offset_readout(
            run.model,
            h,
            mixed,
            ref,
            run.cfg.format,
            batch_size=run.cfg.batch_size,
            seed=run.cfg.seed,
        )
        d["offset_readout"] = ro.to_dict(include_arrays=True)
        clean = run.examples(run.family.train, max(1, n // len(run.family.train)), "demos")
        clean = clean[: max(n, 1)]
        sc = self_correction(
            run.model,
            h,
            clean,
            train_m,
            basis,
            run.cfg.format,
            batch_size=run.cfg.batch_size,
            seed=run.cfg.seed,
        )
        d["self_correction"] = sc.to_dict(include_arrays=True)
        res["per_head"][_hkey(h)] = d
    return [write_json(sdir / "demos.json", res)]
