"""Deterministic few-shot sequences for training and evaluating the add-k model organism.

What it computes: batches of arrow-format sequences ``<bos>x1->y1#x2->y2#...xn->yn#`` where all
pairs share one hidden rule (add-k, sub-k or mul-k), the number of pairs varies per sequence
and every label ``y_i`` (seen after ``i - 1`` demonstrations) is a loss target, optionally
also every "#" separator; plus fixed-length evaluation prompts ``<bos>x1->y1#...xs->ys#xq->``
whose answer is ``xq + k``. Every batch is a pure function of ``(seed, step)`` (a local numpy
``Generator`` seeded with ``[seed, step]``), so a resumed run sees exactly the batches of an
uninterrupted one.

Which step of the method it serves: it is the training distribution of the model organism
(:mod:`addk_interp.organism.train`) and the benchmark used to certify that it solves few-shot
add-k (5-shot accuracy over k = 1..30, x = 1..100, and accuracy vs shots 0..10).

Cost: O(batch * pairs) Python work per batch (about a millisecond for 128 sequences).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Int
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from addk_interp.core.errors import AddkError

from .config import TASK_FAMILIES, TrainConfig
from .tokenizer import MAX_NUMBER

__all__ = [
    "EVAL_SEED",
    "Batch",
    "EvalPrompts",
    "TokenIds",
    "addk_eval_prompts",
    "apply_rule",
    "make_batch",
    "token_ids",
]

EVAL_SEED = 20240607
"""Seed of the fixed evaluation prompts (independent of the training seed)."""


@dataclass(frozen=True)
class TokenIds:
    """Ids of the tokens the arrow format uses; number ``v`` is ``number_base + v``."""

    bos: int
    pad: int
    arrow: int
    sep: int
    number_base: int

    def number(self, values: np.ndarray | int) -> np.ndarray | int:
        """Token id(s) of integer value(s), refusing values outside 0..MAX_NUMBER."""
        arr = np.asarray(values)
        if arr.size and (arr.min() < 0 or arr.max() > MAX_NUMBER):
            raise AddkError(
                f"numbers must lie in 0..{MAX_NUMBER} to be single tokens, got range "
                f"[{arr.min()}, {arr.max()}]"
            )
        if isinstance(values, np.ndarray):
            return self.number_base + values
        return self.number_base + int(values)


def token_ids(tok: PreTrainedTokenizerBase) -> TokenIds:
    """Resolve :class:`TokenIds` from the organism tokenizer (numbers must be contiguous)."""
    nums = tok.convert_tokens_to_ids([str(i) for i in range(MAX_NUMBER + 1)])
    base = int(nums[0])
    if list(nums) != list(range(base, base + MAX_NUMBER + 1)):
        raise AddkError("the tokenizer's number tokens 0..999 are not contiguous ids")
    arrow, sep = tok.convert_tokens_to_ids(["->", "#"])
    if tok.unk_token_id in (arrow, sep) or tok.bos_token_id is None or tok.pad_token_id is None:
        raise AddkError("tokenizer lacks '->', '#', <bos> or <pad>: not the organism tokenizer")
    return TokenIds(
        bos=int(tok.bos_token_id),
        pad=int(tok.pad_token_id),
        arrow=int(arrow),
        sep=int(sep),
        number_base=base,
    )


@dataclass(frozen=True)
class Batch:
    """One training batch (right-padded with ``<pad>``).

    ``label_mask[b, t]`` marks tokens that are a label ``y_i`` (predicted from position
    ``t - 1``), ``loss_mask`` the loss targets (labels, plus "#" if configured), ``shots`` the
    number of demonstrations before each label (-1 elsewhere), ``family``/``k`` the hidden rule.
    """

    tokens: Int[Tensor, "batch pos"]
    loss_mask: Bool[Tensor, "batch pos"]
    label_mask: Bool[Tensor, "batch pos"]
    shots: Int[Tensor, "batch pos"]
    family: Int[Tensor, " batch"]
    k: Int[Tensor, " batch"]

    pad_count: int = 0

    @property
    def n_tokens(self) -> int:
        """Non-pad tokens in the batch."""
        return self.tokens.numel() - self.pad_count


def apply_rule(family: str, k: int, x: np.ndarray) -> np.ndarray:
    """y for the task family: add ``x + k``, sub ``x - k``, mul ``k * x``."""
    x = np.asarray(x)
    if family == "add":
        return np.asarray(x + k)
    if family == "sub":
        return np.asarray(x - k)
    if family == "mul":
        return np.asarray(x * k)
    raise AddkError(f"unknown task family {family!r}; valid families: {list(TASK_FAMILIES)}")


def _x_domain(family: str, k: int, x_range: tuple[int, int]) -> np.ndarray:
    lo, hi = x_range
    if family == "sub":
        lo = max(lo, k)  # keep answers >= 0
    return np.arange(lo, hi + 1)


def _k_range(config: TrainConfig, family: str) -> tuple[int, int]:
    return {"add": config.add_k_range, "sub": config.sub_k_range, "mul": config.mul_k_range}[family]


def check_data_config(config: TrainConfig) -> None:
    """Refuse task settings whose numbers fall outside the vocabulary or that cannot supply
    enough distinct x per sequence."""
    for family, weight in config.task_mix:
        if family not in TASK_FAMILIES:
            raise AddkError(
                f"unknown task family {family!r}; valid families: {list(TASK_FAMILIES)}"
            )
        if weight == 0:
            continue
        k_lo, k_hi = _k_range(config, family)
        for k in (k_lo, k_hi):
            dom = _x_domain(family, k, config.x_range)
            if len(dom) < config.pairs_range[1]:
                raise AddkError(
                    f"{family} with k={k}: only {len(dom)} distinct x in {config.x_range}, "
                    f"need {config.pairs_range[1]} per sequence"
                )
            for x in (dom[0], dom[-1]):
                for v in (int(x), int(apply_rule(family, k, np.asarray(x)))):
                    if not 0 <= v <= MAX_NUMBER:
                        raise AddkError(
                            f"{family} with k={k}, x={x} produces {v}, outside the vocabulary "
                            f"range 0..{MAX_NUMBER}"
                        )


def make_batch(config: TrainConfig, ids: TokenIds, step: int) -> Batch:
    """The training batch of ``step`` (a pure function of ``config.seed`` and ``step``)."""
    check_data_config(config)
    rng = np.random.default_rng([config.seed, step])
    names = [n for n, _ in config.task_mix]
    weights = np.array([w for _, w in config.task_mix], dtype=np.float64)
    weights = weights / weights.sum()
    bsz, seq_len = config.batch_size, config.max_seq_len
    tokens = np.full((bsz, seq_len), ids.pad, dtype=np.int64)
    label_mask = np.zeros((bsz, seq_len), dtype=bool)
    sep_mask = np.zeros((bsz, seq_len), dtype=bool)
    shots = np.full((bsz, seq_len), -1, dtype=np.int64)
    fam_idx = rng.choice(len(names), size=bsz, p=weights)
    n_pairs = rng.integers(config.pairs_range[0], config.pairs_range[1] + 1, size=bsz)
    ks = np.zeros(bsz, dtype=np.int64)
    for b in range(bsz):
        family = names[fam_idx[b]]
        k_lo, k_hi = _k_range(config, family)
        k = int(rng.integers(k_lo, k_hi + 1))
        ks[b] = k
        n = int(n_pairs[b])
        xs = rng.choice(_x_domain(family, k, config.x_range), size=n, replace=False)
        ys = apply_rule(family, k, xs)
        row = np.empty(1 + 4 * n, dtype=np.int64)
        row[0] = ids.bos
        row[1::4] = ids.number(xs)
        row[2::4] = ids.arrow
        row[3::4] = ids.number(ys)
        row[4::4] = ids.sep
        tokens[b, : len(row)] = row
        label_pos = np.arange(n) * 4 + 3
        label_mask[b, label_pos] = True
        sep_mask[b, label_pos + 1] = True
        shots[b, label_pos] = np.arange(n)
    family_ids = np.array([TASK_FAMILIES.index(names[i]) for i in fam_idx], dtype=np.int64)
    loss_mask = label_mask | sep_mask if config.loss_on_separator else label_mask
    return Batch(
        tokens=torch.from_numpy(tokens),
        loss_mask=torch.from_numpy(loss_mask),
        label_mask=torch.from_numpy(label_mask),
        shots=torch.from_numpy(shots),
        family=torch.from_numpy(family_ids),
        k=torch.from_numpy(ks),
        pad_count=int((tokens == ids.pad).sum()),
    )


@dataclass(frozen=True)
class EvalPrompts:
    """Fixed-length add-k prompts ``<bos>x1->y1#...xs->ys#xq->`` and their answers."""

    tokens: Int[Tensor, "batch pos"]
    answers: Int[Tensor, " batch"]
    k: Int[Tensor, " batch"]
    x: Int[Tensor, " batch"]
    shots: int


