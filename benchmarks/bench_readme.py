"""Write README's performance block from one ``bench_stages.py`` result (never by hand).

    python benchmarks/bench_readme.py benchmarks/results/bench_stages_default.json

writes ``benchmarks/results/readme/bench_stages_default.md`` (the name follows the JSON), which
``scripts/readme_results.py`` splices into README.md between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->`` (``--check`` in the test suite keeps them equal). Contents: the stage
table (ours vs the original approach, CPU seconds, FLOP/s as a share of the matmul peak measured
in the same run), the ≥ 5× bar per stage with the speed-up ours would have at 100 % of the
peak (FLOPs / peak: a ceiling set by the work itself), and for every hot loop below 50 % of the
peak its unembedding share: rows per product, the rate the measured roofline gives at that many
rows and the rate W is streamed at, against the machine's measured memory bandwidth.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

BAR_SPEEDUP = 5.0
BAR_PEAK = 0.5


def _interp(roof: list[dict], rows: float, key: str) -> float:
    """Log-log interpolation of the roofline's ``key`` at ``rows`` (clamped to its range)."""
    pts = sorted((x["rows"], x[key]) for x in roof)
    if rows <= pts[0][0]:
        return pts[0][1]
    if rows >= pts[-1][0]:
        return pts[-1][1]
    for (r0, v0), (r1, v1) in zip(pts, pts[1:]):
        if r0 <= rows <= r1:
            if r0 == r1:
                return v0
            f = (math.log(rows) - math.log(r0)) / (math.log(r1) - math.log(r0))
            return math.exp(math.log(v0) + f * (math.log(v1) - math.log(v0)))
    return pts[-1][1]


def unembed_share(row: dict) -> tuple[float, float, int]:
    """(share of ours' FLOPs in unembedding products, mean rows per product, products)."""
    fl = row["ours_flops_detail"]
    bf = 2.0 if row["stage"] == "gate_step" else 1.0
    dense = (fl["dense_gflop"] + fl["attn_gflop"]) * bf
    unemb = fl["unembed_gflop"] * bf + fl.get("fused_gflop", 0.0)
    calls = fl.get("unembed_calls", 0) + fl.get("fused_calls", 0)
    rows = fl["unembed_rows"] + fl.get("fused_rows", 0)
    total = dense + unemb
    return (unemb / total if total else 0.0), (rows / calls if calls else 0.0), calls


