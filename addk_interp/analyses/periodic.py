"""Periodic / magnitude subspace fit of per-head PCA coordinates (docs/method.md §5.2, §5.4.2).

Given a head's PCA (§5.1, :mod:`addk_interp.analyses.pca`; rows in ascending k) with top-n
principal axes P [d_model, component] and centered coordinates C = (X - mu) P [task, component],
fit target functions of the task parameter k (``fit_subspace``; the default is the six-target
fit of §5.2, column order mod50, mod2, mod5, mod10c, mod10s, mod25):

    mod50  = cos(2 pi k/50 + t50)  [magnitude]     mod2   = cos(2 pi k/2)        [unit]
    mod5   = cos(2 pi k/5  + t5)   [unit]          mod10c = cos(2 pi k/10)       [unit]
    mod10s = sin(2 pi k/10)        [unit]          mod25  = cos(2 pi k/25 + t25) [magnitude]

  phase search: for t in arange(0, 2 pi, 0.01), f = wave(t) - mean(wave(t)); keep the first t
      minimizing ||f - C lstsq(C, f)||^2 / ||f||^2; the target is the NON-mean-removed wave(t)
  W = lstsq(C, T)  [component, target];   R^2_j = 1 - SS_res_j / SS_tot_j  (SS_tot centered)
  feature directions D = P W  [d_model, target]
  bases: onto_S = QR-orthonormalized columns S of D; out_S = orthonormal complement of
      span(D[:, S]) inside span(D) (the 6-D span); S in {full, parity, unit, magnitude}
      (parity = the period-2 columns, other names = the targets' ``group`` labels)
  projection (§5.4.2):  v' = mu + (v - mu) B B^T

Because T is not mean-removed while C is centered, a target whose mean over the k grid is not
zero cannot reach R^2 = 1 (R^2 <= 1 - n mean^2 / SS_tot); this is the specified behaviour and is
what the reference R^2 values were computed with.

Also here: ``periodogram`` (fraction of variance of the centered coordinates explained by
[cos(2 pi k/p), sin(2 pi k/p)] for every period p, i.e. which periods a head actually uses),
``principal_angles`` / ``principal_angle_matrix`` (degrees, via scipy.linalg.subspace_angles)
and ``compare_directions`` (the §5.2 step-6 validation: per-column |cos| and principal angles
against reference directions).

Cost per head, for n tasks, c components, m targets and d = d_model: one SVD of C (O(n c^2)),
the phase search O(n_theta n c) per phase-searched target (n_theta = 629 at step 0.01), the fit
O(n c^2 + n c m), directions and bases O(d m^2). The periodogram is O(n_period n c).
Everything is float64; library code never prints.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import scipy.linalg
from jaxtyping import Bool, Float, Float64, Real

from addk_interp.analyses.pca import (
    DEFAULT_THRESHOLD,
    ArrayIn,
    ArrayLike,
    Head,
    HeadPCA,
    as_float64,
    fit_head_pca,
    fit_heads_pca,
    frozen,
    head_label,
    json_number,
    restore_kind,
)
from addk_interp.core.errors import AddkError

__all__ = [
    "DEFAULT_THETA_STEP",
    "AngleMatrix",
    "DirectionComparison",
    "Periodogram",
    "SubspaceFit",
    "TargetSpec",
    "compare_directions",
    "default_targets",
    "fit_subspace",
    "fit_subspace_from_means",
    "fit_subspaces",
    "periodogram",
    "principal_angle_matrix",
    "principal_angles",
]

DEFAULT_THETA_STEP = 0.01
_RESERVED_GROUPS = ("full", "parity")
_CONST_TOL = 1e-9  # a centered wave with RMS below this is treated as constant
TargetKind = Literal["cos", "sin"]
Variant = Literal["onto", "out"]


# -- target functions of k ------------------------------------------------------------------


@dataclass(frozen=True)
class TargetSpec:
    """One target function of k: ``kind(2 pi k / period + phase)``.

    ``phase_search`` picks the phase by the §5.2 search (otherwise the phase is 0); ``group``
    names the subspace the column belongs to ("unit", "magnitude", or any other label).
    ``period`` may be given as an int; it is stored as a float. ``kind`` is checked here: any
    other string than "cos" or "sin" raises ValueError.
    """

    name: str
    period: float | int
    kind: TargetKind | str = "cos"
    phase_search: bool = False
    group: str = "other"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise AddkError(f"target name must be a non-empty string, got {self.name!r}")
        try:
            period = float(self.period)
        except (TypeError, ValueError) as exc:
            raise AddkError(
                f"target {self.name!r}: period {self.period!r} is not a number"
            ) from exc
        if not math.isfinite(period) or period <= 1.0:
            raise AddkError(
                f"target {self.name!r}: period must be a finite number > 1, got {self.period!r} "
                "(on an integer k grid period 1 is constant and shorter periods alias)"
            )
        object.__setattr__(self, "period", period)
        if self.kind not in ("cos", "sin"):
            raise AddkError(f"target {self.name!r}: kind must be 'cos' or 'sin', got {self.kind!r}")
        if not isinstance(self.group, str) or not self.group:
            raise AddkError(f"target {self.name!r}: group must be a non-empty string")
        if self.group in _RESERVED_GROUPS:
            raise AddkError(f"target {self.name!r}: group name {self.group!r} is reserved")
        object.__setattr__(self, "phase_search", bool(self.phase_search))

    def wave(
        self,
        ks: Real[np.ndarray, "..."],
        phase: float | int | Float[np.ndarray, "..."] = 0.0,
    ) -> Float[np.ndarray, "..."]:
        """``cos`` or ``sin`` of ``2 pi k / period + phase`` (numpy broadcasting)."""
        arg = 2.0 * np.pi * np.asarray(ks, dtype=np.float64) / self.period + phase
        return np.cos(arg) if self.kind == "cos" else np.sin(arg)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "period": json_number(self.period),
            "kind": self.kind,
            "phase_search": self.phase_search,
            "group": self.group,
        }


def default_targets() -> tuple[TargetSpec, ...]:
    """The six §5.2 targets in artifact column order (mod50, mod2, mod5, mod10c, mod10s,
    mod25)."""
    return (
        TargetSpec("mod50", 50, "cos", phase_search=True, group="magnitude"),
        TargetSpec("mod2", 2, "cos", phase_search=False, group="unit"),
        TargetSpec("mod5", 5, "cos", phase_search=True, group="unit"),
        TargetSpec("mod10c", 10, "cos", phase_search=False, group="unit"),
        TargetSpec("mod10s", 10, "sin", phase_search=False, group="unit"),
        TargetSpec("mod25", 25, "cos", phase_search=True, group="magnitude"),
    )


def _check_targets(targets: Iterable[TargetSpec] | None) -> tuple[TargetSpec, ...]:
    specs = default_targets() if targets is None else tuple(targets)
    if not specs:
        raise AddkError("at least one target is needed")
    for spec in specs:
        if not isinstance(spec, TargetSpec):
            raise AddkError(f"targets must be TargetSpec instances, got {spec!r}")
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise AddkError(f"target names must be unique, got {names}")
    return specs


def _rms_centered(v: Float[np.ndarray, "task ..."]) -> float:
    v = v - v.mean(axis=0)
    return float(np.sqrt(np.sum(v**2) / v.shape[0]))


def _check_identifiable(
    specs: Sequence[TargetSpec], ks: Float[np.ndarray, " task"], where: str
) -> None:
    """Refuse targets that are constant on the k grid (their period cannot be identified)."""
    n = int(ks.shape[0])
    if n < 3 and any(spec.phase_search for spec in specs):
        raise AddkError(f"{where}: a phase search needs at least 3 distinct k values, got {n}")
    for spec in specs:
        arg = 2.0 * np.pi * ks / spec.period
        pair = np.stack([np.cos(arg), np.sin(arg)], axis=1)
        if _rms_centered(pair) <= _CONST_TOL:
            raise AddkError(
                f"{where}: target {spec.name!r} (period {spec.period:g}) is constant on the k "
                f"grid {_grid_text(ks)}: every k is the same modulo {spec.period:g}, so the "
                "period cannot be identified; use a k grid with more distinct residues or drop "
                "the target"
            )
        if not spec.phase_search and _rms_centered(spec.wave(ks)) <= _CONST_TOL:
            raise AddkError(
                f"{where}: target {spec.name!r} = {spec.kind}(2 pi k/{spec.period:g}) takes the "
                f"same value at every k of the grid {_grid_text(ks)}, so it cannot be fitted; "
                "use phase_search, a k grid with more distinct residues, or drop the target"
            )


def _grid_text(ks: Float[np.ndarray, " task"]) -> str:
    vals = [json_number(v) for v in ks]
    if len(vals) > 8:
        return f"[{', '.join(map(str, vals[:4]))}, ..., {vals[-1]}] ({len(vals)} values)"
    return str(vals)


# -- linear-algebra helpers -----------------------------------------------------------------


def _column_space(c: Float[np.ndarray, "task component"]) -> Float[np.ndarray, "task rank"]:
    """Orthonormal basis of col(c) with numpy-lstsq's default rank cutoff."""
    if c.shape[1] == 0:
        return np.zeros((c.shape[0], 0))
    u, s, _ = np.linalg.svd(c, full_matrices=False)
    if s.size == 0 or s[0] == 0.0:
        return np.zeros((c.shape[0], 0))
    cutoff = np.finfo(np.float64).eps * max(c.shape) * s[0]
    return u[:, s > cutoff]


