"""Plotly figures of a run (returned, never shown).

Not a step of the method: presentation of stage results, passed as the typed views of
``report.results`` (a stage file's dictionary is accepted too and read through the view's
``from_json``) or as DataFrames of the CSV tables. Conventions every figure follows:
one idea per panel; integer ticks on discrete axes (k, epochs, demonstration index, number of
heads); a 95% CI error bar and a hover text with n and the CI wherever a proportion is drawn;
reference lines (chance, zero-shot baseline, clean n-shot, y = x) where they give the scale;
tasks in numeric order of k; heads written ``L{layer}H{head}``. Cost: milliseconds per figure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

from addk_interp.core.heads import head_str
from addk_interp.report.results import (
    Cut,
    Extraction,
    HeadSubspaceView,
    Necessity,
    ScanCurves,
    TopK,
    as_view,
)

# hover text of a proportion: customdata = [n, ci_low, ci_high]
PROP_HOVER = "%{y:.2f} (95% CI [%{customdata[1]:.2f}, %{customdata[2]:.2f}], n = %{customdata[0]})"
REF_COLOR = "#555"


# ----------------------------------------------------------------------------- helpers
def task_sort_key(name: str) -> tuple:
    """Natural order of task names: add1, add2, …, add10 (not add1, add10, add2)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(name)))


