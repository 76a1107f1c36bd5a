"""One self-contained HTML report of a run (plotly inlined, strings HTML-escaped).

Not a step of the method: it renders the saved stage results, read once per report through
``report.results.RunResults`` (typed views, never a stage file's dictionary keys). Layout: a
findings block (the headline numbers, each with its CI and a link to its figure), a table of
contents, the recovered-vs-planted comparison (models with ground truth), one section per
figure with its caption (``report.figures.FIGURES``), then the tables. A stage that did not
run shows "n/a (stage not run)". Plotly div ids are fixed, so the same run gives a
byte-identical report. Cost: ~1 s plus the attention view's two forwards, ~4 MB (plotly.js).
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
from addk_interp.report.results import RunResults

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


def _task_order(names) -> list[str]:
    from addk_interp.report.plots import task_sort_key

    return sorted(names, key=task_sort_key)


# ----------------------------------------------------------------------------- findings
def _clean_finding(run, res: RunResults) -> str:
    from addk_interp.core.scoring import bootstrap_ci

    ex = res.clean_examples
    if ex is None:
        return NA
    ex = ex[["task", "shots", "correct"]]
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
    run, res: RunResults, split: str, col: str = "correct"
) -> tuple[float, float, float, int] | None:
    """Paired lift (all-heads FV − zero-shot, same prompts) of ``col`` (exact match, or the
    graded ``answer_logprob``) with its bootstrap 95% CI."""
    from addk_interp.core.scoring import bootstrap_ci

    df = res.fv_outcomes
    if df is None or col not in df:
        return None
    df = df[["task", "query", "answer", col, "condition", "split"]]
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


def _fv_finding(run, res: RunResults) -> str:
    t = res.fv
    if t is None:
        return NA
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
        lift = _paired_lift(run, res, split)
        if lift is not None:
            s += f", paired lift {lift[0]:+.2f} [{lift[1]:+.2f}, {lift[2]:+.2f}]"
        graded = _paired_lift(run, res, split, "answer_logprob")
        if graded is not None:
            s += (
                f", log p(answer) lift {graded[0]:+.2f} nats [{graded[1]:+.2f}, "
                f"{graded[2]:+.2f}]"
            )
        s += f" (n = {_n(int(fv['n']))}; clean n-shot {fv['clean_accuracy']:.2f})"
        parts.append(s)
    layer = int(t["layer"].iloc[0]) if "layer" in t and len(t) else run.layer
    return "; ".join(parts) + f"; injected at layer {layer}" if parts else "n/a (no FV rows)"


def _heads_finding(res: RunResults) -> str:
    sel, scan = res.selection, res.scan
    out = []
    if sel is None:
        out.append(f"selected: {NA}")
    else:
        out.append(
            f"selected ({sel.rule} cut): {len(sel.heads)} — {_heads(sel.heads, 8)}"
            + (f" ({_heads_in_text(sel.reason)})" if sel.reason else "")
        )
    if scan is None:
        out.append(f"scan: {NA}")
        return "; ".join(out)
    sig = scan.significant
    out.append(
        f"significant (McNemar + BH, of {len(scan.scanned)} scanned): "
        f"{len(sig)}" + (f" — {_heads(sig)}" if sig else "")
    )
    out.append(
        "main: "
        + (
            ", ".join(
                f"{head_str(h)} (gain {scan.gains[h]:+.2f})" if h in scan.gains else head_str(h)
                for h in scan.main
            )
            or "none"
        )
    )
    return "; ".join(out)


def _verdict_finding(res: RunResults) -> str:
    scan = res.scan
    if scan is None:
        return NA
    return f"{scan.verdict} — {_heads_in_text(scan.reason or 'no reason recorded')}"


def _necessity_finding(res: RunResults) -> str:
    if not res.done("headsets"):
        return NA
    nec = res.necessity
    if nec is None or nec.main_acc is None:
        return "n/a (no main heads to ablate)"
    nan = float("nan")
    n = nec.n_prompts or nec.n
    cci = nec.clean_ci or (nan, nan)
    mci = nec.main_ci or (nan, nan)
    s = (
        f"clean {_ci(nec.clean_acc, *cci)} → main heads ({_heads(nec.main)}) "
        f"ablated {_ci(nec.main_acc, *mci)} (n = {_n(n)})"
    )
    for ra, frac, what in (
        (nec.random_accs, nec.frac_random_at_least_main, "other selected heads"),
        (nec.random_all_accs, nec.frac_random_all_at_least_main, "all other heads"),
    ):
        if ra:
            s += (
                f"; random same-size subsets of {what}: median {np.median(ra):.2f} "
                f"({len(ra)} subsets, share ≥ main-ablated {nan if frac is None else frac:.2f})"
            )
    return s + f"; verdict {nec.verdict}"


def _subspace_finding(res: RunResults) -> str:
    if not res.done("subspaces"):
        return NA
    sub = res.subspaces
    per = sub.per_head if sub else []
    if not per:
        return (
            "n/a (no analysis heads"
            + ("" if sub is None or sub.numeric_k else ", k not numeric")
            + ")"
        )
    return "; ".join(
        f"{head_str(d.head)}: {d.pcs_to_95} PCs for 95% of the variance, peak periods "
        + (", ".join(f"{p:g}" for p in d.peak_periods[:5]) or "none")
        for d in per
    )


def _share_finding(res: RunResults) -> str:
    if not res.done("extraction"):
        return NA
    ext = res.extraction
    parts = []
    for h, e in (ext.per_head if ext else {}).items():
        ls = e.label_share
        if ls is not None and ls.mean is not None:
            parts.append(
                f"{head_str(h)} {_ci(ls.mean, ls.ci_low, ls.ci_high)} (n = {_n(ls.n)})"
            )
    return (
        "; ".join(parts) + " of the head's task signal comes from the demonstration answers"
        if parts
        else "n/a (no analysis heads)"
    )


def _selfcorr_finding(res: RunResults) -> str:
    from addk_interp.report.plots import wilson_ci

    if not res.done("demos"):
        return NA
    dem = res.demos
    parts = []
    for h in dem.heads if dem else []:
        sc = dem.self_correction.get(h)
        if sc is None:
            continue
        a = sc.accuracy
        n = sc.n_prompts
        wrong = [a[f"j{j}"] for j in range(sc.shots) if f"j{j}" in a]

        def ci(x):
            lo, hi = wilson_ci(round(x * n), n)
            return _ci(x, lo, hi)

        s = f"{head_str(h)}: {sc.verdict}"
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
    if dem and dem.reason:
        parts.append(str(dem.reason))
    return "; ".join(parts) or "n/a (no analysis heads)"


def _aie_finding(res: RunResults) -> str:
    from addk_interp.report.plots import task_sort_key

    if not res.done("aie"):
        return NA
    aie = res.aie
    if aie is None:
        return "n/a"
    parts = []
    for k in sorted(aie.topk, key=lambda k: task_sort_key(str(k))):
        v = aie.topk[k]
        parts.append(
            f"top-{k} FV {_ci(v.accuracy, v.ci[0], v.ci[1])} (n = {v.n}, "
            f"overlap with selected {aie.overlap_with_selected.get(k)})"
        )
    if aie.ranking_top:
        parts.append(f"largest AIE: {_heads(aie.ranking_top[:3])}")
    if aie.reason:
        parts.append(str(aie.reason))
    return "; ".join(parts) or "n/a"


def _findings(run, res: RunResults, drawn: set[str]) -> str:
    """The findings block: one line per headline quantity, with a link to its figure(s)."""
    info = run.model.info
    fam = run.family
    from addk_interp.organism.recipe_fv import ground_truth_of

    def link(*slugs) -> str:
        from addk_interp.report.figures import figure_spec

        got = [s for s in slugs if s in drawn]
        return " ".join(f"<a href='#fig-{s}'>[figure: {_e(figure_spec(s).title)}]</a>" for s in got)

    analysis = res.analysis_heads() if res.done("scan") else None
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
        ("Clean accuracy", _clean_finding(run, res), ("fig01_accuracy_vs_k",)),
        ("FV recovery", _fv_finding(run, res), ("fig03_fv_accuracy", "fig28_graded_effects")),
        (
            "Heads",
            _heads_finding(res),
            ("fig05_sorted_coef", "fig07_dose_response", "fig26_head_effects"),
        ),
        ("Localization verdict", _verdict_finding(res), ("fig07_dose_response",)),
        ("Necessity vs random controls", _necessity_finding(res), ("fig09_necessity",)),
        (
            "Analysis heads",
            NA if analysis is None else _heads(analysis) + " (main heads, else the best gains)",
            ("fig27_attention_patterns",),
        ),
        (
            "Subspace",
            _subspace_finding(res),
            ("fig10_cumulative_variance", "fig13_periodogram"),
        ),
        ("Label share (extraction)", _share_finding(res), ("fig20_group_shares",)),
        ("Self-correction", _selfcorr_finding(res), ("fig24_self_correction",)),
        ("AIE baseline", _aie_finding(res), ("fig25_aie_baseline", "fig26_head_effects")),
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
def _tables_and_notes(res: RunResults) -> tuple[list[tuple[str, pd.DataFrame]], list[str]]:
    from addk_interp.report.plots import task_sort_key

    tables: list[tuple[str, pd.DataFrame]] = []
    notes: list[str] = []

    sel = res.selection
    if sel is not None:
        notes.append(
            f"Selected heads ({sel.rule} on the mean of the last {sel.k} "
            f"checkpoints): {_heads(sel.heads)}"
            + (f" — {_heads_in_text(sel.reason)}" if sel.reason else "")
        )
    scan = res.scan
    if scan is not None:
        notes.append(
            f"Main heads (quarter-of-best-gain rule): {_heads(scan.main)}; significant: "
            f"{len(scan.significant)}; localization verdict: {scan.verdict} "
            f"({_heads_in_text(scan.reason)})."
        )
    if res.headset_fv is not None:
        t = res.headset_fv.copy()
        if "heads" in t:
            t["heads"] = [_heads_cell(v) for v in t["heads"]]
        tables.append(("Head-set FV accuracy", t))
    sub = res.subspaces
    if sub and sub.per_head:
        tables.append(
            (
                "Subspace fit per head",
                pd.DataFrame(
                    [
                        {
                            "head": head_str(d.head),
                            "PCs for 95%": d.pcs_to_95,
                            **{f"R² {k}": v for k, v in d.r2.items()},
                            "peak periods": ", ".join(f"{p:g}" for p in d.peak_periods[:5]),
                        }
                        for d in sub.per_head
                    ]
                ),
            )
        )
    if res.projections is not None:
        t = res.projections.copy()
        if "head" in t:
            t["head"] = [head_str(h) for h in t["head"]]
        tables.append(("Projection tests", t))
    ext = res.extraction
    if ext and ext.per_head:
        tables.append(
            (
                "Label share per head",
                pd.DataFrame(
                    [
                        {
                            "head": head_str(h),
                            **(e.label_share.as_dict() if e.label_share else {}),
                            "identity max rel. error": e.identity_max_rel_error,
                        }
                        for h, e in ext.per_head.items()
                    ]
                ),
            )
        )
    dem = res.demos
    if dem and dem.reason:
        notes.append(f"Demos stage: {dem.reason}")
    rows = []
    for h in dem.heads if dem else []:
        r, sc = dem.readout.get(h), dem.self_correction.get(h)
        rows.append(
            {
                "head": head_str(h),
                "offset read-out accuracy": r.accuracy if r else None,
                "chance": r.chance if r else None,
                "corr(decoded, own offset)": r.corr_own_offset if r else None,
                "self-correction verdict": sc.verdict if sc else None,
                "accuracy clean": sc.accuracy.get("clean") if sc else None,
                "accuracy shuffled control": sc.accuracy.get("shuffled") if sc else None,
            }
        )
    if rows:
        tables.append(("Offset read-out and self-correction", pd.DataFrame(rows)))
    aie = res.aie
    if aie is not None and aie.reason:
        notes.append(f"AIE baseline: {aie.reason}")
    if aie is not None and aie.topk:
        tables.append(
            (
                "AIE baseline: top-k FV",
                pd.DataFrame(
                    [
                        {
                            "k": k,
                            "accuracy": v.accuracy,
                            "ci_low": v.ci[0],
                            "ci_high": v.ci[1],
                            "n": v.n,
                            "clean": v.clean_accuracy,
                            "overlap with selected": aie.overlap_with_selected.get(k),
                            "heads": _heads(v.heads),
                        }
                        for k, v in sorted(
                            aie.topk.items(), key=lambda kv: task_sort_key(str(kv[0]))
                        )
                    ]
                ),
            )
        )
    return tables, notes


def _planted_block(run, res: RunResults) -> list[str]:
    """Recovered vs planted (models with ground truth: organism-fv) and the validation table
    when ``addk-interp validate`` has run. The ground truth is read here, for the reader, from
    the checkpoint manifest; no stage reads it."""
    from addk_interp.organism.recipe_fv import ground_truth_of

    gt = ground_truth_of(run.model)
    out: list[str] = []
    if gt is not None:
        sel, scan = res.selection, res.scan
        rows = pd.DataFrame(
            [
                {"": "planted (checkpoint manifest)", "heads": ", ".join(gt["planted_heads"])},
                {"": "selected (gate learning)", "heads": _heads(sel.heads if sel else [])},
                {
                    "": "significant (McNemar + BH)",
                    "heads": _heads(scan.significant_ranked if scan else []),
                },
                {
                    "": f"main (verdict {scan.verdict if scan else None})",
                    "heads": _heads(scan.main if scan else []),
                },
            ]
        )
        out.append("<h2 id='planted'>Recovered vs planted mechanism</h2>")
        out.append(
            f"<p>This model has a planted mechanism: a function vector in "
            f"{_e(', '.join(gt['planted_heads']))} (layer {gt['layer']}), number "
            f"embeddings with periods {_e(gt['planted_periods'])}. The stages "
            "never read it; it is shown here for comparison.</p>" + _table(rows)
        )
    val = res.validation
    if val is not None:
        df = pd.DataFrame(
            [
                {
                    "method": m.method,
                    "selected": ", ".join(head_str(h) for h in m.selected) or "none",
                    "precision": m.precision,
                    "recall": m.recall,
                    "planted ranks": ", ".join(f"{k} {r}" for k, r in m.planted_ranks.items()),
                    "wall s": m.wall_s,
                }
                for m in val.methods
            ]
        )
        out.append("<h2>Localization methods (addk-interp validate)</h2>")
        out.append(f"<p>{_e(val.note)}</p>" + _table(df))
    return out


# ----------------------------------------------------------------------------- report
def write_report(run) -> Path:
    from addk_interp.report.figures import FIGURES, build

    out = run.out
    res = RunResults(out)  # every figure, finding and table reads this one
    figs, missing = [], []
    for spec in FIGURES:
        fig = build(run, spec.slug, res)
        if fig is None:
            missing.append(spec)
        else:
            figs.append((spec, fig))
    drawn = {spec.slug for spec, _ in figs}
    tables, notes = _tables_and_notes(res)
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
        _findings(run, res, drawn),
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
    parts += _planted_block(run, res)
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
    if res.fv is not None:
        parts.append("<h2>Function vectors (numbers)</h2>" + _table(res.fv))
    if res.clean is not None:
        from addk_interp.report.plots import task_sort_key

        acc = res.clean
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
