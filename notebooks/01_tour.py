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
# # 01 · A tour of `addk_interp`
#
# This notebook walks through the building blocks every later analysis rests on:
#
# 1. load a hooked model and read its `ModelInfo`;
# 2. build add-k tasks, sample few-shot prompts, and see how they are tokenized;
# 3. clean few-shot evaluation with bootstrap confidence intervals;
# 4. capture per-head outputs at the query position (`capture_means`);
# 5. inject function vectors into zero-shot prompts (`evaluate_fv`);
# 6. check that per-head outputs add up to the attention block's residual contribution;
# 7. the same model through TransformerLens idioms: `run_with_cache`, `to_str_tokens`, and a
#    hand-written head ablation with `run_with_hooks`;
# 8. plot with `addk_interp.report.plots` (`show` adds a static copy of each figure).
#
# **Settings** come from environment variables so the same notebook runs on a laptop, in CI,
# or on a bigger model:
#
# | variable | meaning | default |
# |---|---|---|
# | `ADDK_NB_MODEL` | model spec for `load_model` (`organism`, `default` = Gemma-3-270m, `tiny-llama-gqa`, a local HF dir, ...) | `organism` |
# | `ADDK_NB_SMALL` | `1` = few tasks / prompts (a smoke run; numbers are then noise) | `0` |
# | `ADDK_NB_OUT` | directory for the files this notebook writes | a fresh temporary directory |
# | `ADDK_NB_THREADS` | torch CPU threads | 1 for the organism and `tiny-*` models, else torch's default |
#
# The *organism* is a 4-layer Llama-style model shipped with the package that really solves
# few-shot add-k (README: 5-shot accuracy ≈ 1.0, zero-shot ≈ 0.04), so the numbers here mean
# something. `default` (Gemma-3-270m) is a pretrained LM whose few-shot add-k works only for
# small k and is much slower on a CPU.

# %%
# ruff: noqa: E402, B018  (a notebook: imports follow text, bare expressions display)
import os
import tempfile
import warnings
from pathlib import Path

import pandas as pd
import torch
from _show import show  # plotly figures + a static fallback (PNG or inline HTML), see README

warnings.filterwarnings("ignore", message="IProgress not found")  # progress bars stay off here
import addk_interp as ai
from addk_interp.report import plots

MODEL = os.environ.get("ADDK_NB_MODEL", "organism")
SMALL = os.environ.get("ADDK_NB_SMALL", "0") not in ("", "0")
OUT = Path(os.environ.get("ADDK_NB_OUT") or tempfile.mkdtemp(prefix="addk_nb01_"))
OUT.mkdir(parents=True, exist_ok=True)
if os.environ.get("ADDK_NB_THREADS"):
    torch.set_num_threads(int(os.environ["ADDK_NB_THREADS"]))
elif MODEL == "organism" or MODEL.startswith("tiny-"):
    torch.set_num_threads(1)  # tiny matrices: thread start-up costs more than it saves

SEED = 42
SHOTS = 5
K_RANGE = range(1, 11) if SMALL else range(1, 31)  # add-k offsets
N_EVAL = 4 if SMALL else 20  # prompts per task and shot count
N_CAPTURE = 4 if SMALL else 20  # prompts per task for the head means
EVAL_SHOTS = [0, 1, SHOTS] if SMALL else [0, 1, 2, SHOTS]
print(f"model={MODEL}  small={SMALL}  out={OUT}  threads={torch.get_num_threads()}")

# %% [markdown]
# ## 1. Load a model
#
# `load_model(spec)` returns a `HookedModel`: a thin adapter over a TransformerLens
# `TransformerBridge` (or a classic `HookedTransformer`) that hides backend differences —
# grouped-query weight layouts (`W_Q`/`W_O` are indexed by query head, `W_K`/`W_V` by KV head),
# BOS handling, post-attention norms, and logits at selected positions only.
#
# `ModelInfo` records what every saved artifact needs to know about its model; the
# `fingerprint` (a hash of the config and a slice of the weights) is stored with head means and
# gate fits so they cannot silently be reused on another model.

# %%
model = ai.load_model(MODEL)
info = model.info
pd.Series(info.to_dict(), name=info.name).to_frame()