def wilson_ci(correct: float | int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion ``correct / n`` (NaN when n is 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = correct / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def ci_error(y, lo, hi) -> dict:
    """Asymmetric error bars from a CI (missing bounds: no bar)."""
    y, lo, hi = (np.asarray(v, dtype=float) for v in (y, lo, hi))
    return dict(
        type="data",
        symmetric=False,
        array=np.nan_to_num(hi - y, nan=0.0).clip(min=0).tolist(),
        arrayminus=np.nan_to_num(y - lo, nan=0.0).clip(min=0).tolist(),
    )


def prop_custom(n, lo, hi) -> list[list]:
    """customdata rows [n, ci_low, ci_high] for :data:`PROP_HOVER`."""
    return [[int(a), float(b), float(c)] for a, b, c in zip(np.atleast_1d(n), lo, hi, strict=True)]


def prop_hover(label: str, x: str = "%{x}") -> str:
    return f"{label}<br>{x}: " + PROP_HOVER + "<extra></extra>"


def int_axis(fig: go.Figure, axis: str = "x", values: Iterable | None = None, **kw):
    """Integer ticks on a discrete axis: every integer when the axis spans ≤ 30 of them."""
    upd = dict(tickformat="d")
    if values is not None and len(values):
        v = np.asarray(list(values), dtype=float)
        v = v[np.isfinite(v)]
        if v.size and v.max() - v.min() <= 30:
            upd["dtick"] = 1
    (fig.update_xaxes if axis == "x" else fig.update_yaxes)(**upd, **kw)
    return fig


def hline(fig: go.Figure, y: float | int | None, text: str, dash: str = "dash", **kw) -> None:
    if y is None or not np.isfinite(y):
        return
    fig.add_hline(
        y=y,
        line_dash=dash,
        line_color=REF_COLOR,
        annotation_text=text,
        annotation_position="top left",
        **kw,
    )


def head_grid(
    z,
    title: str,
    colorbar: str,
    fmt: str = ".3g",
    colorscale: str = "Viridis",
    coloraxis: str | None = None,
) -> go.Heatmap:
    """A layer × head heatmap (layers on y, heads on x) whose hover names the head (NaN cells:
    not measured, left blank). With ``coloraxis`` the scale is the layout's shared one."""
    z = np.asarray(z, dtype=float)
    n_l, n_h = z.shape
    names = [[f"L{la}H{h}" for h in range(n_h)] for la in range(n_l)]
    scale = (
        dict(coloraxis=coloraxis)
        if coloraxis
        else dict(colorscale=colorscale, colorbar=dict(title=colorbar))
    )
    return go.Heatmap(
        z=np.where(np.isfinite(z), z, None).tolist(),
        x=list(range(n_h)),
        y=list(range(n_l)),
        text=names,
        hovertemplate=f"%{{text}}: %{{z:{fmt}}}<extra>{title}</extra>",
        hoverongaps=False,
        **scale,
    )


def _head_grid_layout(fig: go.Figure, n_l: int, n_h: int) -> go.Figure:
    fig.update_xaxes(title_text="head", dtick=1, tickformat="d")
    fig.update_yaxes(title_text="layer", dtick=1 if n_l <= 30 else None, tickformat="d")
    return fig


def fmt_heads(heads, limit: int = 8) -> str:
    """``L1H0, L1H4, … (+3)``: heads in canonical form, at most ``limit`` shown."""
    names = [head_str(h) for h in heads]
    if len(names) > limit:
        return ", ".join(names[:limit]) + f", … (+{len(names) - limit})"
    return ", ".join(names) or "none"


# ----------------------------------------------------------------------------- figures
def accuracy_vs_k(table: pd.DataFrame, title: str = "Clean accuracy by task") -> go.Figure:
    """Accuracy per k (or task) for each shot count, with bootstrap 95% CIs."""
    fig = go.Figure()
    numeric = table["k"].notna().all()
    xcol = "k" if numeric else "task"
    for shots, g in table.groupby("shots"):
        if numeric:
            g = g.sort_values("k", kind="stable")
        else:
            g = g.iloc[sorted(range(len(g)), key=lambda i: task_sort_key(g["task"].iloc[i]))]
        split = g["split"] if "split" in g else pd.Series(["train"] * len(g), index=g.index)
        fig.add_trace(
            go.Scatter(
                x=g[xcol],
                y=g["accuracy"],
                mode="lines+markers",
                name=f"{shots}-shot",
                marker=dict(
                    symbol=["diamond" if s == "heldout" else "circle" for s in split], size=8
                ),
                error_y=ci_error(g["accuracy"], g["ci_low"], g["ci_high"]),
                customdata=[
                    [int(n), float(lo), float(hi), t, s]
                    for n, lo, hi, t, s in zip(
                        g["n"], g["ci_low"], g["ci_high"], g["task"], split, strict=True
                    )
                ],
                hovertemplate=f"{shots}-shot, %{{customdata[3]}} (%{{customdata[4]}})<br>"
                + PROP_HOVER
                + "<extra></extra>",
            )
        )
    fig.update_layout(
        title=title,
        xaxis_title=xcol + (" (◆ held-out task)" if "split" in table else ""),
        yaxis_title="exact-match accuracy",
        yaxis_range=[-0.02, 1.02],
    )
    if numeric:
        int_axis(fig, "x", table["k"])
    return fig


def head_norm_heatmap(
    means: Float[Tensor, "task layer head d_model"], title: str = "Mean head-output norm"
) -> go.Figure:
    norms = means.float().norm(dim=-1).mean(0).numpy()
    fig = go.Figure(head_grid(norms, "‖o‖", "‖o‖"))
    fig.update_layout(title=title)
    return _head_grid_layout(fig, *norms.shape)


_FV_ORDER = ("all_heads_unit", "mean_of_train_tasks", "zero_shot_no_fv")


def fv_bars(summary: pd.DataFrame, title: str = "Function-vector accuracy") -> go.Figure:
    """One panel per split: accuracy of each FV condition (95% CI), the zero-shot baseline
    (dashed) and clean n-shot accuracy (dotted) as reference lines."""
    splits = sorted(summary["split"].unique(), key=lambda s: (s != "heldout", s))
    fig = make_subplots(
        rows=1,
        cols=len(splits),
        subplot_titles=[f"{'held-out' if s == 'heldout' else s} tasks" for s in splits],
        shared_yaxes=True,
    )
    for i, split in enumerate(splits, start=1):
        g = summary[summary["split"] == split]
        g = g.iloc[
            np.argsort(
                [_FV_ORDER.index(c) if c in _FV_ORDER else len(_FV_ORDER) for c in g["condition"]],
                kind="stable",
            )
        ]
        fig.add_trace(
            go.Bar(
                x=list(g["condition"]),
                y=list(g["fv_accuracy"]),
                name=split,
                showlegend=False,
                marker_color=[
                    "#9e9e9e" if c == "zero_shot_no_fv" else "#1f77b4" for c in g["condition"]
                ],
                error_y=ci_error(g["fv_accuracy"], g["ci_low"], g["ci_high"]),
                customdata=prop_custom(g["n"], g["ci_low"], g["ci_high"]),
                hovertemplate=prop_hover(f"{split} tasks"),
            ),
            row=1,
            col=i,
        )
        zero = g.loc[g["condition"] == "zero_shot_no_fv", "fv_accuracy"]
        hline(fig, float(zero.iloc[0]) if len(zero) else None, "zero-shot", row=1, col=i)
        hline(fig, float(g["clean_accuracy"].iloc[0]), "clean n-shot", dash="dot", row=1, col=i)
    fig.update_layout(title=title)
    fig.update_yaxes(range=[0, 1.05])
    fig.update_yaxes(title_text="accuracy (zero-shot prompt + FV)", row=1, col=1)
    return fig


def coef_heatmap(coef, title: str = "Gate coefficients (final epoch)") -> go.Figure:
    z = np.asarray(coef, dtype=float)
    fig = go.Figure(head_grid(z, "coef", "coef"))
    fig.update_layout(title=title)
    return _head_grid_layout(fig, *z.shape)


def sorted_coef(cut: Cut | dict, title: str = "Sorted |coef| with the cut") -> go.Figure:
    """Sorted |coef| by rank; the selected ranks are named (heads in ``cut.selected``)."""
    cut = as_view(Cut, cut)
    curve = list(cut.curve)
    sel = [head_str(h) for h in cut.selected]
    ranks = list(range(1, len(curve) + 1))
    text = [sel[i] if i < len(sel) else "not selected" for i in range(len(curve))]
    fig = go.Figure(
        go.Scatter(
            x=ranks,
            y=curve,
            mode="lines+markers",
            name="|coef|",
            text=text,
            marker=dict(
                color=["#d62728" if i < len(sel) else "#1f77b4" for i in range(len(curve))]
            ),
            hovertemplate="rank %{x}: %{text}<br>|coef| %{y:.3g}<extra></extra>",
        )
    )
    if cut.threshold is not None:
        hline(fig, float(cut.threshold), f"{cut.rule} cut ({len(sel)} selected)")
    fig.update_layout(title=title, xaxis_title="rank (red: selected)", yaxis_title="|coef|")
    int_axis(fig, "x", ranks)
    return fig


# panels of the gate-training history: one quantity (and one scale) per panel
_TRAIN_PANELS = (
    ("loss (total, NLL)", ("loss", "nll")),
    ("L1 penalty", ("reg",)),
    ("number of heads", ("n_active", "n_selected")),
    ("accuracy", ("train_match", "heldout_acc")),
    ("fraction of heads inactive (sparsity)", ("sparsity",)),
)


def training_curves(history: list[dict], title: str = "Gate training") -> go.Figure:
    """Gate training per epoch, one panel per quantity: losses, penalty, head counts,
    accuracies (keys not listed in ``_TRAIN_PANELS`` get a panel each)."""
    keys: list[str] = []
    for h in history:  # a key counts when some epoch recorded a number for it
        keys += [
            k for k, v in h.items() if k != "epoch" and k not in keys and isinstance(v, int | float)
        ]
    panels = [(t, [k for k in ks if k in keys]) for t, ks in _TRAIN_PANELS]
    panels = [(t, ks) for t, ks in panels if ks]
    known = {k for _, ks in panels for k in ks}
    panels += [(k, [k]) for k in keys if k not in known]
    if not panels:
        fig = go.Figure()
        fig.update_layout(title=title + " (no history recorded)")
        return fig
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[t for t, _ in panels])
    x = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    for i, (ptitle, ks) in enumerate(panels):
        r, c = i // cols + 1, i % cols + 1
        for k in ks:
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=[h.get(k) for h in history],
                    mode="lines+markers",
                    name=k,
                    hovertemplate=f"{k}<br>epoch %{{x}}: %{{y:.4g}}<extra></extra>",
                ),
                row=r,
                col=c,
            )
        if ptitle in ("accuracy", "fraction of heads inactive (sparsity)"):
            fig.update_yaxes(range=[-0.02, 1.02], row=r, col=c)
        if ptitle == "number of heads":
            fig.update_yaxes(tickformat="d", row=r, col=c)
    int_axis(fig, "x", x, title_text="epoch")
    fig.update_layout(title=title, height=300 * rows)
    return fig