def _fix_signs(q: Float[np.ndarray, "d_model rank"]) -> Float[np.ndarray, "d_model rank"]:
    """Deterministic sign: the largest-|.| entry of each column is positive."""
    if q.shape[1] == 0:
        return q
    pivot = np.argmax(np.abs(q), axis=0)
    signs = np.sign(q[pivot, np.arange(q.shape[1])])
    signs[signs == 0] = 1.0
    return q * signs


def _orthonormalize(m: Float[np.ndarray, "d_model target"]) -> Float[np.ndarray, "d_model rank"]:
    """QR-orthonormalized columns (Gram-Schmidt signs: diag(R) >= 0). A rank-deficient set
    falls back to an SVD basis of its span, with fewer columns."""
    if m.shape[1] == 0:
        return np.zeros((m.shape[0], 0))
    if np.linalg.matrix_rank(m) < m.shape[1]:
        return _fix_signs(scipy.linalg.orth(m))
    q, r = np.linalg.qr(m)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    return q * signs


def _complement_within(
    full: Float[np.ndarray, "d_model full_rank"], chosen: Float[np.ndarray, "d_model chosen_rank"]
) -> Float[np.ndarray, "d_model out_rank"]:
    """Orthonormal basis of span(full) minus span(chosen) (chosen inside full; both
    orthonormal)."""
    r = full.shape[1] - chosen.shape[1]
    if r <= 0:
        return np.zeros((full.shape[0], 0))
    if chosen.shape[1] == 0:
        return full.copy()
    residual = full - chosen @ (chosen.T @ full)
    u, _, _ = np.linalg.svd(residual, full_matrices=False)
    return _fix_signs(u[:, :r])


