"""Head selectors over a recovery (dose-response) scan (docs/method.md §4.1–§4.4).

Localization steps 2 and 3 are pure functions of the recovery scan of §4.1: for each selected
head h and integer coefficient c ∈ c_grid (c = 0 first), acc_h(c) is the zero-shot accuracy
when h's task mean is scaled by c and every other selected head is mean-ablated (c = 0 is the
leave-one-out point). Changing a selector never reruns the GPU.

- `significant_set` (§4.2, ``paired_bh`` v1): needs per-example 0/1 outcomes. For every c > 0,
  b_c = #(wrong at 0, right at c), d_c = #(right at 0, wrong at c) and the exact one-sided
  McNemar p_c = P[Binom(b_c + d_c, ½) ≥ b_c] (p_c = 1 when b_c + d_c = 0). c* = argmin p_c
  (ties: larger b_c − d_c, then smaller c); p_head = min(1, m·p_{c*}) with m = #{c > 0};
  across the N heads Benjamini–Hochberg: p_adj(i) = min(1, min_{j≥i} N·p_(j)/j). Significant
  iff p_adj ≤ q (0.05) and b > d at c*. Variants: ``by`` (BH × H_N, the harmonic number),
  ``per_head`` (p_adj = p_head) and ``global_bonferroni`` (p_adj = min(1, N·p_head)); by
  construction BY ⊆ BH ⊆ per-head and global Bonferroni ⊆ BH.
- `main_set` (§4.3, ``unified`` v1, "quarter-of-best-gain"): c* = first argmax of acc_h(c)
  (c = 0 included), gain_h = acc_h(c*) − acc_h(0); the leader has the largest gain (ties: larger
  acc*) and G* is its gain. Applicable iff clean ≥ 0.25, material iff G* ≥ floor (and G* > 0).
  Main iff gain_h ≥ β·G* (β = 0.25), ordered by gain. Minor iff not main, gain > 0 and
  z = gain / max(√((a0(1−a0) + a1(1−a1))/n), 1/n) ≥ 3.5. Verdict "localized" if ≤ 5 main heads,
  else "distributed"; "not_applicable" / "not_material" (no main heads) say why otherwise.
- `weak_rule` (§4.4, released ``recovery_weak``): main iff c* > 0, the curve is steady (no
  single-step drop > eps on [0..c*]) and gain ≥ max(abs_floor, rel_floor·(A_selected − acc_h(0))).
  Its parameters have no defaults (the original code silently shadowed them); the release
  values are `RELEASE_WEAK_PARAMS` = rel_floor 0.2, abs_floor 0.01, eps 0.01.

Scan counts are integers out of n_eval, so every selector decision is made in exact rational
arithmetic (`fractions.Fraction`) on the counts, with each float parameter taken at its decimal
value (0.2 means 1/5): a head sitting exactly on a bar is decided the same way on every machine.
Reported gains, bars and z are floats at full precision.

Cost: main_set and weak_rule are O(heads × n_c); significant_set is O(heads × n_c × examples)
boolean work plus heads × n_c binomial tails (33 × 21 × 2500 outcomes: a few milliseconds).
The JSON reader/writer keep per-example outcomes as one "0"/"1" string per coefficient.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Bool, Float, Int, Real

from addk_interp.core.errors import AddkError
from addk_interp.core.heads import HeadLike as Head  # the one head type: Head or (l, h)
from addk_interp.core.heads import head_str
from addk_interp.core.validate import check_number

# What `RecoveryScan` accepts besides its stored types: the raw values of a scan file or of the
# `from_*` constructors. `__post_init__` validates them (ValueError naming the head and index)
# and stores the normalized types that come first in each field's annotation.
Count = int | float | np.integer | np.floating
"""A count as read from JSON or numpy: integral floats are accepted; NaN, inf, fractional values
and booleans are refused with a ValueError (see `_count`)."""
CountsIn = Int[np.ndarray, " n_c"] | np.ndarray | Sequence[Count]
"""One head's correct counts over c_grid: a vector or list of counts."""
OutcomesIn = Bool[np.ndarray, "n_c example"] | np.ndarray | Sequence[str | Sequence[Any]]
"""One head's per-example outcomes: a bool or 0/1 matrix [n_c, n_eval], or one "0"/"1" string
(or 0/1 list) per coefficient."""

RELEASE_WEAK_PARAMS: dict[str, float] = {"rel_floor": 0.2, "abs_floor": 0.01, "eps": 0.01}
SIGNIFICANCE_METHODS: tuple[str, ...] = ("bh", "by", "per_head", "global_bonferroni")
_HEAD_KEY = re.compile(r"^(\d+):(\d+)$")
_REQUIRED_KEYS = ("n_eval", "c_grid", "clean_correct", "full_selected_fv_correct", "correct")


