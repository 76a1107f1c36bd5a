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
# # 04 · Extraction: where does a head's task signal come from?
#
# A head's output at the query is an attention-weighted sum over earlier tokens. Writing it
# token by token tells which parts of the prompt (demonstration labels, inputs, arrows,
# separators, BOS) the task signal is read from:
#
# 1. the **aggregation / extraction identity** Σ_t α_t s̃_t = head output (`analyses.extraction`);
# 2. **token-group shares** of the head's task signal (signed, summing to 1 per prompt);
# 3. **label peaking**: does the head attend to labels more than to other tokens, and does it
#    weight the labels whose signals align with the task?
# 4. **offset read-out** (`analyses.demos`): does each label's extracted signal encode its own
#    demonstration's offset y_i − x_i?
# 5. **self-correction**: when one demonstration is wrong, is it down-weighted or countered by
#    later ones?
#
# The paper's claims for §4–5 (label share ≈ 0.96–0.99 on Llama-3's main heads; suppression of
# early errors) were released without code; `analyses.demos` is a documented reconstruction.
#
# Settings (environment): `ADDK_NB_MODEL` (default `organism`), `ADDK_NB_SMALL=1`,
# `ADDK_NB_OUT`, `ADDK_NB_THREADS`, `ADDK_NB_HEADS` (e.g. `1.3`; default: the necessity screen
# of notebook 03).

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
from addk_interp.analyses import demos
from addk_interp.analyses import extraction as E
from addk_interp.analyses.pca import fit_head_pca
from addk_interp.core.prompts import encode_examples, make_batches
from addk_interp.hooks.interventions import parse_heads
from addk_interp.report import plots

MODEL = os.environ.get("ADDK_NB_MODEL", "organism")
SMALL = os.environ.get("ADDK_NB_SMALL", "0") not in ("", "0")
OUT = Path(os.environ.get("ADDK_NB_OUT") or tempfile.mkdtemp(prefix="addk_nb04_"))
OUT.mkdir(parents=True, exist_ok=True)
if os.environ.get("ADDK_NB_THREADS"):
    torch.set_num_threads(int(os.environ["ADDK_NB_THREADS"]))
elif MODEL == "organism" or MODEL.startswith("tiny-"):
    torch.set_num_threads(1)  # tiny matrices: thread start-up costs more than it saves

SEED = 42
SHOTS = 5
K_RANGE = range(1, 11) if SMALL else range(1, 31)
N_CAPTURE = 3 if SMALL else 20  # prompts per task for the means
N_SCREEN = 2 if SMALL else 4  # prompts per training task for the head screen
N_HEADS = 2 if SMALL else 3
N_EXTRACT = 3 if SMALL else 8  # prompts per training task for shares and peaking
N_PERM = 10 if SMALL else 30  # permutation nulls of the peaking metrics
N_READOUT = 2 if SMALL else 10  # mixed-offset prompts per query k
N_SELFCORR = 2 if SMALL else 10  # clean prompts per task for self-correction

model = ai.load_model(MODEL)
family = ai.arithmetic_family("add", ks=K_RANGE)
means = ai.capture_means(
    model, ai.sample_family(family, family.train, N_CAPTURE, SHOTS, seed=SEED, kind="activation")
)
train_ks = [family.tasks[t].k for t in family.train]
print(f"{model.info.name}: training tasks k = {train_ks}")

# %% [markdown]
# ## 0. Heads
#
# As in notebook 03: unless `ADDK_NB_HEADS` names heads, a necessity screen (mean-ablate one
# head at the query position of few-shot prompts; rank by remaining accuracy, ties by variance
# of the head's task means) picks the heads. It finds heads the few-shot run needs — not the
# paper's localization (notebook 02).

# %%
if os.environ.get("ADDK_NB_HEADS"):
    HEADS = parse_heads(os.environ["ADDK_NB_HEADS"])
else:
    screen_ex = ai.sample_family(family, family.train, N_SCREEN, SHOTS, seed=SEED, kind="screen")
    zbar = means.cross_task_mean(family.train, z=True)
    spread = (means.means - means.means.mean(0)).pow(2).sum(-1).mean(0)
    rows = []
    for layer in range(model.n_layers):
        for head in range(model.n_heads):
            df = ai.evaluate(
                model,
                screen_ex,
                hooks_fn=lambda b, hd=(layer, head): ai.mean_ablate(model, [hd], b.query_pos, zbar),
            )
            rows.append((df["correct"].mean(), -float(spread[layer, head]), (layer, head)))
    HEADS = [hd for _, _, hd in sorted(rows)[:N_HEADS]]
    if ai.evaluate(model, screen_ex)["correct"].mean() < 0.25:
        print("the model does not do the task here: the screen only ranks heads by variance")
HEAD = HEADS[0]
print("heads:", HEADS, "| detailed analyses on", HEAD)

