"""OV and QK circuits of selected heads, GQA-correct (docs/method.md §5 and §6.1/§6.3 mechanics).

Step of the method: reading the aggregation subspaces of §5 through the weights. For head
(l, h) with kv = kv(h) (``HookedModel.kv_head``; each query head reads its KV head's W_K, W_V):

    attention input   x_t = ln1_l(resid_pre_t)   (bridge: ``blocks.l.ln1.hook_out``; classic:
                      ``blocks.l.ln1.hook_normalized`` times the ln1 weight / plus bias if the
                      model keeps them; ``hook_normalized`` on the bridge is pre-gain, so wrong
                      for Gemma)
    OV map            OV(x) = (x W_V[l, kv] + b_V[kv]) W_O[l, h]        [.., d_model]
                      post-norm models: g ⊙ OV(x) (the direction of the head's residual
                      contribution; the run-dependent 1 / rms(o_T) is a positive scalar)
    OV coordinates    c(x) = (OV(x) − center) B              (B: orthonormal [d_model, r])
    decomposition     c_unit = OV(x) B_unit,  c_mag = OV(x) B_mag   (``SubspaceFit`` bases)
    QK (actual)       score_{T,t} = ``hook_attn_scores``[h, T, t]: pre-softmax, after rotary,
                      q/k norms, the model's own scale and the causal / sliding-window mask
                      (softmax of a row = ``hook_pattern``; checked per run, ``softmax_error``)
    QK (weights)      position-free bilinear form  (q W_Q[l, h] + b_Q)·(k W_K[l, kv] + b_K) · s
                      with s = 1/sqrt(d_head) by default (no rotary: an approximation for
                      embedding-level questions only)

QK role profile: from the query row, per role r ∈ {bos, input, arrow, label, separator,
query_input, query_arrow}: attention mass Σ_{t∈r} α_t (sums to 1 over roles), mean score over
the role's unmasked tokens, and, per demonstration label, the score (raw and centered: minus
the mean unmasked score of the row; softmax is invariant to that shift) as a function of the
label's number, averaged per number so periodic / magnitude structure can be fit.

Cost: OV is two matmuls, O(n × d_model × d_head); QK profiles need one forward per batch up to
layer l (scores and pattern of that layer only); label residuals one forward up to layer l.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from addk_interp.analyses.extraction import (
    ROLES,
    as_basis,
    attention_bias,
    check_head,
    group_role,
    label_slots,
)
from addk_interp.core.errors import AddkError
from addk_interp.core.heads import HeadLike as Head  # the one head type: Head or (l, h)
from addk_interp.core.prompts import PromptBatch
from addk_interp.models.adapter import HookedModel

__all__ = [
    "LabelVectors",
    "NumberMap",
    "OVDecomposition",
    "QKProfile",
    "attention_input_hook",
    "attention_inputs",
    "decompose_ov",
    "label_vectors",
    "ln1_normalize",
    "number_embeddings",
    "number_token_ids",
    "ov_apply",
    "ov_coordinates",
    "ov_embedding_map",
    "ov_label_map",
    "qk_bilinear",
    "qk_role_profile",
]

MASKED = -1e30


def _batches(batches: PromptBatch | Sequence[PromptBatch]) -> list[PromptBatch]:
    out = [batches] if isinstance(batches, PromptBatch) else list(batches)
    if not out:
        raise AddkError("no prompt batches")
    return out


def _label_numbers(batch: PromptBatch, row: int) -> list[int]:
    demos = batch.encoded[row].prompt.example.demos
    if not demos:
        raise AddkError(
            f"prompt {batch.indices[row]} has no demonstrations; label analyses need shots ≥ 1"
        )
    try:
        return [int(y) for _, y in demos]
    except ValueError:
        raise AddkError(
            f"labels of prompt {batch.indices[row]} are not integers: {[y for _, y in demos]}"
        ) from None


# ----------------------------------------------------------------------------- inputs


def attention_input_hook(model: HookedModel, layer: int) -> str:
    """The hook holding the attention layer's input x_t (see module docstring)."""
    if not 0 <= layer < model.n_layers:
        raise AddkError(f"layer {layer} outside 0..{model.n_layers - 1}")
    if model.backend == "bridge":
        return f"blocks.{layer}.ln1.hook_out"
    return f"blocks.{layer}.ln1.hook_normalized"


def _finish_input(model: HookedModel, layer: int, x: Tensor) -> Tensor:
    if model.backend == "bridge":
        return x
    ln = model.model.blocks[layer].ln1
    w, b = getattr(ln, "w", None), getattr(ln, "b", None)
    if w is not None:
        x = x * w.to(x.dtype)
    if b is not None:
        x = x + b.to(x.dtype)
    return x