def dose_response(
    scan: ScanCurves | dict, main: list, title: str = "Recovery (dose-response) scan"
) -> go.Figure:
    """Accuracy vs coefficient c of each scanned head (main heads bold; Wilson 95% CIs drawn for
    the main heads, for every head when there is none, and in every hover); clean n-shot and
    all-selected FV as reference lines."""
    scan = as_view(ScanCurves, scan)
    fig = go.Figure()
    n = scan.n_eval
    mains = {head_str(h) for h in main}
    c_grid = list(scan.c_grid)
    for key, counts in scan.correct.items():
        name = head_str(key)
        is_main = name in mains
        cis = [wilson_ci(c, n) for c in counts]
        y = [c / n for c in counts]
        fig.add_trace(
            go.Scatter(
                x=c_grid,
                y=y,
                mode="lines+markers" if is_main else "lines",
                name=name + (" (main)" if is_main else ""),
                line=dict(width=3 if is_main else 1),
                opacity=1.0 if is_main else 0.4,
                error_y=ci_error(y, *zip(*cis, strict=True)) if is_main or not mains else None,
                customdata=[[n, lo, hi] for lo, hi in cis],
                hovertemplate=prop_hover(name, "c = %{x}"),
            )
        )
    hline(fig, scan.clean_correct / n, "clean n-shot", dash="dot")
    full = scan.full_selected_fv_correct
    hline(fig, None if full is None else full / n, "all selected heads")
    fig.update_layout(
        title=title, xaxis_title="coefficient c", yaxis_title="accuracy", yaxis_range=[-0.02, 1.02]
    )
    int_axis(fig, "x", c_grid)
    return fig


