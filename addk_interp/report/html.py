"""One self-contained HTML report of a run (plotly inlined, strings HTML-escaped).

Not a step of the method: it renders the saved stage results. Layout: a findings block (the
headline numbers, each with its CI and a link to its figure), a table of contents, the
recovered-vs-planted comparison (models with ground truth), one section per figure with its
caption (``report.figures.FIGURES``), then the tables. A stage that did not run shows
"n/a (stage not run)". Plotly div ids are fixed, so the same run gives a byte-identical
report. Cost: ~1 s plus the attention view's two forwards, ~4 MB (plotly.js).
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.io as pio

from addk_interp.core.heads import head_str

NA = "n/a (stage not run)"

CSS = (
    "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 1em;line-height:1.4}"
    ".tw{overflow-x:auto;max-width:100%}"
    ".tbl td,.tbl th{padding:2px 8px;text-align:right;white-space:nowrap}"
    "#findings{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:.5em 1.2em}"
    "#findings li{margin:.35em 0}"
    "#findings .k{font-weight:bold}"
    ".cap{color:#333;font-style:italic;max-width:900px}"
    "section.fig{margin-top:2.5em;border-top:1px solid #ddd}"
    "nav ol{columns:2}"
)


# ----------------------------------------------------------------------------- small helpers
def _e(x) -> str:
    return html.escape(str(x))


def _table(df: pd.DataFrame) -> str:
    t = df.to_html(
        index=False, float_format=lambda x: f"{x:.3f}", escape=True, border=0, classes="tbl"
    )
    return f"<div class='tw'>{t}</div>"


def _ci(acc, lo, hi) -> str:
    return f"{acc:.2f} [{lo:.2f}, {hi:.2f}]"


def _n(n, what: str = "prompt") -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _heads(hh, limit: int | None = None) -> str:
    names = [head_str(h) for h in hh]
    if limit is not None and len(names) > limit:
        return ", ".join(names[:limit]) + f", … ({len(names)} in all)"
    return ", ".join(names) or "none"


def _heads_cell(v) -> str:
    """A CSV cell holding a head list (``"[[2, 5], [1, 0]]"``) in ``L{l}H{h}`` form."""
    try:
        hh = json.loads(str(v))
    except (ValueError, TypeError):
        return str(v)
    return _heads(hh) if isinstance(hh, list) else str(v)


_TUPLE_HEAD = re.compile(r"\b(leader|heads?) [(\[](\d+), (\d+)[)\]]")


def _heads_in_text(text: str) -> str:
    """Heads that a stage's reason text writes as tuples ("leader (0, 1)") → ``L0H1``."""
    return _TUPLE_HEAD.sub(lambda m: f"{m.group(1)} L{m.group(2)}H{m.group(3)}", str(text))


def _done(run, stage: str) -> bool:
    return (run.out / "stages" / stage / "done.json").exists()


def _task_order(names) -> list[str]:
    from addk_interp.report.plots import task_sort_key

    return sorted(names, key=task_sort_key)


# ----------------------------------------------------------------------------- findings
def _clean_finding(run) -> str:
    from addk_interp.core.scoring import bootstrap_ci

    st = run.out / "stages" / "clean_eval"
    if not (st / "examples.csv").exists():
        return NA
    ex = pd.read_csv(st / "examples.csv", usecols=["task", "shots", "correct"])
    held = set(run.family.heldout)
    parts = []
    for shots in sorted(ex["shots"].unique(), reverse=True):
        g = ex[ex["shots"] == shots]
        for split, mask in (("train", ~g["task"].isin(held)), ("held-out", g["task"].isin(held))):
            c = g.loc[mask, "correct"].astype(float).to_numpy()
            if c.size:
                lo, hi = bootstrap_ci(c, seed=run.cfg.seed)
                parts.append(f"{shots}-shot {split} {_ci(c.mean(), lo, hi)} (n = {c.size})")
    return "; ".join(parts) + " — pooled over prompts, bootstrap 95% CI"