def _theta_grid(theta_step: float | int) -> Float[np.ndarray, " theta"]:
    step = float(theta_step)
    if not math.isfinite(step) or not 0.0 < step <= 2.0 * np.pi:
        raise AddkError(f"theta_step must be in (0, 2 pi], got {theta_step!r}")
    return np.arange(0.0, 2.0 * np.pi, step)


def _phase_search(
    spec: TargetSpec,
    ks: Float[np.ndarray, " task"],
    col_basis: Float[np.ndarray, "task rank"],
    thetas: Float[np.ndarray, " theta"],
) -> float:
    """The §5.2 ``opt_shift``: first theta minimizing the relative lstsq residual of the
    mean-removed wave."""
    waves = spec.wave(ks[:, None], thetas[None, :])  # [task, theta]
    waves = waves - waves.mean(axis=0, keepdims=True)
    resid = waves - col_basis @ (col_basis.T @ waves)
    norms = np.sum(waves**2, axis=0)
    ok = norms > (_CONST_TOL**2) * ks.shape[0]
    ratio = np.full(thetas.shape, np.inf)
    ratio[ok] = np.sum(resid[:, ok] ** 2, axis=0) / norms[ok]
    return float(thetas[int(np.argmin(ratio))])


# -- result ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubspaceFit:
    """Periodic-target fit of one head (float64). Column ``j`` of ``weights``,
    ``directions``, ``target_values`` and ``fitted`` belongs to ``targets[j]``.

    ``bases`` maps ``onto_<S>`` / ``out_<S>`` to orthonormal [d_model, r] bases for every
    named column set ``S`` of ``subspace_columns`` (full, parity, and each target group).
    ``mean`` is the PCA mean over tasks, the default center of :meth:`project`.
    """

    head: Head | None
    ks: Float[np.ndarray, " task"]
    targets: tuple[TargetSpec, ...]
    phases: Float[np.ndarray, " target"]
    target_values: Float[np.ndarray, "task target"]
    mean: Float[np.ndarray, " d_model"]
    pc_basis: Float[np.ndarray, "d_model component"]
    coords: Float[np.ndarray, "task component"]
    weights: Float[np.ndarray, "component target"]
    fitted: Float[np.ndarray, "task target"]
    r2: Float[np.ndarray, " target"]
    directions: Float[np.ndarray, "d_model target"]
    subspace_columns: Mapping[str, tuple[int, ...]]
    bases: Mapping[str, np.ndarray]
    theta_step: float

    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.targets)

    @property
    def n_components(self) -> int:
        return int(self.pc_basis.shape[1])

    @property
    def r2_by_name(self) -> dict[str, float]:
        return {name: float(v) for name, v in zip(self.target_names, self.r2, strict=True)}

    def column(self, name: str) -> int:
        """Index of a target column by name."""
        try:
            return self.target_names.index(name)
        except ValueError:
            raise KeyError(f"no target {name!r}; targets are {self.target_names}") from None

    def basis(
        self, subspace: str = "full", variant: Variant | str = "onto"
    ) -> Float[np.ndarray, "d_model rank"]:
        """Orthonormal basis of a named subspace (``onto``) or of its complement inside the
        full span (``out``); any other ``variant`` raises ValueError."""
        if variant not in ("onto", "out"):
            raise AddkError(f"variant must be 'onto' or 'out', got {variant!r}")
        key = f"{variant}_{subspace}"
        if key not in self.bases:
            raise KeyError(f"no subspace {subspace!r}; have {sorted(self.subspace_columns)}")
        return self.bases[key]

    def project(
        self,
        v: Float[ArrayIn, "*batch d_model"] | ArrayLike,
        subspace: str = "full",
        variant: Variant | str = "onto",
        center: Float[ArrayIn, " d_model"] | ArrayLike | None = None,
    ) -> Float[ArrayIn, "*batch d_model"]:
        """``center + (v - center) B B^T`` with B = :meth:`basis` (§5.4.2); ``center`` defaults
        to the PCA mean (pass the train-task mean for the §5.4.2 arms). Float64 inside; torch
        in, torch out (same dtype and device)."""
        b = self.basis(subspace, variant)
        x = as_float64(v, what="v")
        d_model = self.mean.shape[0]
        if x.ndim == 0 or x.shape[-1] != d_model:
            raise AddkError(f"v must end in d_model={d_model}, got shape {tuple(x.shape)}")
        mu = self.mean if center is None else as_float64(center, what="center")
        if mu.shape != (d_model,):
            raise AddkError(f"center must have shape ({d_model},), got {tuple(mu.shape)}")
        return restore_kind(mu + ((x - mu) @ b) @ b.T, v)

    def to_dict(self, include_arrays: bool = True) -> dict[str, Any]:
        """JSON-ready dict (lists and Python scalars only)."""
        out: dict[str, Any] = {
            "head": list(self.head) if self.head is not None else None,
            "ks": [json_number(v) for v in self.ks],
            "targets": [spec.to_dict() for spec in self.targets],
            "target_names": list(self.target_names),
            "phases": [float(p) for p in self.phases],
            "r2": self.r2_by_name,
            "n_components": self.n_components,
            "theta_step": float(self.theta_step),
            "subspace_columns": {k: list(v) for k, v in self.subspace_columns.items()},
            "subspace_dims": {k: int(v.shape[1]) for k, v in self.bases.items()},
        }
        if include_arrays:
            out["weights"] = self.weights.tolist()
            out["directions"] = self.directions.tolist()
            out["pc_basis"] = self.pc_basis.tolist()
            out["mean"] = self.mean.tolist()
            out["coords"] = self.coords.tolist()
            out["target_values"] = self.target_values.tolist()
            out["fitted"] = self.fitted.tolist()
            out["bases"] = {k: v.tolist() for k, v in self.bases.items()}
        return out


