"""Plotly figures of the mechanism stages: subspaces, projections, circuits, extraction, demos, AIE.

Not a step of the method: presentation of saved stage results (dicts as written by the
pipeline). Every function returns a ``go.Figure`` and never shows it. Cost: milliseconds.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from addk_interp.core.heads import head_str


def _hname(key) -> str:
    return head_str(key)


def fitted_targets(
    fits: dict, title: str = "Fitted periodic / magnitude targets vs k"
) -> go.Figure:
    """One panel per head: each target's values (markers) and its fit from the PCs (lines)."""
    heads = list(fits)
    fig = make_subplots(rows=max(1, len(heads)), cols=1, subplot_titles=[_hname(h) for h in heads])
    for i, h in enumerate(heads, start=1):
        f = fits[h]
        order = np.argsort(f.ks)
        for j, name in enumerate(f.target_names):
            fig.add_trace(
                go.Scatter(
                    x=f.ks[order],
                    y=f.target_values[order, j],
                    mode="markers",
                    name=f"{_hname(h)} {name} target",
                    legendgroup=name,
                    showlegend=i == 1,
                    marker=dict(size=5),
                ),
                row=i,
                col=1,
            )
            fig.add_trace(
                go.Scatter(
                    x=f.ks[order],
                    y=f.fitted[order, j],
                    mode="lines",
                    name=f"{name} fit (R²={f.r2[j]:.2f})",
                    legendgroup=name,
                ),
                row=i,
                col=1,
            )
    fig.update_layout(title=title, height=320 * max(1, len(heads)))
    fig.update_xaxes(title_text="k")
    return fig


def angle_heatmap(
    angles: dict, title: str = "Principal angles between head subspaces"
) -> go.Figure:
    """Mean principal angle (degrees) between the 6-D subspaces of every pair of heads."""
    names = angles.get("names", [])
    mat = np.asarray(angles.get("mean_deg", []), dtype=float)
    fig = go.Figure(
        go.Heatmap(z=mat, x=names, y=names, colorscale="Viridis", colorbar=dict(title="deg"))
    )
    fig.update_layout(title=title)
    return fig


def projection_bars(table, title: str = "Causal projection tests") -> go.Figure:
    """Accuracy per head × arm with CIs, and the error decomposition as stacked bars."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["accuracy", "errors (fraction of n)"])
    for head, g in table.groupby("head"):
        fig.add_trace(
            go.Bar(
                x=g["arm"],
                y=g["accuracy"],
                name=str(head),
                offsetgroup=str(head),
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=g["ci_high"] - g["accuracy"],
                    arrayminus=g["accuracy"] - g["ci_low"],
                ),
            ),
            row=1,
            col=1,
        )
    for kind in ("units_only", "tens_only", "both", "non_numeric", "other"):
        col = f"err_{kind}"
        if col in table and table[col].notna().any():
            fig.add_trace(
                go.Bar(
                    x=[f"{h} {a}" for h, a in zip(table["head"], table["arm"], strict=True)],
                    y=table[col].fillna(0) / table["n"].clip(lower=1),
                    name=kind,
                ),
                row=1,
                col=2,
            )
    fig.update_layout(title=title, barmode="relative")
    return fig


def qk_roles(circuits: dict, title: str = "Attention of the query row by token role") -> go.Figure:
    fig = go.Figure()
    for h, d in circuits.get("per_head", {}).items():
        rm = d["qk"]["role_mass"]
        fig.add_trace(go.Bar(x=list(rm), y=[v or 0.0 for v in rm.values()], name=_hname(h)))
    fig.update_layout(title=title, yaxis_title="attention mass", barmode="group")
    return fig


def qk_label_scores(circuits: dict, title: str = "QK score at a label vs its number") -> go.Figure:
    fig = go.Figure()
    for h, d in circuits.get("per_head", {}).items():
        q = d["qk"]
        fig.add_trace(
            go.Scatter(x=q["numbers"], y=q["number_centered"], mode="markers", name=_hname(h))
        )
    fig.update_layout(
        title=title, xaxis_title="label number", yaxis_title="centered pre-softmax score"
    )
    return fig


def ov_numbers(circuits: dict, source: str = "ov_embedding", title: str | None = None) -> go.Figure:
    """First three coordinates (in the head's fitted 6-D basis) of OV(number) vs number."""
    what = "number-token embeddings" if source == "ov_embedding" else "label residuals"
    fig = go.Figure()
    for h, d in circuits.get("per_head", {}).items():
        m = d.get(source)
        if not m:
            continue
        c = np.asarray(m["coords"])
        for j in range(min(3, c.shape[1])):
            fig.add_trace(
                go.Scatter(
                    x=m["numbers"], y=c[:, j], mode="lines+markers", name=f"{_hname(h)} dir {j + 1}"
                )
            )
    fig.update_layout(
        title=title or f"OV map of {what} into the fitted subspace",
        xaxis_title="number",
        yaxis_title="coordinate",
    )
    return fig


def label_alignment(extraction: dict, title: str = "Label peaking and alignment") -> go.Figure:
    """Per head: peaking ratio, task vs sink mass, signal cosine and weighting gain (means, CIs)."""
    keys = ("task_mass", "sink_mass", "signal_cos", "full_cos", "weighting_gain", "routing")
    fig = go.Figure()
    for h, d in extraction.get("per_head", {}).items():
        p = d.get("peaking") or {}
        xs, ys, lo, hi = [], [], [], []
        for k in keys:
            s = p.get(k)
            if isinstance(s, dict) and s.get("mean") is not None:
                xs.append(k)
                ys.append(s["mean"])
                lo.append(
                    s["mean"] - (s.get("ci_low") if s.get("ci_low") is not None else s["mean"])
                )
                hi.append(
                    (s.get("ci_high") if s.get("ci_high") is not None else s["mean"]) - s["mean"]
                )
        fig.add_trace(
            go.Bar(
                x=xs,
                y=ys,
                name=_hname(h),
                error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo),
            )
        )
    fig.update_layout(title=title, barmode="group")
    return fig


