"""Scoring: teacher-forced exact match with a terminator check, and a greedy reference.

Step of the method: docs/method.md §1.5, with its leniencies fixed. One forward over
``prompt + answer`` gives logits at positions P-1 .. P+A-1 only. An example is correct iff the
argmax at every answer position is the answer token (multi-token answers included) AND the
argmax after the answer does not continue it (its text does not start with a letter or digit),
so "36" is not credited when the model would go on to "365". This equals greedy decoding of A+1
tokens (``greedy_decode``, the reference, which re-runs the whole sequence each step and keeps
every hook at its original absolute position). Also: summed answer log-probability, first-token
probability, and per task × shots accuracy tables with bootstrap confidence intervals.

Cost: one forward per batch, logits at A+1 positions only (vs A+1 forwards for decoding).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from addk_interp.core.errors import AddkError
from addk_interp.core.prompts import PromptBatch, encode_examples, make_batches
from addk_interp.core.tasks import Example, PromptFormat

# per-model cache of continuation_mask (the vocabulary scan costs ~1 s on a 262k vocabulary)
_CONTINUES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

HooksFn = Callable[[PromptBatch], Sequence[tuple[str, Callable]]]


def continuation_mask(model) -> Bool[Tensor, " vocab"]:
    """True for tokens whose text would continue an answer (starts with a letter or digit)."""
    cached = _CONTINUES.get(model)
    if cached is not None:
        return cached
    tok = model.tokenizer
    n = max(model.info.d_vocab, len(tok))
    texts = tok.batch_decode([[i] for i in range(len(tok))], skip_special_tokens=True)
    mask = torch.zeros(n, dtype=torch.bool)
    special = set(tok.all_special_ids)
    for i, t in enumerate(texts):
        if i not in special and t and t[0].isalnum():
            mask[i] = True
    _CONTINUES[model] = mask
    return mask


@dataclass
class BatchScores:
    correct: Bool[Tensor, " batch"]
    match: Bool[Tensor, " batch"]
    terminated: Bool[Tensor, " batch"]
    answer_logprob: Float[Tensor, " batch"]
    first_token_prob: Float[Tensor, " batch"]
    pred: Int[Tensor, "batch n"]


def scores_from_logits(
    model, logits: Float[Tensor, "batch n vocab"], answer_ids: Int[Tensor, "batch answer"]
) -> BatchScores:
    a = answer_ids.shape[1]
    logits = logits.float()
    logp = torch.log_softmax(logits[:, :a], dim=-1)
    ans_lp = logp.gather(-1, answer_ids.unsqueeze(-1)).squeeze(-1)
    pred = logits.argmax(-1)
    match = (pred[:, :a] == answer_ids).all(-1)
    terminated = ~continuation_mask(model)[pred[:, a]]
    return BatchScores(
        match & terminated, match, terminated, ans_lp.sum(-1), ans_lp[:, 0].exp(), pred
    )


def score_batch(model, batch: PromptBatch, fwd_hooks=()) -> BatchScores:
    """Teacher-forced scores of one batch (see module docstring)."""
    with torch.no_grad():
        logits = model.logits_at(batch.tokens, batch.score_positions, fwd_hooks)
    return scores_from_logits(model, logits, batch.answer_ids)


def greedy_decode(
    model, batch: PromptBatch, n_new: int | None = None, fwd_hooks=()
) -> Int[Tensor, "batch new"]:
    """Reference decoder: re-run the full sequence each step; hooks keep absolute positions."""
    n_new = batch.answer_len + 1 if n_new is None else n_new
    cur = batch.prompt_tokens.clone()
    out = []
    with torch.no_grad():
        for _ in range(n_new):
            logits = model.logits_at(cur, [cur.shape[1] - 1], fwd_hooks)[:, 0]
            nxt = logits.argmax(-1)
            out.append(nxt)
            cur = torch.cat([cur, nxt[:, None]], dim=1)
    return torch.stack(out, dim=1)


def greedy_correct(model, batch: PromptBatch, fwd_hooks=()) -> Bool[Tensor, " batch"]:
    gen = greedy_decode(model, batch, fwd_hooks=fwd_hooks)
    a = batch.answer_len
    return (gen[:, :a] == batch.answer_ids).all(-1) & ~continuation_mask(model)[gen[:, a]]


def parse_leading_int(text: str) -> int | None:
    """Numeric parse: the leading (optionally negative) integer of ``text``, else None."""
    s = text.strip()
    j = 1 if s[:1] == "-" else 0
    while j < len(s) and s[j].isdigit():
        j += 1
    digits = s[:j]
    return int(digits) if digits not in ("", "-") else None


def evaluate(
    model,
    examples: list[Example],
    fmt: str | PromptFormat = "arrow",
    *,
    zero_shot: bool = False,
    hooks_fn: HooksFn | None = None,
    batch_size: int = 32,
    verbose: bool = False,
    desc: str = "eval",
) -> pd.DataFrame:
    """Score every example (never drops any); one row per example, in input order.

    ``zero_shot=True`` scores the zero-shot prompt of each example (FV protocol);
    ``hooks_fn(batch)`` returns the TL hooks to apply to that batch.
    """
    if not examples:
        raise AddkError("no examples to evaluate")
    enc = encode_examples(model, examples, fmt, zero_shot=zero_shot)
    rows: list[dict | None] = [None] * len(examples)
    for batch in tqdm(make_batches(enc, batch_size), desc=desc, disable=not verbose):
        hooks = hooks_fn(batch) if hooks_fn is not None else ()
        sc = score_batch(model, batch, hooks)
        for j, i in enumerate(batch.indices):
            e = examples[i]
            rows[i] = {
                "task": e.task,
                "k": e.k,
                "shots": 0 if zero_shot else len(e.demos),
                "query": e.query,
                "answer": e.answer,
                "correct": bool(sc.correct[j]),
                "match": bool(sc.match[j]),
                "terminated": bool(sc.terminated[j]),
                "answer_logprob": float(sc.answer_logprob[j]),
                "first_token_prob": float(sc.first_token_prob[j]),
                "pred": model.tokenizer.decode(sc.pred[j, : batch.answer_len].tolist()),
                "prompt": batch.encoded[j].prompt.text,
            }
    return pd.DataFrame(rows)


def bootstrap_ci(
    values, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation of two 1-D arrays; None when either side is constant."""
    xc, yc = x - x.mean(), y - y.mean()
    den = math.sqrt(float((xc**2).sum()) * float((yc**2).sum()))
    if den <= 1e-300:
        return None
    return float((xc * yc).sum() / den)


def accuracy_table(df: pd.DataFrame, by=("task", "k", "shots"), seed: int = 0) -> pd.DataFrame:
    """One row per group: n, accuracy, bootstrap CI, mean answer probability."""
    rows = []
    for key, g in df.groupby(list(by), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        lo, hi = bootstrap_ci(g["correct"].to_numpy(), seed=seed)
        rows.append(
            {
                **dict(zip(by, key)),
                "n": len(g),
                "accuracy": float(g["correct"].mean()),
                "ci_low": lo,
                "ci_high": hi,
                "mean_answer_prob": float(np.exp(g["answer_logprob"]).mean()),
            }
        )
    return pd.DataFrame(rows)
