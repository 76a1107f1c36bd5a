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
    st = out / "stages"
    tables: list[tuple[str, pd.DataFrame]] = []
    notes: list[str] = []
    if (st / "localize" / "done.json").exists():
        from addk_interp.localize.gates import GateFit
        from addk_interp.store import read_json

        fit = GateFit.load(st / "localize" / "gates.safetensors", run.model)
        sel = read_json(st / "localize" / "selected.json")
        figs.append(("Gate coefficients [layer × head]", plots.coef_heatmap(fit.final.numpy())))
        figs.append(("Sorted |coef| with the selection cut", plots.sorted_coef(sel["cut"])))
        figs.append(("Gate training curves", plots.training_curves(list(fit.history))))
        notes.append(
            f"Selected heads ({sel['rule']} on the mean of the last {sel['k']} "
            f"checkpoints): {', '.join(f'L{a}H{b}' for a, b in sel['heads']) or 'none'}"
            + (f" — {sel['reason']}" if sel.get("reason") else "")
        )
    if (st / "scan" / "scan.json").exists():
        from addk_interp.store import read_json

        scan = read_json(st / "scan" / "scan.json")
        hs = read_json(st / "scan" / "headsets.json")
        main = hs["main"].get("main", [])
        figs.append(("Dose-response (recovery) curves", plots.dose_response(scan, main)))
        sig = [
            h
            for h, t in (hs.get("significant", {}).get("tests", {}) or {}).items()
            if isinstance(t, dict) and t.get("significant")
        ]
        notes.append(
            f"Main heads (quarter-of-best-gain rule): "
            f"{', '.join(f'L{a}H{b}' for a, b in main) or 'none'}; verdict "
            f"{hs['main'].get('verdict')}; significant: {len(sig)}."
        )
    if (st / "headsets" / "headset_summary.csv").exists():
        from addk_interp.store import read_json

        hsum = pd.read_csv(st / "headsets" / "headset_summary.csv")
        figs.append(("Head-set FV accuracy", plots.headset_bars(hsum)))
        tables.append(("Head-set FV accuracy (numbers)", hsum))
        nec = read_json(st / "headsets" / "necessity.json")
        figs.append(("Necessity of the main heads", plots.necessity_plot(nec)))
    if (st / "subspaces" / "subspaces.json").exists():
        from addk_interp.store import read_json

        sub = read_json(st / "subspaces" / "subspaces.json")
        per = sub.get("per_head", [])
        if per:
            figs.append(("PCA cumulative variance per head", plots.cumvar_plot(per)))
            figs.append(("Periodogram (which periods each head uses)", plots.periodogram_plot(per)))
            for d in per:
                figs.append(
                    (
                        f"PC coordinates vs k, L{d['head'][0]}H{d['head'][1]}",
                        plots.pc_coords_plot(d),
                    )
                )
            tables.append(
                (
                    "Subspace fit per head",
                    pd.DataFrame(
                        [
                            {
                                "head": f"L{d['head'][0]}H{d['head'][1]}",
                                "PCs for 95%": d["pcs_to_95"],
                                **{f"R² {k}": v for k, v in (d["r2"] or {}).items()},
                                "peak periods": ", ".join(f"{p:g}" for p in d["peak_periods"][:5]),
                            }
                            for d in per
                        ]
                    ),
                )
            )
    if (st / "extraction" / "extraction.json").exists():
        from addk_interp.store import read_json

        ext = read_json(st / "extraction" / "extraction.json")
        if ext.get("per_head"):
            figs.append(("Token-group shares of the task signal", plots.share_bars(ext)))
            tables.append(
                (
                    "Label share per head",
                    pd.DataFrame(
                        [
                            {
                                "head": f"L{h.replace('.', 'H')}",
                                **{k: v for k, v in (d.get("label_share") or {}).items()},
                                "identity max rel. error": d.get("identity_max_rel_error"),
                            }
                            for h, d in ext["per_head"].items()
                        ]
                    ),
                )
            )
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
    for note in notes:
        parts.append(f"<p>{html.escape(note)}</p>")
    for title, df in tables:
        parts.append(f"<h2>{html.escape(title)}</h2>" + _table(df))
    parts.append("<h2>Function vectors (numbers)</h2>" + _table(fv))
    by_shots = acc.groupby("shots").agg(accuracy=("accuracy", "mean")).reset_index()
    parts.append("<h2>Clean accuracy (mean over tasks)</h2>" + _table(by_shots))
    parts.append("<h2>Clean accuracy per task</h2>" + _table(acc))
    parts.append("</body></html>")
    from addk_interp.store import _atomic

    path = out / "report.html"
    _atomic(path, lambda tmp: Path(tmp).write_text("\n".join(parts)))
    return path