def _heads_cell(v) -> list:
    """A head list stored in a CSV cell (``"[[2, 5], [1, 0]]"``) → list of heads."""
    import json

    if isinstance(v, list | tuple):
        return list(v)
    try:
        out = json.loads(str(v))
    except (ValueError, TypeError):
        return []
    return out if isinstance(out, list) else []


def headset_bars(
    summary: pd.DataFrame, title: str = "Head-set FV accuracy (held-out)"
) -> go.Figure:
    """Accuracy of each head-set condition (95% CI), zero-shot (dashed) and clean n-shot
    (dotted) as reference lines."""
    acc = "accuracy" if "accuracy" in summary else summary.columns[1]
    has_ci = {"ci_low", "ci_high", "n"} <= set(summary.columns)
    refs = {"zero_shot", "clean"}
    g = summary[~summary["condition"].isin(refs)] if has_ci else summary
    heads = [fmt_heads(_heads_cell(v)) for v in g["heads"]] if "heads" in g else [""] * len(g)
    kw = {}
    if has_ci:
        kw = dict(
            error_y=ci_error(g[acc], g["ci_low"], g["ci_high"]),
            customdata=[
                [int(n), float(lo), float(hi), h]
                for n, lo, hi, h in zip(g["n"], g["ci_low"], g["ci_high"], heads, strict=True)
            ],
            hovertemplate="%{x}<br>heads: %{customdata[3]}<br>" + PROP_HOVER + "<extra></extra>",
        )
    fig = go.Figure(go.Bar(x=g["condition"], y=g[acc], name="accuracy", **kw))
    for cond, text, dash in (("zero_shot", "zero-shot", "dash"), ("clean", "clean n-shot", "dot")):
        row = summary.loc[summary["condition"] == cond, acc]
        if has_ci and len(row):
            hline(fig, float(row.iloc[0]), text, dash=dash)
    fig.update_layout(title=title, yaxis_title="accuracy", yaxis_range=[0, 1.05])
    return fig


def necessity_plot(
    nec: Necessity | dict, title: str = "Necessity: ablate main heads (n-shot)"
) -> go.Figure:
    """Accuracy with the main heads mean-ablated (95% CI) vs random same-size subsets (each
    point one subset) and the clean accuracy."""
    nec = as_view(Necessity, nec)
    fig = go.Figure()
    for accs, name in (
        (nec.random_accs, "random subsets of the<br>other selected heads"),
        (nec.random_all_accs, "random subsets of<br>all other heads"),
    ):
        if accs:
            fig.add_trace(
                go.Box(
                    y=accs,
                    name=f"{name} ({len(accs)})",
                    boxpoints="all",
                    hovertemplate=f"{name.replace('<br>', ' ')}<br>one subset: accuracy "
                    "%{y:.2f}<extra></extra>",
                )
            )
    pts = [
        (f"main heads ablated<br>({fmt_heads(nec.main, 4)})", nec.main_acc, nec.main_ci),
        ("clean", nec.clean_acc, nec.clean_ci),
    ]
    pts = [(lab, a, ci or (a, a)) for lab, a, ci in pts]
    pts = [p for p in pts if p[1] is not None]
    if pts:
        y = [p[1] for p in pts]
        lo = [p[2][0] for p in pts]
        hi = [p[2][1] for p in pts]
        n_rows = nec.n_prompts or nec.n
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in pts],
                y=y,
                mode="markers",
                marker=dict(size=14),
                name="main ablated / clean",
                error_y=ci_error(y, lo, hi),
                customdata=[[n_rows, a, b] for a, b in zip(lo, hi, strict=True)],
                hovertemplate=prop_hover("", "%{x}"),
            )
        )
    fig.update_layout(
        title=title, yaxis_title="n-shot accuracy", yaxis_range=[-0.02, 1.05], showlegend=False
    )
    return fig