# %%
print(
    f"{info.n_layers} layers × {info.n_heads} query heads ({info.n_kv_heads} KV heads), "
    f"d_model={info.d_model}, d_head={info.d_head}"
)
print("query head → KV head:", [model.kv_head(h) for h in range(info.n_heads)])
print("numbers:", info.number_tokenization, "| post-attention norm:", info.post_attn_norm)

# %% [markdown]
# ## 2. Tasks and prompts
#
# A *task* maps x to y (add-k: y = x + k, x = 1..100). A *family* groups tasks with a fixed
# train / held-out split (the paper's add-k split holds out k = 20, 2, 27, 16, 21; restricted to
# the k values requested). Held-out tasks are never used to choose anything.
#
# Sampling is deterministic per `(seed, kind, task)`: the `kind` string (`activation`,
# `heldout_activation`, `final_eval`, `scan`, ...) separates the prompts used to estimate
# means from the prompts used to score, so no number is computed on the prompts that produced
# the vectors being tested.

# %%
family = ai.arithmetic_family("add", ks=K_RANGE)
print("tasks:", len(family.tasks), "| train:", len(family.train), "| held-out:", family.heldout)
examples = ai.sample_family(family, ["add7"], 3, SHOTS, seed=SEED, kind="activation")
examples[0]

# %% [markdown]
# `render` turns an example into text (here the `arrow` format `x->y#`) and keeps the character
# span of every part. Tokens are assigned to parts by character offsets, which is how later
# notebooks find "the label tokens of demonstration 3" or "the query position".

# %%
prompt = ai.render(examples[0], "arrow")
print(repr(prompt.text), "→ answer", repr(prompt.answer))
print("formats:", list(ai.FORMATS))
pd.DataFrame(prompt.spans, columns=["part", "start", "end"]).head(8)

# %%
from addk_interp.core.prompts import encode

enc = encode(model, prompt)
pd.DataFrame(
    {
        "token_id": enc.prompt_ids,
        "text": [model.tokenizer.decode([i]) for i in enc.prompt_ids],
        "group": enc.groups,
    }
)

# %% [markdown]
# ## 3. Clean few-shot evaluation
#
# **Exact match** is teacher-forced: one forward over prompt + answer; an example is correct iff
# every answer token is the argmax *and* the argmax after the answer does not continue it
# (so `36` is not credited when the model would write `365`). The test suite checks this equals
# greedy decoding; the cell below re-checks it on one batch.
#
# Each task is sampled once with the largest shot count and smaller shot counts use the first
# *s* demonstrations of the same examples, so shot counts are paired (same queries). `evaluate`
# returns one row per example; `accuracy_table` aggregates with percentile-bootstrap 95% CIs
# over prompts. (`evaluation.run_eval` and the CLI `addk-interp eval` do the same and write
# CSV/JSON.) The CIs cover prompt sampling only — not other prompt formats, seeds of the
# demonstrations' order, or other models.

# %%
from addk_interp.pipeline.evaluation import paired_shot_examples

per_shots = paired_shot_examples(family, list(family.tasks), EVAL_SHOTS, N_EVAL, SEED)
rows = pd.concat([ai.evaluate(model, ex) for ex in per_shots.values()], ignore_index=True)
ai.accuracy_table(rows, by=("shots",), seed=SEED)

# %%
table = ai.accuracy_table(rows, by=("task", "k", "shots"), seed=SEED)
table["split"] = ["heldout" if t in family.heldout else "train" for t in table["task"]]
cols = ["task", "k", "split", "n", "accuracy", "ci_low", "ci_high"]
table[table["shots"] == SHOTS].sort_values("k")[cols].head(10)

# %%
rows[rows["shots"] == 0][["task", "query", "answer", "pred", "correct", "first_token_prob"]].head()

# %%
from addk_interp.core.prompts import encode_examples, make_batches
from addk_interp.core.scoring import greedy_correct, score_batch

check_ex = ai.sample_family(family, family.train[:3], 4, SHOTS, seed=SEED, kind="final_eval")
batch = max(make_batches(encode_examples(model, check_ex), 64), key=len)
tf = score_batch(model, batch).correct
gr = greedy_correct(model, batch)
print(f"teacher-forced vs greedy agree on {int((tf == gr).sum())}/{len(batch)} prompts")
assert torch.equal(tf, gr)

# %%
fig = plots.accuracy_vs_k(table, title=f"Clean accuracy by k — {info.name}")
fig.write_html(OUT / "accuracy_vs_k.html", include_plotlyjs=True)  # self-contained: opens offline
show(fig)