def _paired_lift(
    run, split: str, col: str = "correct"
) -> tuple[float, float, float, int] | None:
    """Paired lift (all-heads FV − zero-shot, same prompts) of ``col`` (exact match, or the
    graded ``answer_logprob``) with its bootstrap 95% CI."""
    from addk_interp.core.scoring import bootstrap_ci

    p = run.out / "stages" / "fv_eval" / "fv_examples.csv"
    if not p.exists():
        return None
    df = pd.read_csv(
        p,
        usecols=["task", "query", "answer", col, "condition", "split"],
        dtype={"query": str, "answer": str},
        keep_default_na=False,
    )
    df = df[df["split"] == split]
    key = ["task", "query", "answer"]
    fv = df[df["condition"] == "all_heads_unit"].copy()
    zs = df[df["condition"] == "zero_shot_no_fv"].copy()
    for d in (fv, zs):
        d["occ"] = d.groupby(key).cumcount()
    m = fv.merge(zs, on=[*key, "occ"], suffixes=("_fv", "_zs"))
    if not len(m) or len(m) != len(fv) or len(m) != len(zs):
        return None
    lift = m[f"{col}_fv"].astype(float).to_numpy() - m[f"{col}_zs"].astype(float).to_numpy()
    lo, hi = bootstrap_ci(lift, seed=run.cfg.seed)
    return float(lift.mean()), lo, hi, len(lift)


def _fv_finding(run) -> str:
    p = run.out / "stages" / "fv_eval" / "fv_summary.csv"
    if not p.exists():
        return NA
    t = pd.read_csv(p)
    parts = []
    for split in sorted(t["split"].unique(), key=lambda s: s != "heldout"):
        g = t[t["split"] == split].set_index("condition")
        if "all_heads_unit" not in g.index:
            continue
        fv = g.loc["all_heads_unit"]
        s = f"{'held-out' if split == 'heldout' else split}: all-heads FV {_ci(fv['fv_accuracy'], fv['ci_low'], fv['ci_high'])}"
        if "zero_shot_no_fv" in g.index:
            z = g.loc["zero_shot_no_fv"]
            s += f" vs zero-shot {_ci(z['fv_accuracy'], z['ci_low'], z['ci_high'])}"
        lift = _paired_lift(run, split)
        if lift is not None:
            s += f", paired lift {lift[0]:+.2f} [{lift[1]:+.2f}, {lift[2]:+.2f}]"
        graded = _paired_lift(run, split, "answer_logprob")
        if graded is not None:
            s += (
                f", log p(answer) lift {graded[0]:+.2f} nats [{graded[1]:+.2f}, "
                f"{graded[2]:+.2f}]"
            )
        s += f" (n = {_n(int(fv['n']))}; clean n-shot {fv['clean_accuracy']:.2f})"
        parts.append(s)
    layer = int(t["layer"].iloc[0]) if "layer" in t and len(t) else run.layer
    return "; ".join(parts) + f"; injected at layer {layer}" if parts else "n/a (no FV rows)"


def _heads_finding(run) -> str:
    from addk_interp.core.store import stage_json

    sel = stage_json(run.out, "localize", "selected.json")
    hs = stage_json(run.out, "scan", "headsets.json")
    out = []
    if sel is None:
        out.append(f"selected: {NA}")
    else:
        out.append(
            f"selected ({sel['rule']} cut): {len(sel['heads'])} — {_heads(sel['heads'], 8)}"
            + (f" ({_heads_in_text(sel['reason'])})" if sel.get("reason") else "")
        )
    if hs is None:
        out.append(f"scan: {NA}")
        return "; ".join(out)
    tests = (hs.get("significant") or {}).get("tests") or {}
    sig = [k for k, t in tests.items() if isinstance(t, dict) and t.get("significant")]
    main = (hs.get("main") or {}).get("main", [])
    gains = {head_str(k): v for k, v in ((hs.get("main") or {}).get("gains") or {}).items()}
    out.append(
        f"significant (McNemar + BH, of {len(hs.get('scanned', []))} scanned): "
        f"{len(sig)}" + (f" — {_heads(sig)}" if sig else "")
    )
    out.append(
        "main: "
        + (
            ", ".join(
                f"{head_str(h)} (gain {gains[head_str(h)]:+.2f})"
                if head_str(h) in gains
                else head_str(h)
                for h in main
            )
            or "none"
        )
    )
    return "; ".join(out)


def _verdict_finding(run) -> str:
    from addk_interp.core.store import stage_json

    hs = stage_json(run.out, "scan", "headsets.json")
    if hs is None:
        return NA
    loc = hs.get("localization") or {}
    return (
        f"{loc.get('verdict', 'n/a')} — {_heads_in_text(loc.get('reason') or 'no reason recorded')}"
    )