def addk_eval_prompts(
    ids: TokenIds,
    shots: int,
    ks: Sequence[int] = tuple(range(1, 31)),
    x_per_k: int = 100,
    x_range: tuple[int, int] = (1, 100),
    seed: int = EVAL_SEED,
) -> EvalPrompts:
    """Add-k evaluation prompts: for each ``k`` in ``ks``, ``x_per_k`` query values (all of
    ``x_range`` when ``x_per_k`` covers it, else a seeded sample without replacement), each with
    ``shots`` demonstrations whose x are distinct from each other and from the query
    (``shots + 1`` distinct numbers per prompt). Deterministic in ``(seed, shots)``."""
    lo, hi = x_range
    domain = np.arange(lo, hi + 1)
    if shots + 1 > len(domain):
        raise AddkError(f"{shots} shots need {shots + 1} distinct x, x_range has {len(domain)}")
    if not 0 < x_per_k <= len(domain):
        raise AddkError(f"x_per_k must be in 1..{len(domain)}, got {x_per_k}")
    rng = np.random.default_rng([seed, shots])
    rows, answers, k_out, x_out = [], [], [], []
    for k in ks:
        xq_all = domain if x_per_k == len(domain) else rng.choice(domain, x_per_k, replace=False)
        for xq in xq_all:
            others = domain[domain != xq]
            demo_x = rng.choice(others, size=shots, replace=False)
            row = [ids.bos]
            for x in demo_x:
                row += [int(ids.number(int(x))), ids.arrow, int(ids.number(int(x) + k)), ids.sep]
            row += [int(ids.number(int(xq))), ids.arrow]
            rows.append(row)
            answers.append(int(ids.number(int(xq) + k)))
            k_out.append(int(k))
            x_out.append(int(xq))
    return EvalPrompts(
        tokens=torch.tensor(rows, dtype=torch.long),
        answers=torch.tensor(answers, dtype=torch.long),
        k=torch.tensor(k_out, dtype=torch.long),
        x=torch.tensor(x_out, dtype=torch.long),
        shots=shots,
    )
