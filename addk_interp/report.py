"""One self-contained HTML report of a run (plotly inlined, strings HTML-escaped).

Not a step of the method: it renders the saved stage results. Cost: ~1 s, ~4 MB (plotly.js).
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import plotly.io as pio

from addk_interp import plots


def _table(df: pd.DataFrame) -> str:
    return df.to_html(
        index=False, float_format=lambda x: f"{x:.3f}", escape=True, border=0, classes="tbl"
    )


def write_report(run) -> Path:
    out = run.out
    acc = pd.read_csv(out / "stages" / "clean_eval" / "accuracy.csv")
    fv = pd.read_csv(out / "stages" / "fv_eval" / "fv_summary.csv")
    train_m, _ = run.load_means()
    figs = [
        ("Clean accuracy vs k", plots.accuracy_vs_k(acc)),
        ("Per-head mean-output norm (training tasks)", plots.head_norm_heatmap(train_m.means)),
        ("Function-vector accuracy", plots.fv_bars(fv)),
    ]
    info = run.model.info
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>addk-interp report: {html.escape(info.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        ".tbl td,.tbl th{padding:2px 8px;text-align:right}</style></head><body>",
        f"<h1>addk-interp report — {html.escape(info.name)}</h1>",
        f"<p>model fingerprint <code>{html.escape(info.fingerprint)}</code>, "
        f"{info.n_layers} layers × {info.n_heads} heads ({info.n_kv_heads} KV), "
        f"numbers: {html.escape(info.number_tokenization)}; family "
        f"<code>{html.escape(run.family.name)}</code>, {run.cfg.shots}-shot, format "
        f"<code>{html.escape(run.cfg.format)}</code>, seed {run.cfg.seed}, injection layer "
        f"{run.layer}.</p>",
    ]
    first = True
    for title, fig in figs:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=True if first else False))
        first = False
    parts.append("<h2>Function vectors (numbers)</h2>" + _table(fv))
    by_shots = acc.groupby("shots").agg(accuracy=("accuracy", "mean")).reset_index()
    parts.append("<h2>Clean accuracy (mean over tasks)</h2>" + _table(by_shots))
    parts.append("<h2>Clean accuracy per task</h2>" + _table(acc))
    parts.append("</body></html>")
    from addk_interp.store import _atomic

    path = out / "report.html"
    _atomic(path, lambda tmp: Path(tmp).write_text("\n".join(parts)))
    return path
