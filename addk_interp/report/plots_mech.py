"""Plotly figures of the mechanism stages: subspaces, projections, circuits, extraction, demos,
AIE, per-head causal effects and attention patterns.

Not a step of the method: presentation of saved stage results, passed as the typed views of
``report.results`` (``Circuits``, ``Extraction``, ``Demos``, ``Angles``, ``AIESummary``; a
stage file's dictionary is read through the view's ``from_json``). Every function returns a
``go.Figure`` and never shows it; the conventions are those of ``report.plots`` (one idea per
panel, integer ticks on discrete axes, CIs and n in the hover wherever a proportion is drawn,
heads as ``L{layer}H{head}``). Cost: milliseconds.
"""

from __future__ import annotations

import html
import math

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from addk_interp.core.heads import head_str
from addk_interp.report.plots import (
    PROP_HOVER,
    REF_COLOR,
    ci_error,
    fmt_heads,
    head_grid,
    hline,
    int_axis,
    prop_custom,
    prop_hover,
    task_sort_key,
)
from addk_interp.report.results import AIESummary, Angles, Circuits, Demos, Extraction, as_view

HEAD_COLORS = qualitative.D3  # one distinguishable color per head (10)
# |mean per-demonstration contribution| (units of ‖d‖², the aggregate is ≈ 1) below which the
# trajectory is reported as "no signal" instead of being drawn as a trend
NO_SIGNAL = 1e-3


def _hname(key) -> str:
    return head_str(key)


def _color(i: int) -> str:
    return HEAD_COLORS[i % len(HEAD_COLORS)]


def fitted_targets(
    fits: dict, title: str = "Fitted periodic / magnitude targets vs k"
) -> go.Figure:
    """One panel per target: each head's target values (markers) and their fit from the head's
    PCs (line), one color per head; R² per head in the panel title."""
    heads = list(fits)
    names: list[str] = []
    for h in heads:
        names += [n for n in fits[h].target_names if n not in names]
    r2 = {
        n: ", ".join(
            f"{_hname(h)} {fits[h].r2[list(fits[h].target_names).index(n)]:.2f}"
            for h in heads
            if n in fits[h].target_names
        )
        for n in names
    }
    cols = 2 if len(names) > 1 else 1
    rows = max(1, math.ceil(len(names) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"{n} (R² {r2[n]})" for n in names])
    for i, h in enumerate(heads):
        f = fits[h]
        order = np.argsort(f.ks)
        ks = np.asarray(f.ks)[order]
        hn = _hname(h)
        for j, name in enumerate(f.target_names):
            p = names.index(name)
            r, c = p // cols + 1, p % cols + 1
            fig.add_trace(
                go.Scatter(
                    x=ks,
                    y=np.asarray(f.target_values)[order, j],
                    mode="markers",
                    name=f"{hn} (markers: target, line: fit)",
                    legendgroup=hn,
                    showlegend=p == 0,
                    marker=dict(size=6, color=_color(i)),
                    hovertemplate=f"{hn} {name} target<br>k = %{{x:g}}: %{{y:.3f}}<extra></extra>",
                ),
                row=r,
                col=c,
            )
            fig.add_trace(
                go.Scatter(
                    x=ks,
                    y=np.asarray(f.fitted)[order, j],
                    mode="lines",
                    name=f"{hn} fit",
                    legendgroup=hn,
                    showlegend=False,
                    line=dict(color=_color(i)),
                    hovertemplate=f"{hn} {name} fit (R² {f.r2[j]:.2f})<br>"
                    "k = %{x:g}: %{y:.3f}<extra></extra>",
                ),
                row=r,
                col=c,
            )
    all_ks = np.concatenate([np.asarray(fits[h].ks) for h in heads]) if heads else []
    fig.update_layout(title=title, height=280 * rows)
    int_axis(fig, "x", all_ks, title_text="k")
    return fig


