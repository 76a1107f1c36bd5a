"""Gate learning, configuration: ``GateConfig`` (λ, lr schedule, batch, epochs, items, cut rule,
mode, forward path), the ``paper`` / ``default`` presets, the proximal step
M ← clip(sign(M)·max(|M| − λ·lr, 0), 0, 1) and the task vectors FV_t(M) = Σ_{l,h} M[l,h]·h̄_t[l,h].
The method is described in ``localize.gates.training``. Cost: negligible.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from addk_interp.core.errors import AddkError
from addk_interp.core.heads import HeadLike as Head  # noqa: F401
from addk_interp.core.tasks import Example
from addk_interp.hooks.capture import HeadMeans
from addk_interp.hooks.runners import (
    FORWARD_PATHS,
)
from addk_interp.localize.cuts import RULES

MODES = ("coef", "mask")
LR_SCHEDULES = ("constant", "linear")
GATE_FIT_VERSION = 1

# ============================================================================ configuration

PRESETS: dict[str, dict[str, Any]] = {
    # docs/method.md §3.3: λ 0.05, constant lr 0.01, batch 128, 16 steps × 50 epochs over 2048
    # items (800 steps), largest_gap on the mean of the last 3 epoch checkpoints.
    "paper": dict(
        lam=0.05,
        lr=0.01,
        batch_size=128,
        epochs=50,
        n_items=2048,
        n_monitor=100,
        select_rule="largest_gap",
    ),
    # Gemma-3-270m on a shared 2-core CPU (≈1.5 s per step of 16): 4 epochs × 25 steps of 16
    # over 400 items (16 per training task) = 100 steps, lr 0.1 decayed linearly to 0.005.
    # Measured: it ends on the same 10-head set as 160 steps at constant lr 0.05 (and tiny
    # models are stable from epoch ≤ 4). Gemma's coefficients form a continuum without a
    # gap (0.03–0.6), so largest_gap flips between 1 and 4 heads from checkpoint to
    # checkpoint while the 95 %-mass ``fraction`` set is the one both schedules agree on.
    "default": dict(
        lam=0.05,
        lr=0.1,
        lr_schedule="linear",
        lr_end_frac=0.05,
        batch_size=16,
        epochs=4,
        n_items=400,
        n_monitor=8,
        select_rule="fraction",
    ),
}


@dataclass(frozen=True)
class GateConfig:
    """Every setting of one gate-training run (all of them are recorded with the result).

    ``n_items``: training prompts over the training tasks (``gate_training_examples``);
    ``n_monitor``: held-out prompts per held-out task for the per-epoch monitor (0 = none);
    ``layer``: injection layer (None: ``default_injection_layer``, resolved at training time);
    ``forward``: ``auto`` (upper layers when they reproduce the full forward, else full),
    ``upper`` (required) or ``full``; ``select_rule``/``select_k``: the selected-set cut applied
    to the mean of the last k epoch checkpoints (recorded, used by ``GateFit.select``).
    """

    mode: str = "coef"
    lam: float = 0.05
    lr: float = 0.01
    lr_schedule: str = "constant"
    lr_end_frac: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 50
    n_items: int = 2048
    n_monitor: int = 100
    seed: int = 42
    layer: int | None = None
    site: str = "resid_mid"
    proximal: bool = True
    clip: bool = True
    forward: str = "auto"
    fmt: str = "arrow"
    select_rule: str = "largest_gap"
    select_k: int = 3
    preset: str = "custom"

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.mode not in MODES:
            raise AddkError(f"unknown gate mode {self.mode!r}; valid: {', '.join(MODES)}")
        for name in ("lam", "lr", "eps", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise AddkError(f"{name} must be a finite number, got {v!r}")
        if self.lam < 0:
            raise AddkError(f"lam (the L1 weight λ) must be ≥ 0, got {self.lam}")
        if self.lr <= 0 or self.eps <= 0 or self.weight_decay < 0:
            raise AddkError("lr and eps must be > 0 and weight_decay ≥ 0")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise AddkError(f"betas must be two numbers in [0, 1), got {self.betas}")
        for name in ("batch_size", "epochs", "n_items", "select_k"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise AddkError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.n_monitor, bool) or not isinstance(self.n_monitor, int):
            raise AddkError(f"n_monitor must be an integer ≥ 0, got {self.n_monitor!r}")
        if self.n_monitor < 0:
            raise AddkError(f"n_monitor must be ≥ 0, got {self.n_monitor}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise AddkError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not (isinstance(self.lr_end_frac, int | float) and 0 < self.lr_end_frac <= 1):
            raise AddkError(f"lr_end_frac must lie in (0, 1], got {self.lr_end_frac!r}")
        if self.select_rule not in RULES:
            raise AddkError(f"select_rule must be one of {RULES}, got {self.select_rule!r}")
        if self.forward not in FORWARD_PATHS:
            raise AddkError(f"forward must be one of {FORWARD_PATHS}, got {self.forward!r}")
        if self.site not in ("resid_pre", "resid_mid", "resid_post"):
            raise AddkError(f"unknown site {self.site!r}")
        if self.layer is not None and (isinstance(self.layer, bool) or self.layer < 0):
            raise AddkError(f"layer must be None or ≥ 0, got {self.layer!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GateConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise AddkError(f"unknown gate config fields {unknown}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(float(b) for b in d["betas"])
        return cls(**d)


def gate_config(preset: str = "default", **overrides: Any) -> GateConfig:
    """A preset (``paper`` or ``default``) with ``overrides`` (any ``GateConfig`` field)."""
    if preset not in PRESETS:
        raise AddkError(f"unknown gate preset {preset!r}; valid: {', '.join(PRESETS)}")
    fields = dict(PRESETS[preset])
    fields.update(overrides)
    fields.setdefault("preset", preset)
    return GateConfig(**fields)


def proximal_clip(
    coef: Float[Tensor, "layer head"], lam: float, lr: float, clip: bool = True
) -> Float[Tensor, "layer head"]:
    """M ← sign(M)·max(|M| − λ·lr, 0), then (``clip``) M ← clamp(M, 0, 1). Returns a new tensor."""
    out = torch.sign(coef) * torch.clamp(coef.abs() - lam * lr, min=0.0)
    return out.clamp(0.0, 1.0) if clip else out


def task_vectors(
    means: HeadMeans, examples: list[Example], coefs: Float[Tensor, "layer head"]
) -> Float[Tensor, "example d_model"]:
    """FV_{t(i)} = Σ_{l,h} coefs[l,h]·mean_{t(i)}[l,h] for every example i (differentiable)."""
    tasks = list(dict.fromkeys(e.task for e in examples))
    idx = torch.tensor([means.task_index(t) for t in tasks])
    fv = torch.einsum("lh,tlhd->td", coefs.to(means.means.dtype), means.means[idx])
    row = {t: i for i, t in enumerate(tasks)}
    return fv[torch.tensor([row[e.task] for e in examples])]


