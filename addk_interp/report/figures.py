"""Registry of the report's figures: slug → (title, builder reading a run directory).

Not a step of the method: every figure of ``report.html`` is built here from the saved stage
results, so the report, the example scripts (``examples/<slug>.py``, one per figure) and
notebooks draw the very same figure. A builder returns None when its stage did not produce
the data (e.g. no analysis heads); the report then leaves the figure out and says why.
Cost: milliseconds per figure (the subspace figures refit one head's targets, ~0.1 s).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd

from addk_interp.core.store import stage_json
from addk_interp.report import plots, plots_mech


@dataclass(frozen=True)
class FigureSpec:
    slug: str
    title: str
    stage: str
    build: Callable


def _st(run) -> Path:
    return run.out / "stages"


def _json(run, stage: str, name: str):
    return stage_json(run.out, stage, name)


def _accuracy(run):
    return plots.accuracy_vs_k(pd.read_csv(_st(run) / "clean_eval" / "accuracy.csv"))


def _head_norms(run):
    train_m, _ = run.load_means()
    return plots.head_norm_heatmap(train_m.means)


def _fv(run):
    return plots.fv_bars(pd.read_csv(_st(run) / "fv_eval" / "fv_summary.csv"))


def _gate_fit(run):
    from addk_interp.localize.gates import GateFit

    p = _st(run) / "localize" / "gates.safetensors"
    return GateFit.load(p, run.model) if p.exists() else None


def _coef(run):
    fit = _gate_fit(run)
    return None if fit is None else plots.coef_heatmap(fit.final.numpy())


def _sorted_coef(run):
    sel = _json(run, "localize", "selected.json")
    return None if sel is None else plots.sorted_coef(sel["cut"])


def _training(run):
    fit = _gate_fit(run)
    return None if fit is None else plots.training_curves(list(fit.history))


def _dose(run):
    scan = _json(run, "scan", "scan.json")
    if scan is None:
        return None
    return plots.dose_response(scan, run.main_heads())


def _headset(run):
    p = _st(run) / "headsets" / "headset_summary.csv"
    return plots.headset_bars(pd.read_csv(p)) if p.exists() else None


def _necessity(run):
    nec = _json(run, "headsets", "necessity.json")
    return None if nec is None else plots.necessity_plot(nec)


def _per_head(run):
    sub = _json(run, "subspaces", "subspaces.json") or {}
    return sub.get("per_head") or None


def _cumvar(run):
    per = _per_head(run)
    return None if per is None else plots.cumvar_plot(per)


def _pc_coords(run):
    per = _per_head(run)
    return None if per is None else plots.pc_coords_plot(per[0])


def _fitted(run):
    from addk_interp.pipeline.analysis_stages import head_fits

    fits = head_fits(run, run.analysis_heads())
    return plots_mech.fitted_targets(fits) if fits else None


def _periodogram(run):
    per = _per_head(run)
    return None if per is None else plots.periodogram_plot(per)


def _angles(run):
    sub = _json(run, "subspaces", "subspaces.json") or {}
    return plots_mech.angle_heatmap(sub["angles"]) if sub.get("angles") else None


def _projections(run):
    p = _st(run) / "projections" / "projections.csv"
    if not p.exists():
        return None
    t = pd.read_csv(p)
    return plots_mech.projection_bars(t) if len(t) else None


def _json_figure(stage: str, name: str, plot: Callable, needs: str = "per_head") -> Callable:
    """A builder drawing ``plot(d)`` from a stage's JSON ``d`` when ``d[needs]`` is non-empty."""

    def build(run):
        d = _json(run, stage, name)
        return plot(d) if d and d.get(needs) else None

    return build