def angle_heatmap(
    angles: Angles | dict, title: str = "Principal angles between head subspaces"
) -> go.Figure:
    """Mean principal angle (degrees) between the 6-D subspaces of every pair of heads; with two
    heads or fewer (one angle) a table of the pair instead of a 2×2 heatmap."""
    angles = as_view(Angles, angles)
    names = list(angles.names)
    mean = np.asarray(angles.mean_deg, dtype=float)
    mx = mean if angles.max_deg is None else np.asarray(angles.max_deg, dtype=float)
    if len(names) <= 2:
        pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
        fig = go.Figure(
            go.Table(
                header=dict(values=["head A", "head B", "mean angle (deg)", "max angle (deg)"]),
                cells=dict(
                    values=[
                        [names[i] for i, _ in pairs],
                        [names[j] for _, j in pairs],
                        [f"{mean[i, j]:.1f}" for i, j in pairs],
                        [f"{mx[i, j]:.1f}" for i, j in pairs],
                    ]
                ),
            )
        )
        fig.update_layout(title=title + " (one pair: shown as a number)", height=260)
        return fig
    fig = go.Figure(
        go.Heatmap(
            z=mean,
            x=names,
            y=names,
            customdata=mx,
            text=np.round(mean).astype(int).astype(str),
            texttemplate="%{text}°",
            hovertemplate="%{y} vs %{x}: mean %{z:.1f}°, max %{customdata:.1f}°<extra></extra>",
            colorscale="Viridis",
            zmin=0,
            zmax=90,
            colorbar=dict(title="mean deg"),
        )
    )
    fig.update_layout(title=title)
    fig.update_yaxes(autorange="reversed")
    return fig


def projection_bars(table, title: str = "Causal projection tests") -> go.Figure:
    """Accuracy per head × arm with 95% CIs, and the error decomposition as stacked bars."""
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=["accuracy (95% CI)", "errors (fraction of n)"]
    )
    for i, (head, g) in enumerate(table.groupby("head", sort=False)):
        name = _hname(str(head))
        fig.add_trace(
            go.Bar(
                x=g["arm"],
                y=g["accuracy"],
                name=name,
                offsetgroup=name,
                marker_color=_color(i),
                error_y=ci_error(g["accuracy"], g["ci_low"], g["ci_high"]),
                customdata=prop_custom(g["n"], g["ci_low"], g["ci_high"]),
                hovertemplate=prop_hover(name),
            ),
            row=1,
            col=1,
        )
    labels = [f"{_hname(str(h))} {a}" for h, a in zip(table["head"], table["arm"], strict=True)]
    for kind in ("units_only", "tens_only", "both", "non_numeric", "other"):
        col = f"err_{kind}"
        if col in table and table[col].notna().any():
            cnt = table[col].fillna(0)
            fig.add_trace(
                go.Bar(
                    x=labels,
                    y=cnt / table["n"].clip(lower=1),
                    name=f"error: {kind}",
                    customdata=np.stack([cnt, table["n"]], axis=1),
                    hovertemplate=f"{kind}<br>%{{x}}: %{{customdata[0]:d}} of n = "
                    "%{customdata[1]:d}<extra></extra>",
                ),
                row=1,
                col=2,
            )
    fig.update_layout(title=title, barmode="relative", height=500)
    fig.update_yaxes(range=[0, 1.05], row=1, col=1)
    return fig


def _ordered_roles(d: dict) -> list[str]:
    from addk_interp.analyses.extraction import ROLES

    return [r for r in ROLES if r in d] + [r for r in d if r not in ROLES]


def qk_roles(
    circuits: Circuits | dict, title: str = "Attention of the query row by token role"
) -> go.Figure:
    fig = go.Figure()
    for i, (h, d) in enumerate(as_view(Circuits, circuits).per_head.items()):
        rm = d.role_mass
        roles = _ordered_roles(rm)
        n = d.n_prompts
        fig.add_trace(
            go.Bar(
                x=roles,
                y=[rm[r] or 0.0 for r in roles],
                name=_hname(h),
                marker_color=_color(i),
                hovertemplate=f"{_hname(h)}<br>%{{x}}: %{{y:.3f}} of the query row's attention "
                f"(mean over {n} prompts)<extra></extra>",
            )
        )
    fig.update_layout(
        title=title,
        yaxis_title="attention mass (sums to 1 over roles)",
        barmode="group",
        yaxis_range=[0, 1.02],
    )
    return fig


def qk_label_scores(
    circuits: Circuits | dict, title: str = "QK score at a label vs its number"
) -> go.Figure:
    fig = go.Figure()
    xs = []
    for i, (h, d) in enumerate(as_view(Circuits, circuits).per_head.items()):
        xs += list(d.label_numbers)
        counts = d.label_counts or [None] * len(d.label_numbers)
        fig.add_trace(
            go.Scatter(
                x=d.label_numbers,
                y=d.label_scores,
                mode="markers",
                name=_hname(h),
                marker_color=_color(i),
                customdata=[[c] for c in counts],
                hovertemplate=f"{_hname(h)}<br>label %{{x}}: %{{y:.3f}} "
                "(n = %{customdata[0]} labels)<extra></extra>",
            )
        )
    fig.add_hline(y=0, line_color=REF_COLOR, line_width=1)
    fig.update_layout(
        title=title, xaxis_title="label number", yaxis_title="centered pre-softmax score"
    )
    int_axis(fig, "x", xs)
    return fig