_FIT_ARRAYS = (
    "ks", "phases", "target_values", "mean", "pc_basis", "coords", "weights", "fitted", "r2",
    "directions",
)


def save_fits(fits: Mapping[Any, SubspaceFit], path, provenance: Mapping[str, Any]) -> Any:
    """Persist per-head fits (the subspaces stage's result) as one safetensors file: every array
    at full float64, targets / column sets / head keys in its JSON metadata, ``provenance``
    (e.g. the means' fingerprint) checked by :func:`load_fits`."""
    import torch

    from addk_interp.core.heads import head_str
    from addk_interp.core.store import write_tensors

    tensors, heads = {}, []
    for h, f in fits.items():
        key = head_str(h)
        heads.append({
            "head": key,
            "targets": [spec.to_dict() for spec in f.targets],
            "subspace_columns": {k: list(v) for k, v in f.subspace_columns.items()},
            "bases": sorted(f.bases),
            "theta_step": float(f.theta_step),
        })
        for name in _FIT_ARRAYS:
            tensors[f"{key}.{name}"] = torch.from_numpy(np.array(getattr(f, name), copy=True))
        for name, b in f.bases.items():
            tensors[f"{key}.bases.{name}"] = torch.from_numpy(np.array(b, copy=True))
    return write_tensors(path, tensors, {"kind": "subspace_fits", "heads": heads, **provenance})


