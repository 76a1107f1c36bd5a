"""Per-demonstration offset read-out and the self-correction experiment (docs/method.md §6.4–6.5).

The original authors released no code for either claim; this is a documented reconstruction on
top of the aggregation / extraction identity of §6.1 (``analyses.extraction``). Notation: head
(l, h), prompt p, query-row attention α_t, extracted signal s̃_t (``contribution_signals``, so
Σ_t α_t s̃_t = h(p), the head's residual contribution), B = [d_model, r] orthonormal basis of
the head's aggregation subspace (e.g. ``SubspaceFit.basis("full")``, the 6-D fitted span, or
the top PCs of the task means), h_k = the head's mean output on task add-k (``HeadMeans``).
Labels i = the demonstrations' output groups; the label's signal is taken at its last token.

§6.4 offset read-out (:func:`offset_readout`, core :func:`decode_offsets`)
    reference  r_k = Bᵀ(h_k − m),  m = mean_k h_k over the grid K         ([K, r])
    signal     u_i = Bᵀ s̃_i                                                ([r])
    decode     k̂_i = argmax_k cos(u_i − ū, r_k)   ("cosine"; ū = mean of u over all labels,
               which removes the common offset and makes the decode scale-free, since label
               signals and task means differ in scale) or argmin_k ‖u_i − r_k − m_B‖
               ("euclidean", m_B = Bᵀm: signals compared with the uncentered references).
    Reported:  accuracy = P(k̂_i = y_i − x_i) with bootstrap CI (chance 1/|K|), Pearson
               correlations of k̂_i with y_i − x_i (own demo), with the query's k and with y_i
               (controls), and P(k̂_i = k) over labels whose own offset differs from k.
    Prompts (:func:`mixed_offset_examples`): demo i has its own offset k_i drawn uniformly from
    the grid, the query uses k; inputs are drawn so that every number stays ≤ ``max_value``.

§6.5 self-correction (:func:`self_correction`)
    For clean prompts (all demos y_i = x_i + k) and each position j, the corrupted prompt puts
    y_j = x_j + k' (k' = k + ``shift``) at demo j. Per prompt, with d = Bᵀh_k and ‖d‖² as unit:
        c_t = α_t ⟨Bᵀs̃_t, d⟩ / ‖d‖²,   c_i = Σ_{t∈label i} c_t,
        aggregate A = ⟨Bᵀh(p), d⟩ / ‖d‖² = Σ_i c_i + c_other          (identity §6.1)
        label share  a_i = α_i / Σ_i' α_i'   (α_i summed over the label's tokens)
        (NaN when the labels get zero attention mass; such prompts drop out of the CIs)
    Paired differences corrupted − clean (same inputs): Δshare_j (down-weighting if < 0),
    Δc_j (the injected error), Δlater = Σ_{i>j} Δc_i (countering if it opposes Δc_j, i.e.
    Δlater > 0 when Δc_j < 0), Δearlier, Δother, ΔA and Δaccuracy (``scoring.evaluate``), each
    a mean over prompts with a 95% bootstrap CI, as functions of j and of the number of correct
    demos after it (shots − 1 − j). Control: the same corrupted demos with their order permuted
    (seeded; the wrong demo lands at a random position) against the clean demos permuted the
    same way. Verdict: "down-weighted" if the pooled CI of Δshare_j lies below 0, "countered"
    if the pooled CI of the compensation −Δlater·sign(Δc_j) over positions with ≥ 1 later demo
    lies above 0, both, or "neither".

Cost: §6.4 is one extraction forward per batch (stopped after layer l) plus O(labels × K × r);
§6.5 is (shots + 3) prompt sets × (one extraction forward + one scoring forward with greedy
decoding) per batch, plus 2000-resample bootstraps over prompts per reported quantity.
Labels must be numeric (``offset analysis needs numeric labels``); offsets are y − x (add-k).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from addk_interp.analyses.extraction import (
    as_basis,
    check_head,
    iter_extractions,
    label_slots,
)
from addk_interp.core.errors import AddkError
from addk_interp.core.heads import HeadLike as Head  # the one head type: Head or (l, h)
from addk_interp.core.scoring import bootstrap_ci, evaluate, pearson
from addk_interp.core.tasks import Example, PromptFormat
from addk_interp.models.adapter import HookedModel

__all__ = [
    "OffsetReadout",
    "OffsetReference",
    "SelfCorrection",
    "corrupt_example",
    "decode_offsets",
    "mixed_offset_examples",
    "offset_reference",
    "offset_readout",
    "readout_stats",
    "self_correction",
]

NUMERIC_MSG = "offset analysis needs numeric labels"
N_BOOT = 2000


# ----------------------------------------------------------------------------- helpers


def _int(s: str) -> int:
    try:
        return int(s)
    except (TypeError, ValueError):
        raise AddkError(f"{NUMERIC_MSG} (got {s!r})") from None


def _check_examples(examples: Sequence[Example]) -> None:
    if not examples:
        raise AddkError("no examples")
    for n, e in enumerate(examples):
        if not e.demos:
            raise AddkError(
                f"example {n} has no demonstrations; the offset analyses need few-shot prompts"
            )
        for x, y in e.demos:
            _int(x), _int(y)
        _int(e.query), _int(e.answer)


def _summary(values, seed: int = 0) -> dict[str, Any]:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0, "mean": None, "ci": [None, None]}
    lo, hi = bootstrap_ci(v, n_boot=N_BOOT, seed=seed)
    return {"n": int(v.size), "mean": float(v.mean()), "ci": [lo, hi]}


def _task_k(e: Example) -> int:
    if e.k is not None:
        return int(e.k)
    return _int(e.answer) - _int(e.query)


# ----------------------------------------------------------------------------- §6.4


@dataclass(frozen=True)
class OffsetReference:
    """Per-k reference coordinates r_k = Bᵀ(h_k − m) of one head (§6.4)."""

    ks: np.ndarray  # [K] int
    coords: Float[np.ndarray, "k rank"]
    basis: Float[np.ndarray, "d_model rank"]
    center: Float[np.ndarray, " d_model"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ks": [int(k) for k in self.ks],
            "rank": int(self.basis.shape[1]),
            "coords": self.coords.tolist(),
        }


def offset_reference(
    means_by_k: Mapping[int, Tensor | np.ndarray],
    basis: Tensor | np.ndarray | None = None,
    *,
    n_components: int = 6,
) -> OffsetReference:
    """Reference coordinates from one head's task means {k: h_k [d_model]}.

    ``basis``: an orthonormal [d_model, r] basis (e.g. ``SubspaceFit.basis("full")``); None uses
    the top min(n_components, K − 1) principal axes of the centered means.
    """
    if len(means_by_k) < 2:
        raise AddkError("offset read-out needs task means for at least two k values")
    ks = np.array(sorted(int(k) for k in means_by_k), dtype=np.int64)
    x = np.stack(
        [np.asarray(torch.as_tensor(means_by_k[int(k)]).double().cpu()) for k in ks]
    ).astype(np.float64)
    center = x.mean(axis=0)
    if basis is None:
        u, _, vt = np.linalg.svd(x - center, full_matrices=False)
        r = max(1, min(n_components, len(ks) - 1))
        b = vt[:r].T.copy()
    else:
        b = np.asarray(as_basis(basis, x.shape[1]).numpy())
    return OffsetReference(ks=ks, coords=(x - center) @ b, basis=b, center=center)


def decode_offsets(
    coords: Float[np.ndarray, "n rank"],
    reference: OffsetReference,
    *,
    metric: str = "cosine",
) -> tuple[np.ndarray, Float[np.ndarray, "n k"]]:
    """Decode the offset encoded by each signal's subspace coordinates u_i = Bᵀs̃_i.

    Returns (k̂ [n], score [n, K]); higher score = better match. See the module docstring for
    the two metrics. Pure numpy, no model.
    """
    u = np.asarray(coords, dtype=np.float64)
    ref = reference.coords
    if u.ndim != 2 or u.shape[1] != ref.shape[1]:
        raise AddkError(f"coords must be [n, {ref.shape[1]}], got {tuple(u.shape)}")
    if metric == "cosine":
        uc = u - u.mean(axis=0, keepdims=True)
        un = uc / np.maximum(np.linalg.norm(uc, axis=1, keepdims=True), 1e-300)
        rn = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-300)
        score = un @ rn.T
    elif metric == "euclidean":
        m_b = reference.center @ reference.basis
        d = u[:, None, :] - (ref + m_b)[None, :, :]
        score = -np.linalg.norm(d, axis=2)
    else:
        raise AddkError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    return reference.ks[np.argmax(score, axis=1)], score


@dataclass(frozen=True)
class OffsetReadout:
    """§6.4 result: one entry per demonstration label (flattened over prompts)."""

    head: Head | None
    metric: str
    grid: tuple[int, ...]
    decoded: np.ndarray
    own_offset: np.ndarray
    query_k: np.ndarray
    label_value: np.ndarray
    accuracy: float
    accuracy_ci: tuple[float, float]
    chance: float
    query_match_rate: float | None
    corr_own: float | None
    corr_query_k: float | None
    corr_label: float | None
    in_grid: float

    @property
    def n_labels(self) -> int:
        return int(self.decoded.shape[0])

    def to_dict(self, include_arrays: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "head": None if self.head is None else list(self.head),
            "metric": self.metric,
            "grid": list(self.grid),
            "n_labels": self.n_labels,
            "accuracy": self.accuracy,
            "accuracy_ci": list(self.accuracy_ci),
            "chance": self.chance,
            "query_match_rate": self.query_match_rate,
            "corr_own_offset": self.corr_own,
            "corr_query_k": self.corr_query_k,
            "corr_label": self.corr_label,
            "own_offset_in_grid": self.in_grid,
        }
        if include_arrays:
            out["decoded"] = self.decoded.tolist()
            out["own_offset"] = self.own_offset.tolist()
            out["query_k"] = self.query_k.tolist()
            out["label_value"] = self.label_value.tolist()
        return out


def readout_stats(
    coords: Float[np.ndarray, "n rank"],
    reference: OffsetReference,
    own_offset,
    query_k,
    label_value,
    *,
    metric: str = "cosine",
    head: Head | None = None,
    seed: int = 0,
) -> OffsetReadout:
    """Decode ``coords`` and score them against each label's own offset and the controls."""
    own = np.asarray(own_offset, dtype=np.int64)
    qk = np.asarray(query_k, dtype=np.int64)
    y = np.asarray(label_value, dtype=np.int64)
    n = np.asarray(coords).shape[0]
    if not (own.shape == qk.shape == y.shape == (n,)):
        raise AddkError("own_offset, query_k and label_value need one entry per coords row")
    if n == 0:
        raise AddkError("no labels to read out")
    dec, _ = decode_offsets(coords, reference, metric=metric)
    hits = (dec == own).astype(float)
    differ = own != qk
    return OffsetReadout(
        head=head,
        metric=metric,
        grid=tuple(int(k) for k in reference.ks),
        decoded=dec,
        own_offset=own,
        query_k=qk,
        label_value=y,
        accuracy=float(hits.mean()),
        accuracy_ci=bootstrap_ci(hits, n_boot=N_BOOT, seed=seed),
        chance=1.0 / len(reference.ks),
        query_match_rate=float((dec[differ] == qk[differ]).mean()) if differ.any() else None,
        corr_own=pearson(dec, own),
        corr_query_k=pearson(dec, qk),
        corr_label=pearson(dec, y),
        in_grid=float(np.isin(own, reference.ks).mean()),
    )