def ov_numbers(
    circuits: Circuits | dict, source: str = "ov_embedding", title: str | None = None
) -> go.Figure:
    """First three coordinates (in the head's fitted 6-D basis) of OV(number) vs number; one
    color per head, one dash style per direction. ``source``: ``"ov_embedding"`` (number-token
    embeddings) or ``"ov_label"`` (residuals at in-context labels)."""
    if source not in ("ov_embedding", "ov_label"):
        raise ValueError(f"source must be 'ov_embedding' or 'ov_label', not {source!r}")
    what = "number-token embeddings" if source == "ov_embedding" else "label residuals"
    fig = go.Figure()
    xs = []
    for i, (h, d) in enumerate(as_view(Circuits, circuits).per_head.items()):
        m = d.ov_embedding if source == "ov_embedding" else d.ov_label
        if m is None:
            continue
        c = np.asarray(m.coords)
        xs += list(m.numbers)
        for j in range(min(3, c.shape[1])):
            fig.add_trace(
                go.Scatter(
                    x=m.numbers,
                    y=c[:, j],
                    mode="lines+markers",
                    name=f"{_hname(h)} dir {j + 1}",
                    line=dict(color=_color(i), dash=("solid", "dash", "dot")[j]),
                    marker=dict(size=4),
                    hovertemplate=f"{_hname(h)} dir {j + 1}<br>number %{{x}}: %{{y:.3g}}"
                    "<extra></extra>",
                )
            )
    fig.update_layout(
        title=title or f"OV map of {what} into the fitted subspace",
        xaxis_title="number",
        yaxis_title="coordinate",
    )
    int_axis(fig, "x", xs)
    return fig


# label-peaking metrics, one panel each: (key, panel title, y range or None)
_PEAKING = (
    ("task_mass", "task mass (attention on labels)", (0, 1.05)),
    ("sink_mass", "sink mass (BOS, arrows, separators)", (0, 1.05)),
    ("signal_cos", "cos(label signal, task direction)", (-1.05, 1.05)),
    ("full_cos", "cos(full output, task direction)", (-1.05, 1.05)),
    ("weighting_gain", "weighting gain (attention vs uniform)", None),
    ("routing", "routing corr(α, cos)", (-1.05, 1.05)),
)


def label_alignment(
    extraction: Extraction | dict, title: str = "Label peaking and alignment"
) -> go.Figure:
    """Per metric one panel: each head's mean over prompts with its 95% CI."""
    per = as_view(Extraction, extraction).per_head
    present = [m for m in _PEAKING if any(m[0] in d.peaking for d in per.values())]
    if not present:
        fig = go.Figure()
        fig.update_layout(title=title + " (no peaking metrics recorded)")
        return fig
    cols = 3 if len(present) > 2 else len(present)
    rows = math.ceil(len(present) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[t for _, t, _ in present])
    for p, (key, _t, rng) in enumerate(present):
        r, c = p // cols + 1, p % cols + 1
        for i, (h, d) in enumerate(per.items()):
            s = d.peaking.get(key)
            if s is None or s.mean is None:
                continue
            m = s.mean
            lo = s.ci_low if s.ci_low is not None else m
            hi = s.ci_high if s.ci_high is not None else m
            fig.add_trace(
                go.Bar(
                    x=[_hname(h)],
                    y=[m],
                    name=_hname(h),
                    legendgroup=_hname(h),
                    showlegend=p == 0,
                    marker_color=_color(i),
                    error_y=ci_error([m], [lo], [hi]),
                    customdata=prop_custom([s.n], [lo], [hi]),
                    hovertemplate=f"{key}<br>%{{x}}: %{{y:.3g}} (95% CI "
                    "[%{customdata[1]:.3g}, %{customdata[2]:.3g}], n = %{customdata[0]})"
                    "<extra></extra>",
                ),
                row=r,
                col=c,
            )
        if rng is not None:
            fig.update_yaxes(range=list(rng), row=r, col=c)
    fig.update_layout(title=title, height=300 * rows)
    return fig