_CIRCUITS = ("circuits", "circuits.json")
_EXTRACTION = ("extraction", "extraction.json")
_DEMOS = ("demos", "demos.json")


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("fig01_accuracy_vs_k", "Clean accuracy vs k", "clean_eval", _accuracy),
    FigureSpec(
        "fig02_head_norms", "Per-head mean-output norm (training tasks)", "capture", _head_norms
    ),
    FigureSpec("fig03_fv_accuracy", "Function-vector accuracy", "fv_eval", _fv),
    FigureSpec("fig04_gate_coefficients", "Gate coefficients [layer × head]", "localize", _coef),
    FigureSpec(
        "fig05_sorted_coef", "Sorted |coef| with the selection cut", "localize", _sorted_coef
    ),
    FigureSpec("fig06_gate_training", "Gate training curves", "localize", _training),
    FigureSpec("fig07_dose_response", "Dose-response (recovery) curves", "scan", _dose),
    FigureSpec("fig08_headset_fv", "Head-set FV accuracy", "headsets", _headset),
    FigureSpec("fig09_necessity", "Necessity of the main heads", "headsets", _necessity),
    FigureSpec(
        "fig10_cumulative_variance", "PCA cumulative variance per head", "subspaces", _cumvar
    ),
    FigureSpec(
        "fig11_pc_coordinates", "PC coordinates vs k (first analysis head)", "subspaces", _pc_coords
    ),
    FigureSpec(
        "fig12_fitted_targets",
        "Fitted periodic / magnitude targets vs k, with R²",
        "subspaces",
        _fitted,
    ),
    FigureSpec(
        "fig13_periodogram", "Periodogram (which periods each head uses)", "subspaces", _periodogram
    ),
    FigureSpec(
        "fig14_principal_angles", "Principal angles between head subspaces", "subspaces", _angles
    ),
    FigureSpec(
        "fig15_projection_tests",
        "Causal projection tests with error decomposition",
        "projections",
        _projections,
    ),
    FigureSpec(
        "fig16_qk_roles",
        "QK: attention by token role",
        "circuits",
        _json_figure(*_CIRCUITS, plots_mech.qk_roles),
    ),
    FigureSpec(
        "fig17_qk_label_scores",
        "QK: score at a label vs its number",
        "circuits",
        _json_figure(*_CIRCUITS, plots_mech.qk_label_scores),
    ),
    FigureSpec(
        "fig18_ov_embeddings",
        "OV map of number embeddings into the fitted subspace",
        "circuits",
        _json_figure(*_CIRCUITS, partial(plots_mech.ov_numbers, source="ov_embedding")),
    ),
    FigureSpec(
        "fig19_ov_labels",
        "OV map of label residuals into the fitted subspace",
        "circuits",
        _json_figure(*_CIRCUITS, partial(plots_mech.ov_numbers, source="ov_label")),
    ),
    FigureSpec(
        "fig20_group_shares",
        "Token-group shares of the task signal",
        "extraction",
        _json_figure(*_EXTRACTION, plots.share_bars),
    ),
    FigureSpec(
        "fig21_label_alignment",
        "Label peaking, alignment and weighting gain",
        "extraction",
        _json_figure(*_EXTRACTION, plots_mech.label_alignment),
    ),
    FigureSpec(
        "fig22_demo_trajectories",
        "Per-demonstration signal trajectories",
        "demos",
        _json_figure(*_DEMOS, plots_mech.demo_trajectories),
    ),
    FigureSpec(
        "fig23_offset_readout",
        "Offset read-out from each label",
        "demos",
        _json_figure(*_DEMOS, plots_mech.offset_readout),
    ),
    FigureSpec(
        "fig24_self_correction",
        "Self-correction curves",
        "demos",
        _json_figure(*_DEMOS, plots_mech.self_correction),
    ),
    FigureSpec(
        "fig25_aie_baseline",
        "AIE baseline (Todd et al.) top-k FV",
        "aie",
        _json_figure("aie", "aie_summary.json", plots_mech.aie_bars, needs="topk"),
    ),
)


def figure_spec(slug: str) -> FigureSpec:
    for f in FIGURES:
        if f.slug == slug:
            return f
    raise KeyError(f"no figure {slug!r}; have {[f.slug for f in FIGURES]}")


def build(run, slug: str):
    """The figure ``slug`` of a finished run (None when its stage has no data for it)."""
    spec = figure_spec(slug)
    if not (_st(run) / spec.stage / "done.json").exists():
        return None
    return spec.build(run)