def load_fits(path, expect: Mapping[str, Any] | None = None) -> dict[Any, SubspaceFit]:
    """The fits written by :func:`save_fits` ({Head: SubspaceFit}); a corrupt file or a
    provenance mismatch is a one-line ``AddkError`` naming the file."""
    from addk_interp.core.heads import Head
    from addk_interp.core.store import read_tensors

    tensors, meta = read_tensors(path, dict(expect or {}))
    if meta.get("kind") != "subspace_fits":
        raise AddkError(f"{path}: not a subspace-fits file")
    out = {}
    for rec in meta["heads"]:
        key = rec["head"]
        arr = {n: tensors[f"{key}.{n}"].numpy() for n in _FIT_ARRAYS}
        h = Head.parse(key)
        out[h] = SubspaceFit(
            head=h,
            targets=tuple(
                TargetSpec(t["name"], t["period"], t["kind"], t["phase_search"], t["group"])
                for t in rec["targets"]
            ),
            subspace_columns=MappingProxyType(
                {k: tuple(v) for k, v in rec["subspace_columns"].items()}
            ),
            bases=MappingProxyType({b: tensors[f"{key}.bases.{b}"].numpy() for b in rec["bases"]}),
            theta_step=float(rec["theta_step"]),
            **arr,
        )
    return out


def _named_columns(specs: Sequence[TargetSpec]) -> dict[str, tuple[int, ...]]:
    columns: dict[str, tuple[int, ...]] = {"full": tuple(range(len(specs)))}
    parity = tuple(j for j, spec in enumerate(specs) if spec.period == 2.0)
    if parity:
        columns["parity"] = parity
    for j, spec in enumerate(specs):
        columns[spec.group] = columns.get(spec.group, ()) + (j,)
    return columns


# -- fitting --------------------------------------------------------------------------------


def fit_subspace(
    pca: HeadPCA,
    targets: Iterable[TargetSpec] | None = None,
    *,
    n_components: int | None = None,
    theta_step: float | int = DEFAULT_THETA_STEP,
) -> SubspaceFit:
    """Fit the periodic targets (default: the six of §5.2) to a head's top-``n_components``
    centered PC coordinates (default: as many components as targets, i.e. 6).

    Raises ValueError when the PCA kept fewer components than requested, when there are fewer
    than ``n_components + 1`` tasks (the centered coordinates then cannot span n_components
    dimensions), or when a target is constant on the k grid.
    """
    specs = _check_targets(targets)
    where = f"periodic fit of {head_label(pca.head)}"
    n_comp = len(specs) if n_components is None else n_components
    if isinstance(n_comp, bool) or not isinstance(n_comp, int | np.integer) or n_comp < 1:
        raise AddkError(f"n_components must be a positive int, got {n_components!r}")
    n_comp = int(n_comp)
    n_task = pca.n_tasks
    if n_task < n_comp + 1:
        raise AddkError(
            f"{where}: fewer tasks ({n_task}) than needed for {n_comp} components; the centered "
            f"coordinates need at least n_components + 1 = {n_comp + 1} distinct k values"
        )
    if n_comp > pca.n_components:
        raise AddkError(
            f"{where}: the PCA kept {pca.n_components} components, fewer than the {n_comp} "
            "requested"
        )
    thetas = _theta_grid(theta_step)
    ks = np.asarray(pca.ks, dtype=np.float64)
    _check_identifiable(specs, ks, where)

    p = np.array(pca.components[:, :n_comp])
    c = np.array(pca.coords[:, :n_comp])
    c = c - c.mean(axis=0)
    col_basis = _column_space(c)

    phases = np.array(
        [_phase_search(s, ks, col_basis, thetas) if s.phase_search else 0.0 for s in specs]
    )
    t = np.stack([s.wave(ks, ph) for s, ph in zip(specs, phases, strict=True)], axis=1)
    w = np.linalg.lstsq(c, t, rcond=None)[0]
    fitted = c @ w
    ss_res = np.sum((t - fitted) ** 2, axis=0)
    ss_tot = np.sum((t - t.mean(axis=0)) ** 2, axis=0)
    flat = ss_tot <= (_CONST_TOL**2) * n_task
    if np.any(flat):
        names = [specs[j].name for j in np.nonzero(flat)[0]]
        raise AddkError(f"{where}: targets {names} are constant on the k grid {_grid_text(ks)}")
    r2 = 1.0 - ss_res / ss_tot
    directions = p @ w

    columns = _named_columns(specs)
    full = _orthonormalize(directions)
    bases: dict[str, np.ndarray] = {}
    for name, cols in columns.items():
        onto = full if name == "full" else _orthonormalize(directions[:, list(cols)])
        bases[f"onto_{name}"] = frozen(onto)
        bases[f"out_{name}"] = frozen(_complement_within(full, onto))

    return SubspaceFit(
        head=pca.head,
        ks=frozen(ks.copy()),
        targets=specs,
        phases=frozen(phases),
        target_values=frozen(t),
        mean=frozen(np.array(pca.mean)),
        pc_basis=frozen(p),
        coords=frozen(c),
        weights=frozen(w),
        fitted=frozen(fitted),
        r2=frozen(r2),
        directions=frozen(directions),
        subspace_columns=MappingProxyType(columns),
        bases=MappingProxyType(bases),
        theta_step=float(theta_step),
    )


