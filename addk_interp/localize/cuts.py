"""Selected-set cut rules on a trained [layer, head] coefficient matrix (docs/method.md §3.4).

Localization step 1 trains a coefficient matrix M (one entry per attention head, shape
[layer, head]); the *selected* set is the heads whose |M| lies above a threshold. This module
turns |M| into that set with one of four rules and returns a typed, JSON-ready `Cut`.

Let v_1 ≥ v_2 ≥ … ≥ v_N be the sorted |M| values (ties ordered by (layer, head)).

- ``largest_gap`` (camera-ready rule): drops δ_i = v_i − v_{i+1} over all N values, zeros
  included; i* = the FIRST argmax of δ (an exact tie goes to the highest cut, i.e. the fewest
  heads); threshold t = v_{i*+1} (the lower edge); keep |M| > t. The winning and runner-up drops
  are recorded in `GapInfo`, because a near-tie between two cuts is material (the canonical
  Llama matrix has one: 0.2286 vs 0.2262 on epoch 49 alone).
- ``elbow``: keep only v_i > floor (1e-6); x_i = i/(n−1) and y_i = (v_i − v_min)/(v_max − v_min);
  i* = first argmax of |y_i − (1 − x_i)|/√2 (distance to the chord from (0,1) to (1,0));
  t = v_{i*}; keep |M| > t.
- ``fraction``: k = the smallest index with Σ_{i≤k} v_i ≥ f·Σ_i v_i (f = 0.95 by default);
  t = v_k, the smallest |M| of that shortest prefix; keep |M| ≥ t, i.e. the prefix itself
  (plus exact ties of t). This is the only inclusive rule: with "> t" a single dominant head
  holding ≥ f of the mass would select nothing. `Cut.inclusive` records which comparison ran.
- ``fixed``: a given t (0.2 in the legacy runs); keep |M| > t.

`mean_last_k` averages the last k checkpoints (the paper applies largest_gap to the mean of
epochs 47–49, k = 3, which removes the epoch-49 near-tie and restores the 33-head set).

Bad input is refused: NaN/inf entries, non-2-D input, unknown rules, unknown parameters and
out-of-range parameters raise ValueError. A rule that keeps nothing is not an error: the `Cut`
has ``empty=True`` and a ``reason``.

Cost: one sort of the L·H values, O(LH log LH) time and O(LH) memory (1024 heads for
Llama-3-8B: well under a millisecond). CPU only; the matrix is copied to float64 numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Float64, Int

from addk_interp.core.heads import HeadLike as Head  # the one head type: Head or (l, h)
from addk_interp.core.validate import check_number

CoefMatrix = Float[np.ndarray, "layer head"] | Float[torch.Tensor, "layer head"]
"""A [layer, head] coefficient matrix as the rules expect it (numpy or torch, any float dtype)."""
CoefLike = CoefMatrix | np.ndarray | torch.Tensor | Sequence[Any]
"""What the entry points `cut` and `mean_last_k` accept: a `CoefMatrix`, or any numpy/torch array
or nested sequence. `_as_float64` converts it and raises ValueError for anything that is not a
finite, real, 2-D [layer, head] matrix, so a wrong shape or dtype gets that clear message."""

RULES: tuple[str, ...] = ("elbow", "fixed", "fraction", "largest_gap")
DEFAULT_ELBOW_FLOOR = 1e-6
DEFAULT_FRACTION = 0.95


@dataclass(frozen=True)
class GapInfo:
    """The winning drop of a largest_gap cut and its runner-up.

    ``index`` is the 0-based position of the drop's upper edge in the descending |coef| curve,
    so ``index + 1`` heads lie above the cut. The runner-up is the largest other strictly
    positive drop (first one on ties); it is None when there is none.
    """

    index: int
    upper: float
    lower: float
    size: float
    runner_up_index: int | None
    runner_up_upper: float | None
    runner_up_lower: float | None
    runner_up_size: float | None

    @property
    def margin(self) -> float | None:
        """How much larger the winning drop is than the runner-up (None without runner-up)."""
        return None if self.runner_up_size is None else self.size - self.runner_up_size

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "n_above": self.index + 1,
            "upper": self.upper,
            "lower": self.lower,
            "size": self.size,
            "runner_up_index": self.runner_up_index,
            "runner_up_upper": self.runner_up_upper,
            "runner_up_lower": self.runner_up_lower,
            "runner_up_size": self.runner_up_size,
            "margin": self.margin,
        }


@dataclass(frozen=True)
class Cut:
    """Result of one cut rule applied to |coef| of a [layer, head] matrix.

    ``selected`` lists (layer, head) by |coef| descending (ties by layer, then head) and
    ``values`` holds their |coef| in the same order; ``curve`` is the whole sorted |coef| curve
    (every head, zeros included). ``inclusive`` says whether heads equal to ``threshold`` are
    kept (only the fraction rule). ``empty``/``reason`` explain a cut that keeps nothing.
    """

    rule: str
    params: dict[str, float]
    threshold: float
    inclusive: bool
    selected: list[Head]
    values: list[float]
    curve: list[float]
    shape: Head
    gap: GapInfo | None = None
    empty: bool = False
    reason: str | None = None

    @property
    def n_selected(self) -> int:
        return len(self.selected)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "params": dict(self.params),
            "threshold": self.threshold,
            "inclusive": self.inclusive,
            "n_selected": self.n_selected,
            "selected": [[layer, head] for layer, head in self.selected],
            "values": list(self.values),
            "curve": list(self.curve),
            "shape": list(self.shape),
            "gap": None if self.gap is None else self.gap.to_dict(),
            "empty": self.empty,
            "reason": self.reason,
        }


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


def _as_float64(coef: CoefLike, what: str = "coef") -> Float64[np.ndarray, "layer head"]:
    """Copy a torch tensor or numpy array to a float64 numpy matrix; refuse bad input."""
    if isinstance(coef, torch.Tensor):
        if coef.is_complex():
            raise ValueError(f"{what} must be real, got dtype {coef.dtype}")
        arr = coef.detach().to(device="cpu", dtype=torch.float64).numpy()
    else:
        arr = np.asarray(coef)
        if np.iscomplexobj(arr):
            raise ValueError(f"{what} must be real, got dtype {arr.dtype}")
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what} must be numeric, got dtype {arr.dtype}") from exc
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D [layer, head] matrix, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what} is empty (shape {arr.shape})")
    bad = ~np.isfinite(arr)
    if bad.any():
        where = [(int(i), int(j)) for i, j in np.argwhere(bad)[:5]]
        raise ValueError(
            f"{what} contains {int(bad.sum())} non-finite value(s) (NaN/inf), first at "
            f"(layer, head) {where}; refusing to cut a corrupted matrix"
        )
    return arr


def _order(absval: Float[np.ndarray, "layer head"]) -> Int[np.ndarray, " layer*head"]:
    """Flat indices sorted by |coef| descending, ties by layer then head (row-major order)."""
    flat = absval.ravel()
    # lexsort sorts by the last key first; the flat index encodes (layer, head) row-major.
    return np.lexsort((np.arange(flat.size), -flat))


def _make_cut(
    rule: str,
    params: dict[str, float],
    absval: Float[np.ndarray, "layer head"],
    threshold: float,
    *,
    inclusive: bool = False,
    gap: GapInfo | None = None,
    reason_if_empty: str | None = None,
) -> Cut:
    order = _order(absval)
    flat = absval.ravel()
    n_heads = absval.shape[1]
    keep = flat[order] >= threshold if inclusive else flat[order] > threshold
    chosen = order[keep]
    selected = [(int(i // n_heads), int(i % n_heads)) for i in chosen]
    empty = len(selected) == 0
    reason = None
    if empty:
        cmp = "≥" if inclusive else ">"
        reason = reason_if_empty or f"no head has |coef| {cmp} threshold {threshold!r}"
    return Cut(
        rule=rule,
        params=dict(params),
        threshold=float(threshold),
        inclusive=inclusive,
        selected=selected,
        values=[float(v) for v in flat[chosen]],
        curve=[float(v) for v in flat[order]],
        shape=(int(absval.shape[0]), int(absval.shape[1])),
        gap=gap,
        empty=empty,
        reason=reason,
    )


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------


def largest_gap(coef: CoefMatrix) -> Cut:
    """Cut at the largest drop of the descending |coef| curve (zeros included).

    Exact ties between drops go to the first (highest) cut. Threshold = the drop's lower edge;
    heads strictly above it are kept. A matrix whose |coef| are all equal (or that has a single
    entry) has no drop: the result is empty with a reason.
    """
    absval = np.abs(_as_float64(coef))
    curve = absval.ravel()[_order(absval)]
    if curve.size < 2:
        return _make_cut(
            "largest_gap",
            {},
            absval,
            float(curve[0]),
            reason_if_empty="largest_gap needs at least two coefficients",
        )
    drops = curve[:-1] - curve[1:]
    best = int(np.argmax(drops))  # numpy documents argmax as the first occurrence
    if drops[best] <= 0.0:
        return _make_cut(
            "largest_gap",
            {},
            absval,
            float(curve[0]),
            reason_if_empty=f"all |coef| are equal ({curve[0]!r}); the sorted curve has no drop",
        )
    rest = drops.copy()
    rest[best] = -np.inf
    second = int(np.argmax(rest))
    has_second = bool(rest[second] > 0.0)
    gap = GapInfo(
        index=best,
        upper=float(curve[best]),
        lower=float(curve[best + 1]),
        size=float(drops[best]),
        runner_up_index=second if has_second else None,
        runner_up_upper=float(curve[second]) if has_second else None,
        runner_up_lower=float(curve[second + 1]) if has_second else None,
        runner_up_size=float(drops[second]) if has_second else None,
    )
    return _make_cut("largest_gap", {}, absval, float(curve[best + 1]), gap=gap)


def elbow(coef: CoefMatrix, *, floor: float | int = DEFAULT_ELBOW_FLOOR) -> Cut:
    """Knee of the descending |coef| curve (values ≤ ``floor`` dropped first).

    Both axes are normalized to [0, 1]; the knee maximizes |y − (1 − x)|/√2. Heads strictly
    above the knee value are kept. Fewer than two values above the floor, or a flat curve,
    leave the knee undefined: the result is empty with a reason.
    """
    floor = _check_nonnegative(floor, "floor")
    absval = np.abs(_as_float64(coef))
    curve = absval.ravel()[_order(absval)]
    v = curve[curve > floor]
    params = {"floor": floor}
    if v.size == 0:
        return _make_cut(
            "elbow", params, absval, floor, reason_if_empty=f"no |coef| above floor {floor!r}"
        )
    if v.size == 1 or v[0] == v[-1]:
        return _make_cut(
            "elbow",
            params,
            absval,
            float(v[0]),
            reason_if_empty=(
                f"elbow undefined: {v.size} value(s) above floor {floor!r} and all equal "
                f"({v[0]!r}), so the normalized curve has no knee"
            ),
        )
    x = np.arange(v.size, dtype=np.float64) / (v.size - 1)
    y = (v - v[-1]) / (v[0] - v[-1])
    dist = np.abs(y - (1.0 - x)) / math.sqrt(2.0)
    idx = int(np.argmax(dist))
    return _make_cut(
        "elbow",
        params,
        absval,
        float(v[idx]),
        reason_if_empty="the knee is at the largest |coef|, so no head lies strictly above it",
    )


def fraction(coef: CoefMatrix, *, fraction: float | int = DEFAULT_FRACTION) -> Cut:
    """Shortest prefix of the descending |coef| curve holding ``fraction`` of the total mass.

    ``fraction`` must lie in (0, 1]. Threshold = the smallest |coef| in that prefix; heads with
    |coef| ≥ threshold are kept (the prefix plus exact ties). An all-zero matrix is empty.
    """
    frac = check_number(fraction, "fraction")
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {frac!r}")
    absval = np.abs(_as_float64(coef))
    curve = absval.ravel()[_order(absval)]
    params = {"fraction": frac}
    cum = np.cumsum(curve)
    total = float(cum[-1])  # same summation order as cum, so fraction = 1 is reachable
    if total <= 0.0:
        return _make_cut(
            "fraction",
            params,
            absval,
            0.0,
            reason_if_empty="all coefficients are zero; there is no mass to capture",
        )
    idx = int(np.argmax(cum >= frac * total))
    return _make_cut("fraction", params, absval, float(curve[idx]), inclusive=True)


def fixed(coef: CoefMatrix, *, threshold: float | int) -> Cut:
    """Keep heads with |coef| strictly above a given, non-negative ``threshold``."""
    t = _check_nonnegative(threshold, "threshold")
    absval = np.abs(_as_float64(coef))
    return _make_cut("fixed", {"threshold": t}, absval, t)


_RULE_PARAMS: dict[str, dict[str, float | None]] = {
    "elbow": {"floor": DEFAULT_ELBOW_FLOOR},
    "fixed": {"threshold": None},  # None = required
    "fraction": {"fraction": DEFAULT_FRACTION},
    "largest_gap": {},
}


def cut(coef: CoefLike, rule: str = "largest_gap", **params: float | int) -> Cut:
    """Apply one selected-set cut rule to |coef| of a [layer, head] matrix.

    ``rule`` is one of ``RULES``; parameters: elbow ``floor`` (1e-6), fraction ``fraction``
    (0.95), fixed ``threshold`` (required), largest_gap none. Unknown rules or parameters raise
    ValueError; the parameters actually used are recorded in ``Cut.params``. ``coef`` may be any
    array-like: it is converted and checked here (ValueError unless it is a finite, real, 2-D
    matrix) before the rule sees it.
    """
    if rule not in _RULE_PARAMS:
        raise ValueError(f"unknown cut rule {rule!r}; valid rules: {', '.join(RULES)}")
    allowed = _RULE_PARAMS[rule]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        expected = ", ".join(allowed) if allowed else "none"
        raise ValueError(
            f"unknown parameter(s) {unknown} for rule {rule!r}; it accepts: {expected}"
        )
    missing = [name for name, default in allowed.items() if default is None and name not in params]
    if missing:
        raise ValueError(f"rule {rule!r} requires parameter(s) {missing}")
    coef = _as_float64(coef)
    if rule == "largest_gap":
        return largest_gap(coef)
    if rule == "elbow":
        return elbow(coef, **params)
    if rule == "fraction":
        return fraction(coef, **params)
    return fixed(coef, **params)


def mean_last_k(
    checkpoints: Sequence[CoefLike] | Mapping[int, CoefLike], k: int = 3
) -> Float64[np.ndarray, "layer head"]:
    """Element-wise mean of the last ``k`` checkpoints, as a float64 [layer, head] matrix.

    A sequence is taken in the order given (oldest first); a mapping is ordered by its integer
    keys (epochs). All checkpoints must share one shape and be finite.
    """
    if isinstance(checkpoints, Mapping):
        items = [checkpoints[key] for key in sorted(checkpoints)]
    else:
        items = list(checkpoints)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > len(items):
        raise ValueError(f"k={k} exceeds the number of checkpoints ({len(items)})")
    last = [_as_float64(c, f"checkpoint {len(items) - k + i}") for i, c in enumerate(items[-k:])]
    shapes = {arr.shape for arr in last}
    if len(shapes) != 1:
        raise ValueError(f"checkpoints have different shapes: {sorted(shapes)}")
    return np.mean(np.stack(last), axis=0)


def _check_nonnegative(value: float | int, name: str) -> float:
    out = check_number(value, name)
    if out < 0.0:
        raise ValueError(f"{name} must be ≥ 0 (cuts apply to |coef|), got {value!r}")
    return out