# %% [markdown]
# ## 1. The aggregation / extraction identity
#
# For head (l, h) with KV head kv(h), query-row attention α_t and value vectors v_t:
#
# - extracted signal s_t = v_t[kv] · W_O[l, h] (what token t would contribute with all attention);
# - identity Σ_t α_t s_t = z_h[T] · W_O[l, h] = the head's output at the query T
#   (on post-norm models, s̃_t = s_t ⊙ g / rms(o_T) so the sum is the residual contribution).
#
# `extract_heads` computes both from one forward and records the identity error. The cell
# also checks the contribution against `head_outputs` from notebook 01 — two independent code
# paths for the same number.

# %%
ex = ai.sample_family(family, family.train, N_EXTRACT, SHOTS, seed=0, kind="extraction")
batch = max(make_batches(encode_examples(model, ex), 64), key=len)
results = E.extract_heads(model, batch, HEADS)
reference = ai.head_outputs(model, batch.prompt_tokens, batch.query_pos)
for (layer, head), r in results.items():
    assert r.identity_rel_error <= 1e-4 and r.identity_min_cos >= 0.999
    assert torch.allclose(r.contribution, reference[:, layer, head], atol=1e-4)
pd.DataFrame(
    [
        {
            k: r.to_dict()[k]
            for k in (
                "head",
                "kv_head",
                "n_prompts",
                "n_pos",
                "post_norm",
                "identity_rel_error",
                "identity_min_cos",
            )
        }
        for r in results.values()
    ]
)

# %% [markdown]
# One prompt, token by token: attention α_t, and α_t⟨s̃_t, d⟩ / ⟨h(p), d⟩, each token's signed
# share of the head output along the task direction d = the head's mean output on this task.

# %%
r = results[HEAD]
d = E.directions_from_means(means, HEAD, r)[0]
s = r.contribution_signals[0].double()
alpha = r.attention[0].double()
contrib = alpha * (s @ d)
enc0 = batch.encoded[0]
pd.DataFrame(
    {
        "token": [model.tokenizer.decode([i]) for i in enc0.prompt_ids],
        "group": enc0.groups,
        "role": [E.group_role(g) for g in enc0.groups],
        "attention": alpha.numpy(),
        "share of ⟨h, d⟩": (contrib / contrib.sum()).numpy(),
    }
).round(3)

# %% [markdown]
# ## 2. Signals inside a subspace
#
# With an orthonormal basis B (here the top PCs of the head's task means, as in notebook 03),
# linearity gives Σ_t α_t Bᵀs̃_t = Bᵀ h(p): `project_signals` returns every token's
# coordinates, and the identity holds in the subspace too.

# %%
pca = fit_head_pca(means.means[:, HEAD[0], HEAD[1]], train_ks, head=HEAD)
rank = min(6, len(train_ks) - 1)
B = pca.basis(rank)
coords = E.project_signals(r, B)  # [batch, pos, rank]
agg = torch.einsum("bp,bpk->bk", r.attention.double(), coords)
want = r.contribution.double() @ torch.from_numpy(np.array(B))
assert torch.allclose(agg, want, atol=1e-5 * max(1.0, want.abs().max().item()))
print(
    f"basis: top {rank} PCs of L{HEAD[0]}H{HEAD[1]}'s task means "
    f"({pca.cumvar[rank - 1]:.3f} of their variance); identity holds in the subspace"
)

# %% [markdown]
# ## 3. Token-group shares
#
# share_t = α_t⟨s̃_t, d⟩ / Σ_u α_u⟨s̃_u, d⟩ with d the head's mean output on the prompt's task,
# summed per token group and per role. Shares are signed and sum to exactly 1 per prompt; only
# the direction of d matters. Prompts whose denominator is negative (the head output points
# away from its task mean) or ~0 are counted and left out, not turned into NaN.
#
# A high label share says the task-aligned part of the head output is read from label tokens.
# It does not say the labels' *values* matter (section 5 varies them).

# %%
collected = {hd: ([], []) for hd in HEADS}
for res in E.iter_extractions(model, ex, HEADS):
    for hd, rr in res.items():
        collected[hd][0].append(rr)
        collected[hd][1].append(E.directions_from_means(means, hd, rr))
shares = {hd: E.group_shares(rs, ds) for hd, (rs, ds) in collected.items()}
for gs in shares.values():
    assert np.allclose(gs.shares.sum(1), 1.0, atol=1e-9)
pd.DataFrame(
    [
        {
            "head": f"L{hd[0]}H{hd[1]}",
            "prompts": gs.n_prompts,
            "valid": gs.n_valid,
            "negative": len(gs.negative_indices),
            "degenerate": len(gs.degenerate_indices),
            **{
                f"{role} share": float(v.mean()) if v.size else None
                for role, v in gs.role_shares().items()
            },
        }
        for hd, gs in shares.items()
    ]
).round(3)

