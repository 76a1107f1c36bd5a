# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Subspaces: the geometry of a head's task means
#
# For a head (l, h), stack its mean output on each task add-k into a matrix X [task, d_model]
# (rows ordered by k). This notebook asks how that matrix is organised:
#
# 1. **PCA** over tasks (`analyses.pca`): how many directions carry the variation across k;
# 2. **periodic fit** (`analyses.periodic`): do the PC coordinates follow cos/sin waves of k
#    with periods 2, 5, 10 (units digit) and 25, 50 (magnitude), as the paper reports for
#    Llama-3-8B?
# 3. **periodogram**: which periods the head actually uses, without choosing them in advance;
# 4. **principal angles** between fitted subspaces (within and across heads);
# 5. **circuits** (`analyses.circuits`): what the head's OV map does to number tokens and to
#    the label tokens it reads, and where its QK attention goes.
#
# Everything here is descriptive geometry of task means. It does not show that the head
# uses these directions to compute the answer; interventions (notebooks 02 and 04) do that.
#
# Settings (environment): `ADDK_NB_MODEL` (default `organism`), `ADDK_NB_SMALL=1`,
# `ADDK_NB_OUT`, `ADDK_NB_THREADS`, and `ADDK_NB_HEADS` (e.g. `1.3,0.5`) to analyse chosen heads
# instead of the screen in section 1.

# %%
# ruff: noqa: E402, B018  (a notebook: imports follow text, bare expressions display)
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _show import show  # plotly figures + a static fallback (PNG or inline HTML), see README

warnings.filterwarnings("ignore", message="IProgress not found")  # progress bars stay off here
import addk_interp as ai
from addk_interp.analyses import circuits as C
from addk_interp.analyses.pca import fit_head_pca
from addk_interp.analyses.periodic import (
    fit_subspace,
    fit_subspace_from_means,
    periodogram,
    principal_angle_matrix,
    principal_angles,
)
from addk_interp.analyses.summary import merged_means, summarize_heads
from addk_interp.core.prompts import encode_examples, make_batches
from addk_interp.hooks.interventions import parse_heads
from addk_interp.report import plots

MODEL = os.environ.get("ADDK_NB_MODEL", "organism")
SMALL = os.environ.get("ADDK_NB_SMALL", "0") not in ("", "0")
OUT = Path(os.environ.get("ADDK_NB_OUT") or tempfile.mkdtemp(prefix="addk_nb03_"))
OUT.mkdir(parents=True, exist_ok=True)
if os.environ.get("ADDK_NB_THREADS"):
    torch.set_num_threads(int(os.environ["ADDK_NB_THREADS"]))
elif MODEL == "organism" or MODEL.startswith("tiny-"):
    torch.set_num_threads(1)  # tiny matrices: thread start-up costs more than it saves

SEED = 42
SHOTS = 5
K_RANGE = range(1, 13) if SMALL else range(1, 31)
N_CAPTURE = 3 if SMALL else 20  # prompts per task for the means
N_SCREEN = 2 if SMALL else 4  # prompts per training task for the head screen
N_HEADS = 2 if SMALL else 3
N_PERM = 3 if SMALL else 20  # shuffled-k controls for the periodic fit

model = ai.load_model(MODEL)
family = ai.arithmetic_family("add", ks=K_RANGE)
print(
    f"{model.info.name}: {model.n_layers}×{model.n_heads} heads | k = {K_RANGE.start}..{K_RANGE.stop - 1}"
)

# %% [markdown]
# ## 1. Task means and the heads to analyse
#
# Means of every task, training and held-out (held-out tasks from their own seeded prompts, as
# in the pipeline's subspace stage): this is analysis, not selection, so all k are used.
#
# Which heads? The paper analyses its *main* heads from the recovery scan (notebook 02). To stay
# self-contained this notebook uses a cheap **necessity screen** instead: mean-ablate one head
# at a time at the query position of few-shot prompts and rank heads by the accuracy that
# remains (ties: larger variance of the head's means across k first). It finds heads the
# few-shot computation needs; it is not the paper's localization. Set `ADDK_NB_HEADS` to
# analyse other heads (e.g. the heads notebook 02 selects; on the organism at full size,
# `ADDK_NB_HEADS=1.3,0.5`).

