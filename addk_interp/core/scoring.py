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
The unembedding of those rows is deferred (``RowScorer``): rows of many batches are unembedded
together, ``row_chunk(d_vocab)`` rows per matrix product (256 on a 262k vocabulary), because
a product with a few rows runs far below the matmul peak: each product walks the whole
[d_model, vocab] matrix (on Gemma-3-270m, one thread: 8 rows 18 GFLOP/s, 32 rows 43, 256 rows
57, peak 88; the unembedding roofline of ``benchmarks/bench_stages.py``). The
scores do not depend on how rows are grouped. (Unembedding the terminator row only where the
answer matched was tried and measured slower: a separate product of a few rows costs about as
much as a product of a hundred.)
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


def row_chunk(d_vocab: int) -> int:
    """Rows unembedded per matrix product: ≈ 2²⁶ logits (256 MiB in fp32), 64..1024 rows."""
    return max(64, min(1024, 2**26 // max(1, d_vocab)))


def row_logprob_argmax(
    logits: Float[Tensor, "n vocab"], targets: Int[Tensor, " n"]
) -> tuple[Float[Tensor, " n"], Int[Tensor, " n"]]:
    """(fp32 log p(target), argmax) per row; log p is NaN where ``targets`` < 0."""
    logits = logits.float()
    targets = targets.to(logits.device)
    has = targets >= 0
    lp = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0)[:, None]).squeeze(-1)
    lp = torch.where(has, lp, torch.full_like(lp, float("nan")))
    return lp.cpu(), logits.argmax(-1).cpu()  # scores live on the CPU, next to the answer ids


def _assemble(model, lp: Tensor, pred: Tensor, answer_ids: Tensor) -> BatchScores:
    """BatchScores from per-position log p(answer) [b, A] and argmax [b, A+1]."""
    a = answer_ids.shape[1]
    match = (pred[:, :a] == answer_ids).all(-1)
    terminated = ~continuation_mask(model)[pred[:, a]]
    return BatchScores(match & terminated, match, terminated, lp.sum(-1), lp[:, 0].exp(), pred)


def scores_from_logits(
    model, logits: Float[Tensor, "batch n vocab"], answer_ids: Int[Tensor, "batch answer"]
) -> BatchScores:
    b, n, v = logits.shape
    a = answer_ids.shape[1]
    tgt = torch.full((b, n), -1, dtype=torch.long)
    tgt[:, :a] = answer_ids
    lp, pred = row_logprob_argmax(logits.reshape(b * n, v), tgt.reshape(-1))
    return _assemble(model, lp.reshape(b, n)[:, :a], pred.reshape(b, n), answer_ids)


class RowScorer:
    """Deferred teacher-forced scoring: final-normed rows of many batches, unembedded together.

    ``add(key, normed, answer_ids)`` takes the final-normed residual at the A+1 score
    positions of one batch ([b, A+1, d_model]); ``results()`` returns {key: BatchScores},
    equal to ``scores_from_logits`` on that batch's logits. Rows are unembedded as soon as
    ``row_chunk`` of them are pending (memory stays bounded).
    """

    def __init__(self, model, chunk: int | None = None):
        self.model = model
        self.chunk = chunk or row_chunk(model.info.d_vocab)
        self._pending: list[tuple[object, Tensor, Tensor]] = []
        self._n_pending = 0
        self._rows: dict[object, tuple[list[Tensor], list[Tensor]]] = {}
        self._answers: dict[object, Tensor] = {}

    def add(
        self, key, normed: Float[Tensor, "batch n d_model"], answer_ids: Int[Tensor, "batch answer"]
    ) -> None:
        b, n, _ = normed.shape
        a = answer_ids.shape[1]
        if n != a + 1 or answer_ids.shape[0] != b:
            raise AddkError(f"expected {a + 1} score positions for {b} rows, got {n} of {b}")
        if key in self._answers:
            raise AddkError(f"batch key {key!r} added twice")
        tgt = torch.full((b, n), -1, dtype=torch.long)
        tgt[:, :a] = answer_ids
        self._answers[key] = answer_ids
        self._rows[key] = ([], [])
        x = normed.detach().reshape(b * n, -1)
        t = tgt.reshape(-1)
        for s in range(0, b * n, self.chunk):
            self._pending.append((key, x[s : s + self.chunk], t[s : s + self.chunk]))
            self._n_pending += len(t[s : s + self.chunk])
            if self._n_pending >= self.chunk:
                self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        x = torch.cat([p[1] for p in self._pending])
        t = torch.cat([p[2] for p in self._pending])
        with torch.no_grad():
            for s in range(0, len(t), self.chunk):
                logits = self.model.unembed(x[None, s : s + self.chunk])[0]
                lp, pred = row_logprob_argmax(logits, t[s : s + self.chunk])
                self._scatter(s, lp, pred)
        self._pending, self._n_pending = [], 0

    def _scatter(self, start: int, lp: Tensor, pred: Tensor) -> None:
        """Hand the rows [start, start + len(lp)) of the pending list back to their keys."""
        pos = 0
        for key, xs, _ in self._pending:
            lo, hi = max(pos, start), min(pos + len(xs), start + len(lp))
            if lo < hi:
                self._rows[key][0].append(lp[lo - start : hi - start])
                self._rows[key][1].append(pred[lo - start : hi - start])
            pos += len(xs)

    def results(self) -> dict[object, BatchScores]:
        self._flush()
        out = {}
        for key, ans in self._answers.items():
            b, a = ans.shape
            lp = torch.cat(self._rows[key][0]).reshape(b, a + 1)
            pred = torch.cat(self._rows[key][1]).reshape(b, a + 1)
            out[key] = _assemble(self.model, lp[:, :a], pred, ans)
        return out


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
    batches = list(make_batches(enc, batch_size))
    scorer = RowScorer(model)
    for bi, batch in enumerate(tqdm(batches, desc=desc, disable=not verbose)):
        hooks = hooks_fn(batch) if hooks_fn is not None else ()
        with torch.no_grad():
            normed = model.normed_at(batch.tokens, batch.score_positions, hooks)
        scorer.add(bi, normed, batch.answer_ids)
    scores = scorer.results()
    for bi, batch in enumerate(batches):
        sc = scores[bi]
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
