"""Causal subspace tests: one main head's FV term projected onto / out of a fitted subspace.

Step of the method: docs/method.md §5.4.2 (the paper appendix's "onto" / "out-of" arms), run after
the recovery scan (§4.1–§4.3: the main heads and each head's best coefficient c*) and the
periodic fit (§5.2: ``periodic.SubspaceFit``, its bases). Notation as in
``localize.headsets``: S = selected heads, mean_t[h] = mean output of head h on task t
(``HeadMeans.means``, a d_model vector: the same quantity the ``SubspaceFit`` of the head is
fit on), h̄[h] = its mean over the training tasks, ℓ = injection layer.

For a main head h with coefficient c*, on the zero-shot prompt of every example (task t), the
recovery-scan FV (built with ``headsets.headset_vectors``) is added at
the residual stream after block ℓ's attention (``inject``), query position (kept there while decoding):

    unprojected   FV_t = c*·v + Σ_{h'∈S∖{h}} h̄[h']        v = mean_t[h] (``means``: held-out
                                                             means for held-out tasks)
    arm (B, keep)    v ↦ μ + B Bᵀ (v − μ)                  (projection onto span B, re-centred)
    arm (B, remove)  v ↦ v − B Bᵀ (v − μ)                  (onto the complement of span B in
                                                             the whole d_model space)
    controls      zero_shot (no vector), c0 (Σ_{h'∈S∖{h}} h̄[h'] only)

Named arms come from the head's fit (S = full, parity, unit, magnitude, or any column set of
the fit; B orthonormal, ``SubspaceFit.basis``):

    onto_S    keep,   B = onto basis of S (QR of the chosen mod-vector columns)   §5.4.2 onto
    out_S     keep,   B = complement of S inside the fitted (6-D) span            §5.4.2 out-of
    remove_S  remove, B = onto basis of S (complement in all of d_model)

so out_full is v ↦ μ (the head at its mean, scaled by c*) and remove_full drops only the fitted
span. μ = h̄[h] (``center="train"``, the spec's train-task mean) or the fit's PCA mean
(``center="fit"``). The projection is computed in float64, the injected vector in float32.
``ProjectionArm`` takes any other orthonormal basis (e.g. top-k PCs, or the identity).

Scoring: teacher-forced exact match with the terminator check (``scoring`` semantics) through
``hooks.runners.InjectionRunner`` (block-ℓ inputs cached once). Per (head, arm): accuracy,
percentile-bootstrap CI (``scoring.bootstrap_ci``), the pairing with the unprojected arm
(b = right in the arm and wrong unprojected, d = wrong in the arm and right unprojected), and
an error decomposition of the wrong answers. For those, the output is greedy-decoded
(``scoring.greedy_decode``, answer length + ``decode_extra`` tokens, injection at the original
query position) and its leading integer compared with the answer, right-aligned as digit
strings (``classify_error``): units_only, tens_only (any other digit, including extra or
missing leading digits and a sign), both, non_numeric (no leading integer), other (same digits
as the answer, e.g. the model went on with a letter). Non-numeric labels skip the
decomposition with a reason.

Cost (n examples, a arms, H heads): one shared upper-layer teacher-forced pass over n for the
zero-shot arm, then (a + 2)·H passes (blocks ℓ..L−1, answer length + 1 positions); decoding
wrong examples costs (A + decode_extra) full forwards per wrong example and arm, which dominates
when accuracy is low (``decompose=False`` skips it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from addk_interp.analyses.periodic import (
    DEFAULT_THETA_STEP,
    SubspaceFit,
    TargetSpec,
    fit_subspace_from_means,
)
from addk_interp.core.errors import AddkError
from addk_interp.core.heads import HeadLike as Head  # the one head type: Head or (l, h)
from addk_interp.core.prompts import encode_examples, make_batches
from addk_interp.core.scoring import bootstrap_ci, greedy_decode
from addk_interp.core.tasks import Example, manifest_hash
from addk_interp.hooks.capture import HeadMeans
from addk_interp.hooks.context import EvalContext
from addk_interp.hooks.interventions import check_basis, default_injection_layer, inject
from addk_interp.hooks.runners import InjectionRunner
from addk_interp.localize.headsets import (
    HeadSets,
    SelectedSet,
    check_means,
    checked_heads,
    headset_vectors,
)
from addk_interp.localize.selectors import MainSetResult, SignificantSetResult, head_key
from addk_interp.models.adapter import HookedModel

__all__ = [
    "CONTROL_ARMS",
    "DEFAULT_ARMS",
    "ERROR_KINDS",
    "ArmSummary",
    "ProjectionArm",
    "ProjectionResult",
    "c_stars",
    "classify_error",
    "decompose_errors",
    "fit_arm",
    "fit_for_head",
    "leading_number",
    "paired_counts",
    "projection_tests",
]

CONTROL_ARMS = ("zero_shot", "c0", "unprojected")
DEFAULT_ARMS = tuple(
    f"{variant}_{s}"
    for variant in ("onto", "out", "remove")
    for s in ("full", "parity", "unit", "magnitude")
)
ERROR_KINDS = ("units_only", "tens_only", "both", "non_numeric", "other")
ARM_VARIANTS = {"onto": ("onto", "keep"), "out": ("out", "keep"), "remove": ("onto", "remove")}
MODES = ("keep", "remove")
CENTERS = ("train", "fit")
_NUMBER = re.compile(r"-?\d+")


# ============================================================================ arms


@dataclass(frozen=True)
class ProjectionArm:
    """One projection of the main head's term: ``keep`` v ↦ μ + B Bᵀ(v − μ), ``remove``
    v ↦ v − B Bᵀ(v − μ). ``basis`` is [d_model, rank] with orthonormal columns (rank 0 is
    allowed: keep gives μ, remove gives v); it is stored as a read-only float64 array."""

    name: str
    basis: Float[np.ndarray, "d_model rank"] | Float[Tensor, "d_model rank"]
    mode: str = "keep"
    subspace: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise AddkError(f"an arm name must be a non-empty string, got {self.name!r}")
        if self.name in CONTROL_ARMS:
            raise AddkError(f"arm name {self.name!r} is reserved for a control arm")
        if self.mode not in MODES:
            raise AddkError(f"arm {self.name!r}: mode must be one of {MODES}, got {self.mode!r}")
        b = np.array(self.basis, dtype=np.float64)
        if b.ndim != 2:
            raise AddkError(f"arm {self.name!r}: basis must be [d_model, rank], got {b.shape}")
        if not np.all(np.isfinite(b)):
            raise AddkError(f"arm {self.name!r}: basis contains NaN or inf")
        if b.shape[1] > 0:
            try:
                check_basis(torch.from_numpy(b))
            except AddkError as e:
                raise AddkError(f"arm {self.name!r}: {e}") from None
        b.setflags(write=False)
        object.__setattr__(self, "basis", b)

    @property
    def rank(self) -> int:
        return int(self.basis.shape[1])

    @property
    def d_model(self) -> int:
        return int(self.basis.shape[0])

    @property
    def formula(self) -> str:
        return "mu + B B^T (v - mu)" if self.mode == "keep" else "v - B B^T (v - mu)"

    def apply(
        self, v: Float[Tensor, "*batch d_model"], center: Float[Tensor, " d_model"]
    ) -> Float[Tensor, "*batch d_model"]:
        """The projected term (float64 inside, float32 out)."""
        b = torch.tensor(self.basis)
        x, mu = v.double(), center.double()
        inside = ((x - mu) @ b) @ b.T
        return (mu + inside if self.mode == "keep" else x - inside).float()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self.mode,
            "subspace": self.subspace,
            "rank": self.rank,
            "formula": self.formula,
        }


def fit_arm(fit: SubspaceFit, name: str) -> ProjectionArm:
    """The named arm ``onto_S`` / ``out_S`` / ``remove_S`` of a fit (see module docstring)."""
    if not isinstance(name, str) or "_" not in name:
        raise AddkError(
            f"unknown arm {name!r}; use onto_S, out_S or remove_S with S in "
            f"{sorted(fit.subspace_columns)}"
        )
    variant, subspace = name.split("_", 1)
    if variant not in ARM_VARIANTS:
        raise AddkError(f"unknown arm {name!r}: the prefix must be one of {sorted(ARM_VARIANTS)}")
    if subspace not in fit.subspace_columns:
        raise AddkError(
            f"unknown subspace {subspace!r} in arm {name!r}; this fit has "
            f"{sorted(fit.subspace_columns)}"
        )
    basis_variant, mode = ARM_VARIANTS[variant]
    return ProjectionArm(name, fit.basis(subspace, basis_variant), mode, subspace)


def fit_for_head(
    means: HeadMeans | Sequence[HeadMeans] | Float[Tensor, "task layer head d_model"],
    ks: Sequence[Real] | Mapping[str, Real],
    head: Head,
    targets: Sequence[TargetSpec] | None = None,
    *,
    n_components: int | None = None,
    theta_step: Real = DEFAULT_THETA_STEP,
) -> SubspaceFit:
    """The §5.2 fit (PCA over tasks, then the periodic targets) of one head's per-task mean
    outputs, as ``analyses.summary`` does it. ``means``: one ``HeadMeans``, several (e.g. train
    and held-out, concatenated: the corrected pipeline fits on 25 + 5 tasks), or a stacked
    tensor; ``ks``: one k per task row, or a {task: k} map (``HeadMeans`` only)."""
    if isinstance(means, HeadMeans):
        means = [means]
    if isinstance(means, Tensor):
        x, names = means, None
    else:
        parts = list(means)
        if not parts or not all(isinstance(m, HeadMeans) for m in parts):
            raise AddkError("means must be HeadMeans, a list of HeadMeans or a tensor")
        names = [t for m in parts for t in m.tasks]
        if len(set(names)) != len(names):
            raise AddkError(f"tasks appear in more than one means object: {names}")
        x = torch.cat([m.means for m in parts])
    if x.ndim != 4:
        raise AddkError(f"means must be [task, layer, head, d_model], got {tuple(x.shape)}")
    if isinstance(ks, Mapping):
        if names is None:
            raise AddkError("a {task: k} map needs HeadMeans (a tensor has no task names)")
        missing = [t for t in names if t not in ks]
        if missing:
            raise AddkError(f"no k for tasks {missing}")
        kvals = [float(ks[t]) for t in names]
    else:
        kvals = [float(k) for k in ks]
    if len(kvals) != x.shape[0]:
        raise AddkError(f"{len(kvals)} k values for {x.shape[0]} task rows")
    layer, h = _head_tuple(head)
    if not (0 <= layer < x.shape[1] and 0 <= h < x.shape[2]):
        raise AddkError(f"head L{layer}H{h} is not in the means ({x.shape[1]}×{x.shape[2]})")
    try:
        return fit_subspace_from_means(
            x[:, layer, h].double().numpy(),
            kvals,
            targets,
            head=(layer, h),
            n_components=n_components,
            theta_step=theta_step,
        )
    except ValueError as e:
        raise AddkError(f"subspace fit of L{layer}H{h} failed: {e}") from None


def c_stars(
    source: HeadSets | SignificantSetResult | MainSetResult,
    heads: Sequence[Head] | None = None,
    *,
    rule: str = "significant",
) -> dict[Head, int]:
    """c* per head from the scan decisions: ``significant`` (the §4.2 paired test's c*, as
    §5.4.2 specifies) or ``main`` (the §4.3 first argmax of accuracy). ``heads`` defaults to
    the main heads (``HeadSets``) or every head of the result; ``rule`` picks the result
    inside a ``HeadSets`` (a bare result is used as it is)."""
    if rule not in ("significant", "main"):
        raise AddkError(f"rule must be 'significant' or 'main', got {rule!r}")
    default: list[Head] | None = None
    if isinstance(source, HeadSets):
        default = list(source.main.main)
        source = source.significant if rule == "significant" else source.main
    if isinstance(source, SignificantSetResult):
        table: Mapping[Head, Any] = source.tests
    elif isinstance(source, MainSetResult):
        table = source.peaks
    else:
        raise AddkError(f"cannot read c* from {type(source).__name__}")
    if heads is None:
        heads = list(table) if default is None else default
    missing = [h for h in map(_head_tuple, heads) if h not in table]
    if missing:
        raise AddkError(f"no c* for heads {missing} (not in the scan)")
    return {h: int(table[h].c_star) for h in map(_head_tuple, heads)}


# ============================================================================ error kinds


def leading_number(text: str) -> str | None:
    """The leading (optionally negative) integer of ``text`` as a digit string, after leading
    whitespace; None when there is none."""
    m = _NUMBER.match(text.lstrip())
    return m.group(0) if m else None


def _is_numeric_label(answer: str) -> bool:
    return isinstance(answer, str) and _NUMBER.fullmatch(answer.strip()) is not None


def classify_error(answer: str, prediction: str) -> str:
    """Which digits of a wrong answer are wrong (one of ``ERROR_KINDS``).

    The prediction's leading integer and the answer are compared as digit strings aligned on
    the right: the last character is the units digit, everything before it (tens and higher
    digits, and a sign) is the high part; a missing or extra leading digit changes the high
    part. "47" vs "48" → units_only, "57" or "147" or "7" → tens_only, "58" → both, "x" →
    non_numeric, "47x" → other (same digits; scored wrong for another reason).
    """
    if not _is_numeric_label(answer):
        raise AddkError(f"answer {answer!r} is not an integer; no digit decomposition")
    a = answer.strip()
    p = leading_number(prediction)
    if p is None:
        return "non_numeric"
    units, high = a[-1] != p[-1], a[:-1] != p[:-1]
    if units and high:
        return "both"
    if units:
        return "units_only"
    if high:
        return "tens_only"
    return "other"


def decompose_errors(answers: Sequence[str], predictions: Sequence[str]) -> dict[str, int]:
    """Counts of ``classify_error`` over (answer, prediction) pairs of wrong answers, plus
    ``n_wrong``."""
    if len(answers) != len(predictions):
        raise AddkError(f"{len(answers)} answers for {len(predictions)} predictions")
    out = dict.fromkeys(ERROR_KINDS, 0)
    for a, p in zip(answers, predictions, strict=True):
        out[classify_error(a, p)] += 1
    out["n_wrong"] = len(answers)
    return out


def paired_counts(
    correct: Bool[np.ndarray, " example"], reference: Bool[np.ndarray, " example"]
) -> tuple[int, int]:
    """(b, d) of the 2×2 pairing: b = right in ``correct`` and wrong in ``reference``
    (fixed), d = wrong in ``correct`` and right in ``reference`` (broken)."""
    ok, ref = np.asarray(correct, dtype=bool), np.asarray(reference, dtype=bool)
    if ok.shape != ref.shape:
        raise AddkError(f"outcomes of different lengths: {ok.shape} vs {ref.shape}")
    return int((ok & ~ref).sum()), int((~ok & ref).sum())


# ============================================================================ result


@dataclass(frozen=True)
class ArmSummary:
    """One (head, arm): accuracy, CI, pairing with the unprojected arm, error counts."""

    head: Head
    arm: str
    kind: str  # "control" | "projection"
    coef: float
    n: int
    accuracy: float
    ci_low: float
    ci_high: float
    b: int  # right here, wrong unprojected
    d: int  # wrong here, right unprojected
    errors: dict[str, int] | None
    mode: str | None = None
    subspace: str | None = None
    rank: int | None = None
    mean_answer_logprob: float | None = None  # graded metric beside exact match

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "mean_answer_logprob": self.mean_answer_logprob,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "paired_with_unprojected": {"b": self.b, "d": self.d},
            "errors": None if self.errors is None else dict(self.errors),
            "definition": {
                "kind": self.kind,
                "coef": self.coef,
                "mode": self.mode,
                "subspace": self.subspace,
                "rank": self.rank,
            },
        }

    def row(self) -> dict[str, Any]:
        d = {
            "head": head_key(self.head),
            "arm": self.arm,
            "kind": self.kind,
            "coef": self.coef,
            "mode": self.mode,
            "subspace": self.subspace,
            "rank": self.rank,
            "n": self.n,
            "accuracy": self.accuracy,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "mean_answer_logprob": self.mean_answer_logprob,
            "b": self.b,
            "d": self.d,
        }
        for k in (*ERROR_KINDS, "n_wrong"):
            d[f"err_{k}"] = None if self.errors is None else self.errors[k]
        return d


@dataclass(frozen=True)
class ProjectionResult:
    """§5.4.2 projection tests: one ``ArmSummary`` per (head, arm) and the per-example
    outcomes (``per_example``: one row per head × arm × example with ``correct``,
    ``answer_logprob`` and, for wrong answers, the greedy ``pred`` and its ``error`` kind)."""

    heads: tuple[Head, ...]
    c_star: dict[Head, float]
    summaries: tuple[ArmSummary, ...]
    per_example: pd.DataFrame
    errors_reason: str | None = None
    meta: dict = field(default_factory=dict)

    def arms(self, head: Head) -> tuple[str, ...]:
        return tuple(s.arm for s in self.summaries if s.head == _head_tuple(head))

    def get(self, head: Head, arm: str) -> ArmSummary:
        h = _head_tuple(head)
        for s in self.summaries:
            if s.head == h and s.arm == arm:
                return s
        raise AddkError(f"no arm {arm!r} for head L{h[0]}H{h[1]} (have {self.arms(h)})")

    def outcomes(self, head: Head, arm: str) -> Bool[np.ndarray, " example"]:
        """Per-example 0/1 outcomes of one (head, arm), in example order."""
        self.get(head, arm)
        df = self.per_example
        rows = df[(df["head"] == head_key(_head_tuple(head))) & (df["arm"] == arm)]
        return rows.sort_values("example")["correct"].to_numpy().astype(bool)

    def table(self) -> pd.DataFrame:
        """One row per head × arm."""
        return pd.DataFrame([s.row() for s in self.summaries])

    def to_dict(self) -> dict[str, Any]:
        heads: dict[str, Any] = {}
        for h in self.heads:
            heads[head_key(h)] = {
                "head": list(h),
                "c_star": float(self.c_star[h]),
                "arms": {s.arm: s.to_dict() for s in self.summaries if s.head == h},
            }
        return {
            "schema": "projection_tests/v1",
            "heads": heads,
            "error_decomposition": {
                "computed": self.errors_reason is None,
                "reason": self.errors_reason,
                "kinds": list(ERROR_KINDS),
                "rule": (
                    "greedy-decoded leading integer vs answer, digit strings right-aligned: "
                    "last digit = units, the rest (incl. extra/missing leading digits, sign) "
                    "= tens_or_higher; other = same digits but scored wrong"
                ),
            },
            "meta": dict(self.meta),
        }


# ============================================================================ the tests


def _head_tuple(head: Any) -> Head:
    try:
        return int(head[0]), int(head[1])
    except (TypeError, ValueError, IndexError):
        raise AddkError(f"bad head {head!r}: expected (layer, head)") from None


def _check_c(head: Head, c_star: Mapping) -> float:
    key = next((k for k in c_star if _head_tuple(k) == head), None)
    if key is None:
        raise AddkError(f"no c* for head L{head[0]}H{head[1]}; pass it in c_star")
    c = c_star[key]
    if isinstance(c, bool) or not isinstance(c, Real):
        raise AddkError(f"c* of L{head[0]}H{head[1]} must be a number, got {c!r}")
    c = float(c)
    if not np.isfinite(c) or c < 0:
        raise AddkError(f"c* of L{head[0]}H{head[1]} must be finite and ≥ 0, got {c}")
    return c


def _resolve_arms(
    head: Head,
    spec: Sequence[str | ProjectionArm],
    fit: SubspaceFit | None,
    d_model: int,
) -> list[ProjectionArm]:
    out: list[ProjectionArm] = []
    for a in spec:
        if isinstance(a, ProjectionArm):
            arm = a
        elif isinstance(a, str):
            if fit is None:
                raise AddkError(
                    f"arm {a!r} of L{head[0]}H{head[1]} needs the head's SubspaceFit (fits)"
                )
            arm = fit_arm(fit, a)
        else:
            raise AddkError(f"an arm must be a name or a ProjectionArm, got {a!r}")
        if arm.d_model != d_model:
            raise AddkError(
                f"arm {arm.name!r} of L{head[0]}H{head[1]}: basis has {arm.d_model} rows, "
                f"d_model is {d_model}"
            )
        out.append(arm)
    names = [a.name for a in out]
    if len(set(names)) != len(names):
        raise AddkError(f"duplicate arm names for L{head[0]}H{head[1]}: {names}")
    return out


def _check_fit(head: Head, fit: SubspaceFit | None, d_model: int) -> None:
    if fit is None:
        return
    if not isinstance(fit, SubspaceFit):
        raise AddkError(f"fit of L{head[0]}H{head[1]} is not a SubspaceFit: {type(fit).__name__}")
    if fit.head is not None and tuple(fit.head) != head:
        raise AddkError(
            f"the SubspaceFit given for L{head[0]}H{head[1]} was fit on "
            f"L{fit.head[0]}H{fit.head[1]}"
        )
    if fit.mean.shape != (d_model,):
        raise AddkError(
            f"the SubspaceFit of L{head[0]}H{head[1]} lives in {fit.mean.shape[0]} dimensions, "
            f"not the head-output space (d_model = {d_model})"
        )


def _decode_wrong(
    model: HookedModel,
    encoded: list,
    idx: list[int],
    vectors: Float[Tensor, "example d_model"] | None,
    layer: int,
    batch_size: int,
    extra: int,
) -> list[str]:
    """Greedy outputs (answer length + ``extra`` tokens) of the examples ``idx``, with
    ``vectors[i]`` injected at the query position (None: no injection)."""
    out = [""] * len(idx)
    sub = [encoded[i] for i in idx]
    rows = torch.tensor(idx, dtype=torch.long)
    for batch in make_batches(sub, batch_size):
        hooks = ()
        if vectors is not None:
            v = vectors[rows[torch.tensor(batch.indices)]]
            hooks = inject(model, v, batch.query_pos, layer, "resid_mid")
        gen = greedy_decode(model, batch, batch.answer_len + extra, hooks)
        for j, i in enumerate(batch.indices):
            out[i] = model.tokenizer.decode(gen[j].tolist())
    return out


def projection_tests(
    ctx: EvalContext | HookedModel,
    examples: list[Example],
    means: HeadMeans,
    train_means: HeadMeans,
    *,
    heads: Sequence[Head],
    c_star: Mapping[Head, Real],
    selected: Sequence[Head] | SelectedSet,
    train_tasks: Sequence[str],
    fits: Mapping[Head, SubspaceFit] | None = None,
    arms: Sequence[str | ProjectionArm]
    | Mapping[Head, Sequence[str | ProjectionArm]]
    | None = None,
    center: str = "train",
    n_boot: int = 2000,
    decompose: bool = True,
    decode_extra: int = 2,
) -> ProjectionResult:
    """Projection arms of §5.4.2 for each main head (see module docstring).

    ``examples``: n-shot examples whose zero-shot prompts carry the FV (held-out tasks ×
    ``final_eval`` in the corrected protocol, or the paper's 30 tasks); ``means``: the means
    for the main head's term on those tasks (held-out means for held-out tasks);
    ``train_means`` + ``train_tasks``: h̄. ``heads``: the main heads (each in ``selected``);
    ``c_star``: {head: c*} (``c_stars``); ``fits``: {head: SubspaceFit} (``fit_for_head``),
    needed for named arms and for ``center="fit"``; ``arms``: names (``onto_S``, ``out_S``,
    ``remove_S``) and/or ``ProjectionArm``s, one list for every head or a {head: list} map;
    default ``DEFAULT_ARMS`` (those whose subspace the fit has). ``center``: μ = h̄[h]
    (``"train"``, §5.4.2) or the fit's PCA mean (``"fit"``). ``path``: the
    ``InjectionRunner`` forward path (auto / upper / full). ``decode_extra``: tokens decoded
    past the answer length for the error decomposition (``decompose=False`` skips it).
    """
    model, fmt, batch_size, layer, seed, path, verbose = EvalContext.of(ctx).astuple()
    sel = checked_heads(model, selected, "project")
    mains = checked_heads(model, heads, "project")
    outside = sorted(set(mains) - set(sel))
    if outside:
        raise AddkError(f"heads {outside} are not in the selected set")
    if not examples:
        raise AddkError("no evaluation examples")
    if center not in CENTERS:
        raise AddkError(f"center must be one of {CENTERS}, got {center!r}")
    if isinstance(decode_extra, bool) or not isinstance(decode_extra, int) or decode_extra < 1:
        raise AddkError(f"decode_extra must be an integer ≥ 1, got {decode_extra!r}")
    train_tasks = list(train_tasks)
    if not train_tasks:
        raise AddkError("the training split is empty; h̄ needs training tasks")
    check_means(model, means, [e.task for e in examples], "evaluation")
    check_means(model, train_means, train_tasks, "training")
    d_model = model.info.d_model
    fits = {} if fits is None else {_head_tuple(k): v for k, v in fits.items()}
    coefs = {h: _check_c(h, c_star) for h in mains}
    plans: dict[Head, list[ProjectionArm]] = {}
    for h in mains:
        fit = fits.get(h)
        _check_fit(h, fit, d_model)
        if center == "fit" and fit is None:
            raise AddkError(f'center="fit" needs the SubspaceFit of L{h[0]}H{h[1]}')
        if arms is None:  # the default arms this head's fit has (all, for the §5.2 targets)
            have = set(fit.subspace_columns) if fit is not None else set()
            spec: Sequence = [a for a in DEFAULT_ARMS if fit is None or a.split("_", 1)[1] in have]
        elif isinstance(arms, Mapping):
            spec = next((v for k, v in arms.items() if _head_tuple(k) == h), None)
            if spec is None:
                raise AddkError(f"no arms given for L{h[0]}H{h[1]}")
        else:
            spec = arms
        if isinstance(spec, str | ProjectionArm):
            spec = [spec]
        plans[h] = _resolve_arms(h, list(spec), fit, d_model)

    layer = default_injection_layer(model.n_layers) if layer is None else layer
    bar = train_means.cross_task_mean(train_tasks).float()
    runner = InjectionRunner(
        model, examples, layer=layer, fmt=fmt, path=path, batch_size=batch_size
    )
    n = len(examples)
    bad = [e.answer for e in examples if not _is_numeric_label(e.answer)]
    reason = None
    if not decompose:
        reason = "disabled (decompose=False)"
    elif bad:
        reason = f"non-numeric labels (e.g. {bad[0]!r}; {len(bad)} of {n}): no digit decomposition"
    encoded = encode_examples(model, examples, fmt, zero_shot=True) if reason is None else None

    def score(vec: Tensor | None):
        v = torch.zeros(n, d_model) if vec is None else vec
        sc = runner.score_vectors(v)
        return sc.correct[0].astype(bool), sc.answer_logprob[0]

    def errors(ok: np.ndarray, vec: Tensor | None) -> tuple[list, list, dict | None]:
        preds: list = [None] * n
        kinds: list = [None] * n
        if reason is not None:
            return preds, kinds, None
        wrong = [int(i) for i in np.nonzero(~ok)[0]]
        texts = _decode_wrong(model, encoded, wrong, vec, layer, batch_size, decode_extra)
        for i, t in zip(wrong, texts, strict=True):
            preds[i], kinds[i] = t, classify_error(examples[i].answer, t)
        return preds, kinds, decompose_errors([examples[i].answer for i in wrong], texts)

    total = 1 + sum(2 + len(p) for p in plans.values())
    bar_iter = tqdm(total=total, desc="projection tests", disable=not verbose)
    zs_ok, zs_lp = score(None)
    zs_err = errors(zs_ok, None)
    bar_iter.update()

    summaries: list[ArmSummary] = []
    frames: list[pd.DataFrame] = []
    base = {
        "example": np.arange(n),
        "task": [e.task for e in examples],
        "k": [e.k for e in examples],
        "query": [e.query for e in examples],
        "answer": [e.answer for e in examples],
    }
    center_norm: dict[str, float] = {}
    for h in mains:
        c = coefs[h]
        own = headset_vectors(means, examples, [h])
        others = headset_vectors(
            means, examples, [], mean_heads=[o for o in sel if o != h], bar=bar
        )
        mu = bar[h[0], h[1]] if center == "train" else torch.from_numpy(np.array(fits[h].mean))
        center_norm[head_key(h)] = float(torch.linalg.vector_norm(mu.double()))
        runs: list[tuple] = []
        unproj_vec = c * own + others
        un_ok, un_lp = score(unproj_vec)
        un_err = errors(un_ok, unproj_vec)
        bar_iter.update()
        c0_ok, c0_lp = score(others)
        c0_err = errors(c0_ok, others)
        bar_iter.update()
        runs.append(("zero_shot", "control", 0.0, None, (zs_ok, zs_lp, zs_err)))
        runs.append(("c0", "control", 0.0, None, (c0_ok, c0_lp, c0_err)))
        runs.append(("unprojected", "control", c, None, (un_ok, un_lp, un_err)))
        for arm in plans[h]:
            vec = c * arm.apply(own, mu.float()) + others
            ok, lp = score(vec)
            runs.append((arm.name, "projection", c, arm, (ok, lp, errors(ok, vec))))
            bar_iter.update()
        for name, kind, coef, arm, (ok, lp, (preds, kinds, counts)) in runs:
            lo, hi = bootstrap_ci(ok.astype(float), n_boot=n_boot, seed=seed)
            b, d = paired_counts(ok, un_ok)
            summaries.append(
                ArmSummary(
                    head=h,
                    arm=name,
                    kind=kind,
                    coef=coef,
                    n=n,
                    accuracy=float(ok.mean()),
                    ci_low=lo,
                    ci_high=hi,
                    b=b,
                    d=d,
                    errors=counts,
                    mean_answer_logprob=float(np.mean(lp)),
                    mode=None if arm is None else arm.mode,
                    subspace=None if arm is None else arm.subspace,
                    rank=None if arm is None else arm.rank,
                )
            )
            frames.append(
                pd.DataFrame(
                    {
                        "head": head_key(h),
                        "arm": name,
                        **base,
                        "correct": ok,
                        "answer_logprob": lp,
                        "pred": preds,
                        "error": kinds,
                    }
                )
            )
    bar_iter.close()
    meta = {
        "model_fingerprint": model.info.fingerprint,
        "layer": layer,
        "site": "resid_mid",
        "format": fmt if isinstance(fmt, str) else fmt.name,
        "center": center,
        "center_norm": center_norm,
        "selected": [list(h) for h in sel],
        "main": [list(h) for h in mains],
        "train_tasks": train_tasks,
        "eval_tasks": list(dict.fromkeys(e.task for e in examples)),
        "n_examples": n,
        "sample_manifest": manifest_hash(examples),
        "arms": {head_key(h): [a.to_dict() for a in plans[h]] for h in mains},
        "forward_path": runner.path,
        "decode_extra_tokens": decode_extra,
        "bootstrap": {"n_boot": n_boot, "alpha": 0.05, "seed": seed},
        "pairing": "b = right in the arm, wrong unprojected; d = wrong in the arm, right unprojected",
    }
    return ProjectionResult(
        heads=tuple(mains),
        c_star=coefs,
        summaries=tuple(summaries),
        per_example=pd.concat(frames, ignore_index=True),
        errors_reason=reason,
        meta=meta,
    )