def head_key(head: Head) -> str:
    """JSON key of a head in selector outputs: ``"L{layer}H{head}"`` (``heads.Head``)."""
    return head_str(head)


def _exact(value: float) -> Fraction:
    """A float parameter at its shortest decimal value (0.2 -> 1/5), for exact comparisons."""
    return Fraction(repr(float(value)))


def _number(value: Any, name: str, *, lo: float | None = None, hi: float | None = None) -> float:
    out = check_number(value, name)
    if (lo is not None and out < lo) or (hi is not None and out > hi):
        raise AddkError(f"{name} must lie in [{lo}, {hi}], got {value!r}")
    return out


# --------------------------------------------------------------------------------------------
# The scan
# --------------------------------------------------------------------------------------------


def _count(value: Any, where: str) -> int:
    """An integer count; integral floats are accepted, NaN/inf/bools/fractions are not."""
    if isinstance(value, bool | np.bool_):
        raise AddkError(f"{where}: expected an integer count, got boolean {value!r}")
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            raise AddkError(f"{where}: count is NaN")
        if math.isinf(value):
            raise AddkError(f"{where}: count is infinite")
        if float(value).is_integer():
            return int(value)
        raise AddkError(f"{where}: count {value!r} is not an integer")
    raise AddkError(f"{where}: expected an integer count, got {type(value).__name__} {value!r}")


def _counts_vector(values: Any, n_c: int, n_eval: int, where: str) -> Int[np.ndarray, " n_c"]:
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise AddkError(f"{where}: expected a list of {n_c} counts, got {type(values).__name__}")
    if len(values) != n_c:
        raise AddkError(
            f"{where}: ragged scan, {len(values)} counts for {n_c} coefficients in c_grid"
        )
    out = np.array([_count(v, f"{where}[{i}]") for i, v in enumerate(values)], dtype=np.int64)
    bad = np.flatnonzero((out < 0) | (out > n_eval))
    if bad.size:
        i = int(bad[0])
        raise AddkError(f"{where}[{i}]: count {int(out[i])} outside [0, n_eval={n_eval}]")
    out.setflags(write=False)
    return out