def demo_trajectories(
    demos: Demos | dict, title: str = "Per-demonstration signal (clean prompts)"
) -> go.Figure:
    """Mean contribution c_i of each demonstration's label to the aggregate (units of ‖d‖²,
    ± 1 s.e.m. over prompts). A head whose |mean c_i| stays below ``NO_SIGNAL`` is not drawn
    as a trend: the figure says "no signal" with the magnitude."""
    demos = as_view(Demos, demos)
    fig = go.Figure()
    quiet = []
    n_demo = 0
    for i, h in enumerate(demos.heads):
        sc = demos.self_correction.get(h)
        c = sc.clean_contributions if sc else None
        if not c:
            continue
        a = np.asarray(c, dtype=float)
        mean = np.nanmean(a, axis=0)
        n_demo = max(n_demo, a.shape[1])
        if not np.isfinite(mean).any() or np.nanmax(np.abs(mean)) < NO_SIGNAL:
            quiet.append(f"{_hname(h)}: max |mean c_i| = {np.nanmax(np.abs(mean)):.1e}")
            continue
        sem = np.nanstd(a, axis=0) / np.sqrt(max(1, len(a)))
        fig.add_trace(
            go.Scatter(
                x=list(range(1, a.shape[1] + 1)),
                y=mean,
                error_y=dict(type="data", array=sem),
                mode="lines+markers",
                name=_hname(h),
                marker_color=_color(i),
                customdata=[[len(a), s] for s in sem],
                hovertemplate=f"{_hname(h)}<br>demo %{{x}}: c = %{{y:.3g}} ± %{{customdata[1]:.2g}}"
                " (1 s.e.m., n = %{customdata[0]} prompts)<extra></extra>",
            )
        )
    if quiet:
        fig.add_annotation(
            text="no signal (below " + f"{NO_SIGNAL:g}, not drawn) — " + "; ".join(quiet),
            xref="paper",
            yref="paper",
            x=0.5,
            y=0.5,
            showarrow=False,
            font=dict(size=14),
        )
    fig.add_hline(y=0, line_color=REF_COLOR, line_width=1)
    fig.update_layout(title=title, xaxis_title="demonstration i", yaxis_title="c_i (units of ‖d‖²)")
    int_axis(fig, "x", range(1, n_demo + 1) if n_demo else [1], range=[0.5, max(1, n_demo) + 0.5])
    if not fig.data:  # nothing drawn: no y scale to read
        fig.update_yaxes(showticklabels=False, range=[-1, 1])
    return fig


def offset_readout(
    demos: Demos | dict, title: str = "Offset read-out from each label's signal"
) -> go.Figure:
    """Decoded offset vs each label's own offset y_i − x_i (marker area ∝ number of labels);
    on the y = x line the read-out is right."""
    demos = as_view(Demos, demos)
    fig = go.Figure()
    lo_hi = []
    for i, h in enumerate(demos.heads):
        r = demos.readout.get(h)
        if r is None or r.decoded is None:
            continue
        pairs: dict[tuple, int] = {}
        for o, dec in zip(r.own_offset, r.decoded, strict=True):
            pairs[(o, dec)] = pairs.get((o, dec), 0) + 1
        keys = sorted(pairs)
        cnt = np.array([pairs[k] for k in keys])
        lo_hi += [v for k in keys for v in k]
        ci = r.ci or (float("nan"), float("nan"))
        fig.add_trace(
            go.Scatter(
                x=[k[0] for k in keys],
                y=[k[1] for k in keys],
                mode="markers",
                marker=dict(size=6 + 14 * np.sqrt(cnt / cnt.max()), color=_color(i), opacity=0.6),
                name=f"{_hname(h)}: accuracy {r.accuracy:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] "
                f"(n = {len(r.decoded) if r.n_labels is None else r.n_labels} labels; "
                f"chance {r.chance:.2f})",
                customdata=[[c] for c in cnt],
                hovertemplate=f"{_hname(h)}<br>own offset %{{x}}, decoded %{{y}}: "
                "%{customdata[0]} labels<extra></extra>",
            )
        )
    if lo_hi:
        a, b = min(lo_hi), max(lo_hi)
        fig.add_trace(
            go.Scatter(
                x=[a, b],
                y=[a, b],
                mode="lines",
                name="y = x (correct)",
                line=dict(dash="dash", color=REF_COLOR),
                hoverinfo="skip",
            )
        )
    fig.update_layout(
        title=title,
        xaxis_title="own offset y_i − x_i",
        yaxis_title="decoded offset",
        legend=dict(orientation="h", y=-0.2),
    )
    int_axis(fig, "x", lo_hi)
    int_axis(fig, "y", lo_hi)
    return fig