def fit_subspace_from_means(
    x: Float[ArrayIn, "task d_model"] | ArrayLike,
    ks: Real[ArrayIn, " task"] | ArrayLike,
    targets: Iterable[TargetSpec] | None = None,
    *,
    head: Head | None = None,
    n_components: int | None = None,
    theta_step: float | int = DEFAULT_THETA_STEP,
    threshold: float | int = DEFAULT_THRESHOLD,
) -> SubspaceFit:
    """PCA (:func:`~addk_interp.analyses.pca.fit_head_pca`, full rank) then
    :func:`fit_subspace`, for one head's [task, d_model] means."""
    pca = fit_head_pca(x, ks, head=head, threshold=threshold)
    return fit_subspace(pca, targets, n_components=n_components, theta_step=theta_step)


def fit_subspaces(
    means: Float[ArrayIn, "task layer head d_model"] | ArrayIn,
    ks: Real[ArrayIn, " task"] | ArrayLike,
    heads: Sequence[Head],
    targets: Iterable[TargetSpec] | None = None,
    *,
    n_components: int | None = None,
    theta_step: float | int = DEFAULT_THETA_STEP,
    threshold: float | int = DEFAULT_THRESHOLD,
) -> dict[Head, SubspaceFit]:
    """:func:`fit_subspace` for several heads of a stacked [task, layer, head, d_model] cache."""
    specs = _check_targets(targets)
    pcas = fit_heads_pca(means, ks, heads, threshold=threshold)
    return {
        head: fit_subspace(pca, specs, n_components=n_components, theta_step=theta_step)
        for head, pca in pcas.items()
    }


# -- periodogram ----------------------------------------------------------------------------


def _rank_periods(
    periods: Float[np.ndarray, " period"],
    power: Float[np.ndarray, " period"],
    identifiable: Bool[np.ndarray, " period"],
    n: int,
    peaks_only: bool = False,
) -> tuple[float, ...]:
    """Identifiable periods by descending power (ties: shorter first); with ``peaks_only``,
    only local maxima of power along the period axis (a boundary compares to its one
    neighbour)."""
    idx = [int(i) for i in np.nonzero(identifiable)[0]]
    if peaks_only:
        by_period = sorted(idx, key=lambda i: periods[i])
        keep = []
        for pos, i in enumerate(by_period):
            nbrs = [by_period[q] for q in (pos - 1, pos + 1) if 0 <= q < len(by_period)]
            if all(power[i] >= power[j] for j in nbrs) and (
                not nbrs or any(power[i] > power[j] for j in nbrs)
            ):
                keep.append(i)
        idx = keep
    ranked = sorted(idx, key=lambda i: (-power[i], periods[i]))
    return tuple(float(periods[i]) for i in ranked[: max(int(n), 0)])