def mixed_offset_examples(
    grid: Sequence[int],
    n: int,
    shots: int,
    *,
    query_ks: Sequence[int] | None = None,
    seed: int = 0,
    max_value: int = 99,
) -> list[Example]:
    """``n`` add-k prompts per query k whose demo i has its own offset k_i ~ U(grid).

    Inputs are distinct per prompt and drawn from [1, max_value − max(grid)] so every number
    is ≤ ``max_value`` (single tokens on Llama-style tokenizers). Task = ``add{k}``.
    """
    grid = [int(k) for k in grid]
    qks = grid if query_ks is None else [int(k) for k in query_ks]
    if not grid or n < 1 or shots < 1:
        raise AddkError("need a non-empty grid, n ≥ 1 and shots ≥ 1")
    hi = max_value - max(grid + qks)
    if hi < shots + 1:
        raise AddkError(f"max_value={max_value} leaves too few inputs for {shots} shots")
    rng = random.Random(seed)
    out = []
    for k in qks:
        for _ in range(n):
            xs = rng.sample(range(1, hi + 1), shots + 1)
            demos = tuple((str(x), str(x + rng.choice(grid))) for x in xs[:shots])
            out.append(Example(f"add{k}", k, demos, str(xs[-1]), str(xs[-1] + k)))
    return out