def self_correction(
    demos: Demos | dict, title: str = "Self-correction: wrong label at position j"
) -> go.Figure:
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["Δ accuracy vs clean (95% CI)", "Δ aggregate signal vs clean (95% CI)"],
    )
    demos = as_view(Demos, demos)
    shots = 1
    for i, h in enumerate(demos.heads):
        sc = demos.self_correction.get(h)
        if sc is None:
            continue
        shots = max(shots, sc.shots)
        for col, key in ((1, "d_accuracy"), (2, "d_aggregate")):
            effects = [
                (r.j, r.d_accuracy if key == "d_accuracy" else r.d_aggregate)
                for r in sc.by_position
            ]
            effects = [(j, e) for j, e in effects if e is not None]
            x = [j + 1 for j, _ in effects]
            y = [e.mean for _, e in effects]
            lo = [e.ci[0] for _, e in effects]
            hi = [e.ci[1] for _, e in effects]
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines+markers",
                    name=f"{_hname(h)} ({sc.verdict})",
                    legendgroup=_hname(h),
                    showlegend=col == 1,
                    marker_color=_color(i),
                    error_y=ci_error(y, lo, hi),
                    customdata=prop_custom([e.n for _, e in effects], lo, hi),
                    hovertemplate=f"{_hname(h)} {key}<br>wrong label at demo %{{x}}: "
                    + PROP_HOVER
                    + "<extra></extra>",
                ),
                row=1,
                col=col,
            )
    fig.add_hline(y=0, line_color=REF_COLOR, line_width=1)
    int_axis(fig, "x", range(1, shots + 1), title_text="demonstration j with the wrong label")
    fig.update_layout(title=title)
    return fig


def aie_bars(
    aie: AIESummary | dict,
    fv_all: float | None = None,
    title: str = "AIE baseline",
    zero_shot: float | None = None,
) -> go.Figure:
    """Held-out FV accuracy of the AIE top-k heads (95% CI), k in numeric order; reference
    lines: clean n-shot (dotted), the all-heads FV ``fv_all`` (dash-dot) and the zero-shot
    baseline ``zero_shot`` (dashed) when given."""
    fig = go.Figure()
    top = as_view(AIESummary, aie).topk
    ks = sorted(top, key=lambda k: task_sort_key(str(k)))
    rows = [top[k] for k in ks]
    y = [v.accuracy for v in rows]
    lo = [v.ci[0] for v in rows]
    hi = [v.ci[1] for v in rows]
    fig.add_trace(
        go.Bar(
            x=[f"AIE top-{k}" for k in ks],
            y=y,
            name="AIE top-k FV",
            error_y=ci_error(y, lo, hi),
            customdata=[[v.n, v.ci[0], v.ci[1], fmt_heads(v.heads)] for v in rows],
            hovertemplate="%{x} (heads %{customdata[3]})<br>" + PROP_HOVER + "<extra></extra>",
        )
    )
    if rows:
        hline(fig, rows[0].clean_accuracy, "clean n-shot", dash="dot")
    hline(fig, fv_all, "all heads (unit FV)", dash="dashdot")
    hline(fig, zero_shot, "zero-shot")
    fig.update_layout(title=title, yaxis_title="accuracy (zero-shot + FV)", yaxis_range=[0, 1.05])
    return fig


def head_effects(panels: list[dict], title: str = "Per-head causal effect") -> go.Figure:
    """Layer × head heatmaps (layers on y, heads on x), one per measure, each with its own
    color scale. ``panels``: dicts with ``title``, ``z`` [layer, head] (NaN: not measured),
    ``colorbar``, and optionally ``fmt`` (hover number format), ``colorscale``, ``zmid``,
    ``reversescale``."""
    n = len(panels)
    n_l = max(np.asarray(p["z"]).shape[0] for p in panels)
    panel_px, gap_px, top_px, bottom_px = 40 + 26 * n_l, 90, 100, 60
    height = top_px + bottom_px + n * panel_px + (n - 1) * gap_px
    fig = make_subplots(
        rows=n,
        cols=1,
        subplot_titles=[p["title"] for p in panels],
        vertical_spacing=gap_px / (height - top_px - bottom_px) if n > 1 else 0.0,
    )
    for i, p in enumerate(panels, start=1):
        z = np.asarray(p["z"], dtype=float)
        ax = "coloraxis" if i == 1 else f"coloraxis{i}"
        fig.add_trace(
            head_grid(z, p["colorbar"], p["colorbar"], fmt=p.get("fmt", ".3g"), coloraxis=ax),
            row=i,
            col=1,
        )
        dom = fig.layout[f"yaxis{'' if i == 1 else i}"].domain
        fig.layout[ax] = dict(
            colorscale=p.get("colorscale", "Viridis"),
            reversescale=p.get("reversescale", False),
            cmid=p.get("zmid"),
            colorbar=dict(
                title=p["colorbar"], y=(dom[0] + dom[1]) / 2, len=dom[1] - dom[0], yanchor="middle"
            ),
        )
    fig.update_xaxes(title_text="head", dtick=1, tickformat="d")
    fig.update_yaxes(title_text="layer", dtick=1 if n_l <= 30 else None, tickformat="d")
    fig.update_layout(title=title, height=height, margin=dict(t=top_px, b=bottom_px))
    return fig