def _necessity_finding(run) -> str:
    from addk_interp.core.store import stage_json

    if not _done(run, "headsets"):
        return NA
    nec = stage_json(run.out, "headsets", "necessity.json")
    if not nec or nec.get("main_acc") is None:
        return "n/a (no main heads to ablate)"
    n = len((nec.get("meta") or {}).get("prompts") or []) or nec.get("n")
    cci = nec.get("clean_ci") or [float("nan")] * 2
    mci = nec.get("main_ci") or [float("nan")] * 2
    s = (
        f"clean {_ci(nec['clean_acc'], *cci)} → main heads ({_heads(nec.get('main', []))}) "
        f"ablated {_ci(nec['main_acc'], *mci)} (n = {_n(n)})"
    )
    for key, frac, what in (
        ("random_accs", "frac_random_at_least_main", "other selected heads"),
        ("random_all_accs", "frac_random_all_at_least_main", "all other heads"),
    ):
        ra = nec.get(key) or []
        if ra:
            s += (
                f"; random same-size subsets of {what}: median {np.median(ra):.2f} "
                f"({len(ra)} subsets, share ≥ main-ablated {nec.get(frac, float('nan')):.2f})"
            )
    return s + f"; verdict {nec.get('verdict')}"


def _subspace_finding(run) -> str:
    from addk_interp.core.store import stage_json

    if not _done(run, "subspaces"):
        return NA
    sub = stage_json(run.out, "subspaces", "subspaces.json") or {}
    per = sub.get("per_head") or []
    if not per:
        return (
            "n/a (no analysis heads"
            + ("" if sub.get("numeric_k", True) else ", k not numeric")
            + ")"
        )
    return "; ".join(
        f"{head_str(d['head'])}: {d['pcs_to_95']} PCs for 95% of the variance, peak periods "
        + (", ".join(f"{p:g}" for p in d.get("peak_periods", [])[:5]) or "none")
        for d in per
    )


def _share_finding(run) -> str:
    from addk_interp.core.store import stage_json

    if not _done(run, "extraction"):
        return NA
    ext = stage_json(run.out, "extraction", "extraction.json") or {}
    parts = []
    for h, d in (ext.get("per_head") or {}).items():
        ls = d.get("label_share") or {}
        if ls.get("mean") is not None:
            parts.append(
                f"{head_str(h)} {_ci(ls['mean'], ls['ci_low'], ls['ci_high'])} "
                f"(n = {_n(ls.get('n'))})"
            )
    return (
        "; ".join(parts) + " of the head's task signal comes from the demonstration answers"
        if parts
        else "n/a (no analysis heads)"
    )


def _selfcorr_finding(run) -> str:
    from addk_interp.core.store import stage_json
    from addk_interp.report.plots import wilson_ci

    if not _done(run, "demos"):
        return NA
    dem = stage_json(run.out, "demos", "demos.json") or {}
    parts = []
    for h, d in (dem.get("per_head") or {}).items():
        sc = d.get("self_correction")
        if not sc:
            continue
        a = sc.get("accuracy") or {}
        n = int(sc.get("n_prompts") or 0)
        wrong = [a[f"j{j}"] for j in range(int(sc.get("shots", 0))) if f"j{j}" in a]

        def ci(x):
            lo, hi = wilson_ci(round(x * n), n)
            return _ci(x, lo, hi)

        s = f"{head_str(h)}: {sc.get('verdict')}"
        if "clean" in a:
            s += f"; accuracy clean {ci(a['clean'])}"
        if wrong:
            rng = (
                f"{min(wrong):.2f}"
                if min(wrong) == max(wrong)
                else (f"{min(wrong):.2f}–{max(wrong):.2f}")
            )
            s += f", one wrong label (any position) {rng}"
        if "shuffled" in a:
            s += f", shuffled labels {ci(a['shuffled'])}"
        parts.append(s + f" (n = {_n(n)}, Wilson 95% CI)")
    if dem.get("reason"):
        parts.append(str(dem["reason"]))
    return "; ".join(parts) or "n/a (no analysis heads)"


def _aie_finding(run) -> str:
    from addk_interp.core.store import stage_json

    if not _done(run, "aie"):
        return NA
    aie = stage_json(run.out, "aie", "aie_summary.json") or {}
    from addk_interp.report.plots import task_sort_key

    parts = []
    for k in sorted(aie.get("topk") or {}, key=task_sort_key):
        v = aie["topk"][k]
        parts.append(
            f"top-{k} FV {_ci(v['accuracy'], v['ci_low'], v['ci_high'])} (n = {v['n']}, "
            f"overlap with selected {(aie.get('overlap_with_selected') or {}).get(k)})"
        )
    top = aie.get("ranking_top") or []
    if top:
        parts.append(f"largest AIE: {_heads(top[:3])}")
    if aie.get("reason"):
        parts.append(str(aie["reason"]))
    return "; ".join(parts) or "n/a"


