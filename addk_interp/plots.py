"""Plotly figures of a run (returned, never shown).

Not a step of the method: presentation of stage results. Cost: milliseconds per figure.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import torch
from jaxtyping import Float
from torch import Tensor


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


def head_norm_tensor(means) -> torch.Tensor:
    return means.means.float().norm(dim=-1).mean(0)