def render(rec: dict, json_path: str) -> str:
    k = rec["clock"]
    peak = rec["peak"]["peak_gflops"]
    m = rec["machine"]
    bw = rec.get("memory_bandwidth")
    roof = rec.get("unembed_roofline") or []
    load = m.get("loadavg_start", [float("nan")])[0], m["loadavg"][0]
    head = (
        f"`python benchmarks/bench_stages.py --out {json_path}` then `python "
        f"benchmarks/bench_readme.py {json_path}`: model {rec['model']['name']} "
        f"({rec['non_embedding_params'] / 1e6:.1f} M non-embedding parameters, vocabulary "
        f"{rec['model']['d_vocab']}), {m['torch_threads']} torch thread, {k.upper()} seconds, "
        f"{rec['date_utc'][:16].replace('T', ' ')} UTC, {rec['wall_s']:.0f} s, load average "
        f"{load[0]:.1f} → {load[1]:.1f}; fp32 matmul peak {peak:.1f} GFLOP/s"
    )
    if bw:
        head += (
            f"; memory bandwidth {bw['read_gbs']:.1f} GB/s read, {bw['copy_gbs']:.1f} GB/s copy "
            f"({bw['threads']} thread)"
        )
    lines = [head + ".", ""]
    lines += [
        "| stage | work | ours (s) | original (s) | speed-up | ceiling at 100 % of peak "
        "| ours GFLOP/s (% of peak) | outputs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ceilings = {}
    for r in rec["stages"]:
        orig = r["orig_s"][k] - r["orig_terminator_step_s"][k]
        ceiling = orig / (r["ours_gflop"] / peak) if r["ours_gflop"] else float("inf")
        ceilings[r["stage"]] = ceiling
        o = f"{r['orig_s'][k]:.2f}"
        if abs(r["orig_scale"] - 1) > 1e-9:
            o += f" (scaled from {r['orig_s_measured'][k]:.2f})"
        if r["orig_terminator_step_s"][k] > 0:
            o += f", {r['orig_terminator_step_s'][k]:.2f} of it the terminator step"
        lines.append(
            f"| {r['stage']} | {r['work']} | {r['ours_s'][k]:.2f} | {o} | "
            f"**{r['speedup'][k]:.1f}×** | {ceiling:.1f}× | {r['ours_gflops']:.1f} "
            f"({100 * r['ours_frac_peak']:.0f} %) | "
            f"{r['check'].replace('|Δ|', 'abs Δ').replace('|', '/')} |"
        )
    lines.append("")
    ok = [r for r in rec["stages"] if r["speedup"][k] >= BAR_SPEEDUP]
    low = [r for r in rec["stages"] if r["speedup"][k] < BAR_SPEEDUP]
    txt = (
        "Speed-up: the original's time without its terminator step (ours checks termination "
        "too) over ours. Ceiling: that time over ours' counted FLOPs at the measured peak — "
        "what ours would reach with every FLOP at 100 % of peak. "
    )
    txt += "**≥ 5×**: " + (
        ", ".join(f"{r['stage']} {r['speedup'][k]:.1f}×" for r in ok) if ok else "none"
    )
    txt += ". **Below 5×**: "
    txt += (
        "; ".join(
            f"{r['stage']} {r['speedup'][k]:.1f}× (ceiling {ceilings[r['stage']]:.1f}×)"
            for r in low
        )
        if low
        else "none"
    )
    lines += [txt + ".", ""]
    hot = [r for r in rec["stages"] if r["ours_frac_peak"] >= BAR_PEAK]
    cold = [r for r in rec["stages"] if r["ours_frac_peak"] < BAR_PEAK]
    txt = "**Hot loops ≥ 50 % of peak**: " + (
        ", ".join(f"{r['stage']} {100 * r['ours_frac_peak']:.1f} %" for r in hot) or "none"
    )
    txt += ". **Below 50 %**: " + (
        ", ".join(f"{r['stage']} {100 * r['ours_frac_peak']:.1f} %" for r in cold) or "none"
    )
    lines += [txt + ".", ""]
    if roof:
        lines += [
            "Unembedding products here (x[rows, d_model] @ W[d_model, vocab], fp32, measured in "
            "the same run): "
            + ", ".join(
                f"{x['rows']} rows {x['gflops']:.0f} GFLOP/s (W streamed at "
                f"{x['weight_gbs']:.1f} GB/s)"
                for x in sorted(roof, key=lambda x: x["rows"])
            )
            + ".",
            "",
        ]
        if cold:
            lines += [
                "| stage below 50 % | time in matmul kernels (profiled run) | the matmuls' own "
                "rate | share of its FLOPs in unembedding products | rows per product (products) "
                "| their rate at that many rows (roofline) | W streamed at (machine read "
                "bandwidth) |",
                "|---|---|---|---|---|---|---|",
            ]
            for r in cold:
                share, rows, calls = unembed_share(r)
                rate = _interp(roof, rows, "gflops") if calls else float("nan")
                wgbs = _interp(roof, rows, "weight_gbs") if calls else float("nan")
                pr = r.get("profile")
                if pr:
                    mm_cell = f"{100 * pr['matmul_share']:.0f} %"
                    rate_cell = (
                        f"{pr['matmul_gflops']:.0f} GFLOP/s ({100 * pr['matmul_gflops'] / peak:.0f}"
                        " % of peak)"
                    )
                else:
                    mm_cell = rate_cell = "not profiled"
                bw_cell = f"{bw['read_gbs']:.1f}" if bw else "n/a"
                lines.append(
                    f"| {r['stage']} | {mm_cell} | {rate_cell} | {100 * share:.0f} % | "
                    f"{rows:.0f} ({calls}) | {rate:.0f} GFLOP/s ({100 * rate / peak:.0f} % of "
                    f"peak) | {wgbs:.1f} GB/s ({bw_cell} GB/s) |"
                )
            lines += [
                "",
                "Reading it: % of peak = (time in matmul kernels) × (their rate / peak). The rest "
                "of the time is outside matmuls (norms, softmax, rotary, hook calls, Python per "
                "block call on small batches); within matmuls, unembedding products with few rows "
                "are slow although W is streamed far below the machine's read bandwidth: the "
                "single-thread small-row GEMM kernel, not memory, sets their rate.",
                "",
            ]
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json", help="a bench_stages.py --out file")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/readme/NAME.md")
    args = ap.parse_args()
    src = Path(args.json)
    rec = json.loads(src.read_text())
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / "readme"
    if not args.out:
        out = out / f"{src.stem}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    rel = src.as_posix()
    out.write_text(render(rec, rel))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