# %%
train_means = ai.capture_means(
    model, ai.sample_family(family, family.train, N_CAPTURE, SHOTS, seed=SEED, kind="activation")
)
held_means = ai.capture_means(
    model,
    ai.sample_family(
        family, family.heldout, N_CAPTURE, SHOTS, seed=SEED + 1001, kind="heldout_activation"
    ),
)
X_all, task_names = merged_means(train_means, held_means)
ks = [family.tasks[t].k for t in task_names]
print("means", tuple(X_all.shape), "for k =", sorted(ks))

# %%
screen_ex = ai.sample_family(family, family.train, N_SCREEN, SHOTS, seed=SEED, kind="screen")
zbar = train_means.cross_task_mean(family.train, z=True)
spread = (X_all - X_all.mean(0)).pow(2).sum(-1).mean(0)  # [layer, head] variance across k
clean_acc = ai.evaluate(model, screen_ex)["correct"].mean()
screen = []
for layer in range(model.n_layers):
    for head in range(model.n_heads):
        df = ai.evaluate(
            model,
            screen_ex,
            hooks_fn=lambda b, hd=(layer, head): ai.mean_ablate(model, [hd], b.query_pos, zbar),
        )
        screen.append(
            {
                "head": (layer, head),
                "ablated_acc": df["correct"].mean(),
                "variance_over_k": float(spread[layer, head]),
            }
        )
screen = pd.DataFrame(screen).sort_values(
    ["ablated_acc", "variance_over_k"], ascending=[True, False], ignore_index=True
)
if os.environ.get("ADDK_NB_HEADS"):
    HEADS = parse_heads(os.environ["ADDK_NB_HEADS"])
else:
    HEADS = list(screen["head"][:N_HEADS])
print(f"clean accuracy on the screen prompts: {clean_acc:.2f}; analysing", HEADS)
if clean_acc < 0.25:
    print("the model does not do the task here: the screen only ranks heads by variance over k")
screen.head(8)

# %% [markdown]
# ## 2. PCA over tasks
#
# X − μ = U S Vᵀ (μ = mean over tasks, float64). The explained-variance ratio of component i is
# s_i² / Σ s_j²; `pcs_to_threshold` is the number of components reaching 95%. Axes are
# sign-fixed (largest entry positive) so results are deterministic.
#
# Identity check: projecting the means onto the top-k PCs (`pca.project`) leaves a residual
# whose share of the variance is exactly 1 − cumvar[k−1].

# %%
pcas = {hd: fit_head_pca(X_all[:, hd[0], hd[1]], ks, head=hd) for hd in HEADS}
pd.DataFrame(
    [
        {
            "head": f"L{a}H{b}",
            "PCs for 95%": p.pcs_to_threshold,
            **{
                f"PC{i + 1}": round(float(r), 3)
                for i, r in enumerate(p.explained_variance_ratio[:4])
            },
        }
        for (a, b), p in pcas.items()
    ]
)

# %%
for hd, pca in pcas.items():
    x = np.asarray(X_all[:, hd[0], hd[1]].double())[pca.order]  # rows in ascending k
    total = ((x - pca.mean) ** 2).sum()
    for k in (1, pca.pcs_to_threshold):
        resid = ((x - pca.project(x, k=k)) ** 2).sum() / total
        assert abs(resid - (1 - pca.cumvar[k - 1])) < 1e-9
print("projection residual = 1 − cumvar, for every analysed head")

# %%
summaries = summarize_heads(X_all, ks, HEADS)  # the per-head summary the pipeline reports
per_head = [s.to_dict() for s in summaries]
show(plots.cumvar_plot(per_head))

# %%
show(plots.pc_coords_plot(per_head[0]))