@dataclass(frozen=True)
class Periodogram:
    """Per-period fraction of variance explained by a sinusoid of that period.

    ``power[i]`` = ||Proj_[cos, sin](Y_c)||_F^2 / ||Y_c||_F^2 for period ``periods[i]``, i.e. the
    per-coordinate R^2 averaged with variance weights. ``identifiable[i]`` is False where the
    sinusoid is constant on the k grid (power 0 there). ``top_periods`` are the identifiable
    periods by descending power; ``peak_periods`` keeps only local maxima along the period axis,
    which is the more telling list when a strong period leaks into its neighbours (periods
    longer than the k range are barely distinguishable from one another).
    """

    periods: Float[np.ndarray, " period"]
    power: Float[np.ndarray, " period"]
    identifiable: Bool[np.ndarray, " period"]
    ks: Float[np.ndarray, " task"]
    total_variance: float
    top_periods: tuple[float, ...]
    peak_periods: tuple[float, ...]

    def top(self, n: int = 5, peaks_only: bool = False) -> tuple[float, ...]:
        """The ``n`` identifiable periods (or local-maximum periods) with the largest power."""
        return _rank_periods(self.periods, self.power, self.identifiable, n, peaks_only)

    def power_at(self, period: float | int) -> float:
        hits = np.nonzero(np.isclose(self.periods, float(period), rtol=0.0, atol=1e-12))[0]
        if hits.size == 0:
            raise KeyError(f"period {period} was not scanned")
        return float(self.power[hits[0]])

    def to_dict(self) -> dict[str, Any]:
        return {
            "periods": [json_number(p) for p in self.periods],
            "power": self.power.tolist(),
            "identifiable": [bool(b) for b in self.identifiable],
            "ks": [json_number(k) for k in self.ks],
            "total_variance": float(self.total_variance),
            "top_periods": [json_number(p) for p in self.top_periods],
            "peak_periods": [json_number(p) for p in self.peak_periods],
        }


def periodogram(
    data: Float[ArrayIn, "task component"] | Float[ArrayIn, " task"] | ArrayLike,
    ks: Real[ArrayIn, " task"] | ArrayLike,
    periods: Iterable[float | int] = range(2, 51),
    *,
    n_top: int = 5,
) -> Periodogram:
    """Which periods does a head use? ``data`` is [task, component] PC coordinates (or the
    [task, d_model] means themselves: the answer is rotation invariant, so full-rank
    coordinates and X agree); rows align with ``ks`` and are centered here. ``n_top`` sets the
    length of ``top_periods`` and ``peak_periods``."""
    y = as_float64(data, what="data")
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise AddkError(f"data must be [task, component], got shape {tuple(y.shape)}")
    k = as_float64(ks, what="ks")
    if k.ndim != 1 or k.shape[0] != y.shape[0]:
        raise AddkError(f"ks must be 1-D with {y.shape[0]} values, got shape {tuple(k.shape)}")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(k))):
        raise AddkError("periodogram input contains NaN or inf")
    if y.shape[0] < 3:
        raise AddkError(f"a periodogram needs at least 3 tasks, got {y.shape[0]}")
    yc = y - y.mean(axis=0)
    total = float(np.sum(yc**2))
    if not total > 0.0:
        raise AddkError("data has zero variance across tasks")
    per = np.array([float(p) for p in periods], dtype=np.float64)
    if per.size == 0:
        raise AddkError("no periods to scan")
    if not np.all(np.isfinite(per)) or np.any(per <= 1.0):
        raise AddkError(f"every period must be a finite number > 1, got {per.tolist()}")
    if np.unique(per).size != per.size:
        raise AddkError(f"duplicate periods in {per.tolist()}")
    power = np.zeros(per.shape)
    ident = np.zeros(per.shape, dtype=bool)
    n = y.shape[0]
    for i, p in enumerate(per):
        arg = 2.0 * np.pi * k / p
        design = np.stack([np.cos(arg), np.sin(arg)], axis=1)
        design = design - design.mean(axis=0)
        u, s, _ = np.linalg.svd(design, full_matrices=False)
        keep = s > _CONST_TOL * math.sqrt(n)
        if not np.any(keep):
            continue
        q = u[:, keep]
        ident[i] = True
        power[i] = float(np.sum((q.T @ yc) ** 2)) / total
    return Periodogram(
        periods=frozen(per),
        power=frozen(power),
        identifiable=frozen(ident),
        ks=frozen(k),
        total_variance=total,
        top_periods=_rank_periods(per, power, ident, n_top),
        peak_periods=_rank_periods(per, power, ident, n_top, peaks_only=True),
    )


# -- principal angles -----------------------------------------------------------------------


def _basis_matrix(a: ArrayLike, what: str) -> Float64[np.ndarray, "d_model rank"]:
    m = as_float64(a, what=what)
    if m.ndim == 1:
        m = m[:, None]
    if m.ndim != 2:
        raise AddkError(f"{what} must be a [d_model, rank] column basis, got {tuple(m.shape)}")
    if not np.all(np.isfinite(m)):
        raise AddkError(f"{what} contains NaN or inf")
    return m