def _label_arrays(model: HookedModel, head, examples, fmt, basis, batch_size):
    """Per example: label coords [S, r] (last token), pooled α [S], pooled c-vectors."""
    b = torch.as_tensor(basis, dtype=torch.float64)
    per: list[dict[str, Any] | None] = [None] * len(examples)
    for res in iter_extractions(model, examples, [head], fmt, batch_size=batch_size):
        r = res[head]
        s = r.contribution_signals.double() @ b  # [batch, pos, r]
        agg = r.contribution.double() @ b  # [batch, r]
        att = r.attention.double()
        for row, idx in enumerate(r.indices):
            slots = label_slots(r.groups[row])
            per[idx] = {
                "coords": torch.stack([s[row, sl[-1]] for sl in slots]).numpy(),
                "alpha": np.array([float(att[row, sl].sum()) for sl in slots]),
                "label_pos": [list(sl) for sl in slots],
                "proj": s[row].numpy(),  # [pos, r]
                "att": att[row].numpy(),
                "agg": agg[row].numpy(),
                "groups": r.groups[row],
                "identity_error": r.identity_max_error,
            }
    return per


def offset_readout(
    model: HookedModel,
    head: Head,
    examples: Sequence[Example],
    reference: OffsetReference,
    fmt: str | PromptFormat = "arrow",
    *,
    metric: str = "cosine",
    batch_size: int = 32,
    seed: int = 0,
) -> OffsetReadout:
    """§6.4 on a model: decode every label's offset from its extracted signal (see module doc)."""
    _check_examples(examples)
    head = check_head(model, head)
    per = _label_arrays(model, head, examples, fmt, reference.basis, batch_size)
    coords, own, qk, ys = [], [], [], []
    for e, p in zip(examples, per, strict=True):
        if len(p["coords"]) != len(e.demos):
            raise AddkError("token groups do not match the demonstrations")
        coords.append(p["coords"])
        for x, y in e.demos:
            own.append(_int(y) - _int(x))
            ys.append(_int(y))
            qk.append(_task_k(e))
    return readout_stats(
        np.concatenate(coords), reference, own, qk, ys, metric=metric, head=head, seed=seed
    )


