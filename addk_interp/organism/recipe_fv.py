"""Recipe ``fv``: a second model organism, ``organism-fv``, in which the paper's mechanism (a few
middle-layer heads whose mean query output is a transferable function vector with periodic
structure, aggregated over the demonstrations) is present by construction.

What it computes. The same small Llama as :mod:`addk_interp.organism` (4 layers x 8 heads, 2 KV
heads, d_model 128, the number-atomic tokenizer) trained on add-k sequences
``<bos>x1->y1#...xn->yn#`` (k in 1..30, x in 1..100, n in ``pairs_range``) with four losses:

1. ``L_icl``: cross-entropy of every *clean* label ``y_i = x_i + k`` given the previous pairs
   (shots 0..n-1), on all k = 1..30 (the analogue of pre-training; no task vector involved).
   With probability ``corrupt_prob`` one demonstration of the sequence (with
   ``corrupt2_prob`` a second one) carries a wrong label ``x_j + k'`` (k' != k drawn from 1..30)
   and is not a loss target, so the last demonstration alone is not enough: the model must
   aggregate the demonstrations (bar 3).
2. ``L_fv`` (Yang et al. 2025, arXiv 2501.09240, made per-sequence and in-batch): for a query
   position ``q`` ("->" of pair i, with i >= ``fv_min_shots`` demonstrations before it) of a
   sequence of task k, the task vector is the summed output of the planted heads
   ``v = sum_{h in H} z_h(q) W_O^h`` of layer ``planted_layer`` (each head's additive
   contribution to the residual stream). ``v`` is ADDED to the residual stream after that
   layer's attention block, at the last token of a fresh zero-shot prompt ``<bos> x' ->``
   (x' drawn independently of the sequence), and the loss is the cross-entropy of ``x' + k``.
   Gradients flow into the heads (differentiable, same forward pass). A second set uses the
   in-batch per-task mean of those vectors (closer to the evaluation's task mean). Only the
   ``fv_train_ks`` (the paper's 25 train tasks) enter; a config that lists a held-out k
   (2, 16, 20, 21, 27) there is refused.
3. ``L_probe``: the same vectors, read in a fixed ``len(helix features)``-dimensional
   coordinate block of the residual stream (dims ``probe_dims``), are regressed onto the helix
   of the offset, ``A * phi(k)`` with
   ``phi(n) = [cos(pi n), cos(2 pi n/5), sin(2 pi n/5), cos(2 pi n/10), sin(2 pi n/10),
   cos(2 pi n/100), sin(2 pi n/100), cos(2 pi n/1000), sin(2 pi n/1000)]``
   (normalized squared error), again only on ``fv_train_ks``.
4. ``L_extract`` (the paper's §6 extraction at label tokens): the residual stream entering
   ``planted_layer`` at the label token of every demonstration j, read in the same block
   ``probe_dims``, is regressed onto ``A * phi(y_j - x_j)`` (the demonstration's own offset,
   so a wrong label carries its own, wrong offset), for sequences and offsets in
   ``fv_train_ks`` only. The planted heads then only need to attend to the labels and copy
   that block: aggregation = attention-weighted sum of per-label extracted signals.

The number embeddings carry the same helix, planted and frozen: for every integer n in 0..999
the first ``len(phi)`` coordinates of its (tied) embedding row are ``A * phi(n)`` (periods 2, 5,
10 for the unit digit, 100 and 1000 for the magnitude; the period-1000 pair keeps 0..999
distinct), the other coordinates are learned. After every optimizer step those coordinates are
written back. Loss: ``L = L_icl + w_fv(t) (L_fv_seq + L_fv_mean) + w_probe L_probe
+ w_extract L_extract`` with
``w_fv`` ramped linearly from 0 over ``fv_ramp_steps`` after ``fv_start_step``; AdamW with
linear warmup and cosine decay. Everything is a pure function of ``seed`` (data from
``numpy.random.default_rng([seed, step])``, init under ``torch.manual_seed(seed)``), bitwise
reproducible with the same thread count.

:func:`measure_bars` is the independent evaluation (plain Hugging Face forward hooks, seeds of
its own, prompts never used in training): bar 1 5-shot accuracy per k (k = 1..30, every x in
1..100) and 0-shot accuracy; bar 2 the function vector of the planted heads (task mean over
5-shot prompts of the mean query output ``z W_O`` of each head, summed) added after the
attention block of ``planted_layer`` at the last token of ``<bos> x ->``, on the held-out k;
bar 3 5-shot accuracy with one wrong label ``x_j + k'`` at each demonstration position
j = 1..5; bar 4 PCA of the 30 task means of each planted head (PCs for 95% variance) and the
R^2 of the periodic targets cos/sin(2 pi k/T), T in {2, 5, 10}, and of the magnitude k
regressed on the top-6 PC coordinates (as in the paper's ``fit_mod_vectors``).

Which step of the method it serves: it provides a model organism with a known ground truth
(which heads carry the vector, at which layer, which periods are planted; recorded in the
checkpoint's ``manifest.json`` under ``ground_truth``) on which the localization (§3-§4),
subspace (§5) and aggregation (§6) steps can be validated. :func:`load_organism_fv` loads the
shipped checkpoint ``checkpoint_fv/`` verifying the weights' sha256.

Cost: about 0.45 s per step of 64 sequences on one CPU thread (main forward/backward plus
2 x 3-token zero-shot forwards per sequence); the default run takes well under 40 minutes;
:func:`measure_bars` about a minute (~25k short prompts, forward only); loading < 1 s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from torch import Tensor
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from addk_interp.core.errors import AddkError
from addk_interp.core.store import atomic_write_text

from .config import ModelConfig, config_kwargs, config_to_dict, llama_config
from .data import TokenIds, token_ids
from .tokenizer import MAX_NUMBER, build_tokenizer
from .train import lr_at, save_final

__all__ = [
    "CHECKPOINT_FV_DIR",
    "HELDOUT_KS",
    "FVRecipeConfig",
    "FVTrainResult",
    "head_task_means",
    "helix_features",
    "inject_after_attention",
    "load_organism_fv",
    "measure_bars",
    "train_organism_fv",
]

CHECKPOINT_FV_DIR = Path(__file__).parent / "checkpoint_fv"
"""Folder of the shipped ``organism-fv`` checkpoint."""

HELDOUT_KS: tuple[int, ...] = (2, 16, 20, 21, 27)
"""The paper's held-out add-k tasks (``number_add_paper.yaml``)."""

