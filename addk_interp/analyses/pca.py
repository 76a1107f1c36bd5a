"""Per-head PCA over per-task mean head outputs (docs/method.md §5.1; feeds §5.2 and §5.4.1).

For one attention head (l, h) the data matrix X has one row per task: the per-task mean
head output z_k[l, h] of §3.1 (a d_model vector), for the task parameter k (the add-k
offset, or any other numeric task grid). Everything is computed in float64:

    rows sorted by ascending k (stable; ``order`` records the permutation)
    mu  = mean_k X[k]                                 (centering over tasks)
    X - mu = U S V^T                                  (thin SVD)
    components P = V                                  [d_model, component]
    explained-variance ratio r_i = s_i^2 / sum_j s_j^2,   cumvar = cumsum(r)
    pcs_to_threshold = min(searchsorted(cumvar, 0.95, side='left') + 1, n_component)
    coordinates C = (X - mu) P                        [task, component]
    projection (§5.4.1)  v' = mu + P_k P_k^T (v - mu)

``pcs_to_threshold`` is the first component count whose cumulative ratio is >= the threshold
(a tie counts as reaching it); the clamp only matters when rounding keeps cumvar below the
threshold. Full rank means min(task, d_model) components, as a full-rank ``PCA()`` fit gives;
after centering the last one carries (numerically) zero variance. Each principal axis is
sign-fixed so that its largest-magnitude entry is positive, which makes the output
deterministic (PCA axes are otherwise defined only up to sign).

Cost per head: one thin SVD of a [task, d_model] matrix, O(task^2 * d_model) time and
O(task * d_model) memory; the batched helper slices and upcasts one head at a time, so it never
materializes the whole [task, layer, head, d_model] cache in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Float64, Int, Real

from addk_interp.core.errors import AddkError
from addk_interp.core.heads import HeadLike as Head
from addk_interp.core.heads import check_heads  # the one head type: Head or (l, h)

__all__ = [
    "DEFAULT_THRESHOLD",
    "HeadPCA",
    "as_float64",
    "fit_head_pca",
    "fit_heads_pca",
    "head_label",
    "pcs_from_cumvar",
    "slice_head",
]

DEFAULT_THRESHOLD = 0.95

ArrayIn = np.ndarray | torch.Tensor
"""Inputs may be numpy arrays or torch tensors (any float dtype, any device)."""

ArrayLike = np.ndarray | torch.Tensor | Sequence[Any]
"""What the entry points accept for an array argument: numpy, torch (any dtype, any device) or a
(nested) sequence of numbers. They convert it with `as_float64` and check shape and values
themselves, raising ValueError with a message that names the problem; the jaxtyping annotation
next to it in each signature gives the expected shape."""



# -- small shared helpers (also used by periodic.py) ------------------------------------------


def head_label(head: Head | None) -> str:
    """Human-readable head id for messages, e.g. ``L15H2``."""
    if head is None:
        return "<unnamed head>"
    return f"L{head[0]}H{head[1]}"


def as_float64(x: ArrayLike, *, what: str = "input") -> Float64[np.ndarray, "..."]:
    """Copy ``x`` (numpy, torch of any dtype/device, or a sequence) to a float64 numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
    try:
        return np.array(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AddkError(f"{what} is not convertible to a float array: {exc}") from exc


def frozen(a: np.ndarray) -> np.ndarray:
    """Make an array read-only so the frozen dataclasses really are immutable."""
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def restore_kind(
    out: Float[np.ndarray, "*shape"], like: ArrayLike
) -> Float[np.ndarray, "*shape"] | Float[torch.Tensor, "*shape"]:
    """Return ``out`` as the same kind of array as ``like`` (torch keeps dtype and device)."""
    if isinstance(like, torch.Tensor):
        dtype = like.dtype if like.is_floating_point() else torch.float64
        return torch.from_numpy(np.ascontiguousarray(out)).to(device=like.device, dtype=dtype)
    return out


def json_number(x: float) -> int | float:
    x = float(x)
    return int(x) if x.is_integer() else x


def _ks_float64(ks: ArrayLike, n_task: int, *, where: str) -> Float64[np.ndarray, " task"]:
    k = as_float64(ks, what="ks")
    if k.ndim != 1 or k.shape[0] != n_task:
        raise AddkError(
            f"{where}: ks must be 1-D with one value per task ({n_task}), "
            f"got shape {tuple(k.shape)}"
        )
    if not np.all(np.isfinite(k)):
        raise AddkError(f"{where}: ks contains NaN or inf")
    uniq, counts = np.unique(k, return_counts=True)
    if np.any(counts > 1):
        dup = [json_number(v) for v in uniq[counts > 1]]
        raise AddkError(f"{where}: duplicate task parameter values k={dup}; one row per k")
    return k


# -- the statistic --------------------------------------------------------------------------


def pcs_from_cumvar(
    cumvar: Float[ArrayIn, " component"] | ArrayLike, threshold: float | int
) -> int:
    """First (1-indexed) component count with cumvar >= threshold, clamped to the length.

    ``searchsorted(cumvar, threshold, side='left') + 1``: an exact tie reaches the threshold.
    """
    c = as_float64(cumvar, what="cumvar")
    if c.ndim != 1 or c.shape[0] == 0:
        raise AddkError(f"cumvar must be a non-empty 1-D array, got shape {tuple(c.shape)}")
    if not np.all(np.isfinite(c)):
        raise AddkError("cumvar contains NaN or inf")
    position = int(np.searchsorted(c, threshold, side="left")) + 1
    return min(position, int(c.shape[0]))


# -- result ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadPCA:
    """PCA of one head's per-task mean outputs, rows in ascending-k order (float64).

    ``order[i]`` is the input row that became row ``i`` (``X_in[order] == X_sorted``).
    ``components`` holds the principal axes as columns; ``coords`` are centered coordinates.
    """

    head: Head | None
    ks: Float[np.ndarray, " task"]
    order: Int[np.ndarray, " task"]
    mean: Float[np.ndarray, " d_model"]
    components: Float[np.ndarray, "d_model component"]
    singular_values: Float[np.ndarray, " component"]
    explained_variance_ratio: Float[np.ndarray, " component"]
    cumvar: Float[np.ndarray, " component"]
    coords: Float[np.ndarray, "task component"]
    threshold: float
    pcs_to_threshold: int

    @property
    def n_tasks(self) -> int:
        return int(self.ks.shape[0])

    @property
    def n_components(self) -> int:
        return int(self.components.shape[1])

    @property
    def d_model(self) -> int:
        return int(self.mean.shape[0])

    def basis(self, k: int | None = None) -> Float[np.ndarray, "d_model k"]:
        """Top-``k`` principal axes [d_model, k]; ``k=None`` means ``pcs_to_threshold``."""
        k = self._check_k(k)
        return self.components[:, :k]

    def project(
        self,
        v: Float[ArrayIn, "*batch d_model"] | ArrayLike,
        k: int | None = None,
        recenter: bool = True,
    ) -> Float[ArrayIn, "*batch d_model"]:
        """Project onto the top-``k`` PCs: ``mu + P_k P_k^T (v - mu)`` (§5.4.1).

        ``recenter=False`` gives the plain ``P_k P_k^T v``. ``k=None`` uses
        ``pcs_to_threshold``. Computed in float64; a torch input comes back as a tensor with
        its own dtype and device, a numpy input as float64.
        """
        k = self._check_k(k)
        x = as_float64(v, what="v")
        if x.ndim == 0 or x.shape[-1] != self.d_model:
            raise AddkError(f"v must end in d_model={self.d_model}, got shape {tuple(x.shape)}")
        p = self.components[:, :k]
        if recenter:
            out = self.mean + ((x - self.mean) @ p) @ p.T
        else:
            out = (x @ p) @ p.T
        return restore_kind(out, v)

    def _check_k(self, k: int | None) -> int:
        if k is None:
            return self.pcs_to_threshold
        if isinstance(k, bool) or not isinstance(k, int | np.integer):
            raise AddkError(f"k must be an int or None, got {k!r}")
        if not 0 <= int(k) <= self.n_components:
            raise AddkError(f"k={k} outside [0, {self.n_components}] components")
        return int(k)

    def to_dict(self, include_arrays: bool = True) -> dict[str, Any]:
        """JSON-ready dict (lists and Python scalars only)."""
        out: dict[str, Any] = {
            "head": list(self.head) if self.head is not None else None,
            "ks": [json_number(v) for v in self.ks],
            "order": [int(i) for i in self.order],
            "n_tasks": self.n_tasks,
            "d_model": self.d_model,
            "n_components": self.n_components,
            "threshold": float(self.threshold),
            "pcs_to_threshold": int(self.pcs_to_threshold),
            "explained_variance_ratio": self.explained_variance_ratio.tolist(),
            "cumvar": self.cumvar.tolist(),
        }
        if include_arrays:
            out["mean"] = self.mean.tolist()
            out["components"] = self.components.tolist()
            out["singular_values"] = self.singular_values.tolist()
            out["coords"] = self.coords.tolist()
        return out


# -- fitting --------------------------------------------------------------------------------


def fit_head_pca(
    x: Float[ArrayIn, "task d_model"] | ArrayLike,
    ks: Real[ArrayIn, " task"] | ArrayLike,
    *,
    head: Head | None = None,
    n_components: int | None = None,
    threshold: float | int = DEFAULT_THRESHOLD,
) -> HeadPCA:
    """Full-rank (or top-``n_components``) PCA of one head's per-task means (§5.1).

    ``x[i]`` is the mean head output for task parameter ``ks[i]``; rows are re-sorted by
    ascending k here. ``pcs_to_threshold`` is always computed on the full-rank spectrum and
    then clamped to the kept components. Raises ValueError on NaN/inf, duplicate k, fewer than
    two tasks, more requested components than tasks (or d_model), an all-zero row (a head
    whose mean was never filled in), or zero variance across tasks.
    """
    where = f"PCA of {head_label(head)}"
    data = as_float64(x, what="x")
    if data.ndim != 2:
        raise AddkError(f"{where}: x must be [task, d_model], got shape {tuple(data.shape)}")
    n_task, d_model = data.shape
    k = _ks_float64(ks, n_task, where=where)
    if not np.all(np.isfinite(data)):
        bad = sorted({json_number(k[i]) for i in np.nonzero(~np.isfinite(data))[0]})
        raise AddkError(f"{where}: NaN or inf in the mean outputs (tasks k={bad})")
    zero_rows = np.nonzero(~np.any(data != 0.0, axis=1))[0]
    if zero_rows.size:
        bad = [json_number(k[i]) for i in zero_rows]
        raise AddkError(
            f"{where}: no mean output for tasks k={bad} (all-zero rows); "
            "was this head's cache filled in?"
        )
    if n_task < 2:
        raise AddkError(f"{where}: PCA over tasks needs at least 2 tasks, got {n_task}")
    if not 0.0 < threshold <= 1.0:
        raise AddkError(f"threshold must be in (0, 1], got {threshold}")
    max_rank = min(n_task, d_model)
    if n_components is None:
        n_keep = max_rank
    else:
        if isinstance(n_components, bool) or not isinstance(n_components, int | np.integer):
            raise AddkError(f"n_components must be an int or None, got {n_components!r}")
        if n_components < 1:
            raise AddkError(f"n_components must be >= 1, got {n_components}")
        if n_components > n_task:
            raise AddkError(
                f"{where}: fewer tasks ({n_task}) than requested components ({n_components})"
            )
        if n_components > d_model:
            raise AddkError(
                f"{where}: d_model={d_model} is smaller than requested components ({n_components})"
            )
        n_keep = int(n_components)

    order = np.argsort(k, kind="stable")
    k_sorted = k[order]
    data = data[order]
    mean = data.mean(axis=0)
    centered = data - mean
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    total = float(np.sum(s**2))
    # identical rows leave only rounding noise in the centered data (relative RMS ~1e-16)
    if not total > 1e-24 * float(np.sum(data**2)):
        raise AddkError(f"{where}: all task rows are identical (zero variance across tasks)")
    # Sign convention: the largest-|.| entry of every axis is positive.
    pivot = np.argmax(np.abs(vt), axis=1)
    signs = np.sign(vt[np.arange(vt.shape[0]), pivot])
    signs[signs == 0] = 1.0
    vt = vt * signs[:, None]
    ratio = s**2 / total
    cumvar = np.cumsum(ratio)
    pcs = min(pcs_from_cumvar(cumvar, threshold), n_keep)
    components = vt[:n_keep].T
    coords = centered @ components
    return HeadPCA(
        head=None if head is None else (int(head[0]), int(head[1])),
        ks=frozen(k_sorted),
        order=frozen(order.astype(np.int64)),
        mean=frozen(mean),
        components=frozen(components),
        singular_values=frozen(s[:n_keep].copy()),
        explained_variance_ratio=frozen(ratio[:n_keep].copy()),
        cumvar=frozen(cumvar[:n_keep].copy()),
        coords=frozen(coords),
        threshold=float(threshold),
        pcs_to_threshold=int(pcs),
    )


def _check_heads(
    heads: Sequence[Head], n_layer: int, n_head: int, shape: tuple[int, ...]
) -> list[Head]:
    """Heads inside the means' [layer, head] grid (``core.heads.check_heads``), at least one."""
    try:
        out = check_heads(heads, n_layer, n_head, allow_empty=False, what="fit")
    except AddkError as e:
        raise AddkError(f"{e} (means has shape {shape})") from None
    return [(int(a), int(b)) for a, b in out]


def slice_head(
    means: Float[ArrayIn, "task layer head d_model"], head: Head
) -> Float[np.ndarray, "task d_model"]:
    """One head's [task, d_model] rows of a stacked mean cache, upcast to float64."""
    layer, h = head
    if isinstance(means, torch.Tensor):
        return as_float64(means[:, layer, h, :])
    return as_float64(np.asarray(means)[:, layer, h, :])


def fit_heads_pca(
    means: Float[ArrayIn, "task layer head d_model"] | ArrayIn,
    ks: Real[ArrayIn, " task"] | ArrayLike,
    heads: Sequence[Head],
    *,
    n_components: int | None = None,
    threshold: float | int = DEFAULT_THRESHOLD,
) -> dict[Head, HeadPCA]:
    """:func:`fit_head_pca` for each requested head of a stacked [task, layer, head, d_model]
    cache (row ``i`` = task ``ks[i]``). Heads outside the cache, or whose rows are all-zero or
    non-finite, raise ValueError naming the head."""
    shape = tuple(int(d) for d in means.shape)
    if len(shape) != 4:
        raise AddkError(f"means must be [task, layer, head, d_model], got shape {shape}")
    checked = _check_heads(heads, shape[1], shape[2], shape)
    return {
        head: fit_head_pca(
            slice_head(means, head),
            ks,
            head=head,
            n_components=n_components,
            threshold=threshold,
        )
        for head in checked
    }