def _outcome_matrix(
    values: Any, n_c: int, n_eval: int, where: str
) -> Bool[np.ndarray, "n_c example"]:
    if isinstance(values, np.ndarray):
        arr = values
    else:
        if not isinstance(values, Sequence) or len(values) != n_c:
            got = len(values) if isinstance(values, Sequence) else type(values).__name__
            raise AddkError(f"{where}: expected {n_c} outcome rows (one per c), got {got}")
        rows = []
        for i, row in enumerate(values):
            if isinstance(row, str):
                if set(row) - {"0", "1"}:
                    raise AddkError(f"{where}[{i}]: outcome string may hold only '0'/'1'")
                row = [ch == "1" for ch in row]
            if not isinstance(row, Sequence) or len(row) != n_eval:
                got = len(row) if isinstance(row, Sequence) else type(row).__name__
                raise AddkError(f"{where}[{i}]: expected {n_eval} outcomes, got {got}")
            rows.append(row)
        arr = np.array(rows, dtype=object)
    if arr.shape != (n_c, n_eval):
        raise AddkError(f"{where}: outcome matrix has shape {arr.shape}, want {(n_c, n_eval)}")
    if arr.dtype != np.bool_:
        flat = arr.ravel().tolist()
        if any(isinstance(v, float) and math.isnan(v) for v in flat):
            raise AddkError(f"{where}: outcomes contain NaN")
        if any(v not in (0, 1) for v in flat):  # True/False compare equal to 1/0
            raise AddkError(f"{where}: outcomes must be 0/1 or booleans")
        arr = np.array(flat, dtype=np.int64).reshape(n_c, n_eval) == 1
    out = np.array(arr, dtype=np.bool_, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class RecoveryScan:
    """A recovery scan: per scanned head, correct counts out of ``n_eval`` over ``c_grid``.

    ``c_grid`` holds distinct non-negative integers, ascending, starting at 0 (the
    leave-one-out point). ``correct[head][i]`` is the number of correct answers at
    ``c_grid[i]``. ``outcomes[head]`` (optional) is the per-example bool matrix
    [n_c, n_eval], paired across c, whose row sums must equal the counts. ``clean_correct`` and
    ``full_selected_correct`` are the scan-level baselines on the same ``n_eval`` examples.
    Everything is validated on construction and stored normalized (the first type of each
    field's annotation: int counts, a tuple c_grid, (layer, head) keys, read-only arrays); the
    constructor also takes the raw forms of a scan file (lists, integral floats, "layer:head"
    keys, "0"/"1" outcome strings). Scans compare by identity (``eq=False``): their fields hold
    numpy arrays.
    """

    c_grid: tuple[int, ...] | Sequence[Count]
    n_eval: int | Count
    clean_correct: int | Count
    full_selected_correct: int | Count
    correct: dict[Head, Int[np.ndarray, " n_c"]] | Mapping[Head | str, CountsIn]
    outcomes: (
        dict[Head, Bool[np.ndarray, "n_c example"]] | Mapping[Head | str, OutcomesIn] | None
    ) = None
    meta: dict[str, Any] | Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n_eval = _count(self.n_eval, "n_eval")
        if n_eval <= 0:
            raise AddkError(f"n_eval must be positive, got {n_eval}")
        if isinstance(self.c_grid, str | bytes) or not isinstance(self.c_grid, Sequence):
            raise AddkError(f"c_grid must be a list of integers, got {self.c_grid!r}")
        grid = tuple(_count(c, f"c_grid[{i}]") for i, c in enumerate(self.c_grid))
        if not grid or grid[0] != 0:
            raise AddkError(f"c_grid must start at 0 (leave-one-out point), got {list(grid)}")
        if any(b <= a for a, b in zip(grid, grid[1:], strict=False)):
            raise AddkError(f"c_grid must be strictly increasing, got {list(grid)}")
        baselines = {}
        for name in ("clean_correct", "full_selected_correct"):
            value = _count(getattr(self, name), name)
            if not 0 <= value <= n_eval:
                raise AddkError(f"{name} = {value} outside [0, n_eval={n_eval}]")
            baselines[name] = value
        if not isinstance(self.correct, Mapping) or not self.correct:
            raise AddkError("a scan needs at least one head in `correct`")
        correct: dict[Head, np.ndarray] = {}
        for head, values in self.correct.items():
            key = _as_head(head)
            if key in correct:
                raise AddkError(f"head {key} appears twice in the scan")
            correct[key] = _counts_vector(values, len(grid), n_eval, f"head {key[0]}:{key[1]}")
        outcomes = None
        if self.outcomes is not None:
            heads_o = {_as_head(h) for h in self.outcomes}
            if heads_o != set(correct):
                missing = sorted(set(correct) - heads_o)
                extra = sorted(heads_o - set(correct))
                raise AddkError(
                    f"outcomes must cover exactly the scanned heads (missing {missing}, "
                    f"extra {extra})"
                )
            outcomes = {}
            for head, values in self.outcomes.items():
                key = _as_head(head)
                where = f"outcomes of head {key[0]}:{key[1]}"
                mat = _outcome_matrix(values, len(grid), n_eval, where)
                sums = mat.sum(axis=1)
                if not np.array_equal(sums, correct[key]):
                    i = int(np.flatnonzero(sums != correct[key])[0])
                    raise AddkError(
                        f"{where}: {int(sums[i])} correct at c={grid[i]} but the count says "
                        f"{int(correct[key][i])}"
                    )
                outcomes[key] = mat
            outcomes = {head: outcomes[head] for head in correct}
        object.__setattr__(self, "n_eval", n_eval)
        object.__setattr__(self, "c_grid", grid)
        object.__setattr__(self, "clean_correct", baselines["clean_correct"])
        object.__setattr__(self, "full_selected_correct", baselines["full_selected_correct"])
        object.__setattr__(self, "correct", correct)
        object.__setattr__(self, "outcomes", outcomes)
        object.__setattr__(self, "meta", dict(self.meta))

    @classmethod
    def from_accuracies(
        cls,
        *,
        c_grid: Sequence[int],
        n_eval: int,
        clean_acc: float | int,
        full_selected_acc: float | int,
        acc: Mapping[Head, Sequence[float | int] | Real[np.ndarray, " n_c"]],
        outcomes: Mapping[Head, OutcomesIn] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> RecoveryScan:
        """Build a scan from accuracies; each must be (within 1e-9) a multiple of 1/n_eval."""

        def to_count(value: float | int, where: str) -> int:
            x = _number(value, where, lo=0.0, hi=1.0) * n_eval
            if abs(x - round(x)) > 1e-9 * max(1.0, n_eval):
                raise AddkError(f"{where}: accuracy {value!r} is not a multiple of 1/{n_eval}")
            return int(round(x))

        return cls(
            c_grid=tuple(c_grid),
            n_eval=n_eval,
            clean_correct=to_count(clean_acc, "clean_acc"),
            full_selected_correct=to_count(full_selected_acc, "full_selected_acc"),
            correct={
                h: [to_count(a, f"head {h} acc[{i}]") for i, a in enumerate(v)]
                for h, v in acc.items()
            },
            outcomes=None if outcomes is None else dict(outcomes),
            meta=dict(meta or {}),
        )

    @classmethod
    def from_outcomes(
        cls,
        *,
        c_grid: Sequence[int],
        outcomes: Mapping[Head, Bool[np.ndarray, "n_c example"] | np.ndarray | Sequence[Any]],
        clean_correct: int,
        full_selected_correct: int,
        meta: Mapping[str, Any] | None = None,
    ) -> RecoveryScan:
        """Build a scan from per-example outcomes (bool or 0/1 matrices [n_c, n_eval], or
        array-likes of them); counts are their row sums."""
        mats = {h: np.asarray(v) for h, v in outcomes.items()}
        if not mats:
            raise AddkError("a scan needs at least one head in `outcomes`")
        widths = {m.shape[-1] if m.ndim == 2 else -1 for m in mats.values()}
        if len(widths) != 1 or -1 in widths:
            raise AddkError("every outcome matrix must be 2-D [n_c, n_examples] of one width")
        return cls(
            c_grid=tuple(c_grid),
            n_eval=widths.pop(),
            clean_correct=clean_correct,
            full_selected_correct=full_selected_correct,
            correct={h: (m != 0).sum(axis=1).tolist() for h, m in mats.items()},
            outcomes=mats,
            meta=dict(meta or {}),
        )

    @property
    def heads(self) -> list[Head]:
        return list(self.correct)

    @property
    def m(self) -> int:
        """Number of positive coefficients (the within-head Bonferroni factor of §4.2)."""
        return len(self.c_grid) - 1

    @property
    def clean_acc(self) -> float:
        return self.clean_correct / self.n_eval

    @property
    def full_selected_acc(self) -> float:
        return self.full_selected_correct / self.n_eval

    def acc(self, head: Head) -> Float[np.ndarray, " n_c"]:
        """acc_head(c) over ``c_grid``."""
        return self.correct[_as_head(head)] / self.n_eval


def _as_head(head: Any) -> Head:
    if isinstance(head, str):
        match = _HEAD_KEY.match(head)
        if not match:
            raise AddkError(f"head key {head!r} is not of the form 'layer:head'")
        return int(match.group(1)), int(match.group(2))
    try:
        layer, idx = head
    except (TypeError, ValueError):
        raise AddkError(f"a head must be a (layer, head) pair, got {head!r}") from None
    return _count(layer, f"layer of head {head!r}"), _count(idx, f"index of head {head!r}")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise AddkError(f"duplicate key {key!r} in scan file")
        out[key] = value
    return out


def load_scan_json(path: str | Path) -> RecoveryScan:
    """Read a scan in the released JSON format (also what `save_scan_json` writes).

    Required keys: ``n_eval``, ``c_grid``, ``clean_correct``, ``full_selected_fv_correct`` and
    ``correct`` = {"layer:head": [count per c]}; optional ``outcomes`` = {"layer:head": [one
    "0"/"1" string, or 0/1 list, per c]}. Any other key is kept in ``meta``. Missing keys, NaN,
    non-integer or out-of-range counts, ragged lists and duplicate keys raise ValueError.
    """
    path = Path(path)
    with path.open(encoding="utf-8") as fh:
        try:
            raw = json.load(fh, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as exc:
            raise AddkError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise AddkError(f"{path}: a scan file must hold a JSON object")
    missing = [key for key in _REQUIRED_KEYS if key not in raw]
    if missing:
        raise AddkError(f"{path}: missing required key(s) {missing}")
    for key in ("correct", "outcomes"):
        if key in raw and not isinstance(raw[key], dict):
            raise AddkError(f"{path}: {key!r} must map 'layer:head' to lists")
    meta = {k: v for k, v in raw.items() if k not in (*_REQUIRED_KEYS, "outcomes")}
    try:
        return RecoveryScan(
            c_grid=raw["c_grid"],
            n_eval=raw["n_eval"],
            clean_correct=raw["clean_correct"],
            full_selected_correct=raw["full_selected_fv_correct"],
            correct=raw["correct"],
            outcomes=raw.get("outcomes"),
            meta=meta,
        )
    except ValueError as exc:
        raise AddkError(f"{path}: {exc}") from exc


def save_scan_json(scan: RecoveryScan, path: str | Path, *, outcomes: bool = True) -> Path:
    """Write ``scan`` in the released JSON format (+ ``outcomes`` as "0"/"1" strings per c)."""
    payload: dict[str, Any] = dict(scan.meta)
    payload.update(
        n_eval=scan.n_eval,
        c_grid=list(scan.c_grid),
        clean_correct=scan.clean_correct,
        full_selected_fv_correct=scan.full_selected_correct,
        correct={f"{h[0]}:{h[1]}": [int(v) for v in cnt] for h, cnt in scan.correct.items()},
    )
    if outcomes and scan.outcomes is not None:
        payload["outcomes"] = {
            f"{h[0]}:{h[1]}": ["".join("1" if x else "0" for x in row) for row in mat]
            for h, mat in scan.outcomes.items()
        }
    from addk_interp.core.store import atomic_write_text

    text = json.dumps(payload, indent=1, allow_nan=False) + "\n"
    return atomic_write_text(Path(path), text)


# --------------------------------------------------------------------------------------------
# §4.2 significant set
# --------------------------------------------------------------------------------------------


def mcnemar_one_sided(b: int, d: int) -> float:
    """Exact one-sided McNemar p = P[Binom(b + d, ½) ≥ b]; 1 when b + d = 0."""
    from scipy.stats import binom  # lazy: scipy.stats costs ~1 s to import

    b, d = _count(b, "b"), _count(d, "d")
    if b < 0 or d < 0:
        raise AddkError(f"b and d must be non-negative, got b={b}, d={d}")
    if b + d == 0:
        return 1.0
    return float(binom.sf(b - 1, b + d, 0.5))


def _step_up(p: Float[np.ndarray, " n_tests"], factor: float) -> Float[np.ndarray, " n_tests"]:
    """min(1, min_{j≥i} factor·N·p_(j)/j), returned in the input order."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1:
        raise AddkError(f"p-values must be a 1-D vector, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise AddkError("p-values must be finite and lie in [0, 1]")
    n = p.size
    if n == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = factor * n * p[order] / np.arange(1, n + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def bh_adjust(p: Float[np.ndarray, " n_tests"]) -> Float[np.ndarray, " n_tests"]:
    """Benjamini–Hochberg adjusted p-values: min(1, min_{j≥i} N·p_(j)/j)."""
    return _step_up(p, 1.0)


def by_adjust(p: Float[np.ndarray, " n_tests"]) -> Float[np.ndarray, " n_tests"]:
    """Benjamini–Yekutieli adjusted p-values: BH with N replaced by N·H_N."""
    n = np.asarray(p).size
    return _step_up(p, float(sum(1.0 / k for k in range(1, n + 1))))


@dataclass(frozen=True)
class HeadTest:
    """Paired test of one head (§4.2). Lists run over the positive coefficients."""

    head: Head
    c_star: int
    b: int
    d: int
    p_c_star: float
    p_head: float
    p_adjusted: float
    significant: bool
    c_values: list[int]
    b_by_c: list[int]
    d_by_c: list[int]
    p_by_c: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "head": list(self.head),
            "c_star": self.c_star,
            "b": self.b,
            "d": self.d,
            "p_c_star": self.p_c_star,
            "p_head": self.p_head,
            "p_adjusted": self.p_adjusted,
            "significant": self.significant,
            "c_values": list(self.c_values),
            "b_by_c": list(self.b_by_c),
            "d_by_c": list(self.d_by_c),
            "p_by_c": list(self.p_by_c),
        }


@dataclass(frozen=True)
class SignificantSetResult:
    """Significant set: heads ordered by adjusted p ascending (ties by layer, head)."""

    method: str
    q: float
    m: int
    n_heads: int
    n_eval: int
    significant: list[Head]
    tests: dict[Head, HeadTest]

    @property
    def name(self) -> str:
        return f"paired_{self.method}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "selector": self.name,
            "version": 1,
            "params": {"method": self.method, "q": self.q},
            "m": self.m,
            "n_heads": self.n_heads,
            "n_eval": self.n_eval,
            "significant": [list(h) for h in self.significant],
            "tests": {head_key(h): t.to_dict() for h, t in self.tests.items()},
        }


def significant_set(
    scan: RecoveryScan, *, q: float | int = 0.05, method: str = "bh"
) -> SignificantSetResult:
    """§4.2 paired significance of every scanned head, then the across-head correction.

    ``method``: "bh" (the paper's ``paired_bh``), "by", "per_head" or "global_bonferroni".
    Requires per-example outcomes in ``scan.outcomes``.
    """
    if method not in SIGNIFICANCE_METHODS:
        raise AddkError(
            f"unknown significance method {method!r}; valid: {', '.join(SIGNIFICANCE_METHODS)}"
        )
    q = _number(q, "q", lo=0.0, hi=1.0)
    if scan.outcomes is None:
        raise AddkError(
            "significant_set needs per-example 0/1 outcomes (paired McNemar tests); this scan "
            "has correct-counts only. Re-run or reload the scan with its outcomes."
        )
    m = scan.m
    if m == 0:
        raise AddkError("significant_set needs at least one positive coefficient in c_grid")
    from scipy.stats import binom  # lazy: scipy.stats costs ~1 s to import

    heads = scan.heads
    pre: list[tuple[int, int, int, float, list[int], list[int], list[float]]] = []
    for head in heads:
        mat = scan.outcomes[head]
        base = mat[0]
        b_c = (~base & mat[1:]).sum(axis=1).astype(np.int64)
        d_c = (base & ~mat[1:]).sum(axis=1).astype(np.int64)
        n_c = b_c + d_c
        p_c = np.where(n_c > 0, binom.sf(b_c - 1, np.maximum(n_c, 1), 0.5), 1.0)
        p_c = np.minimum(p_c, 1.0)
        best = min(range(m), key=lambda i: (p_c[i], -(b_c[i] - d_c[i]), scan.c_grid[i + 1]))
        pre.append(
            (
                best,
                int(b_c[best]),
                int(d_c[best]),
                float(p_c[best]),
                b_c.tolist(),
                d_c.tolist(),
                [float(x) for x in p_c],
            )
        )
    p_head = np.array([min(1.0, m * row[3]) for row in pre])
    n_heads = len(heads)
    if method == "bh":
        p_adj = bh_adjust(p_head)
    elif method == "by":
        p_adj = by_adjust(p_head)
    elif method == "per_head":
        p_adj = p_head.copy()
    else:
        p_adj = np.minimum(1.0, n_heads * p_head)
    tests: dict[Head, HeadTest] = {}
    for head, row, ph, pa in zip(heads, pre, p_head, p_adj, strict=True):
        best, b, d, p_star, b_list, d_list, p_list = row
        tests[head] = HeadTest(
            head=head,
            c_star=scan.c_grid[best + 1],
            b=b,
            d=d,
            p_c_star=p_star,
            p_head=float(ph),
            p_adjusted=float(pa),
            significant=bool(pa <= q and b > d),
            c_values=list(scan.c_grid[1:]),
            b_by_c=b_list,
            d_by_c=d_list,
            p_by_c=p_list,
        )
    chosen = sorted(
        (h for h in heads if tests[h].significant), key=lambda h: (tests[h].p_adjusted, h)
    )
    return SignificantSetResult(
        method=method,
        q=q,
        m=m,
        n_heads=n_heads,
        n_eval=scan.n_eval,
        significant=chosen,
        tests=tests,
    )


# --------------------------------------------------------------------------------------------
# §4.3 main set and §4.4 weak rule
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Peak:
    index: int  # position of c* in c_grid (first argmax, c = 0 included)
    c_star: int
    count0: int
    count_star: int

    @property
    def gain_count(self) -> int:
        return self.count_star - self.count0


def _peak(scan: RecoveryScan, head: Head) -> _Peak:
    counts = scan.correct[head]
    i = int(np.argmax(counts))  # numpy's argmax returns the first maximum
    return _Peak(i, scan.c_grid[i], int(counts[0]), int(counts[i]))


def _z(peak: _Peak, n: int) -> float:
    a0, a1 = peak.count0 / n, peak.count_star / n
    se = math.sqrt(max(a0 * (1 - a0) + a1 * (1 - a1), 0.0) / n)
    return (peak.gain_count / n) / max(se, 1.0 / n)


@dataclass(frozen=True)
class HeadPeak:
    """Per-head record of the quarter-of-best-gain rule."""

    head: Head
    c_star: int
    acc0: float
    acc_star: float
    gain: float
    z: float
    decision: str  # "main" | "minor" | "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "head": list(self.head),
            "c_star": self.c_star,
            "acc0": self.acc0,
            "acc_star": self.acc_star,
            "gain": self.gain,
            "z": self.z,
            "decision": self.decision,
        }


@dataclass(frozen=True)
class MainSetResult:
    """Quarter-of-best-gain main set (§4.3) with every parameter and per-head record."""

    beta: float
    floor: float
    clean_min: float
    minor_z: float
    max_localized: int
    n_eval: int
    clean_acc: float
    applicable: bool
    material: bool
    leader: Head | None
    leader_gain: float
    bar: float | None
    main: list[Head]
    minor: list[Head]
    verdict: str  # "localized" | "distributed" | "not_applicable" | "not_material"
    reason: str | None
    peaks: dict[Head, HeadPeak]

    @property
    def gains(self) -> dict[Head, float]:
        return {h: p.gain for h, p in self.peaks.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "selector": "unified",
            "version": 1,
            "params": {
                "beta": self.beta,
                "floor": self.floor,
                "clean_min": self.clean_min,
                "minor_z": self.minor_z,
                "max_localized": self.max_localized,
            },
            "n_eval": self.n_eval,
            "clean_acc": self.clean_acc,
            "applicable": self.applicable,
            "material": self.material,
            "leader": None if self.leader is None else list(self.leader),
            "leader_gain": self.leader_gain,
            "bar": self.bar,
            "main": [list(h) for h in self.main],
            "minor": [list(h) for h in self.minor],
            "verdict": self.verdict,
            "reason": self.reason,
            "peaks": {head_key(h): p.to_dict() for h, p in self.peaks.items()},
        }


def main_set(
    scan: RecoveryScan,
    *,
    beta: float | int = 0.25,
    floor: float | int = 0.0,
    clean_min: float | int = 0.25,
    minor_z: float | int = 3.5,
    max_localized: int = 5,
) -> MainSetResult:
    """§4.3 "quarter-of-best-gain" main set (``unified`` v1).

    A G* of exactly 0 is never material (with floor 0 every head would otherwise be main).
    Minor heads are reported whenever the scan is applicable. Main and minor heads are ordered
    by gain, then acc*, descending, then (layer, head); the leader breaks the same ties.
    """
    beta = _number(beta, "beta", lo=0.0, hi=1.0)
    if beta == 0.0:
        raise AddkError("beta must be > 0")
    floor = _number(floor, "floor", lo=0.0, hi=1.0)
    clean_min = _number(clean_min, "clean_min", lo=0.0, hi=1.0)
    minor_z = _number(minor_z, "minor_z")
    max_localized = _count(max_localized, "max_localized")
    if max_localized < 0:
        raise AddkError(f"max_localized must be ≥ 0, got {max_localized}")
    n = scan.n_eval
    peaks = {h: _peak(scan, h) for h in scan.heads}

    def rank(h: Head) -> tuple[int, int, int, int]:
        return (-peaks[h].gain_count, -peaks[h].count_star, h[0], h[1])

    leader = min(peaks, key=rank)
    g_count = peaks[leader].gain_count
    applicable = Fraction(scan.clean_correct, n) >= _exact(clean_min)
    material = g_count > 0 and Fraction(g_count, n) >= _exact(floor)
    bar_exact = _exact(beta) * Fraction(g_count, n) if applicable and material else None

    decisions: dict[Head, str] = {}
    for h, pk in peaks.items():
        if bar_exact is not None and Fraction(pk.gain_count, n) >= bar_exact:
            decisions[h] = "main"
        elif applicable and pk.gain_count > 0 and _z(pk, n) >= minor_z:
            decisions[h] = "minor"
        else:
            decisions[h] = "none"
    main = sorted((h for h in peaks if decisions[h] == "main"), key=rank)
    minor = sorted((h for h in peaks if decisions[h] == "minor"), key=rank)
    clean = scan.clean_acc
    if not applicable:
        verdict = "not_applicable"
        reason = (
            f"clean accuracy {clean:.4f} < clean_min {clean_min}: the model does not do the task, "
            "so no head can be main"
        )
    elif not material:
        verdict = "not_material"
        reason = (
            f"best single-head gain G* = {g_count / n:.4f} (leader {leader}) is below floor "
            f"{floor} or zero: no head materially recovers the task"
        )
    else:
        verdict = "localized" if len(main) <= max_localized else "distributed"
        reason = None
    return MainSetResult(
        beta=beta,
        floor=floor,
        clean_min=clean_min,
        minor_z=minor_z,
        max_localized=max_localized,
        n_eval=n,
        clean_acc=clean,
        applicable=applicable,
        material=material,
        leader=leader,
        leader_gain=g_count / n,
        bar=None if bar_exact is None else float(bar_exact),
        main=main,
        minor=minor,
        verdict=verdict,
        reason=reason,
        peaks={
            h: HeadPeak(
                head=h,
                c_star=pk.c_star,
                acc0=pk.count0 / n,
                acc_star=pk.count_star / n,
                gain=pk.gain_count / n,
                z=_z(pk, n),
                decision=decisions[h],
            )
            for h, pk in peaks.items()
        },
    )


@dataclass(frozen=True)
class WeakHead:
    """Per-head record of the recovery_weak rule."""

    head: Head
    c_star: int
    acc0: float
    acc_star: float
    gain: float
    max_drop: float
    steady: bool
    bar: float
    is_main: bool
    flags: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "head": list(self.head),
            "c_star": self.c_star,
            "acc0": self.acc0,
            "acc_star": self.acc_star,
            "gain": self.gain,
            "max_drop": self.max_drop,
            "steady": self.steady,
            "bar": self.bar,
            "is_main": self.is_main,
            "flags": list(self.flags),
        }


@dataclass(frozen=True)
class WeakRuleResult:
    """recovery_weak main set (§4.4); ``main`` is ordered by acc*, then gain, descending."""

    rel_floor: float
    abs_floor: float
    eps: float
    n_eval: int
    full_selected_acc: float
    main: list[Head]
    heads: dict[Head, WeakHead]

    def to_dict(self) -> dict[str, Any]:
        return {
            "selector": "recovery_weak",
            "version": 1,
            "params": {"rel_floor": self.rel_floor, "abs_floor": self.abs_floor, "eps": self.eps},
            "n_eval": self.n_eval,
            "full_selected_acc": self.full_selected_acc,
            "main": [list(h) for h in self.main],
            "heads": {head_key(h): w.to_dict() for h, w in self.heads.items()},
        }


def weak_rule(
    scan: RecoveryScan, *, rel_floor: float | int, abs_floor: float | int, eps: float | int
) -> WeakRuleResult:
    """§4.4 ``recovery_weak``; pass the parameters explicitly (see `RELEASE_WEAK_PARAMS`)."""
    rel_floor = _number(rel_floor, "rel_floor", lo=0.0)
    abs_floor = _number(abs_floor, "abs_floor", lo=0.0)
    eps = _number(eps, "eps", lo=0.0)
    n = scan.n_eval
    a_sel = Fraction(scan.full_selected_correct, n)
    out: dict[Head, WeakHead] = {}
    for h in scan.heads:
        pk = _peak(scan, h)
        seg = scan.correct[h][: pk.index + 1]
        drop_count = int(np.max(seg[:-1] - seg[1:])) if seg.size > 1 else 0
        max_drop = Fraction(max(drop_count, 0), n)
        steady = max_drop <= _exact(eps)
        bar = max(_exact(abs_floor), _exact(rel_floor) * (a_sel - Fraction(pk.count0, n)))
        gain = Fraction(pk.gain_count, n)
        flags = []
        if pk.c_star == 0:
            flags.append("peak_at_c0")
        if not steady:
            flags.append("not_steady_to_peak")
        if gain < bar:
            flags.append("gain_below_bar")
        out[h] = WeakHead(
            head=h,
            c_star=pk.c_star,
            acc0=pk.count0 / n,
            acc_star=pk.count_star / n,
            gain=pk.gain_count / n,
            max_drop=float(max_drop),
            steady=bool(steady),
            bar=float(bar),
            is_main=not flags,
            flags=flags,
        )
    main = sorted(
        (h for h, w in out.items() if w.is_main),
        key=lambda h: (-scan.correct[h].max(), -out[h].gain, h[0], h[1]),
    )
    return WeakRuleResult(
        rel_floor=rel_floor,
        abs_floor=abs_floor,
        eps=eps,
        n_eval=n,
        full_selected_acc=scan.full_selected_acc,
        main=main,
        heads=out,
    )


def select_from_scan(scan: RecoveryScan) -> dict[str, Any]:
    """Default selector summary: §4.3 with its defaults and §4.4 with the release parameters.

    Returns {"main", "gains", "bar", "minor", "weak_rule_main", "verdict", "decisions"}; heads
    are [layer, head] lists, dict keys are "layer.head", gains are unrounded floats.
    """
    unified = main_set(scan)
    weak = weak_rule(scan, **RELEASE_WEAK_PARAMS)
    return {
        "main": [list(h) for h in unified.main],
        "gains": {head_key(h): p.gain for h, p in unified.peaks.items()},
        "bar": unified.bar,
        "minor": [list(h) for h in unified.minor],
        "weak_rule_main": [list(h) for h in weak.main],
        "verdict": unified.verdict,
        "decisions": {head_key(h): p.decision for h, p in unified.peaks.items()},
    }