# ----------------------------------------------------------------------------- §6.5


def corrupt_example(example: Example, j: int, shift: int) -> Example:
    """Replace demo j's label by x_j + k + shift (k = the task's offset)."""
    if not 0 <= j < len(example.demos):
        raise AddkError(f"position {j} outside {len(example.demos)} demonstrations")
    if shift == 0:
        raise AddkError("shift must be non-zero (k' ≠ k)")
    demos = list(example.demos)
    x = demos[j][0]
    demos[j] = (x, str(_int(x) + _task_k(example) + shift))
    return example.with_demos(demos)


@dataclass(frozen=True)
class SelfCorrection:
    """§6.5 result. ``contributions[cond]``: [prompt, shots] c_i in units of ‖Bᵀh_k‖²;
    ``other[cond]``: non-label contribution; ``aggregate[cond]``: A; ``share[cond]``: label
    attention shares; ``signal_align[cond]``: ⟨Bᵀs̃_i, d⟩/‖d‖² at each label's last token
    (attention-free, so a shift there is a change of the extracted signal itself, not of
    its weight); ``correct[cond]``: task accuracy per prompt. Conditions: ``clean``,
    ``j{j}``, ``shuffled_clean``, ``shuffled``; ``shuffled_pos`` the wrong demo's position in
    the control. ``by_position`` / ``by_after`` / ``control`` / ``pooled`` hold the paired
    summaries (mean + bootstrap CI) described in the module docstring."""

    head: Head
    shots: int
    shift: int
    n_prompts: int
    contributions: dict[str, np.ndarray]
    other: dict[str, np.ndarray]
    aggregate: dict[str, np.ndarray]
    share: dict[str, np.ndarray]
    signal_align: dict[str, np.ndarray]
    correct: dict[str, np.ndarray]
    shuffled_pos: np.ndarray
    identity_max_error: float
    by_position: list[dict[str, Any]] = field(default_factory=list)
    by_after: list[dict[str, Any]] = field(default_factory=list)
    control: dict[str, Any] = field(default_factory=dict)
    pooled: dict[str, Any] = field(default_factory=dict)
    verdict: str = "neither"

    def to_dict(self, include_arrays: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "head": list(self.head),
            "shots": self.shots,
            "shift": self.shift,
            "n_prompts": self.n_prompts,
            "identity_max_error": self.identity_max_error,
            "accuracy": {c: float(v.mean()) for c, v in self.correct.items()},
            "by_position": self.by_position,
            "by_after": self.by_after,
            "control": self.control,
            "pooled": self.pooled,
            "verdict": self.verdict,
        }
        if include_arrays:
            out["contributions"] = {c: v.tolist() for c, v in self.contributions.items()}
            out["aggregate"] = {c: v.tolist() for c, v in self.aggregate.items()}
            out["share"] = {c: v.tolist() for c, v in self.share.items()}
            out["signal_align"] = {c: v.tolist() for c, v in self.signal_align.items()}
            out["shuffled_pos"] = self.shuffled_pos.tolist()
        return out