def principal_angles(
    a: Float[ArrayIn, "d_model a_rank"] | Float[ArrayIn, " d_model"] | ArrayLike,
    b: Float[ArrayIn, "d_model b_rank"] | Float[ArrayIn, " d_model"] | ArrayLike,
) -> Float[np.ndarray, " angle"]:
    """Principal angles (degrees, ascending) between the column spans of ``a`` and ``b``
    (any, not necessarily orthonormal, bases; scipy.linalg.subspace_angles, accurate for
    small angles). There are min(rank a, rank b) angles. A 1-D input is one column; bases of
    different d_model, or that span nothing, raise ValueError."""
    ma, mb = _basis_matrix(a, "a"), _basis_matrix(b, "b")
    if ma.shape[0] != mb.shape[0]:
        raise AddkError(f"bases live in different spaces: {ma.shape[0]} vs {mb.shape[0]} rows")
    if ma.shape[1] == 0 or mb.shape[1] == 0:
        return np.zeros(0)
    for m, what in ((ma, "a"), (mb, "b")):
        if np.linalg.matrix_rank(m) == 0:
            raise AddkError(f"basis {what} spans nothing (all columns are zero)")
    return np.sort(np.degrees(scipy.linalg.subspace_angles(ma, mb)))


@dataclass(frozen=True)
class AngleMatrix:
    """Pairwise largest and mean principal angles (degrees) between named subspaces."""

    names: tuple[str, ...]
    max_deg: Float[np.ndarray, "subspace subspace"]
    mean_deg: Float[np.ndarray, "subspace subspace"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "max_deg": self.max_deg.tolist(),
            "mean_deg": self.mean_deg.tolist(),
        }


def principal_angle_matrix(subspaces: Mapping[str, ArrayLike]) -> AngleMatrix:
    """Max and mean principal angles for every pair of named column bases."""
    names = tuple(subspaces)
    if not names:
        raise AddkError("no subspaces given")
    mats = {name: _basis_matrix(subspaces[name], name) for name in names}
    size = len(names)
    max_deg = np.zeros((size, size))
    mean_deg = np.zeros((size, size))
    for i in range(size):
        for j in range(i, size):
            ang = principal_angles(mats[names[i]], mats[names[j]])
            hi = float(ang.max()) if ang.size else float("nan")
            avg = float(ang.mean()) if ang.size else float("nan")
            max_deg[i, j] = max_deg[j, i] = hi
            mean_deg[i, j] = mean_deg[j, i] = avg
    return AngleMatrix(names=names, max_deg=frozen(max_deg), mean_deg=frozen(mean_deg))


@dataclass(frozen=True)
class DirectionComparison:
    """§5.2 step 6: fitted feature directions against reference ones (e.g. a shipped
    artifact): per-column |cos| and largest/mean principal angles per named subspace."""

    target_names: tuple[str, ...]
    abs_cos: Float[np.ndarray, " target"]
    max_angle_deg: Mapping[str, float]
    mean_angle_deg: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "abs_cos": {n: float(c) for n, c in zip(self.target_names, self.abs_cos, strict=True)},
            "max_angle_deg": dict(self.max_angle_deg),
            "mean_angle_deg": dict(self.mean_angle_deg),
        }


def compare_directions(
    fit: SubspaceFit, reference: Float[ArrayIn, "d_model target"] | ArrayLike
) -> DirectionComparison:
    """Compare ``fit.directions`` column by column (same target order) with ``reference``."""
    ref = _basis_matrix(reference, "reference")
    ours = np.asarray(fit.directions)
    if ref.shape != ours.shape:
        raise AddkError(f"reference shape {ref.shape} != fitted directions {ours.shape}")
    norms = np.linalg.norm(ours, axis=0) * np.linalg.norm(ref, axis=0)
    if np.any(norms == 0.0):
        raise AddkError("a fitted or reference direction is the zero vector")
    abs_cos = np.abs(np.sum(ours * ref, axis=0)) / norms
    max_angle: dict[str, float] = {}
    mean_angle: dict[str, float] = {}
    for name, cols in fit.subspace_columns.items():
        ang = principal_angles(ours[:, list(cols)], ref[:, list(cols)])
        max_angle[name] = float(ang.max())
        mean_angle[name] = float(ang.mean())
    return DirectionComparison(
        target_names=fit.target_names,
        abs_cos=frozen(abs_cos),
        max_angle_deg=MappingProxyType(max_angle),
        mean_angle_deg=MappingProxyType(mean_angle),
    )