# token roles of the attention view, with their tick colors
ROLE_NAMES = {
    "bos": ("BOS", "#7f7f7f"),
    "input": ("demo input", "#1f77b4"),
    "arrow": ("arrow", "#8c564b"),
    "label": ("demo answer", "#d62728"),
    "separator": ("separator", "#9467bd"),
    "query_input": ("query", "#2ca02c"),
    "query_arrow": ("query arrow", "#ff7f0e"),
}


def _tick(tok: str, role: str, pos: int) -> str:
    name, color = ROLE_NAMES.get(role, (role, "#000"))
    tok = html.escape(repr(tok)[1:-1])
    return f"<span style='color:{color}'>{pos}:{tok} ({name})</span>"


def attention_patterns(
    views: list[dict], title: str = "Attention patterns of the analysis heads"
) -> go.Figure:
    """One attention pattern (query rows × key columns) per (head, prompt) view, a dropdown to
    choose it. ``views``: dicts with ``head``, ``prompt`` (a short label), ``tokens`` (token
    strings), ``roles`` (one of ``ROLE_NAMES`` per token) and ``pattern`` [query, key]."""
    fig = go.Figure()
    buttons = []
    for i, v in enumerate(views):
        pat = np.asarray(v["pattern"], dtype=float)
        n = pat.shape[0]
        pat = np.where(np.tril(np.ones((n, n), dtype=bool)), np.round(pat, 4), np.nan)
        ticks = [
            _tick(t, r, p) for p, (t, r) in enumerate(zip(v["tokens"], v["roles"], strict=True))
        ]
        plain = [
            f"{p}:{html.escape(repr(t)[1:-1])} ({ROLE_NAMES.get(r, (r,))[0]})"
            for p, (t, r) in enumerate(zip(v["tokens"], v["roles"], strict=True))
        ]
        label = f"{_hname(v['head'])}, {v['prompt']}"
        fig.add_trace(
            go.Heatmap(
                z=np.where(np.isfinite(pat), pat, None).tolist(),
                x=list(range(n)),
                y=list(range(n)),
                customdata=[[[plain[q], plain[k]] for k in range(n)] for q in range(n)],
                hovertemplate="query %{customdata[0]}<br>→ key %{customdata[1]}<br>"
                "attention %{z:.3f}<extra>" + html.escape(label) + "</extra>",
                colorscale="Blues",
                zmin=0,
                zmax=1,
                colorbar=dict(title="attention"),
                hoverongaps=False,
                visible=i == 0,
                name=label,
            )
        )
        axes = dict(tickvals=list(range(n)), ticktext=ticks)
        buttons.append(
            dict(
                label=label,
                method="update",
                args=[
                    {"visible": [j == i for j in range(len(views))]},
                    {
                        "title.text": f"{title}: {label}",
                        "xaxis.tickvals": axes["tickvals"],
                        "xaxis.ticktext": axes["ticktext"],
                        "yaxis.tickvals": axes["tickvals"],
                        "yaxis.ticktext": axes["ticktext"],
                    },
                ],
            )
        )
        if i == 0:
            first = axes
    if not views:
        return fig
    n0 = len(views[0]["tokens"])
    fig.update_layout(
        title=f"{title}: {buttons[0]['label']}",
        updatemenus=[
            dict(buttons=buttons, direction="down", x=0, xanchor="left", y=1.02, yanchor="bottom")
        ],
        height=max(500, 220 + 16 * n0),
        margin=dict(l=200, b=200, t=150),
    )
    fig.update_xaxes(title_text="key position (attended to)", tickangle=-60, **first)
    fig.update_yaxes(title_text="query position (attending from)", autorange="reversed", **first)
    return fig