def _contribs(per, dirs: np.ndarray):
    """c_i, c_other, A, share for a list of per-example arrays; d = Bᵀh_k per prompt."""
    n = len(per)
    shots = len(per[0]["label_pos"])
    c = np.zeros((n, shots))
    other = np.zeros(n)
    agg = np.zeros(n)
    share = np.zeros((n, shots))
    align = np.zeros((n, shots))
    for i, p in enumerate(per):
        d = dirs[i]
        unit = float(d @ d)
        ct = p["att"] * (p["proj"] @ d) / unit  # [pos]
        lab = np.zeros(ct.shape[0], dtype=bool)
        for s, sl in enumerate(p["label_pos"]):
            c[i, s] = ct[sl].sum()
            align[i, s] = float(p["proj"][sl[-1]] @ d) / unit
            lab[sl] = True
        other[i] = ct[~lab].sum()
        agg[i] = float(p["agg"] @ d) / unit
        tot = p["alpha"].sum()
        share[i] = p["alpha"] / tot if tot > 0 else np.nan
    return c, other, agg, share, align


def _paired(c0, o0, a0, s0, y0, c1, o1, a1, s1, y1, pos: np.ndarray, seed: int) -> dict:
    """Paired corrupted − clean summaries for wrong positions ``pos`` [prompt]."""
    rows = np.arange(len(pos))
    dc = c1 - c0
    later = np.array([dc[r, p + 1 :].sum() for r, p in zip(rows, pos, strict=True)])
    earlier = np.array([dc[r, :p].sum() for r, p in zip(rows, pos, strict=True)])
    dwrong = dc[rows, pos]
    comp = -later * np.sign(dwrong)
    has_after = pos < c0.shape[1] - 1
    return {
        "d_share_wrong": _summary(s1[rows, pos] - s0[rows, pos], seed),
        "d_contrib_wrong": _summary(dwrong, seed),
        "d_contrib_later": _summary(later[has_after], seed),
        "d_contrib_earlier": _summary(earlier, seed),
        "d_other": _summary(o1 - o0, seed),
        "d_aggregate": _summary(a1 - a0, seed),
        "compensation": _summary(comp[has_after], seed),
        "aggregate_clean": _summary(a0, seed),
        "aggregate_corrupt": _summary(a1, seed),
        "accuracy_clean": _summary(y0, seed),
        "accuracy_corrupt": _summary(y1, seed),
        "d_accuracy": _summary(y1 - y0, seed),
        "_raw": {
            "d_share": s1[rows, pos] - s0[rows, pos],
            "comp": comp[has_after],
        },
    }


def _strip(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "_raw"}


