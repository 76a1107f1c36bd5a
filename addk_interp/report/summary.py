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
from addk_interp.report.results import RunResults


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

    out = Path(out)
    st = out / "stages"
    if not (out / "manifest.json").exists():
        raise AddkError(f"{out} holds no finished run (no manifest.json)")

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
    R = RunResults(out)
    sel = R.selection
    if sel:
        add(
            (
                f"selected heads ({sel.rule} cut)",
                f"{len(sel.heads)}: " + ", ".join(_h(h) for h in sel.heads),
                "localize/selected.json",
            )
        )
    scan = R.scan
    if scan:
        sig = scan.significant
        add(("scanned heads", f"{len(scan.scanned)}", "scan/headsets.json"))
        add(
            (
                "significant heads (McNemar + BH)",
                f"{len(sig)}" + (": " + ", ".join(_h(k) for k in sig) if sig else ""),
                "scan/headsets.json",
            )
        )
        add(
            (
                "main heads (quarter-of-best-gain) [gain]",
                ", ".join(f"{_h(h)} [{scan.gains.get(h, float('nan')):.2f}]" for h in scan.main)
                or "none",
                "scan/headsets.json",
            )
        )
        add(("localization verdict", str(scan.verdict), "scan/headsets.json"))
        add(("verdict reason", str(scan.reason), "scan/headsets.json"))
        add(("selector verdict (§4.3, gains only)", str(scan.selector_verdict), "scan/headsets.json"))
    t = R.headset_fv
    if t is not None:
        for _, r in t.iterrows():
            add(
                (
                    f"head-set FV: {r['condition']}",
                    _ci(r["accuracy"], r["ci_low"], r["ci_high"]),
                    "headsets/headset_summary.csv",
                )
            )
    nec = R.necessity
    if nec:
        ra = nec.random_accs
        add(
            (
                "necessity: clean → main heads ablated (random subsets median)",
                f"{nec.clean_acc:.2f} → {nec.main_acc:.2f}"
                + (f" ({pd.Series(ra).median():.2f}, n={len(ra)})" if ra else "")
                + f"; {nec.verdict}",
                "headsets/necessity.json",
            )
        )
        rall = nec.random_all_accs
        if rall:
            frac = nec.frac_random_all_at_least_main
            add(
                (
                    "necessity control: random same-size subsets of all other heads "
                    "(median, min; share ≥ main-ablated)",
                    f"{pd.Series(rall).median():.2f}, {min(rall):.2f} (n={len(rall)}); "
                    f"{float('nan') if frac is None else frac:.2f}",
                    "headsets/necessity.json",
                )
            )
        single = nec.single_head_accs
        if single:
            low = sorted(single.items(), key=lambda kv: (kv[1], str(kv[0])))[:5]
            add(
                (
                    f"single-head ablation: lowest accuracy of {len(single)} heads ablated alone",
                    ", ".join(f"{_h(k)} {v:.2f}" for k, v in low),
                    "headsets/necessity.json",
                )
            )
    sub = R.subspaces
    for d in sub.per_head if sub else []:
        add(
            (
                f"{_h(d.head)}: PCs for 95% / R² per target / peak periods",
                f"{d.pcs_to_95} / "
                + ", ".join(f"{k} {v:.2f}" for k, v in d.r2.items())
                + f" / {', '.join(f'{p:g}' for p in d.peak_periods[:5])}",
                "subspaces/subspaces.json",
            )
        )
    t = R.projections
    if t is not None:
        for head, g in t.groupby("head"):
            add(
                (
                    f"{_h(str(head))}: projection arms (accuracy)",
                    ", ".join(f"{a} {x:.2f}" for a, x in zip(g["arm"], g["accuracy"], strict=True)),
                    "projections/projections.csv",
                )
            )
    ext = R.extraction
    for h in (ext.role_share if ext else {}):
        ls = ext.label_share.get(h)
        if ls is not None:
            add(
                (
                    f"{_h(h)}: label share of the task signal",
                    _ci(ls.mean, ls.ci_low, ls.ci_high)
                    + f" (identity rel. error ≤ {ext.identity_max_rel_error.get(h, float('nan')):.1e})",
                    "extraction/extraction.json",
                )
            )
        roles = ext.role_share[h]
        top = sorted(roles, key=lambda r: -abs(roles[r]))[:3]
        if top:
            add(
                (
                    f"{_h(h)}: largest role shares",
                    ", ".join(f"{r} {roles[r]:.2f}" for r in top),
                    "extraction/extraction.json",
                )
            )
    cir = R.circuits
    for h, c in (cir.per_head if cir else {}).items():
        rm = c.role_mass
        top = sorted(rm, key=lambda r: -rm[r])[:2]
        add(
            (
                f"{_h(h)}: query-row attention by role (top 2)",
                ", ".join(f"{r} {rm[r]:.2f}" for r in top),
                "circuits/circuits.json",
            )
        )
        if c.ov_fraction:
            add(
                (
                    f"{_h(h)}: OV of label residuals, variance in unit / magnitude parts",
                    f"{c.ov_fraction.get('unit', 0):.2f} / {c.ov_fraction.get('magnitude', 0):.2f}",
                    "circuits/circuits.json",
                )
            )
    dem = R.demos
    if dem and dem.reason:
        add(("demos", dem.reason, "demos/demos.json"))
    for h in _union(dem.readout, dem.self_correction) if dem else []:
        r = dem.readout.get(h)
        if r:
            add(
                (
                    f"{_h(h)}: offset read-out accuracy (chance) / corr with own offset, with k",
                    f"{r.accuracy:.2f} ({r.chance:.2f}) / {_f(r.corr_own_offset)}, "
                    f"{_f(r.corr_query_k)}",
                    "demos/demos.json",
                )
            )
        sc = dem.self_correction.get(h)
        if sc:
            a = sc.accuracy
            js_ = [f"j{j}" for j in range(sc.shots)]
            add(
                (
                    f"{_h(h)}: self-correction (accuracy clean → wrong label at demo 1..n; shuffled)",
                    f"{a.get('clean', float('nan')):.2f} → "
                    + " ".join(f"{a.get(j, float('nan')):.2f}" for j in js_)
                    + f"; shuffled {a.get('shuffled', float('nan')):.2f}; verdict {sc.verdict}",
                    "demos/demos.json",
                )
            )
    aie = R.aie
    if aie:
        for k, v in aie.topk.items():
            add(
                (
                    f"AIE top-{k} FV (held-out) / overlap with selected",
                    _ci(v.accuracy, v.ci[0], v.ci[1]) + f" / {aie.overlap_with_selected.get(k)}",
                    "aie/aie_summary.json",
                )
            )
        if aie.reason:
            add(("AIE", aie.reason, "aie/aie_summary.json"))
    stages = ", ".join(f"{s['name']} {s.get('wall_s', 0):.0f}" for s in man["stages"])
    add(("wall seconds per stage", stages, "manifest.json"))
    return rows


def _union(a: dict, b: dict) -> list:
    """Keys of ``a`` then the new keys of ``b``, in order."""
    return list(a) + [k for k in b if k not in a]


def to_markdown(rows) -> str:
    lines = ["| quantity | value | from |", "|---|---|---|"]
    lines += [f"| {q} | {v} | `{s}` |" for q, v, s in rows]
    return "\n".join(lines)
