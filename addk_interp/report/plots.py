"""Plotly figures of a run (returned, never shown).

Not a step of the method: presentation of stage results. Cost: milliseconds per figure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from jaxtyping import Float
from torch import Tensor

from addk_interp.core.heads import head_str


def accuracy_vs_k(table: pd.DataFrame, title: str = "Clean accuracy by task") -> go.Figure:
    """Accuracy per k (or task) for each shot count, with bootstrap 95% CIs."""
    fig = go.Figure()
    xcol = "k" if table["k"].notna().all() else "task"
    for shots, g in table.groupby("shots"):
        g = g.sort_values(xcol)
        fig.add_trace(
            go.Scatter(
                x=g[xcol],
                y=g["accuracy"],
                mode="lines+markers",
                name=f"{shots}-shot",
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=g["ci_high"] - g["accuracy"],
                    arrayminus=g["accuracy"] - g["ci_low"],
                ),
            )
        )
    fig.update_layout(
        title=title, xaxis_title=xcol, yaxis_title="exact-match accuracy", yaxis_range=[-0.02, 1.02]
    )
    return fig


def head_norm_heatmap(
    means: Float[Tensor, "task layer head d_model"], title: str = "Mean head-output norm"
) -> go.Figure:
    norms = means.float().norm(dim=-1).mean(0)
    fig = go.Figure(
        go.Heatmap(
            z=norms.numpy(),
            x=list(range(norms.shape[1])),
            y=list(range(norms.shape[0])),
            colorscale="Viridis",
            colorbar=dict(title="‖o‖"),
        )
    )
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer")
    return fig


def fv_bars(summary: pd.DataFrame, title: str = "Function-vector accuracy") -> go.Figure:
    fig = go.Figure()
    for split, g in summary.groupby("split"):
        fig.add_trace(
            go.Bar(
                x=list(g["condition"]) + ["clean n-shot"],
                y=list(g["fv_accuracy"]) + [float(g["clean_accuracy"].iloc[0])],
                name=split,
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=list(g["ci_high"] - g["fv_accuracy"]) + [0],
                    arrayminus=list(g["fv_accuracy"] - g["ci_low"]) + [0],
                ),
            )
        )
    fig.update_layout(
        title=title, yaxis_title="accuracy (zero-shot + FV)", barmode="group", yaxis_range=[0, 1.02]
    )
    return fig


def coef_heatmap(coef, title: str = "Gate coefficients (final epoch)") -> go.Figure:
    fig = go.Figure(
        go.Heatmap(z=np.asarray(coef), colorscale="Viridis", colorbar=dict(title="coef"))
    )
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer")
    return fig


def sorted_coef(cut: dict, title: str = "Sorted |coef| with the cut") -> go.Figure:
    curve = cut.get("curve", [])
    fig = go.Figure(go.Scatter(y=curve, mode="lines+markers", name="|coef|"))
    thr = cut.get("threshold")
    if thr is not None:
        fig.add_hline(y=thr, line_dash="dash", annotation_text=f"{cut.get('rule')} cut")
    fig.update_layout(title=title, xaxis_title="rank", yaxis_title="|coef|")
    return fig


def training_curves(history: list[dict], title: str = "Gate training") -> go.Figure:
    fig = go.Figure()
    if history:
        keys = [k for k in history[0] if k != "epoch" and isinstance(history[0][k], int | float)]
        x = [h.get("epoch", i) for i, h in enumerate(history)]
        for k in keys:
            fig.add_trace(
                go.Scatter(x=x, y=[h.get(k) for h in history], mode="lines+markers", name=k)
            )
    fig.update_layout(title=title, xaxis_title="epoch")
    return fig


def dose_response(
    scan: dict, main: list, title: str = "Recovery (dose-response) scan"
) -> go.Figure:
    fig = go.Figure()
    n = scan["n_eval"]
    mains = {f"{a}:{b}" for a, b in main}
    for key, counts in scan["correct"].items():
        is_main = key in mains
        fig.add_trace(
            go.Scatter(
                x=scan["c_grid"],
                y=[c / n for c in counts],
                mode="lines+markers" if is_main else "lines",
                name=head_str(key) + (" (main)" if is_main else ""),
                line=dict(width=3 if is_main else 1),
                opacity=1.0 if is_main else 0.4,
            )
        )
    fig.add_hline(y=scan["clean_correct"] / n, line_dash="dot", annotation_text="clean")
    fig.add_hline(
        y=scan["full_selected_fv_correct"] / n, line_dash="dash", annotation_text="all selected"
    )
    fig.update_layout(
        title=title, xaxis_title="coefficient c", yaxis_title="accuracy", yaxis_range=[-0.02, 1.02]
    )
    return fig


def headset_bars(
    summary: pd.DataFrame, title: str = "Head-set FV accuracy (held-out)"
) -> go.Figure:
    acc = "accuracy" if "accuracy" in summary else summary.columns[1]
    fig = go.Figure(go.Bar(x=summary["condition"], y=summary[acc]))
    fig.update_layout(title=title, yaxis_title="accuracy", yaxis_range=[0, 1.02])
    return fig


def necessity_plot(nec: dict, title: str = "Necessity: ablate main heads (n-shot)") -> go.Figure:
    fig = go.Figure()
    fig.add_trace(
        go.Box(y=nec.get("random_accs", []), name="random same-size subsets", boxpoints="all")
    )
    fig.add_trace(
        go.Scatter(
            x=["main heads ablated", "clean"],
            y=[nec.get("main_acc"), nec.get("clean_acc")],
            mode="markers",
            marker=dict(size=14),
            name="main / clean",
        )
    )
    fig.update_layout(title=title, yaxis_title="accuracy", yaxis_range=[0, 1.02])
    return fig


def cumvar_plot(per_head: list[dict], title: str = "PCA cumulative variance") -> go.Figure:
    fig = go.Figure()
    for d in per_head:
        cv = d["cumvar"]
        fig.add_trace(
            go.Scatter(
                x=list(range(1, len(cv) + 1)),
                y=cv,
                mode="lines+markers",
                name=f"L{d['head'][0]}H{d['head'][1]} ({d['pcs_to_95']} PCs)",
            )
        )
    fig.add_hline(y=0.95, line_dash="dash")
    fig.update_layout(title=title, xaxis_title="components", yaxis_title="cumulative variance")
    return fig


def periodogram_plot(per_head: list[dict], title: str = "Periodogram of task means") -> go.Figure:
    fig = go.Figure()
    for d in per_head:
        pg = d["periodogram"]
        fig.add_trace(
            go.Scatter(
                x=pg["periods"],
                y=pg["power"],
                mode="lines+markers",
                name=f"L{d['head'][0]}H{d['head'][1]}",
            )
        )
    fig.update_layout(title=title, xaxis_title="period (in k)", yaxis_title="variance fraction")
    return fig


def pc_coords_plot(d: dict) -> go.Figure:
    coords = np.asarray(d["pc_coords_top6"])
    fig = go.Figure()
    for j in range(coords.shape[1]):
        fig.add_trace(
            go.Scatter(x=d["ks"], y=coords[:, j], mode="lines+markers", name=f"PC{j + 1}")
        )
    fig.update_layout(
        title=f"PC coordinates vs k, L{d['head'][0]}H{d['head'][1]}",
        xaxis_title="k",
        yaxis_title="coordinate",
    )
    return fig


def share_bars(extraction: dict, title: str = "Token-group share of the task signal") -> go.Figure:
    fig = go.Figure()
    for head, d in extraction.get("per_head", {}).items():
        roles = d.get("roles") or {}
        if roles:
            fig.add_trace(
                go.Bar(
                    x=list(roles),
                    y=[roles[r]["mean"] if isinstance(roles[r], dict) else roles[r] for r in roles],
                    name=head_str(head),
                )
            )
    fig.update_layout(title=title, yaxis_title="signed share (sums to 1)", barmode="group")
    return fig