# %% [markdown]
# ## 3. Periodic fit
#
# On the top-6 centred PC coordinates C, fit six target waves of k (column order mod50, mod2,
# mod5, mod10c, mod10s, mod25; periods 50, 25 and 5 get a phase search), by least squares
# W = lstsq(C, T). R²_j says how well target j is a linear function of the head's top-6
# coordinates; the feature directions are D = P W, and their spans give the `unit` (periods
# 2, 5, 10), `magnitude` (25, 50) and `full` subspaces used later.
#
# Caveats: with n tasks and 6 free components, R² is optimistic; a target whose mean over the k
# grid is not 0 cannot reach R² = 1 (by the specified definition), and can even be negative on
# a short k grid. If the PCA above needs only 1–2 components, coordinates 3–6 are numerical
# noise and the fit describes noise. The **shuffled-k control** refits after permuting which k
# each row belongs to: R² that survive shuffling are not evidence of periodic structure.

# %%
fits = {}
for hd, pca in pcas.items():
    try:
        fits[hd] = fit_subspace(pca)
    except ValueError as err:  # e.g. too few tasks or an unidentifiable period on this k grid
        print(f"L{hd[0]}H{hd[1]}: no periodic fit ({err})")
rng = np.random.default_rng(SEED)
rows = []
for hd, fit in fits.items():
    x = X_all[:, hd[0], hd[1]].double().numpy()
    null = [
        fit_subspace_from_means(x[rng.permutation(len(ks))], ks, head=hd).r2 for _ in range(N_PERM)
    ]
    rows.append({"head": f"L{hd[0]}H{hd[1]}", "kind": "fit", **fit.r2_by_name})
    rows.append(
        {
            "head": f"L{hd[0]}H{hd[1]}",
            "kind": f"shuffled k (mean of {N_PERM})",
            **dict(zip(fit.target_names, np.mean(null, axis=0))),
        }
    )
pd.DataFrame(rows).round(3)

# %%
if fits:
    hd, fit = next(iter(fits.items()))
    phases = {name: round(float(ph), 2) for name, ph in zip(fit.target_names, fit.phases)}
    print(f"L{hd[0]}H{hd[1]} phases (rad):", phases)
    print("subspace dims:", {k: v.shape[1] for k, v in fit.bases.items()})
    # D = P W, so the fitted span lies inside the top-6 PC span (angles ≈ 0)
    inside = principal_angles(fit.pc_basis, fit.basis("full"))
    assert inside.max() < 1e-3, inside
    print("angles(top-6 PCs, fitted 6-D span):", np.round(inside, 6))

# %% [markdown]
# ## 4. Periodogram
#
# For each period p, the fraction of the coordinates' variance explained by
# [cos 2πk/p, sin 2πk/p] (rotation invariant, so the full-rank coordinates and X agree). It
# ranks periods without assuming the paper's targets. `peak_periods` keeps local maxima;
# periods longer than the k range are barely distinguishable from each other.

# %%
for hd, pca in pcas.items():
    pg = periodogram(pca.coords, pca.ks, periods=range(2, len(ks) + 1))
    print(
        f"L{hd[0]}H{hd[1]}: top periods {pg.top_periods}, peaks {pg.peak_periods}, "
        f"power at 2/5/10: {[round(pg.power_at(p), 3) for p in (2, 5, 10) if p <= len(ks)]}"
    )
show(plots.periodogram_plot(per_head))

# %% [markdown]
# ## 5. Principal angles between subspaces
#
# Angles (degrees) between column spans: 0° = shared directions, 90° = orthogonal. Across
# heads, small angles mean the heads write task information into the same subspace (as the
# paper reports for its three main heads).

# %%
named = {
    f"L{a}H{b} {part}": f.basis(part)
    for (a, b), f in fits.items()
    for part in ("unit", "magnitude")
}
if len(named) >= 2:
    angles = principal_angle_matrix(named)
    display_df = pd.DataFrame(angles.max_deg, index=angles.names, columns=angles.names).round(1)
else:
    display_df = pd.DataFrame()
display_df

# %% [markdown]
# ## 6. Circuits: OV and QK of the analysed heads
#
# **OV** (per query head h, with its own KV head on GQA models): OV(x) = (x W_V[l, kv(h)] + b_V)
# W_O[l, h]. Two inputs:
# - number-token embeddings, passed through the layer's own pre-attention norm (the vector the
#   head would read if the residual stream were just that number);
# - the actual attention inputs at the demonstration *label* tokens of few-shot prompts.
#
# `decompose_ov` reports the share of the OV outputs' squared norm inside the head's fitted
# `unit` and `magnitude` subspaces. Reference: a random r-dimensional subspace holds r/d_model
# of it on average.
#
# **QK**: the actual pre-softmax scores of the query row (after rotary, masks and scale) and
# the attention mass per token role (`qk_role_profile`), and the position-free bilinear form
# of the weights (`qk_bilinear`, which ignores rotary: an approximation).