def demo_trajectories(
    demos: dict, title: str = "Per-demonstration signal (clean prompts)"
) -> go.Figure:
    """Mean contribution c_i of each demonstration's label to the aggregate (units of ‖d‖²)."""
    fig = go.Figure()
    for h, d in demos.get("per_head", {}).items():
        c = (d.get("self_correction") or {}).get("contributions", {}).get("clean")
        if not c:
            continue
        a = np.asarray(c, dtype=float)
        fig.add_trace(
            go.Scatter(
                x=list(range(1, a.shape[1] + 1)),
                y=np.nanmean(a, axis=0),
                error_y=dict(type="data", array=np.nanstd(a, axis=0) / np.sqrt(max(1, len(a)))),
                mode="lines+markers",
                name=_hname(h),
            )
        )
    fig.update_layout(title=title, xaxis_title="demonstration i", yaxis_title="c_i")
    return fig


def offset_readout(
    demos: dict, title: str = "Offset read-out from each label's signal"
) -> go.Figure:
    fig = go.Figure()
    for h, d in demos.get("per_head", {}).items():
        r = d.get("offset_readout")
        if not r or "decoded" not in r:
            continue
        fig.add_trace(
            go.Scatter(
                x=r["own_offset"],
                y=r["decoded"],
                mode="markers",
                opacity=0.5,
                name=f"{_hname(h)} (acc {r['accuracy']:.2f}, chance {r['chance']:.2f})",
            )
        )
    fig.update_layout(title=title, xaxis_title="own offset y_i − x_i", yaxis_title="decoded")
    return fig


def self_correction(
    demos: dict, title: str = "Self-correction: wrong label at position j"
) -> go.Figure:
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=["Δ accuracy vs clean", "Δ aggregate signal vs clean"]
    )
    for h, d in demos.get("per_head", {}).items():
        sc = d.get("self_correction")
        if not sc:
            continue
        for col, key in ((1, "d_accuracy"), (2, "d_aggregate")):
            rows = sc["by_position"]
            x = [r["j"] + 1 for r in rows]
            y = [r[key]["mean"] for r in rows]
            lo = [r[key]["mean"] - r[key]["ci"][0] for r in rows]
            hi = [r[key]["ci"][1] - r[key]["mean"] for r in rows]
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines+markers",
                    name=f"{_hname(h)} {key} ({sc['verdict']})",
                    error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo),
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="position j of the wrong demonstration")
    fig.update_layout(title=title)
    return fig


def aie_bars(aie: dict, fv_all: float | None = None, title: str = "AIE baseline") -> go.Figure:
    fig = go.Figure()
    top = aie.get("topk", {})
    xs = [f"AIE top-{k}" for k in top]
    ys = [v["accuracy"] for v in top.values()]
    lo = [v["accuracy"] - v["ci_low"] for v in top.values()]
    hi = [v["ci_high"] - v["accuracy"] for v in top.values()]
    if top:
        xs.append("clean n-shot")
        ys.append(next(iter(top.values()))["clean_accuracy"])
        lo.append(0)
        hi.append(0)
    fig.add_trace(
        go.Bar(x=xs, y=ys, error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo))
    )
    fig.update_layout(title=title, yaxis_title="accuracy (zero-shot + FV)", yaxis_range=[0, 1.02])
    return fig