def cumvar_plot(
    per_head: list[HeadSubspaceView] | list[dict], title: str = "PCA cumulative variance"
) -> go.Figure:
    fig = go.Figure()
    longest = 1
    for d in (as_view(HeadSubspaceView, p) for p in per_head):
        cv = d.cumvar
        longest = max(longest, len(cv))
        name = head_str(d.head)
        fig.add_trace(
            go.Scatter(
                x=list(range(1, len(cv) + 1)),
                y=cv,
                mode="lines+markers",
                name=f"{name} ({d.pcs_to_95} PCs for 95%)",
                hovertemplate=f"{name}<br>%{{x}} PCs: %{{y:.3f}}<extra></extra>",
            )
        )
    hline(fig, 0.95, "95%")
    fig.update_layout(
        title=title, xaxis_title="number of components", yaxis_title="cumulative variance"
    )
    int_axis(fig, "x", range(1, longest + 1))
    return fig


def periodogram_plot(
    per_head: list[HeadSubspaceView] | list[dict], title: str = "Periodogram of task means"
) -> go.Figure:
    fig = go.Figure()
    for d in (as_view(HeadSubspaceView, p) for p in per_head):
        pg = d.periodogram
        if pg is None:
            continue
        name = head_str(d.head)
        fig.add_trace(
            go.Scatter(
                x=pg.periods,
                y=pg.power,
                mode="lines+markers",
                name=name,
                hovertemplate=f"{name}<br>period %{{x:g}}: %{{y:.3f}}<extra></extra>",
            )
        )
    fig.update_layout(title=title, xaxis_title="period (in k)", yaxis_title="variance fraction")
    return fig


def pc_coords_plot(d: HeadSubspaceView | dict) -> go.Figure:
    d = as_view(HeadSubspaceView, d)
    coords = np.asarray(d.pc_coords)
    fig = go.Figure()
    for j in range(coords.shape[1]):
        fig.add_trace(
            go.Scatter(
                x=d.ks,
                y=coords[:, j],
                mode="lines+markers",
                name=f"PC{j + 1}",
                hovertemplate=f"PC{j + 1}<br>k = %{{x:g}}: %{{y:.3g}}<extra></extra>",
            )
        )
    fig.update_layout(
        title=f"PC coordinates vs k, {head_str(d.head)}",
        xaxis_title="k",
        yaxis_title="coordinate",
    )
    int_axis(fig, "x", d.ks)
    return fig


def share_bars(
    extraction: Extraction | dict, title: str = "Token-group share of the task signal"
) -> go.Figure:
    """Signed share of each token role in the head's task signal (mean over prompts, 95% CI)."""
    from addk_interp.analyses.extraction import ROLES

    fig = go.Figure()
    for head, d in as_view(Extraction, extraction).per_head.items():
        roles = d.roles
        if not roles:
            continue
        order = [r for r in ROLES if r in roles] + [r for r in roles if r not in ROLES]
        st = [roles[r] for r in order]
        y = [s.mean for s in st]
        lo = [s.mean if s.ci_low is None else s.ci_low for s in st]
        hi = [s.mean if s.ci_high is None else s.ci_high for s in st]
        n = [s.n for s in st]
        name = head_str(head)
        fig.add_trace(
            go.Bar(
                x=order,
                y=y,
                name=name,
                error_y=ci_error(y, lo, hi),
                customdata=prop_custom(n, lo, hi),
                hovertemplate=prop_hover(name),
            )
        )
    fig.add_hline(y=0, line_color=REF_COLOR, line_width=1)
    fig.update_layout(
        title=title, yaxis_title="signed share (sums to 1 over roles)", barmode="group"
    )
    return fig