# %%
ex_ctx = ai.sample_family(
    family, family.train, 2 if SMALL else 6, SHOTS, seed=SEED, kind="circuits"
)
batches = make_batches(encode_examples(model, ex_ctx), 64)
numbers = list(range(1, max(ks) + 101))
which = "single" if model.info.max_single_token_int >= max(numbers) else "last"
circuit_rows = []
for hd, fit in fits.items():
    emb = C.ln1_normalize(model, hd[0], C.number_embeddings(model, numbers, which))
    dec_emb = C.decompose_ov(fit, C.ov_apply(model, hd, emb))
    lv = C.label_vectors(model, batches, hd[0])
    dec_lab = C.decompose_ov(fit, C.ov_apply(model, hd, lv.vectors))
    d_model = model.info.d_model
    for name, dec in (("number embeddings", dec_emb), ("label inputs", dec_lab)):
        circuit_rows.append(
            {
                "head": f"L{hd[0]}H{hd[1]}",
                "input": name,
                "unit share": dec.fraction["unit"],
                "random unit": fit.basis("unit").shape[1] / d_model,
                "magnitude share": dec.fraction["magnitude"],
                "random magnitude": fit.basis("magnitude").shape[1] / d_model,
            }
        )
pd.DataFrame(circuit_rows).round(3)

# %% [markdown]
# Per-number mean OV coordinates in the unit subspace (`ov_embedding_map`): if the head writes
# the units digit periodically, these coordinates should repeat with period 10 in the number.

# %%
if fits:
    hd, fit = next(iter(fits.items()))
    nm = C.ov_embedding_map(model, hd, numbers, fit.basis("unit"), which=which)
    pg_num = periodogram(nm.coords, nm.numbers, periods=range(2, 51))
    print(
        f"L{hd[0]}H{hd[1]} OV(number) unit coordinates: top periods over n = {pg_num.top_periods}"
    )
    lab = C.ov_label_map(model, hd, batches, fit.basis("unit"))
    print(f"label inputs: {lab.counts.sum()} labels, {len(lab.numbers)} distinct numbers")

# %%
qk_rows = []
for hd in HEADS:
    prof = C.qk_role_profile(model, batches, hd)
    assert prof.softmax_error < 1e-4  # the scores really are the ones the pattern came from
    qk_rows.append({"head": f"L{hd[0]}H{hd[1]}", **prof.to_dict()["role_mass"]})
pd.DataFrame(qk_rows).round(3)

# %% [markdown]
# Weights-only QK: score the mean attention input at the query position against each number's
# normalised embedding. Compared with the actual centred scores of label tokens (same numbers),
# a weak correlation means position (rotary) and context matter more than token identity.

# %%
hd = HEADS[0]
q_in = torch.cat(
    [C.attention_inputs(model, b.prompt_tokens, [hd[0]])[hd[0]][:, b.query_pos] for b in batches]
)
prof = C.qk_role_profile(model, batches, hd)
nums = [int(n) for n in prof.numbers]
keys = C.ln1_normalize(model, hd[0], C.number_embeddings(model, nums, which))
bil = C.qk_bilinear(model, hd, q_in.mean(0, keepdim=True), keys)[0].numpy()
r = np.corrcoef(bil, prof.number_centered)[0, 1] if len(nums) > 2 else float("nan")
print(
    f"L{hd[0]}H{hd[1]}: corr(weights-only score, actual centred label score) over "
    f"{len(nums)} numbers = {r:.2f}"
)

# %% [markdown]
# The per-head summary (the same record the pipeline's subspace stage writes) is saved for
# later comparison:

# %%
record = {"model": model.info.name, "heads": [list(h) for h in HEADS], "per_head": per_head}
(OUT / "subspaces.json").write_text(json.dumps(record, indent=1))
print("files written:", sorted(p.name for p in OUT.iterdir()))