def _findings(run, drawn: set[str]) -> str:
    """The findings block: one line per headline quantity, with a link to its figure(s)."""
    info = run.model.info
    fam = run.family
    from addk_interp.organism.recipe_fv import ground_truth_of

    def link(*slugs) -> str:
        from addk_interp.report.figures import figure_spec

        got = [s for s in slugs if s in drawn]
        return " ".join(f"<a href='#fig-{s}'>[figure: {_e(figure_spec(s).title)}]</a>" for s in got)

    analysis = run.analysis_heads() if _done(run, "scan") else None
    rows = [
        (
            "Model",
            f"{info.name} ({info.fingerprint}), {info.n_layers} layers × {info.n_heads} heads, "
            f"{run.cfg.shots}-shot prompts in format {run.cfg.format}, seed {run.cfg.seed}",
            (),
        ),
        (
            "Task family",
            f"{fam.name}: {len(fam.train)} training tasks ({', '.join(_task_order(fam.train))}), "
            f"{len(fam.heldout)} held-out ({', '.join(_task_order(fam.heldout)) or 'none'})",
            (),
        ),
        ("Clean accuracy", _clean_finding(run), ("fig01_accuracy_vs_k",)),
        ("FV recovery", _fv_finding(run), ("fig03_fv_accuracy", "fig28_graded_effects")),
        (
            "Heads",
            _heads_finding(run),
            ("fig05_sorted_coef", "fig07_dose_response", "fig26_head_effects"),
        ),
        ("Localization verdict", _verdict_finding(run), ("fig07_dose_response",)),
        ("Necessity vs random controls", _necessity_finding(run), ("fig09_necessity",)),
        (
            "Analysis heads",
            NA if analysis is None else _heads(analysis) + " (main heads, else the best gains)",
            ("fig27_attention_patterns",),
        ),
        (
            "Subspace",
            _subspace_finding(run),
            ("fig10_cumulative_variance", "fig13_periodogram"),
        ),
        ("Label share (extraction)", _share_finding(run), ("fig20_group_shares",)),
        ("Self-correction", _selfcorr_finding(run), ("fig24_self_correction",)),
        ("AIE baseline", _aie_finding(run), ("fig25_aie_baseline", "fig26_head_effects")),
    ]
    gt = ground_truth_of(run.model)
    items = []
    for key, text, slugs in rows:
        items.append(f"<li><span class='k'>{_e(key)}:</span> {_e(text)} {link(*slugs)}</li>")
    if gt is not None:
        items.append(
            "<li><span class='k'>Planted (ground truth):</span> "
            f"{_e(', '.join(gt['planted_heads']))} — <a href='#planted'>[recovered vs planted]</a>"
            "</li>"
        )
    return "<section id='findings'><h2>Findings</h2><ul>" + "".join(items) + "</ul></section>"


def findings_text(report_html: str) -> str:
    """The findings block of a report as plain text, one line per finding."""
    import re

    m = re.search(r"<section id='findings'>(.*?)</section>", report_html, re.S)
    if m is None:
        return ""
    lines = re.findall(r"<li>(.*?)</li>", m.group(1), re.S)
    return "\n".join(html.unescape(re.sub(r"<[^>]+>", "", x)).strip() for x in lines)


# ----------------------------------------------------------------------------- tables
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
            f"checkpoints): {_heads(sel['heads'])}"
            + (f" — {_heads_in_text(sel['reason'])}" if sel.get("reason") else "")
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
            f"Main heads (quarter-of-best-gain rule): {_heads(main)}; significant: {len(sig)}; "
            f"localization verdict: {loc.get('verdict')} ({_heads_in_text(loc.get('reason'))})."
        )
    if (st / "headsets" / "headset_summary.csv").exists():
        t = pd.read_csv(st / "headsets" / "headset_summary.csv")
        if "heads" in t:
            t["heads"] = [_heads_cell(v) for v in t["heads"]]
        tables.append(("Head-set FV accuracy", t))
    sub = js("subspaces", "subspaces.json") or {}
    if sub.get("per_head"):
        tables.append(
            (
                "Subspace fit per head",
                pd.DataFrame(
                    [
                        {
                            "head": head_str(d["head"]),
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
        t = pd.read_csv(st / "projections" / "projections.csv")
        if "head" in t:
            t["head"] = [head_str(h) for h in t["head"]]
        tables.append(("Projection tests", t))
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
        from addk_interp.report.plots import task_sort_key

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
                            "n": v.get("n"),
                            "clean": v["clean_accuracy"],
                            "overlap with selected": aie["overlap_with_selected"].get(k),
                            "heads": _heads(v.get("heads", [])),
                        }
                        for k, v in sorted(aie["topk"].items(), key=lambda kv: task_sort_key(kv[0]))
                    ]
                ),
            )
        )
    return tables, notes