# %% [markdown]
# ## 4. Capturing per-head outputs
#
# A head's *output* is its exact additive contribution to the residual stream at the query
# position (the last prompt token, right before the answer), computed from `hook_z` as
# `z_h · W_O[l, h]` (on post-norm models such as Gemma, rescaled by the post-attention norm of
# the same run). `capture_means` streams over prompts and keeps per-task means
# `[task, layer, head, d_model]` plus the means of `z` (used for mean-ablation).
#
# Protocol: training-task means come from `activation` prompts; held-out tasks get their own
# means from separately seeded `heldout_activation` prompts.

# %%
train_ex = ai.sample_family(family, family.train, N_CAPTURE, SHOTS, seed=SEED, kind="activation")
means = ai.capture_means(model, train_ex)
held_ex = ai.sample_family(
    family, family.heldout, N_CAPTURE, SHOTS, seed=SEED + 1001, kind="heldout_activation"
)
held_means = ai.capture_means(model, held_ex)
print("means:", tuple(means.means.shape), "| z means:", tuple(means.z_means.shape))
{k: means.provenance[k] for k in ("model_fingerprint", "position", "head_output", "shots")}

# %% [markdown]
# Means are saved as safetensors with their provenance; loading them for another model is
# refused (fingerprint mismatch).

# %%
path = means.save(OUT / "means_train.safetensors")
back = ai.HeadMeans.load(path, model)
assert torch.equal(back.means, means.means) and back.tasks == means.tasks
print("saved and reloaded", path.name)

# %%
show(plots.head_norm_heatmap(means.means, title="Mean ‖head output‖ over training tasks"))

# %% [markdown]
# `head_outputs` gives the same per-head contributions for individual prompts (no averaging):

# %%
per_prompt = ai.head_outputs(model, batch.prompt_tokens, batch.query_pos)
print("per-prompt head outputs:", tuple(per_prompt.shape), "[batch, layer, head, d_model]")

# %% [markdown]
# ## 5. Identity check: heads sum to the attention block's output
#
# For every layer, Σ_h (head output) + (bias term) must equal the residual increment of the
# attention block, `hook_resid_mid − hook_resid_pre`, at the query position. This is the
# definition-level check that "head output" really is an additive decomposition (the test suite
# runs it on MHA, GQA, post-norm and classic models; see `tests/test_hooks_identity.py`).
#
# What it does **not** show: that any head matters for the task. An additive decomposition says
# nothing about causal importance — that needs interventions (next section, notebook 02).

# %%
from addk_interp.hooks.capture import bias_contribution, z_to_outputs

names = [
    f"blocks.{layer}.{site}"
    for layer in range(model.n_layers)
    for site in ("hook_resid_pre", "hook_resid_mid", "attn.hook_z")
]
with torch.no_grad():
    acts = model.run_collect(batch.prompt_tokens, names)
q = batch.query_pos
checks = []
for layer in range(model.n_layers):
    z = acts[f"blocks.{layer}.attn.hook_z"][:, q]
    heads_sum = z_to_outputs(model, layer, z).sum(1) + bias_contribution(model, layer, z)
    increment = (acts[f"blocks.{layer}.hook_resid_mid"] - acts[f"blocks.{layer}.hook_resid_pre"])[
        :, q
    ]
    err = (heads_sum - increment).abs().max().item()
    size = increment.abs().max().item()
    checks.append({"layer": layer, "max |Σ heads − increment|": err, "max |increment|": size})
    assert err <= 1e-4 * max(1.0, size), f"layer {layer}: identity error {err}"
    # and head_outputs (used for single prompts) agrees with the same per-head terms
    assert torch.allclose(per_prompt[:, layer], z_to_outputs(model, layer, z), atol=1e-5)
pd.DataFrame(checks)