def self_correction(
    model: HookedModel,
    head: Head,
    examples: Sequence[Example],
    means,
    basis: Tensor | np.ndarray,
    fmt: str | PromptFormat = "arrow",
    *,
    shift: int = 5,
    batch_size: int = 32,
    seed: int = 0,
) -> SelfCorrection:
    """§6.5: wrong label at every demo position j vs clean, plus a shuffled-order control.

    ``examples``: clean prompts, all with the same number of shots; ``means``: a ``HeadMeans``
    (h_k = ``means.of(task)[l, h]``) or a mapping task → h_k [d_model]; ``basis``: the head's
    orthonormal [d_model, r] subspace basis.
    """
    examples = list(examples)
    _check_examples(examples)
    head = check_head(model, head)
    shots = {len(e.demos) for e in examples}
    if len(shots) != 1:
        raise AddkError(f"self-correction needs prompts with equal shots, got {sorted(shots)}")
    (n_shots,) = shots
    if shift == 0:
        raise AddkError("shift must be non-zero (k' ≠ k)")
    b = np.asarray(as_basis(basis, model.info.d_model).numpy())
    layer, h = head

    def h_k(task: str) -> np.ndarray:
        v = means.of(task)[layer, h] if hasattr(means, "of") else means[task]
        return np.asarray(torch.as_tensor(v).double().cpu())

    dirs = np.stack([h_k(e.task) @ b for e in examples])
    rng = random.Random(seed)
    perms = [rng.sample(range(n_shots), n_shots) for _ in examples]
    wrong_at = [rng.randrange(n_shots) for _ in examples]  # original index of the wrong demo
    conds: dict[str, list[Example]] = {"clean": examples}
    for j in range(n_shots):
        conds[f"j{j}"] = [corrupt_example(e, j, shift) for e in examples]
    conds["shuffled_clean"] = [
        e.with_demos([e.demos[q] for q in p]) for e, p in zip(examples, perms, strict=True)
    ]
    wrong = [corrupt_example(e, w, shift) for e, w in zip(examples, wrong_at, strict=True)]
    conds["shuffled"] = [
        e.with_demos([e.demos[q] for q in p]) for e, p in zip(wrong, perms, strict=True)
    ]
    shuffled_pos = np.array([p.index(w) for p, w in zip(perms, wrong_at, strict=True)])

    contributions, other, aggregate, share, correct, align = {}, {}, {}, {}, {}, {}
    id_err = 0.0
    for name, exs in conds.items():
        per = _label_arrays(model, head, exs, fmt, b, batch_size)
        id_err = max(id_err, max(p["identity_error"] for p in per))
        c, o, a, s, al = _contribs(per, dirs)
        contributions[name], other[name], aggregate[name], share[name] = c, o, a, s
        align[name] = al
        df = evaluate(model, exs, fmt, batch_size=batch_size)
        correct[name] = df["correct"].to_numpy(dtype=float)

    def paired(cond: str, base: str, pos: np.ndarray) -> dict:
        return _paired(
            contributions[base], other[base], aggregate[base], share[base], correct[base],
            contributions[cond], other[cond], aggregate[cond], share[cond], correct[cond],
            pos, seed,
        )  # fmt: skip

    n = len(examples)
    by_position, raw_share, raw_comp = [], [], []
    for j in range(n_shots):
        d = paired(f"j{j}", "clean", np.full(n, j))
        raw_share.append(d["_raw"]["d_share"])
        raw_comp.append(d["_raw"]["comp"])
        by_position.append({"j": j, "n_after": n_shots - 1 - j, **_strip(d)})
    by_after = sorted(
        ({"n_after": r["n_after"], **{k: v for k, v in r.items() if k.startswith("d_")}}
         for r in by_position),
        key=lambda r: r["n_after"],
    )  # fmt: skip
    control = _strip(paired("shuffled", "shuffled_clean", shuffled_pos))
    pooled = {
        "d_share_wrong": _summary(np.concatenate(raw_share), seed),
        "compensation": _summary(np.concatenate(raw_comp), seed),
    }
    down = pooled["d_share_wrong"]["n"] > 0 and pooled["d_share_wrong"]["ci"][1] < 0
    countered = pooled["compensation"]["n"] > 0 and pooled["compensation"]["ci"][0] > 0
    verdict = {
        (True, True): "down-weighted and countered",
        (True, False): "down-weighted",
        (False, True): "countered",
        (False, False): "neither",
    }[(bool(down), bool(countered))]
    return SelfCorrection(
        head=head,
        shots=n_shots,
        shift=shift,
        n_prompts=n,
        contributions=contributions,
        other=other,
        aggregate=aggregate,
        share=share,
        signal_align=align,
        correct=correct,
        shuffled_pos=shuffled_pos,
        identity_max_error=id_err,
        by_position=by_position,
        by_after=by_after,
        control=control,
        pooled=pooled,
        verdict=verdict,
    )