TRAIN_KS: tuple[int, ...] = tuple(k for k in range(1, 31) if k not in HELDOUT_KS)
"""The paper's 25 train add-k tasks."""

MANIFEST_VERSION = 1
BARS_SEED = 918273
"""Seed of :func:`measure_bars`' prompts (independent of any training seed)."""


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class FVRecipeConfig:
    """Every setting of an ``organism-fv`` training run (defaults = the shipped checkpoint)."""

    seed: int = 0
    steps: int = 4500
    batch_size: int = 64
    lr: float = 3e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 150
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.98
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    k_range: tuple[int, int] = (1, 30)
    x_range: tuple[int, int] = (1, 100)
    pairs_range: tuple[int, int] = (8, 11)
    corrupt_prob: float = 0.5
    corrupt2_prob: float = 0.15
    heldout_ks: tuple[int, ...] = HELDOUT_KS
    fv_train_ks: tuple[int, ...] = TRAIN_KS
    planted_layer: int = 1
    planted_heads: tuple[int, ...] = (0, 4)
    helix_periods: tuple[int, ...] = (2, 5, 10, 100, 1000)
    helix_amplitude: float = 0.4
    probe_offset: int = 16
    fv_min_shots: int = 3
    fv_per_seq: int = 2
    fv_weight: float = 1.0
    fv_mean_weight: float = 1.0
    fv_start_step: int = 0
    fv_ramp_steps: int = 300
    probe_weight: float = 1.0
    extract_weight: float = 1.0
    # separator phase: after ``steps``, ``separator_steps`` more steps (fresh AdamW, constant
    # ``separator_lr`` = the cosine floor) in which the separator "#" after every label is a
    # loss target too (few-shot sequences and the zero-shot FV prompt "<bos> x -> y #"), so an
    # answer is followed by a terminator: the toolkit's exact match requires it (a model that
    # continues "36" into "365" is wrong). Separators as targets from the start slowed
    # learning (5-shot 0.24 vs 0.64 at step 1000), hence a phase of its own.
    loss_on_separator: bool = False
    separator_steps: int = 500
    separator_lr: float = 1.5e-4
    model: ModelConfig = field(default_factory=ModelConfig)
    num_threads: int = 1
    log_every: int = 50
    eval_every: int = 500

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.batch_size <= 0:
            raise AddkError("steps and batch_size must be positive")
        if not 0 <= self.warmup_steps <= self.steps:
            raise AddkError(f"warmup_steps must be in [0, steps], got {self.warmup_steps}")
        for name in ("k_range", "x_range", "pairs_range"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise AddkError(f"{name} must satisfy lo <= hi, got {(lo, hi)}")
        lo, hi = self.k_range
        if lo < 1 or self.x_range[0] < 0 or self.x_range[1] + hi > MAX_NUMBER:
            raise AddkError("k_range / x_range leave the vocabulary 0..999 (or k < 1)")
        if self.x_range[1] - self.x_range[0] + 1 < self.pairs_range[1]:
            raise AddkError("x_range has fewer distinct x than pairs_range needs")
        bad = sorted(set(self.fv_train_ks) & set(self.heldout_ks))
        if bad:
            raise AddkError(
                f"fv_train_ks includes held-out k {bad}: held-out tasks must be excluded from "
                "every training signal that involves task vectors (L_fv, L_probe)"
            )
        if not self.fv_train_ks or any(not lo <= k <= hi for k in self.fv_train_ks):
            raise AddkError(f"fv_train_ks must be a non-empty subset of k_range {self.k_range}")
        if not 0 <= self.planted_layer < self.model.n_layers:
            raise AddkError(f"planted_layer must be in 0..{self.model.n_layers - 1}")
        if not 1 <= len(self.planted_heads) <= 4 or len(set(self.planted_heads)) != len(
            self.planted_heads
        ):
            raise AddkError("planted_heads must list 1..4 distinct heads")
        if any(not 0 <= h < self.model.n_heads for h in self.planted_heads):
            raise AddkError(f"planted heads must be in 0..{self.model.n_heads - 1}")
        n_feat = len(helix_feature_names(self.helix_periods))
        if n_feat > self.model.d_model or self.probe_offset + n_feat > self.model.d_model:
            raise AddkError("helix features / probe block do not fit in d_model")
        if self.probe_offset < n_feat:
            raise AddkError("the probe block must not overlap the planted embedding dims")
        if not self.fv_min_shots < self.pairs_range[0]:
            raise AddkError("fv_min_shots must be below the smallest number of pairs")
        if not (0 <= self.corrupt_prob <= 1 and 0 <= self.corrupt2_prob <= 1):
            raise AddkError("corruption probabilities must lie in [0, 1]")
        if 1 + 4 * self.pairs_range[1] > self.model.max_position_embeddings:
            raise AddkError("sequences exceed max_position_embeddings")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FVRecipeConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``AddkError``."""
        kw = config_kwargs(cls, data)
        for name in (f.name for f in dataclasses.fields(cls)):
            if name in kw and isinstance(kw[name], list):
                kw[name] = tuple(kw[name])
        return cls(**kw)

    def sha256(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


# ----------------------------------------------------------------------------- helix


def helix_feature_names(periods: Sequence[int]) -> list[str]:
    """Names of the helix coordinates: period 2 has only a cosine (its sine is 0)."""
    names = []
    for t in periods:
        names.append(f"cos{t}")
        if t != 2:
            names.append(f"sin{t}")
    return names


def helix_features(values: np.ndarray | Sequence[int], periods: Sequence[int]) -> np.ndarray:
    """``phi(n)``: cos/sin(2 pi n / T) for each period T (period 2: cosine only), [n, D]."""
    n = np.asarray(values, dtype=np.float64)[:, None]
    cols = []
    for t in periods:
        cols.append(np.cos(2 * np.pi * n / t))
        if t != 2:
            cols.append(np.sin(2 * np.pi * n / t))
    return np.concatenate(cols, axis=1)


def _planted_rows(config: FVRecipeConfig, ids: TokenIds) -> Tensor:
    vals = np.arange(MAX_NUMBER + 1)
    return torch.tensor(
        config.helix_amplitude * helix_features(vals, config.helix_periods), dtype=torch.float32
    )


@torch.no_grad()
def _write_helix(model: LlamaForCausalLM, config: FVRecipeConfig, rows: Tensor, base: int) -> None:
    emb = model.model.embed_tokens.weight
    emb[base : base + rows.shape[0], : rows.shape[1]] = rows


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class FVBatch:
    tokens: Tensor  # [B, T]
    label_mask: Tensor  # [B, T] clean label targets
    k: Tensor  # [B]
    q_batch: Tensor  # [M] sequence index of each vector query position
    q_pos: Tensor  # [M] position of the "->"
    q_k: Tensor  # [M]
    zs_x: Tensor  # [M] zero-shot x' for the per-position vectors
    mean_ks: Tensor  # [Kb] tasks for the in-batch mean vectors
    mean_x: Tensor  # [Kb] zero-shot x' for the mean vectors
    d_batch: Tensor  # [D] sequence index of each supervised demonstration label
    d_pos: Tensor  # [D] position of its label token
    d_off: Tensor  # [D] its offset y_j - x_j
    n_tokens: int


def make_fv_batch(config: FVRecipeConfig, ids: TokenIds, step: int) -> FVBatch:
    """The training batch of ``step`` (a pure function of ``config.seed`` and ``step``)."""
    rng = np.random.default_rng([config.seed, step])
    bsz = config.batch_size
    seq_len = 1 + 4 * config.pairs_range[1]
    tokens = np.full((bsz, seq_len), ids.pad, dtype=np.int64)
    label_mask = np.zeros((bsz, seq_len), dtype=bool)
    ks = rng.integers(config.k_range[0], config.k_range[1] + 1, size=bsz)
    n_pairs = rng.integers(config.pairs_range[0], config.pairs_range[1] + 1, size=bsz)
    domain = np.arange(config.x_range[0], config.x_range[1] + 1)
    all_k = np.arange(config.k_range[0], config.k_range[1] + 1)
    fv_set = set(config.fv_train_ks)
    qb, qp, qk = [], [], []
    db, dp, do = [], [], []
    n_tok = 0
    for b in range(bsz):
        k, n = int(ks[b]), int(n_pairs[b])
        xs = rng.choice(domain, size=n, replace=False)
        ys = xs + k
        clean = np.ones(n, dtype=bool)
        n_bad = int(rng.random() < config.corrupt_prob) + int(rng.random() < config.corrupt2_prob)
        if n_bad:
            pos = rng.choice(n - 1, size=min(n_bad, n - 1), replace=False)
            for j in pos:
                kk = int(rng.choice(all_k[all_k != k]))
                ys[j] = xs[j] + kk
                clean[j] = False
        row = np.empty(1 + 4 * n, dtype=np.int64)
        row[0] = ids.bos
        row[1::4] = ids.number(xs)
        row[2::4] = ids.arrow
        row[3::4] = ids.number(ys)
        row[4::4] = ids.sep
        tokens[b, : len(row)] = row
        n_tok += len(row)
        label_pos = np.arange(n) * 4 + 3
        label_mask[b, label_pos[clean]] = True
        if config.loss_on_separator:
            label_mask[b, label_pos + 1] = True
        if k in fv_set:
            for j in range(n - 1):  # the last label is followed by no query
                off = int(ys[j] - xs[j])
                if off in fv_set:
                    db.append(b)
                    dp.append(4 * j + 3)
                    do.append(off)
            cand = np.arange(config.fv_min_shots, n)
            pick = rng.choice(cand, size=min(config.fv_per_seq, len(cand)), replace=False)
            for i in np.sort(pick):
                qb.append(b)
                qp.append(4 * int(i) + 2)
                qk.append(k)
    zs_x = rng.integers(config.x_range[0], config.x_range[1] + 1, size=len(qb))
    mean_ks = np.array(sorted(set(qk)), dtype=np.int64)
    mean_x = rng.integers(config.x_range[0], config.x_range[1] + 1, size=len(mean_ks))
    return FVBatch(
        tokens=torch.from_numpy(tokens),
        label_mask=torch.from_numpy(label_mask),
        k=torch.from_numpy(ks.astype(np.int64)),
        q_batch=torch.tensor(qb, dtype=torch.long),
        q_pos=torch.tensor(qp, dtype=torch.long),
        q_k=torch.tensor(qk, dtype=torch.long),
        zs_x=torch.from_numpy(zs_x.astype(np.int64)),
        mean_ks=torch.from_numpy(mean_ks),
        mean_x=torch.from_numpy(mean_x.astype(np.int64)),
        d_batch=torch.tensor(db, dtype=torch.long),
        d_pos=torch.tensor(dp, dtype=torch.long),
        d_off=torch.tensor(do, dtype=torch.long),
        n_tokens=n_tok,
    )


# ----------------------------------------------------------------------------- hooks


@contextlib.contextmanager
def capture_head_inputs(model: LlamaForCausalLM, layer: int) -> Iterator[dict[str, Tensor]]:
    """Capture the input of ``layers[layer].self_attn.o_proj`` (the concatenated per-head
    ``z``, [batch, pos, n_heads * d_head]) into ``store["z"]`` (graph kept)."""
    store: dict[str, Tensor] = {}

    def pre_hook(_mod, args):
        store["z"] = args[0]

    handle = model.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(pre_hook)
    try:
        yield store
    finally:
        handle.remove()


def heads_output(
    model: LlamaForCausalLM, layer: int, z: Tensor, heads: Sequence[int]
) -> Tensor:
    """Per-head additive contributions ``z_h W_O^h`` of ``heads``: [..., len(heads), d_model]."""
    w = model.model.layers[layer].self_attn.o_proj.weight  # [d_model, n_heads * d_head]
    d_head = model.config.head_dim
    outs = [z[..., h * d_head : (h + 1) * d_head] @ w[:, h * d_head : (h + 1) * d_head].T for h in heads]
    return torch.stack(outs, dim=-2)


@contextlib.contextmanager
def inject_after_attention(
    model: LlamaForCausalLM, layer: int, vectors: Tensor, pos: int = -1
) -> Iterator[None]:
    """ADD ``vectors`` ([batch, d_model] or [d_model]) to the residual stream right after the
    attention block of ``layer`` (Llama: ``h = resid + self_attn(...)``, so adding to the
    attention output adds to the residual) at position ``pos`` of every prompt."""

    def hook(_mod, _args, output):
        out = output[0]
        mask = torch.zeros(out.shape[1], 1, dtype=out.dtype)
        mask[pos] = 1.0
        v = vectors if vectors.ndim == 2 else vectors[None]
        out = out + mask[None] * v[:, None, :].to(out.dtype)
        return (out, *output[1:])

    handle = model.model.layers[layer].self_attn.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# ----------------------------------------------------------------------------- training


def _train_step(
    model: LlamaForCausalLM,
    opt: torch.optim.AdamW,
    config: FVRecipeConfig,
    batch_config: FVRecipeConfig,
    ids: TokenIds,
    step: int,
    helix_k: Tensor,
    rows: Tensor,
    w_fv: float,
    acc: dict[str, list[float]],
) -> float:
    """One optimizer step on the batch of ``step`` (drawn with ``batch_config``); the helix is
    written back afterwards; the step's losses are appended to ``acc``. Returns seconds."""
    t0 = time.perf_counter()
    batch = make_fv_batch(batch_config, ids, step)
    loss, stats = _losses(model, batch_config, ids, batch, helix_k, w_fv)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    opt.step()
    _write_helix(model, config, rows, ids.number_base)
    for key, val in stats.items():
        acc.setdefault(key, []).append(val)
    return time.perf_counter() - t0


def _adamw(model: LlamaForCausalLM, config: FVRecipeConfig, lr: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (both training phases)."""
    decay = [p for _, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for _, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(config.beta1, config.beta2), eps=config.adam_eps, foreach=False,
    )


def _fv_weight_at(config: FVRecipeConfig, step: int) -> float:
    if step <= config.fv_start_step:
        return 0.0
    if config.fv_ramp_steps <= 0:
        return 1.0
    return min(1.0, (step - config.fv_start_step) / config.fv_ramp_steps)


def build_model_fv(config: FVRecipeConfig, tok: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """Freshly initialized organism with the helix planted (deterministic in ``seed``)."""
    hf_config = llama_config(
        config.model,
        vocab_size=len(tok),
        bos_id=tok.bos_token_id,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(hf_config).float()
    ids = token_ids(tok)
    _write_helix(model, config, _planted_rows(config, ids), ids.number_base)
    return model


def _zero_shot_tokens(ids: TokenIds, xs: Tensor) -> Tensor:
    n = xs.shape[0]
    t = torch.empty(n, 3, dtype=torch.long)
    t[:, 0] = ids.bos
    t[:, 1] = ids.number_base + xs
    t[:, 2] = ids.arrow
    return t


def _losses(
    model: LlamaForCausalLM, config: FVRecipeConfig, ids: TokenIds, batch: FVBatch,
    helix_k: Tensor, w_fv: float,
) -> tuple[Tensor, dict[str, float]]:
    length = int(batch.label_mask.nonzero()[:, 1].max()) + 1
    tokens = batch.tokens[:, :length]
    layer = config.planted_layer
    resid: dict[str, Tensor] = {}

    def grab(_mod, args, kwargs):
        resid["pre"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    handle = model.model.layers[layer].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with capture_head_inputs(model, layer) as store:
            hidden = model.model(input_ids=tokens).last_hidden_state
    finally:
        handle.remove()
    lm = batch.label_mask[:, 1:length]
    h = hidden[:, :-1][lm]
    targets = tokens[:, 1:][lm]
    logits = model.lm_head(h)
    l_icl = torch.nn.functional.cross_entropy(logits, targets)
    stats = {"icl": float(l_icl.detach()), "icl_acc": float((logits.argmax(-1) == targets).float().mean())}
    loss = l_icl
    n_feat = helix_k.shape[1]
    sl = slice(config.probe_offset, config.probe_offset + n_feat)
    if config.extract_weight > 0 and batch.d_batch.numel():
        r = resid["pre"][batch.d_batch, batch.d_pos, sl]
        tgt = helix_k[batch.d_off]
        l_ext = ((r - tgt) ** 2).sum(-1).mean() / (tgt**2).sum(-1).mean()
        loss = loss + config.extract_weight * l_ext
        stats["extract"] = float(l_ext.detach())
    if batch.q_batch.numel():
        z = store["z"][batch.q_batch, batch.q_pos]  # [M, n_heads * d_head]
        v = heads_output(model, layer, z, config.planted_heads).sum(-2)  # [M, d_model]
        if config.probe_weight > 0:
            tgt = helix_k[batch.q_k]
            block = v[:, sl]
            l_probe = ((block - tgt) ** 2).sum(-1).mean() / (tgt**2).sum(-1).mean()
            loss = loss + config.probe_weight * l_probe
            stats["probe"] = float(l_probe.detach())
        if w_fv > 0:
            zs = _zero_shot_tokens(ids, batch.zs_x)
            vecs = [v]
            xs = [batch.zs_x]
            ks = [batch.q_k]
            weights = [config.fv_weight]
            if config.fv_mean_weight > 0:
                onehot = (batch.q_k[None, :] == batch.mean_ks[:, None]).float()
                vm = (onehot @ v) / onehot.sum(1, keepdim=True)
                vecs.append(vm)
                xs.append(batch.mean_x)
                ks.append(batch.mean_ks)
                weights.append(config.fv_mean_weight)
            n_seq = v.shape[0]
            zs = _zero_shot_tokens(ids, torch.cat(xs))
            tz = ids.number_base + torch.cat(xs) + torch.cat(ks)
            if config.loss_on_separator:  # "<bos> x -> y": predict y at "->", then "#"
                zs = torch.cat([zs, tz[:, None]], dim=1)
            with inject_after_attention(model, layer, torch.cat(vecs), pos=2):
                hall = model.model(input_ids=zs).last_hidden_state
            lz = model.lm_head(hall[:, 2])
            ce = torch.nn.functional.cross_entropy(lz, tz, reduction="none")
            if config.loss_on_separator:
                ls = model.lm_head(hall[:, 3])
                sep = torch.full_like(tz, ids.sep)
                ce = ce + torch.nn.functional.cross_entropy(ls, sep, reduction="none")
            l_fv = ce[:n_seq].mean()
            loss = loss + w_fv * weights[0] * l_fv
            stats["fv"] = float(l_fv.detach())
            stats["fv_acc"] = float((lz[:n_seq].argmax(-1) == tz[:n_seq]).float().mean())
            if len(vecs) > 1:
                l_fvm = ce[n_seq:].mean()
                loss = loss + w_fv * weights[1] * l_fvm
                stats["fv_mean"] = float(l_fvm.detach())
    stats["loss"] = float(loss.detach())
    return loss, stats


@dataclass(frozen=True)
class FVTrainResult:
    out_dir: Path
    wall_time_s: float
    train_time_s: float
    bars: dict[str, Any]
    weights_sha256: str
    history: list[dict[str, Any]]


def train_organism_fv(
    out_dir: str | Path,
    config: FVRecipeConfig | None = None,
    verbose: bool = True,
    eval_sizes: dict[str, int] | None = None,
    log_file: str | Path | None = None,
) -> FVTrainResult:
    """Train ``organism-fv`` into ``out_dir`` (model.safetensors, config.json, tokenizer files,
    loss_curve.json and manifest.json with config, weights sha256, wall time, the four bars
    measured by :func:`measure_bars` and the ``ground_truth`` block).

    ``eval_sizes`` overrides :func:`measure_bars`' sample sizes (tests use small ones).

    Raises:
        ValueError: on a bad config (e.g. held-out k among ``fv_train_ks``) or if ``out_dir``
            already holds a checkpoint trained with another config.
    """
    config = config if config is not None else FVRecipeConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    man = out_dir / "manifest.json"
    if man.is_file() and json.loads(man.read_text()).get("config_sha256") != config.sha256():
        raise AddkError(f"{out_dir} already holds an organism trained with a different config")
    prev = torch.get_num_threads()
    torch.set_num_threads(config.num_threads)
    try:
        return _train(out_dir, config, verbose, eval_sizes or {}, log_file)
    finally:
        torch.set_num_threads(prev)


def _log(msg: str, verbose: bool, log_file: str | Path | None) -> None:
    if verbose:
        print(msg, flush=True)
    if log_file is not None:
        with open(log_file, "a") as f:
            f.write(msg + "\n")


def finish_from_main_phase(
    main_phase_dir: str | Path,
    out_dir: str | Path,
    config: FVRecipeConfig | None = None,
    verbose: bool = True,
    log_file: str | Path | None = None,
) -> FVTrainResult:
    """Run only the separator phase from the saved weights of a finished main phase (a
    checkpoint trained with ``separator_steps = 0`` and otherwise the same config, verified by
    its manifest). The separator phase starts a fresh optimizer, so this equals the tail of
    ``train_organism_fv`` exactly when the main phase reproduces those weights."""
    config = config if config is not None else FVRecipeConfig()
    src = json.loads((Path(main_phase_dir) / "manifest.json").read_text())
    want = dataclasses.replace(
        config, separator_steps=0, separator_lr=FVRecipeConfig.separator_lr
    ).to_dict()
    got = dict(src["config"])
    got.setdefault("separator_steps", 0)
    got.setdefault("separator_lr", FVRecipeConfig.separator_lr)
    got.setdefault("loss_on_separator", False)
    if got != want:
        diff = sorted(k for k in want if got.get(k) != want[k])
        raise AddkError(f"{main_phase_dir} was trained with another main-phase config: {diff}")
    from safetensors.torch import load_file

    state = load_file(str(Path(main_phase_dir) / "model.safetensors"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prev = torch.get_num_threads()
    torch.set_num_threads(config.num_threads)
    try:
        res = _train(out_dir, config, verbose, {}, log_file, init_state=state)
    finally:
        torch.set_num_threads(prev)
    man = json.loads((out_dir / "manifest.json").read_text())
    man["main_phase"] = {
        "from": "weights of a main-phase run (separator_steps = 0)",
        "weights_sha256": src["weights"]["sha256"],
        "wall_time_s": src.get("wall_time_s"),
        "train_wall_time_s": src.get("train_wall_time_s"),
    }
    man["phase_wall_time_s"]["main"] = src.get("train_wall_time_s")
    atomic_write_text(out_dir / "manifest.json", json.dumps(man, indent=2) + "\n")
    return res


def _train(
    out_dir: Path, config: FVRecipeConfig, verbose: bool, eval_sizes: dict[str, int],
    log_file: str | Path | None, init_state: dict[str, Tensor] | None = None,
) -> FVTrainResult:
    t_wall = time.perf_counter()
    tok = build_tokenizer()
    ids = token_ids(tok)
    model = build_model_fv(config, tok)
    model.train()
    rows = _planted_rows(config, ids)
    helix_k = torch.zeros(config.k_range[1] + 1, rows.shape[1])
    helix_k[1:] = torch.tensor(
        config.helix_amplitude
        * helix_features(np.arange(1, config.k_range[1] + 1), config.helix_periods),
        dtype=torch.float32,
    )
    opt = _adamw(model, config, lr_at(config, 1))
    history: list[dict[str, Any]] = []
    acc: dict[str, list[float]] = {}
    t_train = 0.0
    if init_state is not None:  # phase 1 already done (its weights given): separator phase only
        missing, unexpected = model.load_state_dict(init_state, strict=False)
        if unexpected or any(k != "lm_head.weight" for k in missing):  # lm_head is tied
            raise AddkError(f"main-phase weights do not fit: {missing} {unexpected}")
    for step in range(1, config.steps + 1 if init_state is None else 1):
        lr = lr_at(config, step)
        for g in opt.param_groups:
            g["lr"] = lr
        w_fv = _fv_weight_at(config, step)
        t_train += _train_step(model, opt, config, config, ids, step, helix_k, rows, w_fv, acc)
        if step % config.log_every == 0 or step == config.steps:
            rec = {"step": step, "lr": lr, "w_fv": w_fv}
            rec.update({k: float(np.mean(v)) for k, v in acc.items()})
            acc = {}
            history.append(rec)
            _log(
                f"step {step} t={time.perf_counter() - t_wall:.0f}s "
                + " ".join(f"{k}={v:.3f}" for k, v in rec.items() if k not in ("step",)),
                verbose, log_file,
            )
        if step % config.eval_every == 0 and step < config.steps:
            model.eval()
            quick = measure_bars(
                model, tok, layer=config.planted_layer, heads=config.planted_heads,
                x_per_k=10, n_mean_prompts=20, corrupt_x_per_k=10, seed=BARS_SEED + 1,
            )
            model.train()
            _log(f"eval step {step}: {json.dumps(_short(quick))}", verbose, log_file)
    phase1_wall = time.perf_counter() - t_wall
    t_sep = time.perf_counter()
    t_train += separator_phase(model, config, tok, helix_k, rows, history, verbose, log_file)
    phase2_wall = time.perf_counter() - t_sep
    train_wall = time.perf_counter() - t_wall
    model.eval()
    bars = measure_bars(model, tok, layer=config.planted_layer, heads=config.planted_heads,
                        **eval_sizes)
    _log(f"final bars: {json.dumps(_short(bars))}", verbose, log_file)
    digest = save_final(out_dir, model, tok)
    wall = time.perf_counter() - t_wall
    atomic_write_text(out_dir / "loss_curve.json", json.dumps(history) + "\n")
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "kind": "addk-interp model organism (recipe fv)",
        "architecture": "LlamaForCausalLM",
        "recipe": "fv",
        "config": config.to_dict(),
        "config_sha256": config.sha256(),
        "data_seed": config.seed,
        "bars_seed": BARS_SEED,
        "steps": config.steps,
        "wall_time_s": round(wall, 2),
        "train_wall_time_s": round(train_wall, 2),
        "train_step_time_s": round(t_train, 2),
        "phase_wall_time_s": {
            "main": None if init_state is not None else round(phase1_wall, 2),
            "separator": round(phase2_wall, 2),
        },
        "num_threads": config.num_threads,
        "final_loss": history[-1]["loss"] if history else None,
        "bars": bars,
        "ground_truth": ground_truth(config),
        "n_params": sum(p.numel() for p in model.parameters()),
        "weights": {"file": "model.safetensors", "sha256": digest, "dtype": "float32"},
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }
    atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return FVTrainResult(out_dir, wall, t_train, bars, digest, history)


def separator_phase(
    model: LlamaForCausalLM,
    config: FVRecipeConfig,
    tok: PreTrainedTokenizerBase,
    helix_k: Tensor,
    rows: Tensor,
    history: list[dict[str, Any]],
    verbose: bool,
    log_file: str | Path | None,
) -> float:
    """The separator phase (see ``FVRecipeConfig.separator_steps``); returns step seconds."""
    if config.separator_steps <= 0:
        return 0.0
    ids = token_ids(tok)
    sep_cfg = dataclasses.replace(config, loss_on_separator=True)
    model.train()
    opt = _adamw(model, config, config.separator_lr)
    acc: dict[str, list[float]] = {}
    t_train = 0.0
    for i in range(1, config.separator_steps + 1):
        step = config.steps + i
        t_train += _train_step(model, opt, config, sep_cfg, ids, step, helix_k, rows, 1.0, acc)
        if i % config.log_every == 0 or i == config.separator_steps:
            rec = {"step": step, "lr": config.separator_lr, "w_fv": 1.0, "phase": "separator"}
            rec.update({k: float(np.mean(v)) for k, v in acc.items()})
            acc = {}
            history.append(rec)
            _log(
                f"step {step} (separator phase) "
                + " ".join(f"{k}={v:.3f}" for k, v in rec.items() if isinstance(v, float)),
                verbose, log_file,
            )
    return t_train


def ground_truth(config: FVRecipeConfig) -> dict[str, Any]:
    """What was planted, by construction (recorded in the manifest)."""
    names = helix_feature_names(config.helix_periods)
    return {
        "fv_heads": [[config.planted_layer, h] for h in config.planted_heads],
        "fv_layer": config.planted_layer,
        "injection_site": (
            f"residual stream after the attention block of layer {config.planted_layer} "
            f"(model.model.layers[{config.planted_layer}].self_attn output), last token of "
            "'<bos> x ->'"
        ),
        "fv_definition": "sum over fv_heads of the mean (over 5-shot prompts of task k) of "
        "z_h W_O^h at the final '->' token",
        "number_embedding_helix": {
            "periods": list(config.helix_periods),
            "features": names,
            "dims": list(range(len(names))),
            "amplitude": config.helix_amplitude,
            "rule": "embed_tokens.weight[number n, dims] = amplitude * phi(n), frozen; "
            "tied to lm_head",
        },
        "task_vector_probe": {
            "dims": list(range(config.probe_offset, config.probe_offset + len(names))),
            "target": "amplitude * phi(k) (helix of the offset k) for the summed fv_heads "
            "output, trained on fv_train_ks only",
        },
        "extraction": {
            "dims": list(range(config.probe_offset, config.probe_offset + len(names))),
            "site": f"residual stream entering layer {config.planted_layer} at each "
            "demonstration's label token",
            "target": "amplitude * phi(y_j - x_j) (that demonstration's own offset), trained "
            "on fv_train_ks only" if config.extract_weight > 0 else "not trained",
        },
        "fv_train_ks": list(config.fv_train_ks),
        "heldout_ks": list(config.heldout_ks),
        "aggregation": f"label noise: one wrong demo label with p={config.corrupt_prob}, "
        f"a second with p={config.corrupt2_prob}, wrong labels are not loss targets",
    }


# ----------------------------------------------------------------------------- evaluation


def _five_shot_prompts(
    ids: TokenIds, ks: Sequence[int], xq_per_k: np.ndarray | None, x_per_k: int,
    rng: np.random.Generator, shots: int = 5, x_range: tuple[int, int] = (1, 100),
    corrupt_pos: int | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fixed-length prompts; returns tokens [N, 4*shots+3], answers, k, xq."""
    domain = np.arange(x_range[0], x_range[1] + 1)
    all_k = np.arange(1, 31)
    rows, ans, kk, xx = [], [], [], []
    for k in ks:
        xq_all = domain if x_per_k >= len(domain) else rng.choice(domain, x_per_k, replace=False)
        for xq in xq_all:
            demo = rng.choice(domain[domain != xq], size=shots, replace=False)
            row = [ids.bos]
            for j, x in enumerate(demo):
                y = int(x) + k
                if corrupt_pos is not None and j == corrupt_pos:
                    y = int(x) + int(rng.choice(all_k[all_k != k]))
                row += [ids.number_base + int(x), ids.arrow, ids.number_base + y, ids.sep]
            row += [ids.number_base + int(xq), ids.arrow]
            rows.append(row)
            ans.append(ids.number_base + int(xq) + k)
            kk.append(k)
            xx.append(int(xq))
    return (torch.tensor(rows), torch.tensor(ans), torch.tensor(kk), torch.tensor(xx))


@torch.inference_mode()
def _predict(model: LlamaForCausalLM, tokens: Tensor, chunk: int = 1000) -> Tensor:
    out = []
    for i in range(0, tokens.shape[0], chunk):
        h = model.model(input_ids=tokens[i : i + chunk]).last_hidden_state[:, -1]
        out.append(model.lm_head(h).argmax(-1))
    return torch.cat(out)


@torch.inference_mode()
def head_task_means(
    model: LlamaForCausalLM,
    tok_or_ids: PreTrainedTokenizerBase | TokenIds,
    layer: int,
    heads: Sequence[int],
    ks: Sequence[int] = tuple(range(1, 31)),
    n_prompts: int = 100,
    seed: int = BARS_SEED,
    shots: int = 5,
) -> Tensor:
    """Task means of each head's query-position output ``z_h W_O^h`` over ``n_prompts``
    ``shots``-shot prompts of each task k: [len(ks), len(heads), d_model]."""
    ids = tok_or_ids if isinstance(tok_or_ids, TokenIds) else token_ids(tok_or_ids)
    rng = np.random.default_rng([seed, 1])
    tokens, _, kk, _ = _five_shot_prompts(ids, ks, None, n_prompts, rng, shots=shots)
    outs = []
    for i in range(0, tokens.shape[0], 1000):
        with capture_head_inputs(model, layer) as store:
            model.model(input_ids=tokens[i : i + 1000])
        outs.append(heads_output(model, layer, store["z"][:, -1], heads))
    o = torch.cat(outs)
    return torch.stack([o[kk == k].mean(0) for k in ks])


def _periodic_fit(means: np.ndarray, ks: np.ndarray, n_pcs: int = 6) -> dict[str, Any]:
    """PCA of task means [K, d] (centered over tasks) and R^2 of periodic targets of k regressed
    (with intercept) on the top-``n_pcs`` PC coordinates."""
    x = means - means.mean(0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    var = s**2 / (s**2).sum()
    cum = np.cumsum(var)
    n95 = int(np.searchsorted(cum, 0.95, side="left") + 1)
    coords = x @ vt[:n_pcs].T
    design = np.concatenate([coords, np.ones((len(ks), 1))], axis=1)
    targets = {
        "cos2": np.cos(np.pi * ks),
        "cos5": np.cos(2 * np.pi * ks / 5),
        "sin5": np.sin(2 * np.pi * ks / 5),
        "cos10": np.cos(2 * np.pi * ks / 10),
        "sin10": np.sin(2 * np.pi * ks / 10),
        "magnitude_k": ks.astype(np.float64),
    }
    r2 = {}
    for name, y in targets.items():
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        res = y - design @ coef
        r2[name] = float(1 - (res**2).sum() / ((y - y.mean()) ** 2).sum())
    # Shuffled-k control: the same regression with the targets of a permuted k.
    perm = np.random.default_rng(0).permutation(len(ks))
    ctrl = []
    for y in targets.values():
        yp = y[perm]
        coef, *_ = np.linalg.lstsq(design, yp, rcond=None)
        res = yp - design @ coef
        ctrl.append(float(1 - (res**2).sum() / ((yp - yp.mean()) ** 2).sum()))
    return {
        "pcs_for_95pct": n95,
        "explained_variance_top8": [round(float(v), 4) for v in var[:8]],
        "r2_on_top6_pcs": r2,
        "r2_shuffled_k_control_mean": float(np.mean(ctrl)),
    }


@torch.inference_mode()
def measure_bars(
    model: LlamaForCausalLM,
    tok: PreTrainedTokenizerBase | TokenIds,
    layer: int = 1,
    heads: Sequence[int] = (0, 4),
    heldout_ks: Sequence[int] = HELDOUT_KS,
    x_per_k: int = 100,
    n_mean_prompts: int = 100,
    corrupt_x_per_k: int = 100,
    seed: int = BARS_SEED,
) -> dict[str, Any]:
    """The four bars, measured with plain Hugging Face forward hooks on fresh seeded prompts.

    - bar1: 5-shot accuracy per k = 1..30 (``x_per_k`` queries, 100 = every x in 1..100, five
      distinct demonstration x != query) and 0-shot accuracy ``<bos> x ->`` (same grid).
    - bar2: for each k, FV_k = sum over ``heads`` of the task mean (``n_mean_prompts`` 5-shot
      prompts, their own seed) of ``z_h W_O^h`` at the last token; added after the attention
      block of ``layer`` at the last token of ``<bos> x ->``; accuracy of ``x + k`` on every x
      of the grid; ratio to the 5-shot accuracy on the held-out k (also reported for the train
      k and per head count).
    - bar3: 5-shot accuracy when the label of demonstration j (1..5) is ``x_j + k'`` with k'
      != k drawn from 1..30 (``corrupt_x_per_k`` queries per k); the min over j is the bar.
    - bar4: per planted head and for their sum, PCA of the 30 task means and periodic R^2.
    """
    ids = tok if isinstance(tok, TokenIds) else token_ids(tok)
    was_training = model.training
    model.eval()
    try:
        ks = list(range(1, 31))
        out: dict[str, Any] = {"seed": seed, "layer": layer, "heads": list(heads)}
        # bar 1
        rng = np.random.default_rng([seed, 0])
        t5, a5, k5, _ = _five_shot_prompts(ids, ks, None, x_per_k, rng)
        c5 = (_predict(model, t5) == a5).float()
        by_k = {k: float(c5[k5 == k].mean()) for k in ks}
        xq = torch.arange(1, 101) if x_per_k >= 100 else None
        grid_x = xq if xq is not None else torch.tensor(
            np.random.default_rng([seed, 2]).choice(np.arange(1, 101), x_per_k, replace=False)
        )
        zs = _zero_shot_tokens(ids, grid_x)
        pred0 = _predict(model, zs)
        zero = float(np.mean([(pred0 == ids.number_base + grid_x + k).float().mean() for k in ks]))
        out["bar1"] = {
            "five_shot_mean": float(c5.mean()),
            "five_shot_min_over_k": min(by_k.values()),
            "five_shot_by_k": {str(k): v for k, v in by_k.items()},
            "zero_shot": zero,
            "pass": bool(min(by_k.values()) >= 0.95 and zero <= 0.10),
        }
        # bar 2 (and task means for bar 4)
        means = head_task_means(model, ids, layer, heads, ks, n_mean_prompts, seed=seed + 7)
        fv_acc: dict[int, float] = {}
        for i, k in enumerate(ks):
            v = means[i].sum(0)
            with inject_after_attention(model, layer, v, pos=-1):
                pred = _predict(model, zs)
            fv_acc[k] = float((pred == ids.number_base + grid_x + k).float().mean())
        held = [k for k in ks if k in heldout_ks]
        train = [k for k in ks if k not in heldout_ks]
        fv_held = float(np.mean([fv_acc[k] for k in held]))
        five_held = float(np.mean([by_k[k] for k in held]))
        # single heads
        single = {}
        for j, h in enumerate(heads):
            accs = []
            for k in held:
                with inject_after_attention(model, layer, means[ks.index(k), j], pos=-1):
                    pred = _predict(model, zs)
                accs.append(float((pred == ids.number_base + grid_x + k).float().mean()))
            single[f"L{layer}H{h}"] = float(np.mean(accs))
        out["bar2"] = {
            "fv_heldout": fv_held,
            "five_shot_heldout": five_held,
            "ratio_heldout": fv_held / max(five_held, 1e-9),
            "fv_by_k": {str(k): v for k, v in fv_acc.items()},
            "fv_train_mean": float(np.mean([fv_acc[k] for k in train])),
            "fv_heldout_single_head": single,
            "n_heads": len(heads),
            "pass": bool(fv_held >= 0.8 * five_held and len(heads) <= 4),
        }
        # bar 3
        per_pos = {}
        for j in range(5):
            rngc = np.random.default_rng([seed, 10 + j])
            tc, ac, _, _ = _five_shot_prompts(ids, ks, None, corrupt_x_per_k, rngc, corrupt_pos=j)
            per_pos[str(j + 1)] = float((_predict(model, tc) == ac).float().mean())
        out["bar3"] = {
            "wrong_label_accuracy_by_position": per_pos,
            "min_over_positions": min(per_pos.values()),
            "pass": bool(min(per_pos.values()) >= 0.8),
        }
        # bar 4
        karr = np.array(ks)
        m = means.double().numpy()
        fits = {f"L{layer}H{h}": _periodic_fit(m[:, j], karr) for j, h in enumerate(heads)}
        fits["sum"] = _periodic_fit(m.sum(1), karr)
        periodic = ("cos2", "cos5", "sin5", "cos10", "sin10")
        ok = all(
            f["pcs_for_95pct"] >= 3 and np.mean([f["r2_on_top6_pcs"][p] for p in periodic]) >= 0.8
            for f in fits.values()
        )
        out["bar4"] = {"fits": fits, "pass": bool(ok)}
        out["all_pass"] = bool(all(out[b]["pass"] for b in ("bar1", "bar2", "bar3", "bar4")))
        return out
    finally:
        model.train(was_training)


def _short(b: dict[str, Any]) -> dict[str, Any]:
    f = b["bar4"]["fits"]["sum"]
    return {
        "5shot": round(b["bar1"]["five_shot_mean"], 3),
        "5shot_min_k": round(b["bar1"]["five_shot_min_over_k"], 3),
        "0shot": round(b["bar1"]["zero_shot"], 3),
        "fv_held": round(b["bar2"]["fv_heldout"], 3),
        "fv_ratio": round(b["bar2"]["ratio_heldout"], 3),
        "fv_train": round(b["bar2"]["fv_train_mean"], 3),
        "fv_single": {k: round(v, 3) for k, v in b["bar2"]["fv_heldout_single_head"].items()},
        "wrong_min": round(b["bar3"]["min_over_positions"], 3),
        "wrong_by_pos": {k: round(v, 3) for k, v in
                         b["bar3"]["wrong_label_accuracy_by_position"].items()},
        "pcs95_sum": f["pcs_for_95pct"],
        "r2_sum": {k: round(v, 2) for k, v in f["r2_on_top6_pcs"].items()},
        "all_pass": b["all_pass"],
    }


# ----------------------------------------------------------------------------- loading


def load_organism_fv(
    checkpoint_dir: str | Path = CHECKPOINT_FV_DIR,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "eager",
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """Load ``organism-fv`` (eval mode) and its tokenizer, verifying the weights' sha256.

    Raises:
        FileNotFoundError: if the checkpoint (manifest or weights) is missing.
        ValueError: if the weights do not match the manifest's sha256.
    """
    from .loading import load_checkpoint

    return load_checkpoint(
        checkpoint_dir, dtype, attn_implementation, "organism-fv", _HOW_TO_TRAIN
    )


_HOW_TO_TRAIN = "`addk-interp train-organism --recipe fv --out DIR`"


def load_manifest_fv(checkpoint_dir: str | Path = CHECKPOINT_FV_DIR) -> dict[str, Any]:
    """The ``organism-fv`` checkpoint's manifest (config, bars, ground truth, sha256)."""
    from .loading import load_manifest

    return load_manifest(checkpoint_dir, "organism-fv", _HOW_TO_TRAIN)


def ground_truth_of(model) -> dict | None:
    """The planted mechanism of a model that has one (``organism-fv``), else None."""
    if model.info.source.get("kind") != "organism-fv":
        return None
    from addk_interp.core.heads import Head, head_str

    gt = load_manifest_fv()["ground_truth"]
    heads = [Head(int(a), int(b)) for a, b in gt["fv_heads"]]
    for h in heads:
        h.check(model.n_layers, model.n_heads)
    return {
        "planted_heads": [head_str(h) for h in heads],
        "layer": int(gt["fv_layer"]),
        "probe_dims": list(gt["task_vector_probe"]["dims"]),
        "planted_periods": list(gt["number_embedding_helix"]["periods"]),
        "source": "organism-fv checkpoint manifest (ground_truth)",
    }
