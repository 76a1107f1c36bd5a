"""Per-head subspace summary for the pipeline: PCA, periodic fit, periodogram, angles.

Step of the method: docs/method.md §5.1–5.2 applied to the analysis heads of a run. Uses the
per-task means of training and held-out tasks together (spec §5.1, corrected pipeline: 25 + 5
tasks), rows ordered by k. Cost: one SVD of a [task, d_model] matrix per head plus a phase
search (~0.1 s per head).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from addk_interp.analyses.pca import fit_head_pca
from addk_interp.analyses.periodic import (
    fit_subspace,
    periodogram,
    principal_angle_matrix,
)
from addk_interp.core.errors import AddkError
from addk_interp.core.heads import HeadLike as Head  # the one head type: Head or (l, h)


@dataclass(frozen=True)
class HeadSubspace:
    head: Head
    pcs_to_95: int
    cumvar: list[float]
    r2: dict[str, float] | None
    fit_error: str | None
    top_periods: list[float]
    peak_periods: list[float]
    periodogram: dict
    basis6: np.ndarray | None
    unit_basis: np.ndarray | None
    magnitude_basis: np.ndarray | None
    pc_coords: np.ndarray
    ks: list[float]

    def to_dict(self) -> dict:
        return {
            "head": list(self.head),
            "pcs_to_95": self.pcs_to_95,
            "cumvar": self.cumvar,
            "r2": self.r2,
            "fit_error": self.fit_error,
            "top_periods": self.top_periods,
            "peak_periods": self.peak_periods,
            "periodogram": self.periodogram,
            "pc_coords_top6": self.pc_coords[:, :6].tolist(),
            "ks": self.ks,
        }


def summarize_heads(
    means: Float[Tensor, "task layer head d_model"], ks: list[int], heads: list[Head]
) -> list[HeadSubspace]:
    """PCA + six-target fit + periodogram for each head (fit errors are recorded, not raised)."""
    if len(ks) != means.shape[0]:
        raise AddkError(f"{len(ks)} k values for {means.shape[0]} tasks")
    out = []
    for head in heads:
        x = means[:, head[0], head[1]].double().numpy()
        pca = fit_head_pca(x, ks, head=head)
        r2 = err = None
        basis6 = unit = mag = None
        try:
            fit = fit_subspace(pca)
            r2 = {k: float(v) for k, v in fit.r2_by_name.items()}
            basis6 = fit.basis("full", "onto")
            unit = fit.basis("unit", "onto")
            mag = fit.basis("magnitude", "onto")
        except ValueError as e:
            err = str(e)
        pg = periodogram(pca.coords, pca.ks, periods=range(2, max(3, min(51, len(ks) + 1))))
        out.append(
            HeadSubspace(
                head,
                int(pca.pcs_to_threshold),
                [float(c) for c in pca.cumvar],
                r2,
                err,
                [float(p) for p in pg.top_periods],
                [float(p) for p in pg.peak_periods],
                pg.to_dict(),
                basis6,
                unit,
                mag,
                np.asarray(pca.coords),
                [float(k) for k in pca.ks],
            )
        )
    return out


def angle_matrix(subspaces: list[HeadSubspace]) -> dict:
    named = {f"L{s.head[0]}H{s.head[1]}": s.basis6 for s in subspaces if s.basis6 is not None}
    if len(named) < 2:
        return {}
    return principal_angle_matrix(named).to_dict()


def merged_means(train, held) -> tuple[Tensor, list[str]]:
    """Concatenate train and held-out task means (distinct tasks)."""
    if held is None:
        return train.means, list(train.tasks)
    return torch.cat([train.means, held.means]), list(train.tasks) + list(held.tasks)