def _planted_block(run) -> list[str]:
    """Recovered vs planted (models with ground truth: organism-fv) and the validation table
    when ``addk-interp validate`` has run. The ground truth is read here, for the reader, from
    the checkpoint manifest; no stage reads it."""
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

        rows = pd.DataFrame(
            [
                {"": "planted (checkpoint manifest)", "heads": ", ".join(gt["planted_heads"])},
                {"": "selected (gate learning)", "heads": _heads(sel.get("heads", []))},
                {"": "significant (McNemar + BH)", "heads": _heads(sig)},
                {"": f"main (verdict {loc})", "heads": _heads(main)},
            ]
        )
        out.append("<h2 id='planted'>Recovered vs planted mechanism</h2>")
        out.append(
            f"<p>This model has a planted mechanism: a function vector in "
            f"{_e(', '.join(gt['planted_heads']))} (layer {gt['layer']}), number "
            f"embeddings with periods {_e(gt['planted_periods'])}. The stages "
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
        out.append(f"<p>{_e(v['note'])}</p>" + _table(df))
    return out


# ----------------------------------------------------------------------------- report
def write_report(run) -> Path:
    from addk_interp.report.figures import FIGURES, build

    out = run.out
    figs, missing = [], []
    for spec in FIGURES:
        fig = build(run, spec.slug)
        if fig is None:
            missing.append(spec)
        else:
            figs.append((spec, fig))
    drawn = {spec.slug for spec, _ in figs}
    tables, notes = _tables_and_notes(run)
    info = run.model.info
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>addk-interp report: {_e(info.name)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>addk-interp report — {_e(info.name)}</h1>",
        f"<p>model fingerprint <code>{_e(info.fingerprint)}</code>, "
        f"{info.n_layers} layers × {info.n_heads} heads ({info.n_kv_heads} KV), "
        f"numbers: {_e(info.number_tokenization)}; family "
        f"<code>{_e(run.family.name)}</code>, {run.cfg.shots}-shot, format "
        f"<code>{_e(run.cfg.format)}</code>, seed {run.cfg.seed}, injection layer "
        f"{run.layer}.</p>",
        _findings(run, drawn),
        "<nav id='contents'><h2>Figures</h2><ol>"
        + "".join(f"<li><a href='#fig-{s.slug}'>{_e(s.title)}</a></li>" for s, _ in figs)
        + "</ol>"
        + (
            "<p>Not drawn (their stage produced no data for them): "
            + "; ".join(f"{_e(s.title)} (stage {_e(s.stage)})" for s in missing)
            + "</p>"
            if missing
            else ""
        )
        + "</nav>",
    ]
    parts += _planted_block(run)
    for i, (spec, fig) in enumerate(figs):
        parts.append(
            f"<section class='fig' id='fig-{spec.slug}'><h2>{i + 1}. {_e(spec.title)}</h2>"
            f"<p class='cap'>{_e(spec.caption)}</p>"
        )
        # fixed div ids (plotly draws random ones): same run → byte-identical report
        parts.append(
            pio.to_html(fig, full_html=False, include_plotlyjs=i == 0, div_id=f"plot-{spec.slug}")
        )
        parts.append("</section>")
    for note in notes:
        parts.append(f"<p>{_e(note)}</p>")
    for title, df in tables:
        parts.append(f"<h2>{_e(title)}</h2>" + _table(df))
    fv_p = out / "stages" / "fv_eval" / "fv_summary.csv"
    if fv_p.exists():
        parts.append("<h2>Function vectors (numbers)</h2>" + _table(pd.read_csv(fv_p)))
    acc_p = out / "stages" / "clean_eval" / "accuracy.csv"
    if acc_p.exists():
        from addk_interp.report.plots import task_sort_key

        acc = pd.read_csv(acc_p)
        acc = acc.iloc[
            sorted(
                range(len(acc)),
                key=lambda i: (acc["shots"].iloc[i], task_sort_key(acc["task"].iloc[i])),
            )
        ]
        by_shots = acc.groupby("shots").agg(accuracy=("accuracy", "mean")).reset_index()
        parts.append("<h2>Clean accuracy (mean over tasks)</h2>" + _table(by_shots))
        parts.append("<h2>Clean accuracy per task</h2>" + _table(acc))
    parts.append("</body></html>")
    from addk_interp.core.store import atomic_write_text

    path = out / "report.html"
    atomic_write_text(path, "\n".join(parts))
    return path