# %% [markdown]
# ## 6. Function vectors
#
# A function vector (FV) for task t is a sum of head means, FV_t = Σ_h c_h · mean_t[h]. It is
# added to the residual stream after block ℓ's attention (ℓ ≈ depth/3 by default; the write
# site is `model.residual_hook(ℓ)`, not the bridge's `hook_resid_mid` alias, which only feeds the
# MLP) at the last token of the **zero-shot** prompt `x->`; if the heads carry the task, accuracy should rise
# above zero-shot. `evaluate_fv` scores that and pairs each row with the clean n-shot score of
# the same example.
#
# Conditions below, all on held-out tasks with held-out means:
# - `all_heads_unit`: every head at c = 1 (the unselected baseline);
# - `mean_of_train_tasks`: the control Σ_h h̄[h] with h̄ the mean over *training* tasks (a
#   task-agnostic vector: recovering accuracy with it would mean the FV is not task-specific);
# - `zero_shot_no_fv`: nothing injected.
#
# On the organism the README reports that neither FV recovers accuracy (≈ 0.03): the organism
# solves the task without a transportable function vector. A low number here is a finding
# about the model, not a bug. What this does not show: which heads matter (notebook 02).

# %%
from addk_interp.hooks.interventions import default_injection_layer

LAYER = default_injection_layer(model.n_layers)
final = ai.sample_family(family, family.heldout, N_EVAL, SHOTS, seed=SEED, kind="final_eval")
clean = ai.evaluate(model, final)
conditions = {
    "all_heads_unit": ai.head_set_vectors(held_means, family.heldout, None),
    "mean_of_train_tasks": ai.head_set_vectors(means, family.heldout, None, mean_of=family.train),
}
frames = [
    ai.evaluate_fv(model, final, vecs, layer=LAYER, clean=clean, label=label)
    for label, vecs in conditions.items()
]
zero = ai.evaluate(model, final, zero_shot=True)
zero["clean_correct"] = clean["correct"].to_numpy()
zero["condition"] = "zero_shot_no_fv"
fv_df = pd.concat(frames + [zero], ignore_index=True)
fv_df["split"] = "heldout"
print("injection layer:", LAYER)

# %%
from addk_interp.core.scoring import bootstrap_ci

summary = []
for cond, g in fv_df.groupby("condition", sort=False):
    lo, hi = bootstrap_ci(g["correct"].to_numpy(), seed=SEED)
    summary.append(
        {
            "split": "heldout",
            "condition": cond,
            "n": len(g),
            "fv_accuracy": g["correct"].mean(),
            "clean_accuracy": g["clean_correct"].mean(),
            "ci_low": lo,
            "ci_high": hi,
        }
    )
summary = pd.DataFrame(summary)
summary

# %%
show(plots.fv_bars(summary, title=f"Function vectors at layer {LAYER} (held-out tasks)"))

# %% [markdown]
# `evaluate_fv` is nothing more than `evaluate` on zero-shot prompts with an `inject` hook at
# the query position. Building the hook by hand gives the same outcomes:

# %%
task = family.heldout[0]
one = [e for e in final if e.task == task]
fv = ai.function_vector(held_means.of(task))  # Σ over all heads, c = 1
by_hand = ai.evaluate(
    model, one, zero_shot=True, hooks_fn=lambda b: ai.inject(model, fv, b.query_pos, LAYER)
)
via_api = ai.evaluate_fv(model, one, {task: fv}, layer=LAYER)
assert (by_hand["correct"].to_numpy() == via_api["correct"].to_numpy()).all()
print(
    f"{task}: FV accuracy {via_api['correct'].mean():.2f} "
    f"(clean {via_api['clean_correct'].mean():.2f}), hand-built hook agrees"
)

# %% [markdown]
# ## 7. TransformerLens idioms
#
# `HookedModel` also offers the usual TransformerLens calls, with TransformerLens hook names:
# `to_tokens` / `to_str_tokens`, `logits, cache = model.run_with_cache(tokens, names_filter=...)`
# (pass a filter: the TransformerBridge has ~1,500 hook points), `cache["pattern", l]`,
# `cache["z", l]`, and `model.run_with_hooks(tokens, fwd_hooks=[(hook_name, fn)])`.
#
# On the add-7 prompt of section 2: which head's attention at the query position (the last
# prompt token, where the answer's first token is predicted) sits on the query number x, and
# what removing that head's output at that one position does to the answer's log-probability.