def attention_inputs(
    model: HookedModel, tokens: Int[Tensor, "batch pos"], layers: Sequence[int], fwd_hooks=()
) -> dict[int, Float[Tensor, "batch pos d_model"]]:
    """The attention input x_t of each requested layer (x_t W_V[kv] + b_V = ``hook_v``)."""
    layers = sorted(set(int(layer) for layer in layers))
    if not layers:
        raise AddkError("no layers requested")
    names = [attention_input_hook(model, layer) for layer in layers]
    with torch.no_grad():
        acts = model.run_collect(tokens, names, fwd_hooks=fwd_hooks, stop_after=names[-1])
    return {
        layer: _finish_input(model, layer, acts[n]) for layer, n in zip(layers, names, strict=True)
    }


def ln1_normalize(model: HookedModel, layer: int, x: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_model"]:
    """Apply layer ``layer``'s own pre-attention norm module to arbitrary residual vectors."""
    ln = model.model.blocks[layer].ln1
    with torch.no_grad():
        w = model.W_O
        return ln(x[None].to(device=w.device, dtype=w.dtype))[0]


# ----------------------------------------------------------------------------- OV


def ov_apply(
    model: HookedModel,
    head: Head,
    x: Float[Tensor, "n d_model"],
    *,
    include_value_bias: bool = True,
    post_norm_gain: bool = True,
) -> Float[Tensor, "n d_model"]:
    """OV(x) = (x W_V[l, kv(h)] + b_V) W_O[l, h]; times g for post-norm models (see doc)."""
    layer, h = check_head(model, head)
    kv = model.kv_head(h)
    w_v = model.W_V[layer, kv]
    w_o = model.W_O[layer, h]
    if x.shape[-1] != w_v.shape[0]:
        raise AddkError(f"vectors have width {x.shape[-1]}, the model's d_model is {w_v.shape[0]}")
    v = x.to(device=w_v.device, dtype=w_v.dtype) @ w_v
    if include_value_bias:
        v = v + attention_bias(model, layer, h, "V").to(v)
    out = v @ w_o
    norm = model.post_attn_norm(layer) if post_norm_gain else None
    if norm is not None:
        out = out * norm[0].to(out)
    return out.detach()


def ov_coordinates(
    model: HookedModel,
    head: Head,
    x: Float[Tensor, "n d_model"],
    basis,
    *,
    center: Float[Tensor, " d_model"] | None = None,
    include_value_bias: bool = True,
    post_norm_gain: bool = True,
) -> Float[Tensor, "n rank"]:
    """(OV(x) − center) @ B in float64; ``basis`` [d_model, r] orthonormal (torch or numpy)."""
    out = ov_apply(
        model, head, x, include_value_bias=include_value_bias, post_norm_gain=post_norm_gain
    ).double()
    if center is not None:
        out = out - center.to(out.device).double()
    return (out @ as_basis(basis, out.shape[-1]).to(out.device)).cpu()


def number_token_ids(model: HookedModel, numbers: Sequence[int], which: str = "single") -> list[int]:
    """Token id of each number's decimal string (no BOS).

    ``which="single"`` refuses numbers that are not one token; ``"last"`` takes the last token
    (the units digit on digit-split tokenizers), ``"first"`` the first.
    """
    if which not in ("single", "last", "first"):
        raise AddkError(f"which must be 'single', 'last' or 'first', got {which!r}")
    out = []
    for n in numbers:
        ids = model.tokenizer(str(int(n)), add_special_tokens=False)["input_ids"]
        if not ids:
            raise AddkError(f"number {n} produced no tokens")
        if which == "single" and len(ids) != 1:
            raise AddkError(
                f"number {n} is {len(ids)} tokens on this tokenizer; pass which='last' or "
                "'first', or restrict to single-token numbers"
            )
        out.append(ids[0] if which == "first" else ids[-1])
    return out


def number_embeddings(
    model: HookedModel, numbers: Sequence[int], which: str = "single"
) -> Float[Tensor, "n d_model"]:
    """Rows of W_E for the numbers' tokens (raw embeddings, before any scaling or norm)."""
    ids = number_token_ids(model, numbers, which)
    return model.W_E[torch.tensor(ids, dtype=torch.long)].detach()


@dataclass(frozen=True)
class NumberMap:
    """Per-number mean coordinates of a head's OV output in a subspace (rows sorted by number).

    ``source``: "embedding" or "label_residual"; ``counts``: how many vectors were averaged.
    """

    head: Head
    source: str
    numbers: Int[np.ndarray, " number"]
    coords: Float[np.ndarray, "number rank"]
    counts: Int[np.ndarray, " number"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "head": list(self.head),
            "source": self.source,
            "numbers": [int(n) for n in self.numbers],
            "coords": self.coords.tolist(),
            "counts": [int(c) for c in self.counts],
        }


def _per_number(numbers: Sequence[int], coords: np.ndarray) -> tuple[np.ndarray, ...]:
    nums = np.asarray(numbers, dtype=np.int64)
    uniq, inv, counts = np.unique(nums, return_inverse=True, return_counts=True)
    sums = np.zeros((len(uniq), coords.shape[1]))
    np.add.at(sums, inv, coords)
    return uniq, sums / counts[:, None], counts.astype(np.int64)


def ov_embedding_map(
    model: HookedModel,
    head: Head,
    numbers: Sequence[int],
    basis,
    *,
    which: str = "single",
    normalize: bool = True,
    center: Float[Tensor, " d_model"] | None = None,
) -> NumberMap:
    """OV coordinates of number-token embeddings W_E[tok(n)], through the layer's ln1 first
    (``normalize=True``: the vector the head would read if the residual were that embedding)."""
    layer, _ = check_head(model, head)
    if not numbers:
        raise AddkError("no numbers")
    x = number_embeddings(model, numbers, which)
    if normalize:
        x = ln1_normalize(model, layer, x)
    c = ov_coordinates(model, head, x, basis, center=center).numpy()
    uniq, mean, counts = _per_number(numbers, c)
    return NumberMap((layer, head[1]), "embedding", uniq, mean, counts)


@dataclass(frozen=True)
class LabelVectors:
    """Attention inputs x_t at demonstration label tokens, one row per (prompt, demo)."""

    layer: int
    label_token: str
    numbers: Int[np.ndarray, " n"]
    vectors: Float[Tensor, "n d_model"]
    prompt_indices: Int[np.ndarray, " n"]
    demo_indices: Int[np.ndarray, " n"]

    def to_dict(self, include_arrays: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "layer": self.layer,
            "label_token": self.label_token,
            "n": int(self.numbers.shape[0]),
            "numbers": [int(v) for v in self.numbers],
            "prompt_indices": [int(v) for v in self.prompt_indices],
            "demo_indices": [int(v) for v in self.demo_indices],
        }
        if include_arrays:
            out["vectors"] = self.vectors.double().tolist()
        return out


def label_vectors(
    model: HookedModel,
    batches: PromptBatch | Sequence[PromptBatch],
    layer: int,
    *,
    label_token: str = "last",
) -> LabelVectors:
    """Layer ``layer``'s attention input at every demonstration label (the label's last token,
    the one before the separator, or the mean over the label's tokens)."""
    if label_token not in ("last", "mean"):
        raise AddkError(f"label_token must be 'last' or 'mean', got {label_token!r}")
    nums, vecs, pidx, didx = [], [], [], []
    for batch in _batches(batches):
        x = attention_inputs(model, batch.prompt_tokens, [layer])[layer]
        for row, enc in enumerate(batch.encoded):
            labels = _label_numbers(batch, row)
            slots = label_slots(enc.groups)
            if len(slots) != len(labels):
                raise AddkError(
                    f"prompt {batch.indices[row]}: {len(labels)} demonstrations but "
                    f"{len(slots)} label token groups"
                )
            for i, (n, pos) in enumerate(zip(labels, slots, strict=True)):
                nums.append(n)
                vecs.append(x[row, pos[-1]] if label_token == "last" else x[row, pos].mean(0))
                pidx.append(batch.indices[row])
                didx.append(i)
    return LabelVectors(
        layer=int(layer),
        label_token=label_token,
        numbers=np.asarray(nums, dtype=np.int64),
        vectors=torch.stack(vecs),
        prompt_indices=np.asarray(pidx, dtype=np.int64),
        demo_indices=np.asarray(didx, dtype=np.int64),
    )


def ov_label_map(
    model: HookedModel,
    head: Head,
    batches: PromptBatch | Sequence[PromptBatch] | LabelVectors,
    basis,
    *,
    label_token: str = "last",
    center: Float[Tensor, " d_model"] | None = None,
) -> NumberMap:
    """Mean OV coordinates of the label-token attention inputs, per label number."""
    layer, h = check_head(model, head)
    lv = (
        batches
        if isinstance(batches, LabelVectors)
        else label_vectors(model, batches, layer, label_token=label_token)
    )
    if lv.layer != layer:
        raise AddkError(f"label vectors are from layer {lv.layer}, the head is in layer {layer}")
    c = ov_coordinates(model, (layer, h), lv.vectors, basis, center=center).numpy()
    uniq, mean, counts = _per_number(lv.numbers.tolist(), c)
    return NumberMap((layer, h), "label_residual", uniq, mean, counts)


@dataclass(frozen=True)
class OVDecomposition:
    """OV outputs split into the named parts of a ``SubspaceFit`` (default: unit, magnitude).

    ``coords[name]`` [n, r_name] = (out − center) B_name; ``norms[name]`` the per-row norm of
    that part (= ‖B_name B_nameᵀ (out − center)‖); ``total_norm`` ‖out − center‖;
    ``fraction[name]`` = Σ norms² / Σ total_norm² (share of squared norm in that part).
    """

    parts: tuple[str, ...]
    coords: dict[str, np.ndarray]
    norms: dict[str, np.ndarray]
    total_norm: Float[np.ndarray, " n"]
    fraction: dict[str, float]

    def to_dict(self, include_arrays: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "parts": list(self.parts),
            "fraction": dict(self.fraction),
            "mean_norm": {p: float(self.norms[p].mean()) for p in self.parts},
            "mean_total_norm": float(self.total_norm.mean()),
        }
        if include_arrays:
            out["coords"] = {p: self.coords[p].tolist() for p in self.parts}
        return out


def decompose_ov(
    fit,
    outputs: Float[Tensor, "n d_model"],
    *,
    parts: Sequence[str] = ("unit", "magnitude"),
    center: Float[Tensor, " d_model"] | None = None,
) -> OVDecomposition:
    """Project OV outputs onto the periodic (unit) and magnitude bases of a ``SubspaceFit``."""
    x = outputs.detach().to(device="cpu", dtype=torch.float64)
    if center is not None:
        x = x - center.detach().to(device="cpu", dtype=torch.float64)
    total = x.norm(dim=-1).numpy()
    tot2 = float((total**2).sum())
    coords, norms, frac = {}, {}, {}
    for p in parts:
        try:
            b = as_basis(fit.basis(p, "onto"), x.shape[-1])
        except KeyError as e:
            raise AddkError(str(e)) from None
        c = x @ b
        coords[p] = c.numpy()
        norms[p] = c.norm(dim=-1).numpy()
        frac[p] = float((norms[p] ** 2).sum() / tot2) if tot2 > 0 else 0.0
    return OVDecomposition(tuple(parts), coords, norms, total, frac)


# ----------------------------------------------------------------------------- QK


def qk_bilinear(
    model: HookedModel,
    head: Head,
    queries: Float[Tensor, "nq d_model"],
    keys: Float[Tensor, "nk d_model"],
    *,
    scale: float | None = None,
) -> Float[Tensor, "nq nk"]:
    """Position-free scores (q W_Q[l,h] + b_Q)·(k W_K[l,kv(h)] + b_K) · scale (no rotary)."""
    layer, h = check_head(model, head)
    kv = model.kv_head(h)
    w_q, w_k = model.W_Q[layer, h], model.W_K[layer, kv]
    q = queries.to(device=w_q.device, dtype=w_q.dtype) @ w_q
    q = q + attention_bias(model, layer, h, "Q").to(q)
    k = keys.to(device=w_k.device, dtype=w_k.dtype) @ w_k
    k = k + attention_bias(model, layer, h, "K").to(k)
    s = model.info.d_head**-0.5 if scale is None else float(scale)
    return (q @ k.T * s).detach()


@dataclass(frozen=True)
class QKProfile:
    """Query-row attention by token role and label-number dependence of one head (see doc).

    Per prompt: ``role_mass[r]`` (rows sum to 1 over ``ROLES``), ``role_score[r]`` (mean score
    over the role's unmasked tokens; NaN = role absent or fully masked, dropped by summaries).
    Per label (one row per prompt × demonstration): ``label_numbers``, ``label_scores``,
    ``label_centered``, ``label_attention``. Per number: ``numbers`` (sorted unique) with mean
    raw / centered scores, mean attention and counts. ``softmax_error``: max |softmax(scores) −
    pattern| over the query rows (the scores really are the ones the pattern came from).
    """

    head: Head
    label_token: str
    prompt_indices: tuple[int, ...]
    role_mass: dict[str, np.ndarray]
    role_score: dict[str, np.ndarray]
    label_numbers: Int[np.ndarray, " label"]
    label_scores: Float[np.ndarray, " label"]
    label_centered: Float[np.ndarray, " label"]
    label_attention: Float[np.ndarray, " label"]
    numbers: Int[np.ndarray, " number"]
    number_score: Float[np.ndarray, " number"]
    number_centered: Float[np.ndarray, " number"]
    number_attention: Float[np.ndarray, " number"]
    number_counts: Int[np.ndarray, " number"]
    n_masked_labels: int
    softmax_error: float

    def total_mass(self) -> Float[np.ndarray, " prompt"]:
        return np.sum([self.role_mass[r] for r in ROLES], axis=0)

    def to_dict(self) -> dict[str, Any]:
        def mean(v: np.ndarray) -> float | None:
            v = v[np.isfinite(v)]
            return float(v.mean()) if v.size else None

        return {
            "head": list(self.head),
            "label_token": self.label_token,
            "n_prompts": len(self.prompt_indices),
            "role_mass": {r: mean(v) for r, v in self.role_mass.items()},
            "role_score": {r: mean(v) for r, v in self.role_score.items()},
            "numbers": [int(n) for n in self.numbers],
            "number_score": self.number_score.tolist(),
            "number_centered": self.number_centered.tolist(),
            "number_attention": self.number_attention.tolist(),
            "number_counts": [int(c) for c in self.number_counts],
            "n_masked_labels": self.n_masked_labels,
            "softmax_error": self.softmax_error,
        }


def qk_role_profile(
    model: HookedModel,
    batches: PromptBatch | Sequence[PromptBatch],
    head: Head,
    *,
    label_token: str = "last",
    fwd_hooks=(),
) -> QKProfile:
    """Actual query-row scores and attention of ``head`` by token role and label number."""
    if label_token not in ("last", "mean"):
        raise AddkError(f"label_token must be 'last' or 'mean', got {label_token!r}")
    layer, h = check_head(model, head)
    names = [f"blocks.{layer}.attn.hook_attn_scores", f"blocks.{layer}.attn.hook_pattern"]
    idx: list[int] = []
    mass: dict[str, list[float]] = {r: [] for r in ROLES}
    score: dict[str, list[float]] = {r: [] for r in ROLES}
    l_num, l_sc, l_cen, l_att = [], [], [], []
    n_masked = 0
    sm_err = 0.0
    for batch in _batches(batches):
        with torch.no_grad():
            acts = model.run_collect(
                batch.prompt_tokens, names, fwd_hooks=fwd_hooks, stop_after=names[-1]
            )
        q = batch.query_pos
        sc = acts[names[0]][:, h, q].double().cpu()
        pat = acts[names[1]][:, h, q].double().cpu()
        live = torch.isfinite(sc) & (sc > MASKED)
        soft = torch.softmax(torch.where(live, sc, torch.full_like(sc, -torch.inf)), -1)
        sm_err = max(sm_err, float((soft - pat).abs().max()))
        for row, enc in enumerate(batch.encoded):
            labels = _label_numbers(batch, row)
            roles = [group_role(g) for g in enc.groups]
            idx.append(batch.indices[row])
            s_row, a_row, lv = sc[row], pat[row], live[row]
            centre = float(s_row[lv].mean())
            for role in ROLES:
                m = torch.tensor([r == role for r in roles])
                mass[role].append(float(a_row[m].sum()))
                ml = m & lv
                score[role].append(float(s_row[ml].mean()) if ml.any() else float("nan"))
            slots = label_slots(enc.groups)
            for n, pos in zip(labels, slots, strict=True):
                p = [pos[-1]] if label_token == "last" else pos
                ok = [t for t in p if bool(lv[t])]
                if not ok:
                    n_masked += 1
                    continue
                val = float(s_row[ok].mean())
                l_num.append(n)
                l_sc.append(val)
                l_cen.append(val - centre)
                l_att.append(float(a_row[p].sum()))
    nums = np.asarray(l_num, dtype=np.int64)
    stacked = np.stack([l_sc, l_cen, l_att], axis=1) if l_num else np.zeros((0, 3))
    uniq, means, counts = _per_number(nums.tolist(), stacked)
    return QKProfile(
        head=(layer, h),
        label_token=label_token,
        prompt_indices=tuple(idx),
        role_mass={r: np.asarray(v) for r, v in mass.items()},
        role_score={r: np.asarray(v) for r, v in score.items()},
        label_numbers=nums,
        label_scores=np.asarray(l_sc, dtype=float),
        label_centered=np.asarray(l_cen, dtype=float),
        label_attention=np.asarray(l_att, dtype=float),
        numbers=uniq,
        number_score=means[:, 0].copy(),
        number_centered=means[:, 1].copy(),
        number_attention=means[:, 2].copy(),
        number_counts=counts,
        n_masked_labels=n_masked,
        softmax_error=sm_err,
    )
