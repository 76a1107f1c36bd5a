"""``addk-interp summary DIR``: the headline numbers of a finished run, as a table.

Not a step of the method: it reads the saved stage results of a run directory (nothing is
recomputed) and lists, per quantity, the value and the file it came from — the table the
README's results sections are copied from. Cost: milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

from addk_interp.core.errors import AddkError
from addk_interp.core.heads import head_str


def _h(h) -> str:
    return head_str(h)


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _ci(acc, lo, hi) -> str:
    return f"{acc:.2f} [{lo:.2f}, {hi:.2f}]"


def _csv(path):
    """A run's CSV table, or a one-line ``AddkError`` naming the file (empty, corrupt)."""
    import pandas as pd

    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise AddkError(f"missing file {path}") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise AddkError(f"{path}: unreadable table ({type(e).__name__})") from None


def summarize_run(out: str | Path) -> list[tuple[str, str, str]]:
    """(quantity, value, source file) rows for a run directory."""
    import pandas as pd

    from addk_interp.core.store import stage_json

    out = Path(out)
    st = out / "stages"
    if not (out / "manifest.json").exists():
        raise AddkError(f"{out} holds no finished run (no manifest.json)")

    def js(stage, name):
        return stage_json(out, stage, name)

    man = json.loads((out / "manifest.json").read_text())
    rows: list[tuple[str, str, str]] = []
    add = rows.append
    add(("model", f"{man['model']['name']} ({man['model']['fingerprint']})", "manifest.json"))
    add(("wall time (s), all stages", f"{man['wall_s']:.0f}", "manifest.json"))
    acc = _csv(st / "clean_eval" / "accuracy.csv")
    for shots, g in acc.groupby("shots"):
        for split, gg in g.groupby("split"):
            add(
                (
                    f"clean {shots}-shot accuracy, {split} tasks (mean over k)",
                    f"{gg['accuracy'].mean():.3f}",
                    "clean_eval/accuracy.csv",
                )
            )
    fv = _csv(st / "fv_eval" / "fv_summary.csv")
    for _, r in fv.iterrows():
        add(
            (
                f"FV {r['condition']} ({r['split']}), injected at layer {r['layer']}",
                _ci(r["fv_accuracy"], r["ci_low"], r["ci_high"]),
                "fv_eval/fv_summary.csv",
            )
        )
    sel = js("localize", "selected.json")
    if sel:
        add(
            (
                f"selected heads ({sel['rule']} cut)",
                f"{len(sel['heads'])}: " + ", ".join(_h(h) for h in sel["heads"]),
                "localize/selected.json",
            )
        )
    hs = js("scan", "headsets.json")
    if hs:
        tests = (hs.get("significant") or {}).get("tests") or {}
        sig = [k for k, t in tests.items() if isinstance(t, dict) and t.get("significant")]
        add(("scanned heads", f"{len(hs.get('scanned', []))}", "scan/headsets.json"))
        add(
            (
                "significant heads (McNemar + BH)",
                f"{len(sig)}" + (": " + ", ".join(_h(k) for k in sig) if sig else ""),
                "scan/headsets.json",
            )
        )
        m = hs.get("main") or {}
        gains = {head_str(k): v for k, v in (m.get("gains") or {}).items()}
        add(
            (
                "main heads (quarter-of-best-gain) [gain]",
                ", ".join(
                    f"{_h(h)} [{gains.get(head_str(h), float('nan')):.2f}]"
                    for h in m.get("main", [])
                )
                or "none",
                "scan/headsets.json",
            )
        )
        loc = hs.get("localization") or {}
        add(("localization verdict", str(loc.get("verdict")), "scan/headsets.json"))
        add(("verdict reason", str(loc.get("reason")), "scan/headsets.json"))
        add(("selector verdict (§4.3, gains only)", str(m.get("verdict")), "scan/headsets.json"))
    p = st / "headsets" / "headset_summary.csv"
    if p.exists():
        for _, r in _csv(p).iterrows():
            add(
                (
                    f"head-set FV: {r['condition']}",
                    _ci(r["accuracy"], r["ci_low"], r["ci_high"]),
                    "headsets/headset_summary.csv",
                )
            )
    nec = js("headsets", "necessity.json")
    if nec:
        ra = nec.get("random_accs") or []
        add(
            (
                "necessity: clean → main heads ablated (random subsets median)",
                f"{nec['clean_acc']:.2f} → {nec['main_acc']:.2f}"
                + (f" ({pd.Series(ra).median():.2f}, n={len(ra)})" if ra else "")
                + f"; {nec.get('verdict')}",
                "headsets/necessity.json",
            )
        )
        rall = nec.get("random_all_accs") or []
        if rall:
            add(
                (
                    "necessity control: random same-size subsets of all other heads "
                    "(median, min; share ≥ main-ablated)",
                    f"{pd.Series(rall).median():.2f}, {min(rall):.2f} (n={len(rall)}); "
                    f"{nec.get('frac_random_all_at_least_main', float('nan')):.2f}",
                    "headsets/necessity.json",
                )
            )
        single = nec.get("single_head_accs") or {}
        if single:
            low = sorted(single.items(), key=lambda kv: (kv[1], kv[0]))[:5]
            add(
                (
                    f"single-head ablation: lowest accuracy of {len(single)} heads ablated alone",
                    ", ".join(f"{_h(k)} {v:.2f}" for k, v in low),
                    "headsets/necessity.json",
                )
            )
    sub = js("subspaces", "subspaces.json") or {}
    for d in sub.get("per_head") or []:
        r2 = d.get("r2") or {}
        add(
            (
                f"{_h(d['head'])}: PCs for 95% / R² per target / peak periods",
                f"{d['pcs_to_95']} / "
                + ", ".join(f"{k} {v:.2f}" for k, v in r2.items())
                + f" / {', '.join(f'{p:g}' for p in d['peak_periods'][:5])}",
                "subspaces/subspaces.json",
            )
        )
    p = st / "projections" / "projections.csv"
    if p.exists():
        t = _csv(p)
        for head, g in t.groupby("head"):
            add(
                (
                    f"{_h(str(head))}: projection arms (accuracy)",
                    ", ".join(f"{a} {x:.2f}" for a, x in zip(g["arm"], g["accuracy"], strict=True)),
                    "projections/projections.csv",
                )
            )
    ext = js("extraction", "extraction.json") or {}
    for h, d in (ext.get("per_head") or {}).items():
        ls = d.get("label_share") or {}
        if ls.get("mean") is not None:
            add(
                (
                    f"{_h(h)}: label share of the task signal",
                    _ci(ls["mean"], ls["ci_low"], ls["ci_high"])
                    + f" (identity rel. error ≤ {d.get('identity_max_rel_error', float('nan')):.1e})",
                    "extraction/extraction.json",
                )
            )
        roles = d.get("roles") or {}
        top = sorted(roles, key=lambda r: -abs((roles[r] or {}).get("mean") or 0))[:3]
        if top:
            add(
                (
                    f"{_h(h)}: largest role shares",
                    ", ".join(f"{r} {roles[r]['mean']:.2f}" for r in top),
                    "extraction/extraction.json",
                )
            )
    cir = js("circuits", "circuits.json") or {}
    for h, d in (cir.get("per_head") or {}).items():
        rm = d["qk"]["role_mass"]
        top = sorted(rm, key=lambda r: -(rm[r] or 0))[:2]
        add(
            (
                f"{_h(h)}: query-row attention by role (top 2)",
                ", ".join(f"{r} {rm[r]:.2f}" for r in top),
                "circuits/circuits.json",
            )
        )
        dec = d.get("ov_decomposition")
        if dec:
            add(
                (
                    f"{_h(h)}: OV of label residuals, variance in unit / magnitude parts",
                    f"{dec['fraction'].get('unit', 0):.2f} / {dec['fraction'].get('magnitude', 0):.2f}",
                    "circuits/circuits.json",
                )
            )
    dem = js("demos", "demos.json") or {}
    if dem.get("reason"):
        add(("demos", dem["reason"], "demos/demos.json"))
    for h, d in (dem.get("per_head") or {}).items():
        r = d.get("offset_readout")
        if r:
            add(
                (
                    f"{_h(h)}: offset read-out accuracy (chance) / corr with own offset, with k",
                    f"{r['accuracy']:.2f} ({r['chance']:.2f}) / {_f(r['corr_own_offset'])}, "
                    f"{_f(r['corr_query_k'])}",
                    "demos/demos.json",
                )
            )
        sc = d.get("self_correction")
        if sc:
            a = sc.get("accuracy") or {}
            js_ = [f"j{j}" for j in range(sc["shots"])]
            add(
                (
                    f"{_h(h)}: self-correction (accuracy clean → wrong label at demo 1..n; shuffled)",
                    f"{a.get('clean', float('nan')):.2f} → "
                    + " ".join(f"{a.get(j, float('nan')):.2f}" for j in js_)
                    + f"; shuffled {a.get('shuffled', float('nan')):.2f}; verdict {sc['verdict']}",
                    "demos/demos.json",
                )
            )
    aie = js("aie", "aie_summary.json")
    if aie:
        for k, v in (aie.get("topk") or {}).items():
            add(
                (
                    f"AIE top-{k} FV (held-out) / overlap with selected",
                    _ci(v["accuracy"], v["ci_low"], v["ci_high"])
                    + f" / {aie['overlap_with_selected'].get(k)}",
                    "aie/aie_summary.json",
                )
            )
        if aie.get("reason"):
            add(("AIE", aie["reason"], "aie/aie_summary.json"))
    stages = ", ".join(f"{s['name']} {s.get('wall_s', 0):.0f}" for s in man["stages"])
    add(("wall seconds per stage", stages, "manifest.json"))
    return rows


def to_markdown(rows) -> str:
    lines = ["| quantity | value | from |", "|---|---|---|"]
    lines += [f"| {q} | {v} | `{s}` |" for q, v, s in rows]
    return "\n".join(lines)
