"""One self-contained HTML report of a run (plotly inlined, strings HTML-escaped).

Not a step of the method: it renders the saved stage results. Cost: ~1 s, ~4 MB (plotly.js).
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import plotly.io as pio

from addk_interp.core.heads import head_str


def _table(df: pd.DataFrame) -> str:
    return df.to_html(
        index=False, float_format=lambda x: f"{x:.3f}", escape=True, border=0, classes="tbl"
    )


def _tables_and_notes(run) -> tuple[list[tuple[str, pd.DataFrame]], list[str]]:
    from addk_interp.core.store import stage_json

    st = run.out / "stages"
    tables: list[tuple[str, pd.DataFrame]] = []
    notes: list[str] = []

    def js(stage, name):
        return stage_json(run.out, stage, name)

    sel = js("localize", "selected.json")
    if sel is not None:
        notes.append(
            f"Selected heads ({sel['rule']} on the mean of the last {sel['k']} "
            f"checkpoints): {', '.join(f'L{a}H{b}' for a, b in sel['heads']) or 'none'}"
            + (f" — {sel['reason']}" if sel.get("reason") else "")
        )
    hs = js("scan", "headsets.json")
    if hs is not None:
        main = hs["main"].get("main", [])
        sig = [
            h
            for h, t in (hs.get("significant", {}).get("tests", {}) or {}).items()
            if isinstance(t, dict) and t.get("significant")
        ]
        loc = hs.get("localization") or {}
        notes.append(
            f"Main heads (quarter-of-best-gain rule): "
            f"{', '.join(head_str(h) for h in main) or 'none'}; significant: {len(sig)}; "
            f"localization verdict: {loc.get('verdict')} ({loc.get('reason')})."
        )
    if (st / "headsets" / "headset_summary.csv").exists():
        tables.append(
            ("Head-set FV accuracy", pd.read_csv(st / "headsets" / "headset_summary.csv"))
        )
    sub = js("subspaces", "subspaces.json") or {}
    if sub.get("per_head"):
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
                        for d in sub["per_head"]
                    ]
                ),
            )
        )
    if (st / "projections" / "projections.csv").exists():
        tables.append(("Projection tests", pd.read_csv(st / "projections" / "projections.csv")))
    ext = js("extraction", "extraction.json") or {}
    if ext.get("per_head"):
        tables.append(
            (
                "Label share per head",
                pd.DataFrame(
                    [
                        {
                            "head": head_str(h),
                            **{k: v for k, v in (d.get("label_share") or {}).items()},
                            "identity max rel. error": d.get("identity_max_rel_error"),
                        }
                        for h, d in ext["per_head"].items()
                    ]
                ),
            )
        )
    dem = js("demos", "demos.json") or {}
    if dem.get("reason"):
        notes.append(f"Demos stage: {dem['reason']}")
    rows = []
    for h, d in (dem.get("per_head") or {}).items():
        r, sc = d.get("offset_readout") or {}, d.get("self_correction") or {}
        rows.append(
            {
                "head": head_str(h),
                "offset read-out accuracy": r.get("accuracy"),
                "chance": r.get("chance"),
                "corr(decoded, own offset)": r.get("corr_own_offset"),
                "self-correction verdict": sc.get("verdict"),
                "accuracy clean": (sc.get("accuracy") or {}).get("clean"),
                "accuracy shuffled control": (sc.get("accuracy") or {}).get("shuffled"),
            }
        )
    if rows:
        tables.append(("Offset read-out and self-correction", pd.DataFrame(rows)))
    aie = js("aie", "aie_summary.json")
    if aie is not None and aie.get("reason"):
        notes.append(f"AIE baseline: {aie['reason']}")
    if aie is not None and aie.get("topk"):
        tables.append(
            (
                "AIE baseline: top-k FV",
                pd.DataFrame(
                    [
                        {
                            "k": k,
                            "accuracy": v["accuracy"],
                            "ci_low": v["ci_low"],
                            "ci_high": v["ci_high"],
                            "clean": v["clean_accuracy"],
                            "overlap with selected": aie["overlap_with_selected"].get(k),
                        }
                        for k, v in aie["topk"].items()
                    ]
                ),
            )
        )
    return tables, notes


def _planted_block(run) -> list[str]:
    """Recovered vs planted (models with ground truth: organism-fv) and the validation table
    when ``addk-interp validate`` has run. The ground truth is read here, for the reader, from
    the checkpoint manifest; no stage reads it."""
    import json

    from addk_interp.core.store import stage_json
    from addk_interp.organism.recipe_fv import ground_truth_of

    gt = ground_truth_of(run.model)
    out: list[str] = []
    if gt is not None:
        sel = stage_json(run.out, "localize", "selected.json") or {}
        hs = stage_json(run.out, "scan", "headsets.json") or {}
        sig = (hs.get("significant") or {}).get("significant", [])
        main = (hs.get("main") or {}).get("main", [])
        loc = (hs.get("localization") or {}).get("verdict")

        def fmt(hh):
            return ", ".join(head_str(h) for h in hh) or "none"

        rows = pd.DataFrame(
            [
                {"": "planted (checkpoint manifest)", "heads": ", ".join(gt["planted_heads"])},
                {"": "selected (gate learning)", "heads": fmt(sel.get("heads", []))},
                {"": "significant (McNemar + BH)", "heads": fmt(sig)},
                {"": f"main (verdict {loc})", "heads": fmt(main)},
            ]
        )
        out.append("<h2>Recovered vs planted mechanism</h2>")
        out.append(
            f"<p>This model has a planted mechanism: a function vector in "
            f"{html.escape(', '.join(gt['planted_heads']))} (layer {gt['layer']}), number "
            f"embeddings with periods {html.escape(str(gt['planted_periods']))}. The stages "
            "never read it; it is shown here for comparison.</p>" + _table(rows)
        )
    vj = run.out / "validation.json"
    if vj.exists():
        v = json.loads(vj.read_text())
        df = pd.DataFrame(
            [
                {
                    "method": m["method"],
                    "selected": ", ".join(m["selected"]) or "none",
                    "precision": m.get("precision"),
                    "recall": m.get("recall"),
                    "planted ranks": ", ".join(
                        f"{k} {r}" for k, r in (m.get("planted_ranks") or {}).items()
                    ),
                    "wall s": m["wall_s"],
                }
                for m in v["methods"]
            ]
        )
        out.append("<h2>Localization methods (addk-interp validate)</h2>")
        out.append(f"<p>{html.escape(v['note'])}</p>" + _table(df))
    return out


def write_report(run) -> Path:
    from addk_interp.report.figures import FIGURES, build

    out = run.out
    acc = pd.read_csv(out / "stages" / "clean_eval" / "accuracy.csv")
    fv = pd.read_csv(out / "stages" / "fv_eval" / "fv_summary.csv")
    figs, missing = [], []
    for spec in FIGURES:
        fig = build(run, spec.slug)
        if fig is None:
            missing.append(spec.title)
        else:
            figs.append((spec.title, fig))
    tables, notes = _tables_and_notes(run)
    if missing:
        notes.append("Not drawn (their stage produced no data for them): " + "; ".join(missing))
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
    parts += _planted_block(run)
    for i, (title, fig) in enumerate(figs):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        # fixed div ids (plotly draws random ones): same run → byte-identical report
        parts.append(
            pio.to_html(fig, full_html=False, include_plotlyjs=i == 0, div_id=f"fig-{i + 1:02d}")
        )
    for note in notes:
        parts.append(f"<p>{html.escape(note)}</p>")
    for title, df in tables:
        parts.append(f"<h2>{html.escape(title)}</h2>" + _table(df))
    parts.append("<h2>Function vectors (numbers)</h2>" + _table(fv))
    by_shots = acc.groupby("shots").agg(accuracy=("accuracy", "mean")).reset_index()
    parts.append("<h2>Clean accuracy (mean over tasks)</h2>" + _table(by_shots))
    parts.append("<h2>Clean accuracy per task</h2>" + _table(acc))
    parts.append("</body></html>")
    from addk_interp.core.store import atomic_write_text

    path = out / "report.html"
    atomic_write_text(path, "\n".join(parts))
    return path
