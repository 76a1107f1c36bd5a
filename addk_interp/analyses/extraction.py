"""Aggregation / extraction: per-token extracted signals, token-group shares, label peaking.

Step of the method: docs/method.md §6.1–6.3 (paper §5). For head (l, h), prompt p with final
position T, query-row attention α_t = α_{T,t} (``hook_pattern``) and kv = kv(h) (the GQA map of
``HookedModel.kv_head``):

    extracted signal      s_t = v_t[kv] @ W_O[l, h]          (v_t = ``hook_v``, includes b_V)
    identity              Σ_t α_t s_t = z_h[T] @ W_O[l, h] = h(p)        (z from ``hook_z``)
    post-norm models      s̃_t = s_t ⊙ g / rms(o_T),  Σ_t α_t s̃_t = g ⊙ h(p) / rms(o_T)
                          (o_T = Σ_h' z_h'[T] W_O[l, h'] + b_O, the run's own attention output:
                          exactly ``hooks.capture.z_to_outputs``, the head's residual contribution)
    subspace projection   B^T Σ_t α_t s̃_t = Σ_t α_t B^T s̃_t          (B: [d_model, r] basis)
    group share           share_t = α_t ⟨s̃_t, d⟩ / Σ_u α_u ⟨s̃_u, d⟩   (d = h_task, §6.2)

Attention biases: ``hook_v`` already contains b_V on both backends, so s_t includes the
constant part c = b_V[kv] @ W_O[l, h] (reported as ``value_bias_signal``; zero for Llama/Gemma);
since Σ_t α_t = 1 the identity needs no bias term. b_O is not part of any single head.

Shares use the reconstructed denominator Σ_u α_u⟨s̃_u, d⟩, which equals ⟨h(p), d⟩ up to the
identity error, so the signed shares of a prompt sum to exactly 1. Prompts whose denominator is
negative or has |·| < 1e-10 are counted and listed separately, never turned into NaN.
Tokens are grouped by the first character they cover (``prompts.encode``): ``bos``,
``demo{i}_input|arrow|output|sep``, ``query_input``, ``query_arrow``.

Label-peaking metrics (§6.3), per prompt, with labels i = the demonstrations' output groups
(``label_signal="last"``: α_i, s_i at the label's last token, the token before the separator;
``"pooled"``: α_i = Σ_{t∈i} α_t and s_i = Σ_{t∈i} α_t s̃_t / α_i):
peaking ratio = mean α per label token / mean α per other token; task mass = Σ α over label
tokens, sink mass = Σ α over bos, separators, arrows and the query arrow; signal cosine =
mean_i cos(B^T s_i, B^T h_k); full cosine = mean_i cos(s_i, h_k); routing = Pearson(α_i,
cos(s_i, h_k)) over the labels; weighting gain = cos(Σ_i α̃_i s_i, h_k) − cos(mean_i s_i, h_k)
with α̃ = α_i / Σ_j α_j. Nulls permute α within each prompt (30 permutations, seeded).
Prompts with zero attention mass on their labels are counted, not NaN.

Cost: one forward per ``batch_size`` prompts (length buckets right-padded together) with
``hook_v``, ``hook_pattern`` and ``hook_z`` kept for the requested layers only, stopped after
the deepest one; memory O(batch × pos × d_model) per
head for the signals. Shares and metrics are O(batch × pos × d_model) arithmetic on those,
plus O(n_perm × batch × labels) for the nulls and O(2000 × batch) for each bootstrap.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from addk_interp.core.errors import AddkError
from addk_interp.core.heads import HeadLike as Head
from addk_interp.core.heads import check_heads  # the one head type: Head or (l, h)
from addk_interp.core.prompts import PromptBatch, encode_examples, make_batches
from addk_interp.core.scoring import bootstrap_ci, pearson
from addk_interp.core.tasks import GROUP_BOS, Example, PromptFormat
from addk_interp.hooks.capture import z_to_outputs
from addk_interp.models.adapter import HookedModel

__all__ = [
    "DEGENERATE_EPS",
    "ROLES",
    "SINK_ROLES",
    "ExtractionResult",
    "GroupShares",
    "PeakingMetrics",
    "as_basis",
    "attention_bias",
    "check_head",
    "directions_from_means",
    "extract_head",
    "extract_heads",
    "group_role",
    "group_shares",
    "group_sort_key",
    "iter_extractions",
    "label_peaking",
    "label_slots",
    "project_signals",
    "summarize",
    "value_bias",
    "value_hook_index",
]


DEGENERATE_EPS = 1e-10
LOW_ALIGNMENT = 0.05
N_BOOT = 2000
ROLES = ("bos", "input", "arrow", "label", "separator", "query_input", "query_arrow")
SINK_ROLES = ("bos", "arrow", "separator", "query_arrow")
_DEMO = re.compile(r"^demo(\d+)_(input|arrow|output|sep)$")
_PART_ORDER = {"input": 0, "arrow": 1, "output": 2, "sep": 3}
_PART_ROLE = {"input": "input", "arrow": "arrow", "output": "label", "sep": "separator"}


# ----------------------------------------------------------------------------- groups


def group_sort_key(name: str) -> tuple:
    """Prompt order: bos, demo0_input, demo0_arrow, demo0_output, demo0_sep, demo1_..., query."""
    if name == GROUP_BOS:
        return (0,)
    m = _DEMO.match(name)
    if m:
        return (1, int(m.group(1)), _PART_ORDER[m.group(2)])
    if name == "query_input":
        return (2, 0)
    if name == "query_arrow":
        return (2, 1)
    return (3, name)


def group_role(name: str) -> str:
    """Token role of a group: bos, input, arrow, label, separator, query_input, query_arrow."""
    if name == GROUP_BOS:
        return "bos"
    m = _DEMO.match(name)
    if m:
        return _PART_ROLE[m.group(2)]
    if name in ("query_input", "query_arrow"):
        return name
    raise AddkError(f"unknown token group {name!r}")


def _demo_index(name: str) -> int | None:
    m = _DEMO.match(name)
    return int(m.group(1)) if m else None


# ----------------------------------------------------------------------------- helpers


def check_head(model: HookedModel, head: Head) -> Head:
    """Validate a (layer, head) pair against the model (``core.heads.check_heads``)."""
    (out,) = check_heads([head], model.n_layers, model.n_heads)
    return out


def value_hook_index(model: HookedModel, head: int, n_value_heads: int) -> int:
    """Index into ``hook_v``'s head axis for query head ``head``.

    ``hook_v`` is per KV head on the bridge and on classic GQA models ([..., kv_head, d_head]);
    a classic model with ``ungroup_grouped_query_attention`` has it per query head.
    """
    info = model.info
    if n_value_heads == info.n_kv_heads:
        return model.kv_head(head)
    if n_value_heads == info.n_heads:
        return head
    raise AddkError(
        f"hook_v has {n_value_heads} heads; expected n_kv_heads={info.n_kv_heads} or "
        f"n_heads={info.n_heads}"
    )


def attention_bias(model: HookedModel, layer: int, head: int, kind: str = "V") -> Float[Tensor, " d_head"]:
    """b_Q of query head ``head``, or b_K / b_V of the KV head it reads; zeros when absent.

    Classic models keep GQA key/value biases per KV head (``_b_K``/``_b_V``); the bridge
    exposes stacked ``b_Q``/``b_K``/``b_V`` (raising when the HF model has no biases).
    """
    if kind not in ("Q", "K", "V"):
        raise AddkError(f"bias kind must be 'Q', 'K' or 'V', got {kind!r}")
    info = model.info
    b = None
    if model.backend == "hooked":
        attn = model.model.blocks[layer].attn
        b = None if kind == "Q" else getattr(attn, f"_b_{kind}", None)
        if b is None:
            b = getattr(attn, f"b_{kind}", None)
    else:
        try:
            stacked = getattr(model.model, f"b_{kind}")
            b = None if stacked is None else stacked[layer]
        except (AttributeError, RuntimeError, TypeError, IndexError):
            b = None
    if b is None:
        w = model.W_O
        return torch.zeros(info.d_head, dtype=w.dtype, device=w.device)
    if kind == "Q":
        return b[head].detach()
    return b[value_hook_index(model, head, b.shape[0])].detach()


def value_bias(model: HookedModel, layer: int, head: int) -> Float[Tensor, " d_head"]:
    """b_V of the KV head that query head ``head`` reads (zeros when the model has none)."""
    return attention_bias(model, layer, head, "V")


def as_basis(basis, d_model: int) -> Float[Tensor, "d_model rank"]:
    """A [d_model, r] orthonormal basis (torch or numpy) as float64 torch; AddkError otherwise."""
    if isinstance(basis, Tensor):
        b = basis.detach().to(device="cpu", dtype=torch.float64)
    else:
        b = torch.from_numpy(np.array(basis, dtype=np.float64))
    if b.ndim != 2 or b.shape[0] != d_model or b.shape[1] == 0:
        raise AddkError(f"basis must be [d_model={d_model}, r ≥ 1], got {tuple(b.shape)}")
    err = (b.T @ b - torch.eye(b.shape[1], dtype=torch.float64)).abs().max().item()
    if err > 1e-4:
        raise AddkError(
            f"basis columns are not orthonormal (max |BᵀB − I| = {err:.2e}); pass e.g. "
            "SubspaceFit.basis('full') or orthonormalize with torch.linalg.qr"
        )
    return b


def summarize(values, *, seed: int = 0, n_boot: int = N_BOOT) -> dict[str, Any]:
    """n, mean, sd (ddof 1), min, max and a percentile bootstrap CI of the mean.

    Non-finite values are dropped first; an empty input gives n = 0 and ``None`` elsewhere.
    """
    v = np.asarray(values, dtype=float).reshape(-1)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {
            "n": 0,
            "mean": None,
            "sd": None,
            "min": None,
            "max": None,
            "ci_low": None,
            "ci_high": None,
        }
    lo, hi = bootstrap_ci(v, n_boot=n_boot, seed=seed)
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "ci_low": lo,
        "ci_high": hi,
    }


def _cos(a: Tensor, b: Tensor) -> Tensor:
    """Cosine along the last axis in float64; 0 where either vector is zero."""
    a, b = a.double(), b.double()
    den = a.norm(dim=-1) * b.norm(dim=-1)
    num = (a * b).sum(-1)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))


# ----------------------------------------------------------------------------- extraction


@dataclass(frozen=True)
class ExtractionResult:
    """Per-token extracted signals of one head on one batch (§6.1).

    ``signals`` s_t (raw, z-space @ W_O); ``scale`` g / rms(o_T) for post-norm models, else
    None; ``contribution`` the head's residual contribution at the query (= ``head_output``
    for pre-norm models). ``identity_max_error`` = max |Σ_t α_t s̃_t − contribution|,
    ``identity_rel_error`` the same divided by max(1, max |contribution|),
    ``identity_min_cos`` the smallest per-prompt cosine of the two (the repo's 0.999 gate).
    ``groups[i]`` names the token group of every position of prompt i (None for raw tokens);
    ``indices``, ``tasks`` and ``labels`` map rows back to the caller's examples.
    """

    head: Head
    kv_head: int
    query_pos: int
    signals: Float[Tensor, "batch pos d_model"]
    attention: Float[Tensor, "batch pos"]
    head_output: Float[Tensor, "batch d_model"]
    contribution: Float[Tensor, "batch d_model"]
    scale: Float[Tensor, "batch d_model"] | None
    value_bias_signal: Float[Tensor, " d_model"]
    identity_max_error: float
    identity_rel_error: float
    identity_min_cos: float
    groups: tuple[tuple[str, ...], ...] | None
    indices: tuple[int, ...]
    tasks: tuple[str, ...] | None
    labels: tuple[tuple[str, ...], ...] | None

    @property
    def post_norm(self) -> bool:
        return self.scale is not None

    @property
    def n_prompts(self) -> int:
        return int(self.signals.shape[0])

    @property
    def contribution_signals(self) -> Float[Tensor, "batch pos d_model"]:
        """s̃_t: signals in the residual-contribution space (scaled for post-norm models)."""
        if self.scale is None:
            return self.signals
        return self.signals * self.scale[:, None, :].to(self.signals.dtype)

    def reconstruction(self) -> Float[Tensor, "batch d_model"]:
        """Σ_t α_t s̃_t (equals ``contribution`` up to ``identity_max_error``)."""
        return torch.einsum("bp,bpm->bm", self.attention, self.contribution_signals)

    def require_groups(self) -> tuple[tuple[str, ...], ...]:
        if self.groups is None:
            raise AddkError(
                "this extraction was run on raw tokens without token groups; "
                "pass a PromptBatch (from prompts.make_batches) instead"
            )
        return self.groups

    def to_dict(self, include_arrays: bool = False) -> dict[str, Any]:
        """JSON-ready summary (lists and Python scalars only)."""
        out: dict[str, Any] = {
            "head": list(self.head),
            "kv_head": self.kv_head,
            "query_pos": self.query_pos,
            "n_prompts": self.n_prompts,
            "n_pos": int(self.signals.shape[1]),
            "post_norm": self.post_norm,
            "identity_max_error": self.identity_max_error,
            "identity_rel_error": self.identity_rel_error,
            "identity_min_cos": self.identity_min_cos,
            "value_bias_norm": float(self.value_bias_signal.double().norm()),
            "indices": list(self.indices),
            "tasks": None if self.tasks is None else list(self.tasks),
        }
        if include_arrays:
            out["attention"] = self.attention.double().tolist()
            out["contribution"] = self.contribution.double().tolist()
            out["groups"] = None if self.groups is None else [list(g) for g in self.groups]
        return out


def _names(layer: int) -> list[str]:
    return [
        f"blocks.{layer}.attn.hook_v",
        f"blocks.{layer}.attn.hook_pattern",
        f"blocks.{layer}.attn.hook_z",
    ]


def _batch_meta(batch: PromptBatch):
    groups = tuple(tuple(e.groups) for e in batch.encoded)
    for i, g in enumerate(groups):
        if not any(_demo_index(name) is not None for name in g):
            raise AddkError(
                f"prompt {batch.indices[i]} has no demonstrations; extraction at label tokens "
                "needs few-shot prompts (shots ≥ 1)"
            )
    tasks = tuple(e.prompt.example.task for e in batch.encoded)
    labels = tuple(tuple(y for _, y in e.prompt.example.demos) for e in batch.encoded)
    return groups, tasks, labels


def _from_acts(
    model: HookedModel,
    head: Head,
    acts: dict[str, Tensor],
    query_pos: int,
    groups,
    indices: tuple[int, ...],
    tasks,
    labels,
) -> ExtractionResult:
    layer, h = head
    v_all = acts[f"blocks.{layer}.attn.hook_v"]
    pattern = acts[f"blocks.{layer}.attn.hook_pattern"]
    z = acts[f"blocks.{layer}.attn.hook_z"][:, query_pos]  # [batch, head, d_head]
    vi = value_hook_index(model, h, v_all.shape[2])
    w_o = model.W_O[layer, h].to(v_all.dtype)
    signals = v_all[:, :, vi] @ w_o  # [batch, pos, d_model]
    n_pos = signals.shape[1]
    attention = pattern[:, h, query_pos, :n_pos]
    head_output = z[:, h] @ w_o
    contribution = z_to_outputs(model, layer, z)[:, h]
    scale = None
    norm = model.post_attn_norm(layer)
    if norm is not None:
        g, eps = norm
        wide = torch.promote_types(z.dtype, torch.float32)
        o = torch.einsum("bhd,hdm->bhm", z.to(wide), model.W_O[layer].to(wide))
        total = o.sum(1) + model.b_O[layer].to(wide)
        rms = torch.sqrt(total.pow(2).mean(-1, keepdim=True) + eps)
        scale = (g.to(wide) / rms).to(signals.dtype)
    s_tilde = signals if scale is None else signals * scale[:, None, :]
    recon = torch.einsum("bp,bpm->bm", attention.to(s_tilde.dtype), s_tilde)
    err = (recon.double() - contribution.double()).abs().max().item()
    rel = err / max(1.0, contribution.double().abs().max().item())
    cos = _cos(recon, contribution).min().item()
    b_v = value_bias(model, layer, h).to(w_o)
    return ExtractionResult(
        head=(layer, h),
        kv_head=model.kv_head(h),
        query_pos=query_pos,
        signals=signals.detach(),
        attention=attention.detach().to(signals.dtype),
        head_output=head_output.detach(),
        contribution=contribution.detach().to(signals.dtype),
        scale=None if scale is None else scale.detach(),
        value_bias_signal=(b_v @ w_o).detach(),
        identity_max_error=float(err),
        identity_rel_error=float(rel),
        identity_min_cos=float(cos),
        groups=groups,
        indices=indices,
        tasks=tasks,
        labels=labels,
    )


def _collect(
    model: HookedModel, tokens: Int[Tensor, "batch pos"], heads: Sequence[Head], fwd_hooks=()
) -> dict[str, Tensor]:
    """``hook_v``, ``hook_pattern`` and ``hook_z`` of the heads' layers, the forward stopped
    after the deepest one."""
    layers = sorted({layer for layer, _ in heads})
    names = [n for layer in layers for n in _names(layer)]
    return model.run_collect(tokens, names, fwd_hooks=fwd_hooks, stop_after=names[-1])


def extract_heads(
    model: HookedModel,
    batch: PromptBatch | Int[Tensor, "batch pos"],
    heads: Sequence[Head],
    *,
    query_pos: int | None = None,
    fwd_hooks=(),
) -> dict[Head, ExtractionResult]:
    """§6.1 for several heads from one forward (stopped after the deepest requested layer).

    ``batch``: a ``PromptBatch`` (query position and token groups come with it; prompts
    without demonstrations are refused) or a raw token tensor (``query_pos`` defaults to the
    last position; no groups, so no shares).
    """
    if not heads:
        raise AddkError("no heads requested")
    checked = [check_head(model, hd) for hd in heads]
    if isinstance(batch, PromptBatch):
        tokens = batch.prompt_tokens
        q = batch.query_pos if query_pos is None else query_pos
        groups, tasks, labels = _batch_meta(batch)
        indices = tuple(batch.indices)
    else:
        tokens = batch
        q = tokens.shape[1] - 1 if query_pos is None else query_pos
        groups = tasks = labels = None
        indices = tuple(range(tokens.shape[0]))
    if not -tokens.shape[1] <= q < tokens.shape[1]:
        raise AddkError(f"query position {q} outside a prompt of {tokens.shape[1]} tokens")
    q = q % tokens.shape[1]
    with torch.no_grad():
        acts = _collect(model, tokens, checked, fwd_hooks)
        return {
            hd: _from_acts(model, hd, acts, q, groups, indices, tasks, labels) for hd in checked
        }


def extract_head(
    model: HookedModel,
    batch: PromptBatch | Int[Tensor, "batch pos"],
    head: Head,
    *,
    query_pos: int | None = None,
    fwd_hooks=(),
) -> ExtractionResult:
    """§6.1 for one head (see :func:`extract_heads`)."""
    head = check_head(model, head)
    return extract_heads(model, batch, [head], query_pos=query_pos, fwd_hooks=fwd_hooks)[head]


def iter_extractions(
    model: HookedModel,
    examples: Sequence[Example],
    heads: Sequence[Head],
    fmt: str | PromptFormat = "arrow",
    *,
    batch_size: int = 32,
) -> Iterator[dict[Head, ExtractionResult]]:
    """Encode few-shot examples, bucket them by length and yield one extraction per batch;
    consecutive batches of up to ``batch_size`` prompts in all share one right-padded forward
    (``_extract_padded``), so a sample spread over many lengths does not cost one small forward
    per length."""
    if not examples:
        raise AddkError("no examples to extract from")
    if not heads:
        raise AddkError("no heads requested")
    bad = [i for i, e in enumerate(examples) if not e.demos]
    if bad:
        raise AddkError(
            f"{len(bad)} example(s) have no demonstrations (first: index {bad[0]}); "
            "extraction at label tokens needs few-shot prompts"
        )
    enc = encode_examples(model, list(examples), fmt)
    checked = [check_head(model, hd) for hd in heads]
    pending: list[PromptBatch] = []
    for batch in make_batches(enc, batch_size):
        if pending and sum(len(b) for b in pending) + len(batch) > batch_size:
            yield from _extract_padded(model, pending, checked)
            pending = []
        pending.append(batch)
    if pending:
        yield from _extract_padded(model, pending, checked)


def _extract_padded(
    model: HookedModel, batches: list[PromptBatch], heads: list[Head]
) -> list[dict[Head, ExtractionResult]]:
    """``extract_heads`` of each of ``batches`` from ONE forward: their prompts right-padded to
    the longest (each row with its own last token) and stacked. Exact: attention is causal, so
    every position before a row's end is computed as in the row's own forward; each batch's
    rows and positions are sliced back out of the activations."""
    metas = [_batch_meta(b) for b in batches]  # refuses prompts without demonstrations
    width = max(b.prompt_tokens.shape[1] for b in batches)
    rows = []
    for b in batches:
        t = b.prompt_tokens
        rows.append(torch.cat([t, t[:, -1:].expand(-1, width - t.shape[1])], dim=1))
    out, r = [], 0
    with torch.no_grad():
        acts = _collect(model, torch.cat(rows), heads)
        for b, (groups, tasks, labels) in zip(batches, metas):
            n, length = len(b), b.prompt_tokens.shape[1]
            sub = {}
            for name, a in acts.items():
                a = a[r : r + n]
                sub[name] = a[:, :, :length, :length] if name.endswith("hook_pattern") else a[:, :length]
            q = b.query_pos
            out.append(
                {
                    hd: _from_acts(model, hd, sub, q, groups, tuple(b.indices), tasks, labels)
                    for hd in heads
                }
            )
            r += n
    return out


def project_signals(
    result: ExtractionResult,
    basis,
    center: Float[Tensor, " d_model"] | None = None,
) -> Float[Tensor, "batch pos rank"]:
    """Coordinates (s̃_t − center) @ B of every token's signal in an orthonormal basis.

    ``basis``: [d_model, r] (torch or numpy, e.g. ``SubspaceFit.basis("unit")``). Without a
    center, Σ_t α_t coords_t = B^T contribution exactly (linearity); with one, Σ_t α_t = 1 makes
    it B^T (contribution − center). Computed in float64.
    """
    b = as_basis(basis, result.signals.shape[-1])
    s = result.contribution_signals.double()
    if center is not None:
        s = s - center.to(s.device).double()
    return s @ b.to(s.device)


def directions_from_means(
    means, head: Head, result: ExtractionResult
) -> Float[Tensor, "batch d_model"]:
    """Per-prompt task directions h_task = z_task[l, h] (``HeadMeans``) for ``result``'s rows."""
    if result.tasks is None:
        raise AddkError("the extraction has no task names (run it on a PromptBatch)")
    layer, h = head
    return torch.stack([means.of(t)[layer, h] for t in result.tasks]).to(torch.float64)


def _directions(d: Tensor, n: int, d_model: int) -> Tensor:
    d = torch.as_tensor(d).detach().to(device="cpu", dtype=torch.float64)
    if d.ndim == 1:
        d = d.expand(n, -1)
    if d.shape != (n, d_model):
        raise AddkError(f"directions must be [d_model] or [batch={n}, d_model={d_model}]")
    if not torch.isfinite(d).all():
        raise AddkError("directions contain NaN or inf")
    return d


def _as_lists(results, directions) -> tuple[list[ExtractionResult], list[Tensor]]:
    rs = [results] if isinstance(results, ExtractionResult) else list(results)
    if not rs:
        raise AddkError("no extraction results")
    if isinstance(directions, Tensor):
        ds = [directions] * len(rs) if directions.ndim == 1 or len(rs) == 1 else None
        if ds is None:
            raise AddkError("pass one direction tensor per extraction result")
    else:
        ds = list(directions)
    if len(ds) != len(rs):
        raise AddkError(f"{len(rs)} extraction results but {len(ds)} direction tensors")
    heads = {r.head for r in rs}
    if len(heads) > 1:
        raise AddkError(f"extraction results mix heads {sorted(heads)}")
    return rs, [_directions(d, r.n_prompts, r.signals.shape[-1]) for r, d in zip(rs, ds)]


# ----------------------------------------------------------------------------- shares


@dataclass(frozen=True)
class GroupShares:
    """Signed token-group shares of one head's task signal (§6.2).

    ``shares[i, j]``: share of group ``group_names[j]`` in valid prompt ``prompt_indices[i]``
    (0 where the prompt has no such group); each row sums to 1. Prompts with a negative or
    |·| < eps denominator are listed in ``negative_indices`` / ``degenerate_indices`` and left
    out of ``shares``. ``low_alignment_indices``: valid prompts with cos(h(p), d) < 0.05.
    """

    head: Head
    group_names: tuple[str, ...]
    shares: Float[np.ndarray, "valid group"]
    prompt_indices: tuple[int, ...]
    denominators: Float[np.ndarray, " prompt"]
    all_indices: tuple[int, ...]
    degenerate_indices: tuple[int, ...]
    negative_indices: tuple[int, ...]
    low_alignment_indices: tuple[int, ...]
    eps: float

    @property
    def n_prompts(self) -> int:
        return len(self.all_indices)

    @property
    def n_valid(self) -> int:
        return len(self.prompt_indices)

    @property
    def label_share(self) -> Float[np.ndarray, " valid"]:
        """Σ_i share(demo{i}_output) per valid prompt."""
        cols = [j for j, g in enumerate(self.group_names) if group_role(g) == "label"]
        return self.shares[:, cols].sum(1)

    def role_shares(self) -> dict[str, Float[np.ndarray, " valid"]]:
        """Shares summed by token role (bos, input, arrow, label, separator, query_*)."""
        out = {}
        for role in ROLES:
            cols = [j for j, g in enumerate(self.group_names) if group_role(g) == role]
            out[role] = self.shares[:, cols].sum(1)
        return out

    def to_dict(self, include_arrays: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "head": list(self.head),
            "n_prompts": self.n_prompts,
            "n_valid": self.n_valid,
            "n_degenerate": len(self.degenerate_indices),
            "n_negative": len(self.negative_indices),
            "n_low_alignment": len(self.low_alignment_indices),
            "degenerate_indices": list(self.degenerate_indices),
            "negative_indices": list(self.negative_indices),
            "eps": self.eps,
            "label_share": summarize(self.label_share),
            "groups": {g: summarize(self.shares[:, j]) for j, g in enumerate(self.group_names)},
            "roles": {r: summarize(v) for r, v in self.role_shares().items()},
        }
        if include_arrays:
            out["group_names"] = list(self.group_names)
            out["shares"] = self.shares.tolist()
            out["prompt_indices"] = list(self.prompt_indices)
            out["denominators"] = self.denominators.tolist()
        return out


def group_shares(
    results: ExtractionResult | Sequence[ExtractionResult],
    directions: Tensor | Sequence[Tensor],
    *,
    eps: float = DEGENERATE_EPS,
) -> GroupShares:
    """Signed token-group shares (§6.2) over one or several batches of the same head.

    ``directions``: h_task per batch, [d_model] or [batch, d_model] (see
    :func:`directions_from_means`); only its direction matters.
    """
    rs, ds = _as_lists(results, directions)
    rows: list[dict[str, float]] = []
    valid_idx, all_idx, degenerate, negative, low = [], [], [], [], []
    dens: list[float] = []
    names: set[str] = set()
    for r, d in zip(rs, ds):
        groups = r.require_groups()
        s = r.contribution_signals.double().cpu()
        alpha = r.attention.double().cpu()
        per_tok = alpha * torch.einsum("bpm,bm->bp", s, d)  # α_t ⟨s̃_t, d⟩
        den = per_tok.sum(1)
        cos = _cos(r.contribution.double().cpu(), d)
        for i in range(r.n_prompts):
            idx = r.indices[i]
            all_idx.append(idx)
            dv = float(den[i])
            dens.append(dv)
            if not math.isfinite(dv) or abs(dv) < eps:
                degenerate.append(idx)
                continue
            if dv < 0:
                negative.append(idx)
                continue
            valid_idx.append(idx)
            if float(cos[i]) < LOW_ALIGNMENT:
                low.append(idx)
            row: dict[str, float] = {}
            share = (per_tok[i] / dv).tolist()
            for g, v in zip(groups[i], share):
                row[g] = row.get(g, 0.0) + v
            names.update(row)
            rows.append(row)
    order = tuple(sorted(names, key=group_sort_key))
    mat = np.zeros((len(rows), len(order)))
    col = {g: j for j, g in enumerate(order)}
    for i, row in enumerate(rows):
        for g, v in row.items():
            mat[i, col[g]] = v
    return GroupShares(
        head=rs[0].head,
        group_names=order,
        shares=mat,
        prompt_indices=tuple(valid_idx),
        denominators=np.asarray(dens, dtype=float),
        all_indices=tuple(all_idx),
        degenerate_indices=tuple(degenerate),
        negative_indices=tuple(negative),
        low_alignment_indices=tuple(low),
        eps=float(eps),
    )


# ----------------------------------------------------------------------------- peaking


def label_slots(groups: Sequence[str]) -> list[list[int]]:
    """Token positions of each demonstration label, in demonstration order."""
    by_demo: dict[int, list[int]] = {}
    for t, g in enumerate(groups):
        i = _demo_index(g)
        if i is not None and g.endswith("_output"):
            by_demo.setdefault(i, []).append(t)
    return [by_demo[i] for i in sorted(by_demo)]


@dataclass(frozen=True)
class PeakingMetrics:
    """Label-token peaking and alignment metrics of one head (§6.3); one entry per prompt.

    Arrays over all prompts: ``peaking_ratio``, ``task_mass``, ``sink_mass``, ``role_mass``
    and ``role_mean`` (per role). A role absent from a prompt has mass 0 and a ``role_mean`` of
    NaN, which marks "missing" and is dropped by every summary (as is a ratio whose non-label
    mean is 0). Per-label metrics (``signal_cos``, ``full_cos``,
    ``routing``, ``weighting_gain``) are over prompts with positive label mass
    (``label_prompt_indices``); ``routing`` also needs ≥ 2 labels with non-constant α and
    cosines (``routing_prompt_indices``). ``zero_label_mass_indices`` counts the rest.
    ``signal_cos`` is None when no basis was given.
    """

    head: Head
    label_signal: str
    prompt_indices: tuple[int, ...]
    peaking_ratio: Float[np.ndarray, " prompt"]
    label_token_attention: Float[np.ndarray, " prompt"]
    other_token_attention: Float[np.ndarray, " prompt"]
    task_mass: Float[np.ndarray, " prompt"]
    sink_mass: Float[np.ndarray, " prompt"]
    role_mass: dict[str, np.ndarray]
    role_mean: dict[str, np.ndarray]
    label_prompt_indices: tuple[int, ...]
    zero_label_mass_indices: tuple[int, ...]
    signal_cos: Float[np.ndarray, " labelled"] | None
    full_cos: Float[np.ndarray, " labelled"]
    weighting_gain: Float[np.ndarray, " labelled"]
    weighted_cos: Float[np.ndarray, " labelled"]
    uniform_cos: Float[np.ndarray, " labelled"]
    weighting_null: Float[np.ndarray, " n_wperm"]
    routing_prompt_indices: tuple[int, ...]
    routing: Float[np.ndarray, " routed"]
    routing_null: Float[np.ndarray, " n_rperm"]
    n_perm: int
    seed: int

    @staticmethod
    def _null(observed: np.ndarray, null: np.ndarray) -> dict[str, Any]:
        if observed.size == 0 or null.size == 0:
            return {"n_perm": int(null.size), "mean": None, "sd": None, "p_value": None}
        obs = float(observed.mean())
        return {
            "n_perm": int(null.size),
            "mean": float(null.mean()),
            "sd": float(null.std(ddof=1)) if null.size > 1 else 0.0,
            "p_value": float((1 + np.sum(null >= obs)) / (1 + null.size)),
        }

    def to_dict(self) -> dict[str, Any]:
        lt, ot = self.label_token_attention, self.other_token_attention
        ratio_of_means = float(lt.mean() / ot.mean()) if lt.size and ot.mean() > 0 else None
        return {
            "head": list(self.head),
            "label_signal": self.label_signal,
            "n_prompts": len(self.prompt_indices),
            "n_zero_label_mass": len(self.zero_label_mass_indices),
            "zero_label_mass_indices": list(self.zero_label_mass_indices),
            "peaking_ratio": summarize(self.peaking_ratio, seed=self.seed),
            "peaking_ratio_of_means": ratio_of_means,
            "label_token_attention": summarize(lt, seed=self.seed),
            "other_token_attention": summarize(ot, seed=self.seed),
            "task_mass": summarize(self.task_mass, seed=self.seed),
            "sink_mass": summarize(self.sink_mass, seed=self.seed),
            "role_mass": {r: summarize(v, seed=self.seed) for r, v in self.role_mass.items()},
            "role_mean": {r: summarize(v, seed=self.seed) for r, v in self.role_mean.items()},
            "signal_cos": None
            if self.signal_cos is None
            else summarize(self.signal_cos, seed=self.seed),
            "full_cos": summarize(self.full_cos, seed=self.seed),
            "routing": summarize(self.routing, seed=self.seed),
            "routing_null": self._null(self.routing, self.routing_null),
            "weighting_gain": summarize(self.weighting_gain, seed=self.seed),
            "weighted_cos": summarize(self.weighted_cos, seed=self.seed),
            "uniform_cos": summarize(self.uniform_cos, seed=self.seed),
            "weighting_null": self._null(self.weighting_gain, self.weighting_null),
            "n_perm": self.n_perm,
            "seed": self.seed,
        }


def label_peaking(
    results: ExtractionResult | Sequence[ExtractionResult],
    directions: Tensor | Sequence[Tensor],
    basis=None,
    *,
    label_signal: str = "last",
    n_perm: int = 30,
    seed: int = 0,
) -> PeakingMetrics:
    """§6.3 metrics over one or several batches of one head (formulas in the module doc).

    ``directions``: h_k per batch ([d_model] or [batch, d_model]); ``basis``: the head's
    orthonormal subspace [d_model, r] for the signal cosine (None skips it). ``label_signal``:
    "last" (the label's last token, as in the paper) or "pooled" (attention-weighted over the
    label's tokens; for digit-split tokenizers). Nulls use ``np.random.default_rng(seed)``.
    """
    if label_signal not in ("last", "pooled"):
        raise AddkError(f"label_signal must be 'last' or 'pooled', got {label_signal!r}")
    if n_perm < 0:
        raise AddkError("n_perm must be ≥ 0")
    rs, ds = _as_lists(results, directions)
    b = None if basis is None else as_basis(basis, rs[0].signals.shape[-1])
    rng = np.random.default_rng(seed)
    idx_all, lt_att, ot_att, ratio, task_m, sink_m = [], [], [], [], [], []
    role_mass: dict[str, list[float]] = {r: [] for r in ROLES}
    role_mean: dict[str, list[float]] = {r: [] for r in ROLES}
    lab_idx, zero_idx, sig_cos, full_cos, gain, wcos, ucos = [], [], [], [], [], [], []
    rout_idx, rout = [], []
    # per labelled prompt: (alpha_i, cos_i, signals_i, direction) kept for the nulls
    kept: list[tuple[np.ndarray, np.ndarray, Tensor, Tensor]] = []
    for r, d in zip(rs, ds):
        groups = r.require_groups()
        s_all = r.contribution_signals.double().cpu()
        alpha_all = r.attention.double().cpu()
        for i in range(r.n_prompts):
            g = groups[i]
            alpha = alpha_all[i]
            roles = [group_role(name) for name in g]
            is_label = torch.tensor([ro == "label" for ro in roles])
            idx_all.append(r.indices[i])
            lt = float(alpha[is_label].mean()) if is_label.any() else 0.0
            ot = float(alpha[~is_label].mean()) if (~is_label).any() else 0.0
            lt_att.append(lt)
            ot_att.append(ot)
            ratio.append(lt / ot if ot > 0 else float("nan"))
            for role in ROLES:
                mask = torch.tensor([ro == role for ro in roles])
                role_mass[role].append(float(alpha[mask].sum()))
                role_mean[role].append(float(alpha[mask].mean()) if mask.any() else float("nan"))
            task_m.append(role_mass["label"][-1])
            sink_m.append(sum(role_mass[ro][-1] for ro in SINK_ROLES))
            slots = label_slots(g)
            if label_signal == "last":
                a_i = torch.stack([alpha[p[-1]] for p in slots])
                s_i = torch.stack([s_all[i, p[-1]] for p in slots])
            else:
                a_i = torch.stack([alpha[p].sum() for p in slots])
                s_i = torch.stack(
                    [
                        (alpha[p, None] * s_all[i, p]).sum(0) / alpha[p].sum()
                        if alpha[p].sum() > 0
                        else s_all[i, p].mean(0)
                        for p in slots
                    ]
                )
            mass = float(a_i.sum())
            if not mass > 0:
                zero_idx.append(r.indices[i])
                continue
            lab_idx.append(r.indices[i])
            h = d[i]
            c_i = _cos(s_i, h[None, :])
            full_cos.append(float(c_i.mean()))
            if b is not None:
                sig_cos.append(float(_cos(s_i @ b, (h @ b)[None, :]).mean()))
            wt = a_i / mass
            w_c = float(_cos((wt[:, None] * s_i).sum(0), h))
            u_c = float(_cos(s_i.mean(0), h))
            wcos.append(w_c)
            ucos.append(u_c)
            gain.append(w_c - u_c)
            a_np, c_np = a_i.numpy(), c_i.numpy()
            kept.append((a_np, c_np, s_i, h))
            rho = pearson(a_np, c_np) if len(slots) >= 2 else None
            if rho is not None:
                rout_idx.append(r.indices[i])
                rout.append(rho)
    routing_null, weighting_null = [], []
    for _ in range(n_perm):
        rhos, gains = [], []
        for a_np, c_np, s_i, h in kept:
            perm = rng.permutation(len(a_np))
            ap = a_np[perm]
            rho = pearson(ap, c_np) if len(a_np) >= 2 else None
            if rho is not None:
                rhos.append(rho)
            wt = torch.from_numpy(ap / ap.sum())
            gains.append(float(_cos((wt[:, None] * s_i).sum(0), h) - _cos(s_i.mean(0), h)))
        if rhos:
            routing_null.append(float(np.mean(rhos)))
        if gains:
            weighting_null.append(float(np.mean(gains)))

    def arr(x) -> np.ndarray:
        return np.asarray(x, dtype=float)

    ratio_arr = arr(ratio)
    return PeakingMetrics(
        head=rs[0].head,
        label_signal=label_signal,
        prompt_indices=tuple(idx_all),
        peaking_ratio=ratio_arr,
        label_token_attention=arr(lt_att),
        other_token_attention=arr(ot_att),
        task_mass=arr(task_m),
        sink_mass=arr(sink_m),
        role_mass={k: arr(v) for k, v in role_mass.items()},
        role_mean={k: arr(v) for k, v in role_mean.items()},
        label_prompt_indices=tuple(lab_idx),
        zero_label_mass_indices=tuple(zero_idx),
        signal_cos=None if b is None else arr(sig_cos),
        full_cos=arr(full_cos),
        weighting_gain=arr(gain),
        weighted_cos=arr(wcos),
        uniform_cos=arr(ucos),
        weighting_null=arr(weighting_null),
        routing_prompt_indices=tuple(rout_idx),
        routing=arr(rout),
        routing_null=arr(routing_null),
        n_perm=int(n_perm),
        seed=int(seed),
    )