# %%
extraction_summary = {"per_head": {f"{hd[0]}.{hd[1]}": gs.to_dict() for hd, gs in shares.items()}}
(OUT / "extraction.json").write_text(json.dumps(extraction_summary, indent=1))
show(plots.share_bars(extraction_summary))

# %% [markdown]
# ## 4. Label peaking
#
# Per prompt: peaking ratio (mean α per label token / mean α per other token), task mass (Σ α on
# labels), sink mass (BOS, arrows, separators), and, per label i at its last token:
# cos(s_i, h_k) (full) and cos(Bᵀs_i, Bᵀh_k) (in the subspace); **routing** = Pearson(α_i,
# cos(s_i, h_k)) across labels; **weighting gain** = cos(Σ α̃_i s_i, h_k) − cos(mean_i s_i, h_k).
# The nulls permute α within each prompt (seeded); p-values are one-sided.

# %%
rs, ds = collected[HEAD]
peak = E.label_peaking(rs, ds, B, n_perm=N_PERM, seed=SEED).to_dict()
pd.DataFrame(
    {
        key: {
            "mean": peak[key]["mean"],
            "ci_low": peak[key]["ci_low"],
            "ci_high": peak[key]["ci_high"],
        }
        for key in (
            "peaking_ratio",
            "task_mass",
            "sink_mass",
            "signal_cos",
            "full_cos",
            "routing",
            "weighting_gain",
        )
        if peak[key] is not None
    }
).T.round(3)

# %%
{k: peak[k] for k in ("routing_null", "weighting_null", "n_zero_label_mass")}

# %% [markdown]
# ## 5. Offset read-out (§6.4)
#
# Build prompts whose demonstration i has its own offset k_i (drawn from the training k's),
# while the query uses k. Reference coordinates r_k = Bᵀ(h_k − m) come from the head's task
# means; each label's signal u_i = Bᵀs̃_i is decoded to the k whose reference it is closest to
# (cosine after removing the common offset). If the head extracts *each demonstration's*
# offset, k̂_i tracks y_i − x_i (`corr_own`), not the query's k (`corr_query_k`). Chance is
# 1/|grid|.

# %%
grid = train_ks
ref = demos.offset_reference({k: means.of(f"add{k}")[HEAD[0], HEAD[1]] for k in grid})
mixed = demos.mixed_offset_examples(grid, N_READOUT, SHOTS, query_ks=grid[:3], seed=SEED)
readout = demos.offset_readout(model, HEAD, mixed, ref, seed=SEED)
pd.Series(
    {k: v for k, v in readout.to_dict().items() if k not in ("grid", "head")}, name="read-out"
).to_frame()

# %% [markdown]
# ## 6. Self-correction (§6.5)
#
# Clean prompts (all demos y_i = x_i + k); for each position j, a copy whose demo j is wrong by
# `shift`. With d = Bᵀh_k, each label's contribution c_i = Σ_{t ∈ label i} α_t⟨Bᵀs̃_t, d⟩/‖d‖²
# and the aggregate A = Σ_i c_i + c_other (identity §6.1). Paired differences (corrupted −
# clean): Δshare_j < 0 means the wrong label is down-weighted; −Δlater·sign(Δc_j) > 0 means
# later demos counter the injected error. A shuffled-order control places the wrong demo at a
# random position. Verdicts need the pooled 95% CI to exclude 0.

# %%
clean_ex = ai.sample_family(family, family.train, N_SELFCORR, SHOTS, seed=SEED, kind="selfcorr")
sc = demos.self_correction(model, HEAD, clean_ex, means, B, shift=5, seed=SEED)
print(f"L{HEAD[0]}H{HEAD[1]}: verdict {sc.verdict!r}; identity error {sc.identity_max_error:.1e}")
print("accuracy by condition:", {c: round(float(v.mean()), 2) for c, v in sc.correct.items()})
pd.DataFrame(
    [
        {
            "wrong demo j": row["j"],
            "later demos": row["n_after"],
            "Δshare_j": row["d_share_wrong"]["mean"],
            "Δc_j": row["d_contrib_wrong"]["mean"],
            "Δlater": row["d_contrib_later"]["mean"],
            "Δaccuracy": row["d_accuracy"]["mean"],
        }
        for row in sc.by_position
    ]
).round(3)

# %%
{k: {kk: v[kk] for kk in ("n", "mean", "ci")} for k, v in sc.pooled.items()}

# %% [markdown]
# What these numbers do not show: read-out accuracy above chance means the offset is *linearly
# decodable* from label signals in this basis, not that the model uses it; a "neither" verdict
# on a few prompts is absence of evidence. Scale the prompt counts (unset `ADDK_NB_SMALL`)
# before reading anything into them.

# %%
print("files written:", sorted(p.name for p in OUT.iterdir()))