# %%
tokens = model.to_tokens(prompt.text)  # [1, pos], BOS first where the model uses one
str_tokens = model.to_str_tokens(tokens)
assert tokens[0].tolist() == list(enc.prompt_ids), "to_tokens and encode disagree"
with torch.no_grad():
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
q_pos = tokens.shape[1] - 1
x_pos = [i for i, g in enumerate(enc.groups) if g == "query_input"]  # x's tokens (section 2)
on_x = torch.stack(  # [layer, head]: attention from the query position to x
    [cache["pattern", layer][0, :, q_pos, x_pos].sum(-1) for layer in range(model.n_layers)]
)
L_ABL, H_ABL = divmod(int(on_x.argmax()), model.n_heads)
print("last tokens:", str_tokens[-6:], "| x =", "".join(str_tokens[i] for i in x_pos))
print(f"most attention on x: L{L_ABL}H{H_ABL} ({on_x[L_ABL, H_ABL]:.2f})")
pd.DataFrame(
    on_x.numpy(),
    index=pd.Index(range(model.n_layers), name="layer"),
    columns=pd.Index(range(model.n_heads), name="head"),
).round(2)

# %% [markdown]
# One TransformerLens-style ablation: a hook on `blocks.{l}.attn.hook_z` (`[batch, pos, head,
# d_head]`, the head's output before `W_O`) that overwrites that head at the query position,
# either with its mean over the training tasks' prompts (`means` from section 4) or with zero.
# The toolkit's `ai.mean_ablate` and `ai.scale_heads(..., 0.0)` build the same `hook_z` edits, so
# they must give the same logits (checked).

# %%
answer_id = enc.answer_ids[0]  # the answer's first token
z_bar = means.cross_task_mean(family.train, z=True)  # [layer, head, d_head]
hook_name = f"blocks.{L_ABL}.attn.hook_z"


def ablate_head(value):
    def fn(z, hook):  # z: [batch, pos, head, d_head]; hook: the HookPoint
        z = z.clone()
        z[:, q_pos, H_ABL] = value
        return z

    return fn


with torch.no_grad():
    runs = {
        "clean": logits,
        "mean-ablated": model.run_with_hooks(
            tokens, fwd_hooks=[(hook_name, ablate_head(z_bar[L_ABL, H_ABL]))]
        ),
        "zero-ablated": model.run_with_hooks(tokens, fwd_hooks=[(hook_name, ablate_head(0.0))]),
    }
    head = [(L_ABL, H_ABL)]
    toolkit = {
        "mean-ablated": model.run_with_hooks(tokens, ai.mean_ablate(model, head, q_pos, z_bar)),
        "zero-ablated": model.run_with_hooks(tokens, ai.scale_heads(model, head, q_pos, 0.0)),
    }
for name, lg in toolkit.items():
    assert torch.allclose(runs[name], lg, atol=1e-5), f"{name}: hand-written hook ≠ toolkit"
logp = {name: lg[0, q_pos].float().log_softmax(-1) for name, lg in runs.items()}
pd.DataFrame(
    {
        "log p(answer)": {name: lp[answer_id].item() for name, lp in logp.items()},
        "top-1 token": {
            name: model.tokenizer.decode([int(lp.argmax())]) for name, lp in logp.items()
        },
    }
).rename_axis(f"L{L_ABL}H{H_ABL} at the query position")

# %% [markdown]
# What this shows: on this one prompt, how much the answer depends on what that head writes at
# the last position (the head was picked from the attention pattern, not from ablation
# results). On the organism the pick is a layer-0 head that attends almost only to x, and
# without it log p(answer) falls from about −0.5 to below −30. What it does not show: that the head computes the addition (carrying x forward is
# needed by any solution), nor anything beyond one prompt — notebook 02's `necessity` ablates
# over many prompts against random heads. Zero is off-distribution for a head; the mean is the
# toolkit's default.
#
# Post-norm models (Gemma 2/3, `info.post_attn_norm`; not the organism): a `hook_z` edit is the
# same intervention in both spellings, but the toolkit's *head output* (sections 4–5,
# `capture_means`, `head_outputs`) is z·W_O **rescaled by the post-attention norm of the same
# run**, so that the heads sum to the block's residual increment. There `cache["z", l] @ W_O[l]`
# is not a head's contribution to the residual stream, and editing one head's z also changes
# that norm's scale, hence every head's contribution in the layer. Edit head outputs with the
# toolkit's builders (`project_head` applies its change post-norm aware).

# %% [markdown]
# ## What next
#
# - `02_localization.py`: which heads carry the task (gate learning, cut rules, recovery scan,
#   selectors, necessity) and the released Llama-3 scan.
# - `03_subspaces.py`: the geometry of a head's task means (PCA, periodic fits, circuits).
# - `04_extraction.py`: where a head's task signal comes from inside the prompt.

# %%
print("files written:", sorted(p.name for p in OUT.iterdir()))
