"""Registry of the report's figures: slug → (title, caption, builder reading a run directory).

Not a step of the method: every figure of ``report.html`` is built here from the saved stage
results, so the report, the example scripts (``examples/<slug>.py``, one per figure) and
notebooks draw the very same figure. A builder ``build(run, results)`` reads the run's typed
views (``report.results.RunResults``: one per report, shared by every figure) and hands them,
or DataFrames and plain numbers, to ``plots`` / ``plots_mech``; the ``run`` serves only the
model (shape, fingerprint, the attention view). A builder returns None when its stage did not
produce the data (e.g. no analysis heads); the report then leaves the figure out and says why.
Each entry carries its caption (one sentence: what to look at, and what the figure does not
show), so a caption lives with its figure. Cost: milliseconds per figure, except the attention
view, which runs the model on two prompts (≈1 s for organism-fv on 2 shared CPU cores).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from operator import attrgetter

from addk_interp.report import plots, plots_mech
from addk_interp.report.results import RunResults


@dataclass(frozen=True)
class FigureSpec:
    slug: str
    title: str
    stage: str
    build: Callable  # build(run, results: RunResults) -> go.Figure | None
    caption: str


def _accuracy(run, res: RunResults):
    t = res.clean
    return None if t is None else plots.accuracy_vs_k(t)


def _head_norms(run, res: RunResults):
    train_m, _ = run.load_means()
    return plots.head_norm_heatmap(train_m.means)


def _fv(run, res: RunResults):
    t = res.fv
    return None if t is None else plots.fv_bars(t)


def _coef(run, res: RunResults):
    fit = res.gate_fit(run.model)
    return None if fit is None else plots.coef_heatmap(fit.final.numpy())


def _sorted_coef(run, res: RunResults):
    sel = res.selection
    return None if sel is None or sel.cut is None else plots.sorted_coef(sel.cut)


def _training(run, res: RunResults):
    fit = res.gate_fit(run.model)
    return None if fit is None else plots.training_curves(list(fit.history))


def _dose(run, res: RunResults):
    scan = res.scan_curves
    if scan is None:
        return None
    return plots.dose_response(scan, res.scan.main if res.scan else [])


def _headset(run, res: RunResults):
    t = res.headset_fv
    return None if t is None else plots.headset_bars(t)


def _necessity(run, res: RunResults):
    nec = res.necessity
    return None if nec is None else plots.necessity_plot(nec)


def _per_head(res: RunResults):
    sub = res.subspaces
    return (sub.per_head if sub else None) or None


def _cumvar(run, res: RunResults):
    per = _per_head(res)
    return None if per is None else plots.cumvar_plot(per)


def _pc_coords(run, res: RunResults):
    per = _per_head(res)
    return None if per is None else plots.pc_coords_plot(per[0])


def _fitted(run, res: RunResults):
    # the subspaces stage's persisted fits (no model, no refit)
    fits = res.fits
    return plots_mech.fitted_targets(fits) if fits else None


def _periodogram(run, res: RunResults):
    per = _per_head(res)
    return None if per is None else plots.periodogram_plot(per)


def _angles(run, res: RunResults):
    sub = res.subspaces
    return plots_mech.angle_heatmap(sub.angles) if sub and sub.angles else None


def _projections(run, res: RunResults):
    t = res.projections
    if t is None:
        return None
    return plots_mech.projection_bars(t) if len(t) else None


def _per_head_figure(view: str, plot: Callable) -> Callable:
    """A builder drawing ``plot(v)`` from the run's per-head view ``v = results.<view>``
    (``circuits``, ``extraction`` or ``demos``) when it has at least one head."""
    get = attrgetter(view)

    def build(run, res: RunResults):
        v = get(res)
        return plot(v) if v is not None and v.heads else None

    return build


def _fv_heldout_refs(res: RunResults) -> tuple[float | None, float | None]:
    """(all-heads unit FV, zero-shot) accuracy on the held-out tasks (fv_eval), when known."""
    t = res.fv
    if t is None:
        return None, None
    t = t[t["split"] == "heldout"]

    def acc(cond):
        r = t.loc[t["condition"] == cond, "fv_accuracy"]
        return float(r.iloc[0]) if len(r) else None

    return acc("all_heads_unit"), acc("zero_shot_no_fv")


def _aie(run, res: RunResults):
    aie = res.aie
    if not aie or not aie.topk:
        return None
    fv_all, zero = _fv_heldout_refs(res)
    return plots_mech.aie_bars(
        aie, fv_all=fv_all, zero_shot=zero, title="AIE baseline: top-k FV (held-out tasks)"
    )


def head_effect_panels(run, results: RunResults | None = None) -> list[dict]:
    """The per-head causal measures a run has, each as a [layer, head] grid: AIE (``aie``
    stage), single-head mean-ablation Δ accuracy (``headsets/necessity.json``; heads not
    ablated are blank) and, when ``addk-interp validate`` has run, the rank of every head under
    attribution patching and single-head ablation (``validation.json`` stores rankings)."""
    import numpy as np

    res = RunResults(run.out) if results is None else results
    L, H = run.model.n_layers, run.model.n_heads
    panels = []
    scores = res.aie_scores(run.model)
    if scores is not None:
        n = sum(scores.n_per_task)
        panels.append(
            dict(
                title=f"AIE: mean Δ p(answer), task-mean output patched into label-shuffled "
                f"prompts (n = {n}, {len(scores.tasks)} tasks)",
                z=scores.aie.double().numpy(),
                colorbar="AIE",
                colorscale="RdBu",
                reversescale=True,
                zmid=0.0,
            )
        )
    nec = res.necessity
    single = nec.single_head_accs if nec else {}
    if single:
        z = np.full((L, H), np.nan)
        for h, acc in single.items():
            if h.layer < L and h.head < H:
                z[h.layer, h.head] = acc - nec.clean_acc
        panels.append(
            dict(
                title=f"single-head mean ablation: Δ n-shot accuracy vs clean "
                f"(n = {nec.n_prompts}; {len(single)} of {L * H} heads ablated, blank: "
                "not ablated)",
                z=z,
                colorbar="Δ acc",
                colorscale="RdBu",
                zmid=0.0,
                fmt="+.2f",
            )
        )
    val = res.validation
    for m in val.methods if val else []:
        if m.method not in ("attribution_patching", "single_head_ablation"):
            continue
        z = np.full((L, H), np.nan)
        for r, h in enumerate(m.ranking, start=1):
            if h.layer < L and h.head < H:
                z[h.layer, h.head] = r
        panels.append(
            dict(
                title=f"addk-interp validate, {m.method.replace('_', ' ')}: rank "
                "(1 = largest effect; ranks, not scores, are saved)",
                z=z,
                colorbar="rank",
                colorscale="Viridis",
                reversescale=True,
                fmt="d",
            )
        )
    return panels


def _head_effects(run, res: RunResults):
    panels = head_effect_panels(run, res)
    if not panels:
        return None
    return plots_mech.head_effects(panels, title="Per-head causal effect [layer × head]")


ATTENTION_KIND = "report_attention"  # sampling kind (seeded by the run's seed) of the prompts


def attention_views(run, n_prompts: int = 2, results: RunResults | None = None) -> list[dict]:
    """Attention patterns (``blocks.{l}.attn.hook_pattern``) of the analysis heads on
    ``n_prompts`` fixed n-shot prompts: one from the first and one from the last training task
    (numeric order of k), sampled with the run's seed; token strings with their roles."""
    import torch

    from addk_interp.analyses.extraction import group_role
    from addk_interp.core.prompts import encode_examples
    from addk_interp.report.plots import task_sort_key

    res = RunResults(run.out) if results is None else results
    heads = [tuple(h) for h in res.analysis_heads()]
    if not heads:
        return []
    tasks = sorted(run.family.train, key=task_sort_key)
    picks = list(dict.fromkeys([tasks[0], tasks[-1]]))[:n_prompts]
    ex = run.examples(picks, 1, ATTENTION_KIND)
    enc = encode_examples(run.model, ex, run.cfg.format)
    names = sorted({f"blocks.{la}.attn.hook_pattern" for la, _ in heads})
    last = f"blocks.{max(la for la, _ in heads)}.attn.hook_pattern"
    views = []
    for e, x in zip(enc, ex, strict=True):
        tokens = torch.tensor([list(e.prompt_ids)], dtype=torch.long)
        with torch.no_grad():
            acts = run.model.run_collect(tokens, names, stop_after=last)
        strs = run.model.to_str_tokens(tokens)
        roles = [group_role(g) for g in e.groups]
        for la, h in heads:
            views.append(
                dict(
                    head=(la, h),
                    prompt=f"{x.task} prompt (query {x.query})",
                    tokens=strs,
                    roles=roles,
                    pattern=acts[f"blocks.{la}.attn.hook_pattern"][0, h].double().cpu().numpy(),
                )
            )
    return views