def _mean_ci(x: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """Mean and the project's percentile-bootstrap 95 % CI (``core.scoring.bootstrap_ci``),
    NaNs dropped."""
    from addk_interp.core.scoring import bootstrap_ci

    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    return (float(x.mean()), *bootstrap_ci(x, seed=seed))


def graded_effects(
    fv_examples: pd.DataFrame | None,
    scan: ScanCurves | None,
    projections: pd.DataFrame | None,
    aie_topk: dict[int, TopK] | None,
    title: str = "Graded effects: mean log p(answer), teacher forced",
) -> go.Figure | None:
    """The graded metric beside exact match, one panel per experiment: function vectors vs the
    zero-shot baseline (paired prompts), the dose-response per scanned head, the projection
    arms, and the AIE top-k FVs. An effect that does not flip the argmax still moves these."""
    panels = [
        ("FV vs zero-shot (per split)", fv_examples is not None and "answer_logprob" in fv_examples),
        ("dose-response (scanned heads)", bool(scan and scan.mean_answer_logprob)),
        ("projection arms", projections is not None and "mean_answer_logprob" in projections),
        ("AIE top-k FV", bool(aie_topk) and any(
            v.mean_answer_logprob is not None for v in (aie_topk or {}).values())),
    ]
    if not any(ok for _, ok in panels):
        return None
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for t, _ in panels],
                        vertical_spacing=0.18, horizontal_spacing=0.1)
    zero = None
    if panels[0][1]:
        df = fv_examples
        for split, g in df.groupby("split", sort=True):
            rows = []
            for cond, gg in g.groupby("condition", sort=True):
                m, lo, hi = _mean_ci(gg["answer_logprob"].to_numpy())
                rows.append((cond, m, lo, hi, len(gg)))
                if cond == "zero_shot_no_fv" and split == "heldout":
                    zero = m
            fig.add_trace(go.Bar(
                x=[r[0] for r in rows], y=[r[1] for r in rows], name=f"FV ({split})",
                error_y=ci_error([r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]),
                customdata=[[r[4], r[2], r[3]] for r in rows],
                hovertemplate="%{x}: %{y:.2f} [%{customdata[1]:.2f}, %{customdata[2]:.2f}]"
                " (n = %{customdata[0]})<extra>" + split + "</extra>",
            ), row=1, col=1)
    if panels[1][1]:
        grid = scan.c_grid
        n_ex = "?" if scan.n_examples is None else str(scan.n_examples)
        for key, vals in scan.mean_answer_logprob.items():
            fig.add_trace(go.Scatter(
                x=grid[: len(vals)], y=vals, mode="lines+markers", name=head_str(key),
                hovertemplate=head_str(key) + ", c = %{x}: %{y:.2f} (n = "
                + n_ex + ")<extra></extra>",
            ), row=1, col=2)
        fig.update_xaxes(title_text="coefficient c", dtick=1, row=1, col=2)
    if panels[2][1]:
        t = projections
        for head, g in t.groupby("head", sort=False):
            fig.add_trace(go.Bar(
                x=g["arm"], y=g["mean_answer_logprob"], name=f"{head_str(str(head))} arms",
                customdata=g[["n"]].to_numpy(),
                hovertemplate="%{x}: %{y:.2f} (n = %{customdata[0]})<extra>"
                + head_str(str(head)) + "</extra>",
            ), row=2, col=1)
    if panels[3][1]:
        ks = sorted(aie_topk, key=int)
        ys = [aie_topk[k].mean_answer_logprob for k in ks]
        fig.add_trace(go.Bar(
            x=[f"top-{k}" for k in ks], y=ys, name="AIE top-k FV",
            customdata=[[aie_topk[k].n] for k in ks],
            hovertemplate="%{x}: %{y:.2f} (n = %{customdata[0]})<extra></extra>",
        ), row=2, col=2)
    if zero is not None:
        for r, c in ((1, 1), (2, 2)):
            fig.add_hline(y=zero, line_dash="dot", row=r, col=c,
                          annotation_text="zero-shot (held-out)", annotation_position="bottom left")
    fig.update_yaxes(title_text="mean log p(answer)")
    fig.update_layout(title=title, height=720, legend=dict(orientation="h", y=-0.12))
    return fig