def _attention(run, res: RunResults):
    views = attention_views(run, results=res)
    return plots_mech.attention_patterns(views) if views else None


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec(
        "fig01_accuracy_vs_k",
        "Clean accuracy vs k",
        "clean_eval",
        _accuracy,
        "Does the model do the task without help? Compare the n-shot curve with the 0-shot one "
        "(◆ marks held-out tasks; error bars are bootstrap 95% CIs over prompts); it says "
        "nothing about which heads carry the task.",
    ),
    FigureSpec(
        "fig02_head_norms",
        "Per-head mean-output norm (training tasks)",
        "capture",
        _head_norms,
        "How large each head's mean output is, averaged over training tasks; a large norm is "
        "not a causal effect (see the per-head causal effect figure).",
    ),
    FigureSpec(
        "fig03_fv_accuracy",
        "Function-vector accuracy",
        "fv_eval",
        _fv,
        "Does adding the all-heads function vector to a zero-shot prompt recover the task? "
        "Compare each bar with the dashed zero-shot baseline and the dotted clean n-shot "
        "line; it does not localize the effect to any head.",
    ),
    FigureSpec(
        "fig04_gate_coefficients",
        "Gate coefficients [layer × head]",
        "localize",
        _coef,
        "Which heads the trained gates keep (large |coef|); gate coefficients are a selection "
        "signal, not a measured causal effect of each head alone.",
    ),
    FigureSpec(
        "fig05_sorted_coef",
        "Sorted |coef| with the selection cut",
        "localize",
        _sorted_coef,
        "Where the selection rule cuts the sorted |coef| curve (red: selected heads, named in "
        "the hover); a clean gap means a clear selection, a smooth curve an arbitrary one.",
    ),
    FigureSpec(
        "fig06_gate_training",
        "Gate training curves",
        "localize",
        _training,
        "Whether gate training converged: one panel per quantity (losses, penalty, head "
        "counts, accuracies) by epoch; it does not show which heads were kept.",
    ),
    FigureSpec(
        "fig07_dose_response",
        "Dose-response (recovery) curves",
        "scan",
        _dose,
        "How accuracy grows as one head's FV term is scaled by c (main heads bold, with Wilson "
        "95% CIs); a single head's curve cannot show interactions between heads.",
    ),
    FigureSpec(
        "fig08_headset_fv",
        "Head-set FV accuracy",
        "headsets",
        _headset,
        "How much of the task each head set's FV recovers on held-out tasks, against the "
        "zero-shot (dashed) and clean n-shot (dotted) lines; sufficiency only, not necessity.",
    ),
    FigureSpec(
        "fig09_necessity",
        "Necessity of the main heads",
        "headsets",
        _necessity,
        "Does mean-ablating the main heads hurt more than ablating random head sets of the "
        "same size (box points)? It tests necessity of the set, not of each head.",
    ),
    FigureSpec(
        "fig10_cumulative_variance",
        "PCA cumulative variance per head",
        "subspaces",
        _cumvar,
        "How many principal components of a head's per-task means reach 95% of the variance "
        "(dashed line); low dimension does not by itself mean the task is encoded there.",
    ),
    FigureSpec(
        "fig11_pc_coordinates",
        "PC coordinates vs k (first analysis head)",
        "subspaces",
        _pc_coords,
        "How the first analysis head's top PC coordinates vary with k (look for periodic "
        "patterns); other heads are not shown.",
    ),
    FigureSpec(
        "fig12_fitted_targets",
        "Fitted periodic / magnitude targets vs k, with R²",
        "subspaces",
        _fitted,
        "How well each periodic or magnitude target of k is linearly read out of a head's PCs "
        "(one panel per target, one color per head, R² in the panel title); a good fit is "
        "correlational, see the projection tests for causal use.",
    ),
    FigureSpec(
        "fig13_periodogram",
        "Periodogram (which periods each head uses)",
        "subspaces",
        _periodogram,
        "Which periods in k carry the variance of each head's task means (peaks); it ignores "
        "phase and does not test causal use.",
    ),
    FigureSpec(
        "fig14_principal_angles",
        "Principal angles between head subspaces",
        "subspaces",
        _angles,
        "Whether heads write into the same subspace (small angles) or different ones (near "
        "90°); it compares geometry only, not function.",
    ),
    FigureSpec(
        "fig15_projection_tests",
        "Causal projection tests with error decomposition",
        "projections",
        _projections,
        "Does the FV still work when projected onto / out of the fitted subspace (accuracy "
        "with 95% CIs, left), and which digits the errors get wrong (right); small n per arm "
        "gives wide CIs.",
    ),
    FigureSpec(
        "fig16_qk_roles",
        "QK: attention by token role",
        "circuits",
        _per_head_figure("circuits", plots_mech.qk_roles),
        "Where the query row of each analysis head attends, summed by token role; attention "
        "mass is not the information moved (see the OV figures).",
    ),
    FigureSpec(
        "fig17_qk_label_scores",
        "QK: score at a label vs its number",
        "circuits",
        _per_head_figure("circuits", plots_mech.qk_label_scores),
        "Whether the query prefers some label numbers over others (centered pre-softmax "
        "score); a flat cloud means attention does not depend on the number.",
    ),
    FigureSpec(
        "fig18_ov_embeddings",
        "OV map of number embeddings into the fitted subspace",
        "circuits",
        _per_head_figure("circuits", partial(plots_mech.ov_numbers, source="ov_embedding")),
        "What the head's OV circuit writes, in its fitted basis, for each number-token "
        "embedding (one color per head, dash per direction); raw embeddings, not in-context "
        "residuals.",
    ),
    FigureSpec(
        "fig19_ov_labels",
        "OV map of label residuals into the fitted subspace",
        "circuits",
        _per_head_figure("circuits", partial(plots_mech.ov_numbers, source="ov_label")),
        "The same OV read-out for the residual stream at in-context label tokens; it shows what "
        "could be moved, not how much attention moves it.",
    ),
    FigureSpec(
        "fig20_group_shares",
        "Token-group shares of the task signal",
        "extraction",
        _per_head_figure("extraction", plots.share_bars),
        "Which token roles the head's task signal comes from (signed shares, 95% CIs over "
        "prompts); shares are exact decompositions of one head's output, not of the model's.",
    ),
    FigureSpec(
        "fig21_label_alignment",
        "Label peaking, alignment and weighting gain",
        "extraction",
        _per_head_figure("extraction", plots_mech.label_alignment),
        "One panel per label metric (attention mass on labels and sinks, alignment with the "
        "task direction, weighting gain), each with a 95% CI; descriptive, no intervention.",
    ),
    FigureSpec(
        "fig22_demo_trajectories",
        "Per-demonstration signal trajectories",
        "demos",
        _per_head_figure("demos", plots_mech.demo_trajectories),
        "How much each demonstration's label contributes to the head's aggregate signal (± 1 "
        f"s.e.m.); contributions below {plots_mech.NO_SIGNAL:g} are reported as no signal "
        "rather than drawn as a trend.",
    ),
    FigureSpec(
        "fig23_offset_readout",
        "Offset read-out from each label",
        "demos",
        _per_head_figure("demos", plots_mech.offset_readout),
        "Whether each label's signal encodes its own offset y − x (points on the dashed y = x "
        "line are read out correctly; accuracy with 95% CI and chance in the legend); a "
        "read-out is not proof the model uses it.",
    ),
    FigureSpec(
        "fig24_self_correction",
        "Self-correction curves",
        "demos",
        _per_head_figure("demos", plots_mech.self_correction),
        "What one wrong demonstration at position j does to accuracy and to the aggregate "
        "signal (95% CIs); with few prompts the CIs are wide.",
    ),
    FigureSpec(
        "fig25_aie_baseline",
        "AIE baseline (Todd et al.) top-k FV",
        "aie",
        _aie,
        "How well an FV built from the top-k heads by average indirect effect recovers held-out "
        "tasks (95% CIs) against the clean, all-heads and zero-shot lines; AIE ranks heads on "
        "label-shuffled prompts, a different question than the gates.",
    ),
    FigureSpec(
        "fig26_head_effects",
        "Per-head causal effect [layer × head]",
        "aie",
        _head_effects,
        "Which heads matter causally when intervened on one at a time (AIE, single-head "
        "ablation, and the validate rankings when present; hover names the head); one-head "
        "effects miss heads that only matter jointly.",
    ),
    FigureSpec(
        "fig27_attention_patterns",
        "Attention patterns of the analysis heads (two fixed prompts)",
        "scan",
        _attention,
        "Where each analysis head attends on two fixed prompts (choose head and prompt in the "
        "menu; tick labels name each token's role); two prompts are examples, not averages.",
    ),
    FigureSpec(
        "fig28_graded_effects",
        "Graded effects: mean log p(answer) beside exact match",
        "fv_eval",
        lambda run, res: _graded(run, res),
        "Whether FVs, the dose-response, projections and AIE top-k FVs move the answer's "
        "log-probability against the zero-shot baseline even where exact match stays near 0; "
        "a higher log-probability is not a correct answer.",
    ),
)


def _graded(run, res: RunResults):
    aie = res.aie
    return plots.graded_effects(
        res.fv_examples, res.scan_curves, res.projections, aie.topk if aie else None
    )


def figure_spec(slug: str) -> FigureSpec:
    for f in FIGURES:
        if f.slug == slug:
            return f
    raise KeyError(f"no figure {slug!r}; have {[f.slug for f in FIGURES]}")


def build(run, slug: str, results: RunResults | None = None):
    """The figure ``slug`` of a finished run (None when its stage has no data for it).
    ``results``: the run's ``RunResults`` when the caller already holds one (the report builds
    every figure from one)."""
    spec = figure_spec(slug)
    res = RunResults(run.out) if results is None else results
    if not res.done(spec.stage):
        return None
    return spec.build(run, res)
