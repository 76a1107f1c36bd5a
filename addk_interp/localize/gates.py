"""Gate learning: the sparse head-coefficient matrix of localization step 1 (paper_spec §3).

What it computes. For every training task k, mean_k[l, h] is the mean output of head (l, h) at
the last token of n-shot prompts (the z-cache of §3.1, ``HeadMeans``). Two parametrizations
share one training loop:

- ``coef`` (the paper, §3.2–§3.3): M ∈ [0, 1]^{layer × head}, init U[0, 1) from
  ``torch.Generator().manual_seed(seed)``. The function vector FV_k(M) = Σ_{l,h} M[l,h]·mean_k[l,h]
  is added to the residual stream after block ℓ's attention (``interventions.inject``, site
  ``resid_mid``) at the query position (last prompt token) of the
  zero-shot prompt ``xq->``. Loss = (1/B) Σ_batch Σ_answer-tokens −log p(y_i | prefix)
  (teacher forced, every answer token) + λ·Σ|M|. AdamW (lr 0.01, betas 0.9/0.98, eps 1e-8,
  weight decay 0); after every step the proximal soft-threshold
  M ← sign(M)·max(|M| − λ·lr, 0), then M ← clip(M, 0, 1) (the L1 acts twice, as in the paper).
- ``mask``: θ ∈ R^{layer × head}; at the query position of the zero-shot prompt every head's
  ``hook_z`` becomes σ(θ)·z̄_k + (1 − σ(θ))·z (its own zero-shot value), in every layer, through
  ``interventions.gate_heads`` with the task's z-means as source. Loss = NLL + λ·Σσ(θ); no
  proximal step or clipping. Init: σ(θ₀) = 0.1 + 0.8·U[0, 1).

The learning rate is constant (paper) or decays linearly to ``lr·lr_end_frac`` at the last step
(``lr_at``; the proximal shrink uses the current lr). Only training tasks enter the loss.
Held-out tasks (with their own means) are scored after every epoch and logged, never used to
choose anything: the coefficients do not depend on them. The data order of epoch e is
``randperm`` from a generator seeded by (seed, e), so a run is a pure function of (config,
model, data, means) and a resumed run is bitwise identical to an uninterrupted one. One
checkpoint per epoch (safetensors: parameter, AdamW state, coefficient history; JSON: config,
identity, history), written atomically; a finished run is read back without training, and
resuming with another config, model, data or monitor is refused.

Speed. An intervention at or above block s cannot change anything below it, so the input of
block s is computed once per prompt (``PromptRunner``; s = ℓ in coef mode, s = 0 in mask mode)
and each step runs blocks s..L−1, the final norm and the unembedding at the answer positions
only (never full-sequence logits). The TransformerBridge has no ``start_at_layer``: its wrapped
HF decoder layers are called directly with the keyword arguments (rotary cos/sin, causal or
sliding-window mask, position ids) the HF model passed them in a one-row run of the same length,
KV cache off, and TL hooks inside the blocks still fire (attached to the resolved
``HookPoint``s once, not through ``model.hooks``). A classic HookedTransformer's blocks are
called directly. A coef-mode mini-batch of mixed prompt shapes runs as one right-padded call
(exact: attention is causal and each row keeps its own positions). Every runner checks itself
against the full hooked forward (``logits_at``); if it disagrees (> 1e-4 relative) it falls
back to the full forward, and the path that ran is recorded (``GateFit.forward_path``).

Cost per step: coef ≈ (L − ℓ)/L of a forward + backward over B zero-shot prompts plus the
unembedding of the A answer positions of each (on Gemma-3-270m: 0.39–0.51 of a naive full
forward + backward with full logits, ``benchmarks/bench_gates.py``); mask ≈ one forward +
backward. Presets (``PRESETS``): ``paper`` (800 steps of 128) and ``default`` (100 steps of
16, sized and checked on Gemma-3-270m on CPU: ≈ 3 minutes).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from addk_interp._version import __version__
from addk_interp.core.errors import AddkError
from addk_interp.core.prompts import Encoded, encode_examples
from addk_interp.core.scoring import continuation_mask, scores_from_logits
from addk_interp.core.store import read_json, read_tensors, write_json, write_tensors
from addk_interp.core.tasks import Example, TaskFamily, manifest_hash, sample_family
from addk_interp.hooks.capture import HeadMeans
from addk_interp.hooks.fv import check_means_model
from addk_interp.hooks.interventions import (
    default_injection_layer,
    gate_heads,
    inject,
    resid_site,
)
from addk_interp.localize.cuts import RULES, Cut, cut, mean_last_k

Head = tuple[int, int]
MODES = ("coef", "mask")
FORWARD_PATHS = ("auto", "upper", "full")
LR_SCHEDULES = ("constant", "linear")
CHECK_RTOL = 1e-4
GATE_FIT_VERSION = 1

# ============================================================================ configuration

PRESETS: dict[str, dict[str, Any]] = {
    # paper_spec §3.3: λ 0.05, constant lr 0.01, batch 128, 16 steps × 50 epochs over 2048
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


# ============================================================================ upper-layer forward


class _Stop(Exception):
    """Ends a forward pass from inside a hook."""


def _final_hidden(x):
    return x[0] if isinstance(x, tuple) else x


class UpperForward:
    """Run blocks ``start..L−1`` (+ final norm + unembedding at chosen positions) from a cached
    block input, with TL hooks active; the same numbers as the full hooked forward.

    Bridge: each wrapped HF decoder layer gets the keyword arguments the HF model passed it in
    a one-row run of the same sequence length (captured once per length; KV cache off).
    Classic HookedTransformer: its blocks compute rotary positions themselves. Hooks go
    through ``HookedModel.hooks`` (attached straight to the resolved hook points).
    """

    def __init__(self, model):
        self.model = model
        self._kwargs: dict[int, dict[int, dict]] = {}
        blocks = getattr(model.model, "blocks", None)
        self.supported = (
            model.backend in ("bridge", "hooked")
            and blocks is not None
            and len(blocks) == model.n_layers
        )

    # ------------------------------------------------------------------ running
    def block_inputs(
        self, tokens: Int[Tensor, "batch pos"], layers: Sequence[int]
    ) -> dict[int, Float[Tensor, "batch pos d_model"]]:
        """Inputs of the given blocks (the residual stream entering them), stopping after the
        deepest one."""
        names = {layer: self.model.residual_hook(layer, "resid_pre") for layer in layers}
        last = names[max(layers)]
        acts = self.model.run_collect(tokens, list(names.values()), stop_after=last)
        return {layer: acts[n].detach() for layer, n in names.items()}

    def ensure_length(self, n: int, tokens: Int[Tensor, "1 pos"] | None = None) -> None:
        """Capture the decoder-layer keyword arguments for sequence length ``n`` (bridge)."""
        if self.model.backend != "bridge" or n in self._kwargs:
            return
        from transformers.cache_utils import Cache

        if tokens is None:
            tok = self.model.bos_id()
            tokens = torch.full((1, n), 0 if tok is None else int(tok), dtype=torch.long)
        blocks = self.model.model.blocks
        caps: dict[int, dict] = {}
        last = self.model.n_layers - 1

        def make(i):
            def pre(_mod, _args, kwargs):
                caps[i] = dict(kwargs)
                if i == last:
                    raise _Stop

            return pre

        handles = [
            b.register_forward_pre_hook(make(i), with_kwargs=True) for i, b in enumerate(blocks)
        ]
        try:
            with torch.no_grad():
                self.model.model(tokens[:1, :n])
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        if len(caps) != self.model.n_layers:
            raise AddkError("could not capture the decoder-layer arguments of every block")
        out = {}
        for i, kw in caps.items():
            kw = {k: (None if isinstance(v, Cache) else v) for k, v in kw.items()}
            if "use_cache" in kw:
                kw["use_cache"] = False
            out[i] = kw
        self._kwargs[n] = out

    def final_resid(
        self, hidden: Float[Tensor, "batch pos d_model"], start: int, fwd_hooks=()
    ) -> Float[Tensor, "batch pos d_model"]:
        """The output of the last block, from the input of block ``start``."""
        blocks = self.model.model.blocks
        kwargs = None
        if self.model.backend == "bridge":
            self.ensure_length(hidden.shape[1])
            kwargs = self._kwargs[hidden.shape[1]]
        with self.model.hooks(fwd_hooks):
            h = hidden
            for i in range(start, self.model.n_layers):
                out = blocks[i](h, **kwargs[i]) if kwargs is not None else blocks[i](h)
                h = _final_hidden(out)
        return h

    def unembed(self, x: Float[Tensor, "n d_model"]) -> Float[Tensor, "n vocab"]:
        """Final norm + unembedding of selected residual rows."""
        x = _final_hidden(self.model._final_norm()(x[None]))
        return self.model._unembed(x)[0]

    def logits(
        self,
        hidden: Float[Tensor, "batch pos d_model"],
        start: int,
        positions: Sequence[int],
        fwd_hooks=(),
    ) -> Float[Tensor, "batch n vocab"]:
        """Logits at ``positions`` (the same for every row) from the input of block ``start``."""
        h = self.final_resid(hidden, start, fwd_hooks)
        b, n = h.shape[0], len(positions)
        sel = h[:, list(positions)].reshape(b * n, -1)
        return self.unembed(sel).reshape(b, n, -1)


# ============================================================================ prepared prompts


@dataclass
class PromptGroup:
    """Prompts of one (prompt length P, answer length A); tokens = prompt + answer.

    ``indices``: positions in the caller's example list; ``cache``: the cached inputs of
    blocks (layer -> [batch, pos, d_model]; upper-layer path only).
    """

    prompt_len: int
    answer_len: int
    indices: Int[Tensor, " batch"]
    tokens: Int[Tensor, "batch pos"]
    answer_ids: Int[Tensor, "batch answer"]
    cache: dict[int, Tensor] = field(default_factory=dict)

    @property
    def query_pos(self) -> int:
        return self.prompt_len - 1

    def positions(self, n_pos: int) -> list[int]:
        """n_pos positions from the query: A predict the answer, A + 1 adds the terminator."""
        return list(range(self.prompt_len - 1, self.prompt_len - 1 + n_pos))

    def __len__(self) -> int:
        return self.tokens.shape[0]


def _group_encoded(encoded: list[Encoded]) -> list[PromptGroup]:
    buckets: dict[tuple[int, int], list[int]] = {}
    for i, e in enumerate(encoded):
        buckets.setdefault((len(e.prompt_ids), len(e.answer_ids)), []).append(i)
    groups = []
    for (p, a), idx in sorted(buckets.items()):
        rows = [list(encoded[i].prompt_ids) + list(encoded[i].answer_ids) for i in idx]
        groups.append(
            PromptGroup(
                p,
                a,
                torch.tensor(idx, dtype=torch.long),
                torch.tensor(rows, dtype=torch.long),
                torch.tensor([list(encoded[i].answer_ids) for i in idx], dtype=torch.long),
            )
        )
    return groups


@dataclass
class InjectedScores:
    """Teacher-forced scores (``scoring`` semantics) per [variant, example]."""

    correct: Bool[np.ndarray, "variant example"]
    match: Bool[np.ndarray, "variant example"]
    terminated: Bool[np.ndarray, "variant example"]
    answer_logprob: Float[np.ndarray, "variant example"]
    first_token_prob: Float[np.ndarray, "variant example"]

    def to_dict(self) -> dict[str, Any]:
        return {k: v.tolist() for k, v in asdict(self).items()}


_SCORE_FIELDS = (
    ("correct", bool),
    ("match", bool),
    ("terminated", bool),
    ("answer_logprob", np.float64),
    ("first_token_prob", np.float64),
)


@dataclass
class AnswerLogits:
    """Logits at every answer-predicting position of a mini-batch, flattened.

    ``logits[i]`` predicts ``targets[i]``, the answer token of batch row ``owner[i]``.
    """

    logits: Float[Tensor, "n vocab"]
    targets: Int[Tensor, " n"]
    owner: Int[Tensor, " n"]
    batch: int

    def nll(self) -> Float[Tensor, ""]:
        """Σ over rows and answer tokens of −log p(target)."""
        logp = torch.log_softmax(self.logits.float(), dim=-1)
        return -logp.gather(-1, self.targets[:, None]).sum()

    def match(self) -> Bool[Tensor, " batch"]:
        """Per row: the argmax equals the answer at every answer position (no terminator)."""
        wrong = (self.logits.detach().argmax(-1) != self.targets).float()
        return torch.zeros(self.batch).index_add_(0, self.owner, wrong) == 0


class PromptRunner:
    """Prompts grouped by shape, with the inputs of chosen blocks cached once.

    ``logits(group, rows, n_pos, start, hooks)`` runs blocks ``start..L−1`` from the cached
    input of block ``start`` (``UpperForward``), so every later evaluation with hooks at or
    above block ``start`` costs only those blocks. ``path``: ``auto`` (upper layers when they
    reproduce the full hooked forward on a few prompts, else the full forward), ``upper``
    (required) or ``full``. The path that runs is ``self.path``; ``self.check`` holds the
    self-check (max |Δ logits| vs ``logits_at``, relative tolerance ``CHECK_RTOL``).
    """

    def __init__(
        self,
        model,
        examples: list[Example],
        *,
        layers: Sequence[int],
        zero_shot: bool,
        fmt="arrow",
        path: str = "auto",
        batch_size: int = 64,
    ):
        if not examples:
            raise AddkError("no examples to run")
        if path not in FORWARD_PATHS:
            raise AddkError(f"path must be one of {FORWARD_PATHS}, got {path!r}")
        if batch_size <= 0:
            raise AddkError("batch_size must be positive")
        layers = sorted(set(int(x) for x in layers))
        if not layers or layers[0] < 0 or layers[-1] >= model.n_layers:
            raise AddkError(f"cached layers must lie in 0..{model.n_layers - 1}, got {layers}")
        self.model = model
        self.examples = list(examples)
        self.layers = layers
        self.batch_size = batch_size
        enc = encode_examples(model, self.examples, fmt, zero_shot=zero_shot)
        self.groups = _group_encoded(enc)
        n = len(self.examples)
        self.item_group = torch.empty(n, dtype=torch.long)
        self.item_row = torch.empty(n, dtype=torch.long)
        for gi, g in enumerate(self.groups):
            self.item_group[g.indices] = gi
            self.item_row[g.indices] = torch.arange(len(g))
        self.upper = UpperForward(model)
        self.check: dict[str, Any] = {}
        self._cands: Tensor | None = None
        self._cand_ok: bool | None = None
        self.path = "full"
        if path != "full":
            ok, info = self._enable_upper()
            self.check = info
            if ok:
                self.path = "upper"
            else:
                for g in self.groups:
                    g.cache = {}
                if path == "upper":
                    raise AddkError(f"the upper-layer forward is not available: {info}")

    def _enable_upper(self) -> tuple[bool, dict]:
        if not self.upper.supported:
            return False, {"reason": f"no block list on backend {self.model.backend}"}
        try:
            with torch.no_grad():
                bs = self.batch_size
                for g in self.groups:
                    parts = [
                        self.upper.block_inputs(g.tokens[s : s + bs], self.layers)
                        for s in range(0, len(g), bs)
                    ]
                    g.cache = {la: torch.cat([p[la] for p in parts]) for la in self.layers}
                return self._self_check()
        except Exception as e:  # any backend incompatibility -> fall back, recorded
            return False, {"reason": f"{type(e).__name__}: {e}"[:300]}

    def _test_vectors(self, n: int) -> Tensor:
        d = self.model.info.d_model
        return torch.linspace(-1.0, 1.0, d) * 3.0 * torch.arange(1, n + 1)[:, None]

    def _check_groups(self) -> list[PromptGroup]:
        """The shortest and the longest shape group (the self-check runs on both)."""
        return self.groups[:1] + self.groups[1:][-1:]

    def _self_check(self) -> tuple[bool, dict]:
        worst, scale = 0.0, 1.0
        for layer in sorted({self.layers[0], self.layers[-1]}):
            for g in self._check_groups():
                rows = torch.arange(min(2, len(g)))
                vec = self._test_vectors(len(rows))
                hooks = inject(self.model, vec, g.query_pos, layer, "resid_mid")
                pos = g.positions(g.answer_len + 1)
                full = self.model.logits_at(g.tokens[rows], pos, hooks)
                up = self.logits(g, rows, g.answer_len + 1, layer, hooks, _path="upper")
                worst = max(worst, float((full.float() - up.float()).abs().max()))
                scale = max(scale, float(full.float().abs().max()))
        info = {"max_abs_diff": worst, "scale": scale, "rtol": CHECK_RTOL}
        if not worst <= CHECK_RTOL * scale:
            info["reason"] = "upper-layer logits differ from the full forward"
            return False, info
        return True, info

    def logits(
        self,
        group: PromptGroup,
        rows: Int[Tensor, " batch"],
        n_pos: int,
        start: int,
        fwd_hooks=(),
        *,
        _path: str | None = None,
    ) -> Float[Tensor, "batch n vocab"]:
        """Logits at ``n_pos`` positions from the query for ``group`` rows, with ``fwd_hooks``
        (absolute positions; hooks must sit in blocks ≥ ``start``); keeps gradients."""
        pos = group.positions(n_pos)
        need = group.prompt_len - 1 + n_pos
        if (_path or self.path) == "upper":
            if start not in group.cache:
                raise AddkError(f"block {start} input is not cached (cached: {self.layers})")
            return self.upper.logits(group.cache[start][rows, :need], start, pos, fwd_hooks)
        return self.model.logits_at(group.tokens[rows, :need], pos, fwd_hooks)

    def score(
        self,
        hooks_fn: Callable[[PromptGroup, Tensor, Tensor], Sequence],
        start: int,
        n_variants: int = 1,
        batch_size: int | None = None,
        logprob: bool = True,
    ) -> InjectedScores:
        """Teacher-forced scores of every example under ``n_variants`` interventions.

        ``hooks_fn(group, rows, variant)`` returns the hooks for the rows ``rows`` of ``group``
        under the per-row variant indices ``variant``; the variants of one group are stacked
        along the batch (chunks of ``batch_size`` rows). ``logprob=False`` (upper-layer path)
        skips full logits where they cannot change the outcome (``_progressive``): the same
        ``correct`` and ``match`` (up to float ties ≤ 1e-4 between the answer token and a rival),
        ``answer_logprob`` and ``first_token_prob`` NaN, ``terminated`` False where not reached.
        """
        n_ex = len(self.examples)
        bs = batch_size or self.batch_size
        out = {k: np.zeros((n_variants, n_ex), dtype=dt) for k, dt in _SCORE_FIELDS}
        with torch.no_grad():
            for g in self.groups:
                n = len(g)
                var_all = torch.arange(n_variants).repeat_interleave(n)
                row_all = torch.arange(n).repeat(n_variants)
                for s in range(0, n * n_variants, bs):
                    var, rows = var_all[s : s + bs], row_all[s : s + bs]
                    hooks = hooks_fn(g, rows, var)
                    if logprob or self.path != "upper":
                        logits = self.logits(g, rows, g.answer_len + 1, start, hooks)
                        sc = scores_from_logits(self.model, logits, g.answer_ids[rows])
                        res = {
                            "correct": sc.correct,
                            "match": sc.match,
                            "terminated": sc.terminated,
                            "answer_logprob": sc.answer_logprob,
                            "first_token_prob": sc.first_token_prob,
                        }
                    else:
                        res = self._progressive(g, rows, start, hooks)
                    v, e = var.numpy(), g.indices[rows].numpy()
                    for k, _ in _SCORE_FIELDS:
                        val = res[k]
                        out[k][v, e] = (val.double() if val.is_floating_point() else val).numpy()
        return InjectedScores(**out)

    def _progressive(self, g: PromptGroup, rows: Tensor, start: int, hooks) -> dict[str, Tensor]:
        """Exact-match scoring without full logits where they cannot matter.

        Answer position j is looked at only for rows whose positions < j matched; there, the
        logits of a small candidate set (every answer token of this runner plus the argmax
        tokens seen so far) are computed first, and a row whose answer token is beaten by a
        candidate (argmax order: larger logit, then lower id) is wrong without the full
        unembedding. Only the remaining rows are unembedded in full (exact argmax), and the
        terminator only for complete matches.
        """
        a = g.answer_len
        need = g.prompt_len + a
        h = self.upper.final_resid(g.cache[start][rows, :need], start, hooks)
        h = h[:, g.query_pos : g.query_pos + a + 1]
        ans = g.answer_ids[rows]
        b = len(rows)
        alive = torch.arange(b)
        for j in range(a):
            if not len(alive):
                break
            x = h[alive, j]
            keep = self._not_beaten(x, ans[alive, j])
            alive, x = alive[keep], x[keep]
            if len(alive):
                pred = self.upper.unembed(x).argmax(-1)
                self._add_candidates(pred)
                alive = alive[pred == ans[alive, j]]
        match = torch.zeros(b, dtype=torch.bool)
        match[alive] = True
        terminated = torch.zeros(b, dtype=torch.bool)
        if len(alive):
            pred = self.upper.unembed(h[alive, a]).argmax(-1)
            self._add_candidates(pred)
            terminated[alive] = ~continuation_mask(self.model)[pred]
        nan = torch.full((b,), float("nan"))
        return {
            "correct": match & terminated,
            "match": match,
            "terminated": terminated,
            "answer_logprob": nan,
            "first_token_prob": nan,
        }

    # ------------------------------------------------------------------ candidate logits
    def _add_candidates(self, ids: Tensor) -> None:
        if self._cands is not None:
            self._cands = torch.unique(torch.cat([self._cands, ids.reshape(-1)]))

    def _not_beaten(self, x: Float[Tensor, "n d_model"], answer: Int[Tensor, " n"]) -> Tensor:
        """False where a candidate token beats ``answer`` in argmax order (row surely wrong)."""
        keep = torch.ones(len(answer), dtype=torch.bool)
        if self._cands is None:
            self._cands = torch.unique(torch.cat([g.answer_ids.reshape(-1) for g in self.groups]))
        if self._cand_ok is False:
            return keep
        cand = self._cands
        xn = _final_hidden(self.model._final_norm()(x[None]))[0]
        w = self.model.model.W_U
        lg = xn @ w[:, cand].to(xn.dtype)
        b_u = getattr(self.model.model, "b_U", None)
        if b_u is not None:
            lg = lg + b_u[cand].to(lg.dtype)
        lg = self.model.softcap(lg)
        if self._cand_ok is None:  # verify once against the real unembedding
            ref = self.upper.unembed(x[:4])[:, cand]
            diff = float((ref.float() - lg[:4].float()).abs().max())
            scale = max(1.0, float(ref.float().abs().max()))
            self._cand_ok = diff <= CHECK_RTOL * scale
            self.check["candidate_logits_max_abs_diff"] = diff
            if not self._cand_ok:
                return keep
        lg = lg.float()
        pos = torch.searchsorted(cand, answer)
        a_logit = lg.gather(1, pos[:, None])
        beaten = (lg > a_logit) | ((lg == a_logit) & (cand[None] < answer[:, None]))
        return ~beaten.any(1)

    def first_token_probs(
        self,
        hooks_fn: Callable[[PromptGroup, Tensor, Tensor], Sequence],
        start: int,
        n_variants: int = 1,
        batch_size: int | None = None,
    ) -> Float[np.ndarray, "variant example"]:
        """float32 softmax probability of the first answer token at the query position, per
        [variant, example] (only that position is unembedded); hooks as in ``score``."""
        n_ex = len(self.examples)
        bs = batch_size or self.batch_size
        out = np.zeros((n_variants, n_ex), dtype=np.float64)
        with torch.no_grad():
            for g in self.groups:
                n = len(g)
                var_all = torch.arange(n_variants).repeat_interleave(n)
                row_all = torch.arange(n).repeat(n_variants)
                for s in range(0, n * n_variants, bs):
                    var, rows = var_all[s : s + bs], row_all[s : s + bs]
                    logits = self.logits(g, rows, 1, start, hooks_fn(g, rows, var))[:, 0]
                    p = torch.softmax(logits.float(), dim=-1)
                    p = p.gather(-1, g.answer_ids[rows, :1]).squeeze(-1)
                    out[var.numpy(), g.indices[rows].numpy()] = p.double().numpy()
        return out


class _AddAtRows:
    """TL hook: act[r, q[r]] += vectors[r] for every row r (differentiable, out of place)."""

    def __init__(self, q: Tensor, vectors: Tensor):
        self.q, self.vectors = q, vectors
        self.rows = torch.arange(len(q))

    def __call__(self, act: Tensor, hook=None) -> Tensor:
        v = self.vectors.to(act.dtype)
        return act.index_put((self.rows, self.q), v, accumulate=True)


class InjectionRunner(PromptRunner):
    """Zero-shot prompts with a per-example vector added at ``blocks.ℓ.hook_<site>``.

    The input of block ℓ is cached for every prompt (one partial forward), so each later
    evaluation runs blocks ℓ..L−1 only. A mixed-shape mini-batch runs as one right-padded call
    (``answer_logits``; exact because attention is causal and each row keeps its positions),
    checked too against the full forward.
    """

    def __init__(
        self,
        model,
        examples: list[Example],
        *,
        layer: int,
        site: str = "resid_mid",
        fmt="arrow",
        path: str = "auto",
        batch_size: int = 64,
    ):
        self.site_name = resid_site(model, layer, site)
        self.layer = layer
        self.site = site
        super().__init__(
            model,
            examples,
            layers=[layer],
            zero_shot=True,
            fmt=fmt,
            path=path,
            batch_size=batch_size,
        )

    def _self_check(self) -> tuple[bool, dict]:
        ok, info = super()._self_check()
        if not ok:
            return ok, info
        items = torch.cat([g.indices[:2] for g in self._check_groups()])
        vec = self._test_vectors(len(items))
        ref = self._answer_logits_full(items, vec, extra=1)
        got = self._answer_logits_upper(items, vec, extra=1)
        padded = float((ref.logits - got.logits).abs().max())
        same = torch.equal(ref.targets, got.targets) and torch.equal(ref.owner, got.owner)
        info["max_abs_diff_padded"] = padded
        if not (same and padded <= CHECK_RTOL * info["scale"]):
            info["reason"] = "right-padded upper-layer logits differ from the full forward"
            return False, info
        return True, info

    def injected_logits(
        self,
        group: PromptGroup,
        rows: Int[Tensor, " batch"],
        vectors: Float[Tensor, "batch d_model"],
        n_pos: int,
    ) -> Float[Tensor, "batch n vocab"]:
        hooks = inject(self.model, vectors, group.query_pos, self.layer, self.site)
        return self.logits(group, rows, n_pos, self.layer, hooks)

    def answer_logits(
        self, items: Int[Tensor, " batch"], vectors: Float[Tensor, "batch d_model"]
    ) -> AnswerLogits:
        """Logits at the answer positions of mixed-shape ``items`` with ``vectors`` injected:
        one right-padded upper-layer call, or one full forward per shape group."""
        if self.path == "upper":
            return self._answer_logits_upper(items, vectors)
        return self._answer_logits_full(items, vectors)

    def _layout(self, items: Tensor, extra: int):
        gi, ri = self.item_group[items], self.item_row[items]
        plen = torch.tensor([self.groups[g].prompt_len for g in gi.tolist()])
        alen = torch.tensor([self.groups[g].answer_len for g in gi.tolist()])
        return gi, ri, plen, alen, alen + extra

    def _targets(self, gi, ri, alen, npos) -> tuple[Tensor, Tensor, Tensor]:
        owner = torch.repeat_interleave(torch.arange(len(gi)), npos)
        j = torch.cat([torch.arange(int(k)) for k in npos.tolist()])
        tgt = []
        for b, (g, r) in enumerate(zip(gi.tolist(), ri.tolist())):
            t = torch.full((int(npos[b]),), -1, dtype=torch.long)
            m = min(int(alen[b]), int(npos[b]))
            t[:m] = self.groups[g].answer_ids[r, :m]
            tgt.append(t)
        return torch.cat(tgt), owner, j

    def _answer_logits_upper(self, items: Tensor, vectors: Tensor, extra: int = 0) -> AnswerLogits:
        gi, ri, plen, alen, npos = self._layout(items, extra)
        need = plen - 1 + npos
        b = len(items)
        first = self.groups[int(gi[0])].cache[self.layer]
        hidden = torch.zeros(b, int(need.max()), first.shape[-1], dtype=first.dtype)
        for g in torch.unique(gi).tolist():
            sel = (gi == g).nonzero().squeeze(1)
            n = int(need[sel[0]])
            hidden[sel, :n] = self.groups[g].cache[self.layer][ri[sel], :n]
        q = plen - 1
        add = _AddAtRows(q, vectors)
        out = self.upper.final_resid(hidden, self.layer, [(self.site_name, add)])
        targets, owner, j = self._targets(gi, ri, alen, npos)
        return AnswerLogits(self.upper.unembed(out[owner, q[owner] + j]), targets, owner, b)

    def _answer_logits_full(self, items: Tensor, vectors: Tensor, extra: int = 0) -> AnswerLogits:
        gi, ri, plen, alen, npos = self._layout(items, extra)
        targets, owner, _ = self._targets(gi, ri, alen, npos)
        start = torch.cumsum(npos, 0) - npos
        parts, where = [], []
        for g in torch.unique(gi).tolist():
            sel = (gi == g).nonzero().squeeze(1)
            grp = self.groups[g]
            k = grp.answer_len + extra
            hooks = inject(self.model, vectors[sel], grp.query_pos, self.layer, self.site)
            lg = self.model.logits_at(grp.tokens[ri[sel]], grp.positions(k), hooks)
            parts.append(lg.reshape(len(sel) * k, -1))
            where.append((start[sel][:, None] + torch.arange(k)).reshape(-1))
        order = torch.argsort(torch.cat(where))
        return AnswerLogits(torch.cat(parts)[order], targets, owner, len(items))

    def score_vectors(
        self,
        vectors: Float[Tensor, "*variant example d_model"],
        batch_size: int | None = None,
        logprob: bool = True,
    ) -> InjectedScores:
        """Score every example under every variant's vectors ([variant, example, d] or
        [example, d]); the variants of one prompt group are stacked along the batch."""
        vec = vectors if vectors.ndim == 3 else vectors[None]
        n_var, n_ex, d = vec.shape
        if n_ex != len(self.examples) or d != self.model.info.d_model:
            raise AddkError(
                f"vectors must be [variant, {len(self.examples)}, {self.model.info.d_model}], "
                f"got {tuple(vectors.shape)}"
            )
        if not torch.isfinite(vec).all():
            raise AddkError("the injected vectors contain NaN or inf")

        def hooks_fn(g, rows, var):
            v = vec[var, g.indices[rows]]
            return inject(self.model, v, g.query_pos, self.layer, self.site)

        return self.score(hooks_fn, self.layer, n_var, batch_size, logprob)

    def evaluate(
        self, vectors: Float[Tensor, "example d_model"], label: str = "fv"
    ) -> pd.DataFrame:
        """One row per example (``scoring.evaluate`` columns minus ``pred``) for one variant."""
        sc = self.score_vectors(vectors)
        return pd.DataFrame(
            {
                "task": [e.task for e in self.examples],
                "k": [e.k for e in self.examples],
                "shots": 0,
                "query": [e.query for e in self.examples],
                "answer": [e.answer for e in self.examples],
                "correct": sc.correct[0],
                "match": sc.match[0],
                "terminated": sc.terminated[0],
                "answer_logprob": sc.answer_logprob[0],
                "first_token_prob": sc.first_token_prob[0],
                "condition": label,
            }
        )


def task_vectors(
    means: HeadMeans, examples: list[Example], coefs: Float[Tensor, "layer head"]
) -> Float[Tensor, "example d_model"]:
    """FV_{t(i)} = Σ_{l,h} coefs[l,h]·mean_{t(i)}[l,h] for every example i (differentiable)."""
    tasks = list(dict.fromkeys(e.task for e in examples))
    idx = torch.tensor([means.task_index(t) for t in tasks])
    fv = torch.einsum("lh,tlhd->td", coefs.to(means.means.dtype), means.means[idx])
    row = {t: i for i, t in enumerate(tasks)}
    return fv[torch.tensor([row[e.task] for e in examples])]


# ============================================================================ data


def _derived_seed(*parts: Any) -> int:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()
    return int(digest[:15], 16)


def _subsample(examples: list[Example], n: int, seed: int, kind: str) -> list[Example]:
    if len(examples) <= n:
        return examples
    keep = sorted(
        random.Random(_derived_seed(seed, kind, "subsample")).sample(range(len(examples)), n)
    )
    return [examples[i] for i in keep]


def gate_training_examples(family: TaskFamily, config: GateConfig) -> list[Example]:
    """``n_items`` zero-shot training items over the family's training tasks (kind
    ``gate_train``): ceil(n_items / tasks) per task, then a seeded subsample of n_items."""
    if not family.train:
        raise AddkError("the training split is empty; gate training needs training tasks")
    per = math.ceil(config.n_items / len(family.train))
    ex = sample_family(family, family.train, per, 0, seed=config.seed, kind="gate_train")
    return _subsample(ex, config.n_items, config.seed, "gate_train")


def gate_monitor_examples(family: TaskFamily, config: GateConfig) -> list[Example]:
    """``n_monitor`` zero-shot prompts per held-out task (kind ``gate_monitor``), or []."""
    if config.n_monitor == 0 or not family.heldout:
        return []
    return sample_family(
        family, family.heldout, config.n_monitor, 0, seed=config.seed, kind="gate_monitor"
    )


def _tensor_hash(t: Tensor) -> str:
    return hashlib.sha256(t.detach().float().contiguous().numpy().tobytes()).hexdigest()[:16]


# ============================================================================ the result


@dataclass(frozen=True)
class GateFit:
    """A trained gate matrix with everything needed to audit and reuse it.

    ``coefficients[e]`` is M (coef mode) or σ(θ) (mask mode) after epoch e + 1; ``init`` the
    same quantity before training; ``param`` the final raw parameter (M or θ). ``history`` has
    one dict per epoch (loss, nll, reg, train_match, sparsity, n_nonzero, n_selected,
    heldout_acc); ``steps`` one dict per optimizer step. ``identity`` holds the model
    fingerprint, task lists and data/means hashes; ``timing`` is not part of the result.
    """

    mode: str
    config: GateConfig
    layer: int
    coefficients: Float[Tensor, "epoch layer head"]
    init: Float[Tensor, "layer head"]
    param: Float[Tensor, "layer head"]
    history: tuple[dict, ...]
    steps: tuple[dict, ...]
    model_fingerprint: str
    forward_path: str
    identity: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)

    @property
    def final(self) -> Float[Tensor, "layer head"]:
        return self.coefficients[-1]

    @property
    def n_epochs(self) -> int:
        return self.coefficients.shape[0]

    def selection_matrix(self, k: int | None = None) -> Float[np.ndarray, "layer head"]:
        """Mean of the last k epoch checkpoints (k = ``config.select_k``, at most n_epochs)."""
        k = min(self.config.select_k if k is None else k, self.n_epochs)
        return mean_last_k(list(self.coefficients), k)

    def select(self, rule: str | None = None, k: int | None = None, **params: float) -> Cut:
        """The selected set: ``rule`` (default ``config.select_rule``) on ``selection_matrix``."""
        try:
            return cut(self.selection_matrix(k), rule or self.config.select_rule, **params)
        except AddkError:
            raise
        except ValueError as e:
            raise AddkError(str(e)) from None

    def stability(
        self, rule: str | None = None, k: int | None = None, **params: float
    ) -> dict[str, Any]:
        """Selected set after every epoch (cut on the mean of the last ≤ k checkpoints) and the
        first epoch from which it equals the final set (convergence diagnostic)."""
        k = self.config.select_k if k is None else k
        rule = rule or self.config.select_rule
        sets = []
        for e in range(1, self.n_epochs + 1):
            m = mean_last_k(list(self.coefficients[:e]), min(k, e))
            try:
                sets.append(tuple(cut(m, rule, **params).selected))
            except ValueError as err:
                raise AddkError(str(err)) from None
        final = sets[-1]
        since = self.n_epochs
        while since > 1 and sets[since - 2] == final:
            since -= 1
        return {
            "rule": rule,
            "k": k,
            "n_selected": [len(s) for s in sets],
            "stable_since_epoch": since,
            "final": [list(h) for h in final],
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": GATE_FIT_VERSION,
            "mode": self.mode,
            "config": self.config.to_dict(),
            "layer": self.layer,
            "coefficients": self.coefficients.tolist(),
            "init": self.init.tolist(),
            "param": self.param.tolist(),
            "history": list(self.history),
            "steps": list(self.steps),
            "model_fingerprint": self.model_fingerprint,
            "forward_path": self.forward_path,
            "identity": dict(self.identity),
            "timing": dict(self.timing),
        }

    def save(self, path) -> Path:
        """``path`` (.safetensors: coefficients, init, param) + the same stem ``.json``."""
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        meta = {
            k: v for k, v in self.to_dict().items() if k not in ("coefficients", "init", "param")
        }
        write_tensors(
            path,
            {"coefficients": self.coefficients, "init": self.init, "param": self.param},
            {"model_fingerprint": self.model_fingerprint, "kind": "gate_fit"},
        )
        write_json(path.with_suffix(".json"), meta)
        return path

    @classmethod
    def load(cls, path, model=None) -> GateFit:
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        expect = {"kind": "gate_fit"}
        if model is not None:
            expect["model_fingerprint"] = model.info.fingerprint
        t, _ = read_tensors(path, expect)
        meta = read_json(path.with_suffix(".json"))
        if meta.get("version") != GATE_FIT_VERSION:
            raise AddkError(f"{path}: gate-fit version {meta.get('version')} is not supported")
        return cls(
            mode=meta["mode"],
            config=GateConfig.from_dict(meta["config"]),
            layer=meta["layer"],
            coefficients=t["coefficients"],
            init=t["init"],
            param=t["param"],
            history=tuple(meta["history"]),
            steps=tuple(meta["steps"]),
            model_fingerprint=meta["model_fingerprint"],
            forward_path=meta["forward_path"],
            identity=meta["identity"],
            timing=meta.get("timing", {}),
        )


# ============================================================================ training


class GateProblem:
    """Training prompts, means and the differentiable forward of one gate mode (built once).

    coef: an ``InjectionRunner`` at the injection layer (upper-layer path when it checks out);
    mask: an ``InjectionRunner`` from block 0 (cached embeddings; every layer is gated).
    """

    def __init__(
        self,
        model,
        examples: list[Example],
        means: HeadMeans,
        config: GateConfig,
        *,
        batch_size: int = 64,
    ):
        self.model = model
        self.config = config
        self.examples = list(examples)
        self.means = means
        self.task_idx = torch.tensor([means.task_index(e.task) for e in examples])
        if config.mode == "coef":
            self.runner = InjectionRunner(
                model,
                self.examples,
                layer=config.layer,
                site=config.site,
                fmt=config.fmt,
                path=config.forward,
                batch_size=batch_size,
            )
            self.path = self.runner.path
        else:
            self.runner = PromptRunner(
                model,
                self.examples,
                layers=[0],
                zero_shot=True,
                fmt=config.fmt,
                path=config.forward,
                batch_size=batch_size,
            )
            self.path = f"{self.runner.path}(from block 0)"
        self.groups = self.runner.groups
        self.check = self.runner.check

    def coefficients(self, param: Tensor) -> Tensor:
        return param if self.config.mode == "coef" else torch.sigmoid(param)

    def regularizer(self, param: Tensor) -> Tensor:
        return self.coefficients(param).abs().sum()

    def vectors(self, param: Tensor, items: Int[Tensor, " batch"]) -> Tensor:
        return task_vectors(self.means, [self.examples[i] for i in items.tolist()], param)

    def mask_hooks(self, param: Tensor, group: PromptGroup, rows: Tensor, means=None) -> list:
        m = self.means if means is None else means
        items = group.indices[rows]
        z_src = m.z_means[torch.tensor([m.task_index(self.examples[i].task) for i in items])]
        return gate_heads(self.model, torch.sigmoid(param), group.query_pos, z_src)

    def answer_logits(self, param: Tensor, items: Int[Tensor, " batch"]) -> AnswerLogits:
        """Differentiable logits at every answer position of the mini-batch ``items``."""
        if self.config.mode == "coef":
            return self.runner.answer_logits(items, self.vectors(param, items))
        r = self.runner
        gi, ri = r.item_group[items], r.item_row[items]
        parts, targets, owner = [], [], []
        for g in torch.unique(gi).tolist():
            sel = (gi == g).nonzero().squeeze(1)
            grp = self.groups[g]
            hooks = self.mask_hooks(param, grp, ri[sel])
            lg = r.logits(grp, ri[sel], grp.answer_len, 0, hooks)
            parts.append(lg.reshape(-1, lg.shape[-1]))
            targets.append(grp.answer_ids[ri[sel]].reshape(-1))
            owner.append(sel.repeat_interleave(grp.answer_len))
        return AnswerLogits(torch.cat(parts), torch.cat(targets), torch.cat(owner), len(items))


def _init_param(config: GateConfig, shape: tuple[int, int]) -> Tensor:
    gen = torch.Generator().manual_seed(config.seed)
    u = torch.rand(shape, generator=gen)
    if config.mode == "coef":
        return u
    g = 0.1 + 0.8 * u
    return torch.log(g) - torch.log1p(-g)


def _sparsity(mode: str, coefs: Tensor) -> tuple[float, int]:
    """(fraction of inactive heads, number active); active: |M| > 1e-6 (coef), σ(θ) ≥ ½ (mask)."""
    active = int((coefs.abs() > 1e-6 if mode == "coef" else coefs >= 0.5).sum())
    return 1.0 - active / coefs.numel(), active


def _n_selected(coefs_hist: list[Tensor], config: GateConfig) -> int | None:
    if config.select_rule == "fixed":
        return None
    k = min(config.select_k, len(coefs_hist))
    return cut(mean_last_k(coefs_hist, k), config.select_rule).n_selected


def lr_at(config: GateConfig, step: int, total: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based) of ``total``: constant (paper), or
    linear from lr to lr·lr_end_frac at the last step."""
    if config.lr_schedule == "constant" or total <= 1:
        return config.lr
    return config.lr * (1.0 - (1.0 - config.lr_end_frac) * step / (total - 1))


def train_step(
    problem: GateProblem,
    param: Tensor,
    opt: torch.optim.Optimizer,
    items: Int[Tensor, " batch"],
    lr: float | None = None,
) -> dict[str, float]:
    """One optimizer step on the mini-batch ``items``: NLL / B + λ·reg, AdamW at ``lr``
    (default ``config.lr``), then (coef mode) the proximal soft-threshold by λ·lr and the clip.
    Returns the step's numbers."""
    cfg = problem.config
    lr = cfg.lr if lr is None else lr
    for group in opt.param_groups:
        group["lr"] = lr
    b = len(items)
    opt.zero_grad(set_to_none=True)
    out = problem.answer_logits(param, items)
    nll = out.nll()
    reg = problem.regularizer(param)
    (nll / b + cfg.lam * reg).backward()
    opt.step()
    if cfg.mode == "coef" and (cfg.proximal or cfg.clip):
        with torch.no_grad():
            lam = cfg.lam if cfg.proximal else 0.0
            param.copy_(proximal_clip(param, lam, lr, clip=cfg.clip))
    n_match = int(out.match().sum())
    nll_v, reg_v = float(nll.detach()) / b, float(reg.detach())
    return {
        "loss": nll_v + cfg.lam * reg_v,
        "nll": nll_v,
        "reg": reg_v,
        "match": n_match / b,
        "n_match": n_match,
        "lr": lr,
    }


class _Monitor:
    """Held-out accuracy with the current coefficients (logged only; no gradients)."""

    def __init__(self, model, examples, means: HeadMeans, problem: GateProblem):
        self.means = means
        self.problem = problem
        cfg = problem.config
        path = "auto" if problem.runner.path == "upper" else "full"
        if cfg.mode == "coef":
            self.runner = InjectionRunner(
                model, examples, layer=cfg.layer, site=cfg.site, fmt=cfg.fmt, path=path
            )
        else:
            self.runner = PromptRunner(
                model, examples, layers=[0], zero_shot=True, fmt=cfg.fmt, path=path
            )
        self.task_idx = torch.tensor([means.task_index(e.task) for e in examples])

    def accuracy(self, param: Tensor) -> float:
        r = self.runner
        if self.problem.config.mode == "coef":
            vec = task_vectors(self.means, r.examples, param.detach())
            return float(r.score_vectors(vec, logprob=False).correct.mean())
        gate = torch.sigmoid(param.detach())

        def hooks_fn(g, rows, _var):
            z_src = self.means.z_means[self.task_idx[g.indices[rows]]]
            return gate_heads(r.model, gate, g.query_pos, z_src)

        return float(r.score(hooks_fn, 0, logprob=False).correct.mean())


def _identity(model, config, examples, means, heldout_examples, heldout_means) -> dict:
    train_tasks = list(dict.fromkeys(e.task for e in examples))
    ident = {
        "model_fingerprint": model.info.fingerprint,
        "config": config.to_dict(),
        "train_tasks": train_tasks,
        "train_manifest": manifest_hash(examples),
        "train_means": _tensor_hash(
            torch.stack([means.means[means.task_index(t)] for t in train_tasks])
        )
        + _tensor_hash(torch.stack([means.z_means[means.task_index(t)] for t in train_tasks])),
        "heldout_tasks": list(dict.fromkeys(e.task for e in heldout_examples)),
        "heldout_manifest": manifest_hash(heldout_examples) if heldout_examples else None,
        "heldout_means": None,
        "code_version": __version__,
    }
    if heldout_examples:
        ht = ident["heldout_tasks"]
        ident["heldout_means"] = _tensor_hash(
            torch.stack([heldout_means.means[heldout_means.task_index(t)] for t in ht])
        ) + _tensor_hash(
            torch.stack([heldout_means.z_means[heldout_means.task_index(t)] for t in ht])
        )
    return ident


def _identity_key(ident: dict) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ checkpoints


def _ckpt_stem(directory: Path, epoch: int) -> Path:
    return directory / f"epoch_{epoch:04d}"


def _latest_checkpoint(directory: Path) -> int:
    """Largest epoch whose JSON (written last) and safetensors both exist; 0 if none."""
    best = 0
    for p in directory.glob("epoch_*.json"):
        try:
            e = int(p.stem.split("_")[1])
        except (IndexError, ValueError):
            continue
        if p.with_suffix(".safetensors").exists():
            best = max(best, e)
    return best


def _write_checkpoint(directory: Path, epoch: int, state: dict, meta: dict) -> None:
    stem = _ckpt_stem(directory, epoch)
    write_tensors(stem.with_suffix(".safetensors"), state, {"key": meta["key"], "epoch": epoch})
    write_json(stem.with_suffix(".json"), meta)  # the commit marker: written last


def _read_checkpoint(directory: Path, epoch: int, ident: dict) -> tuple[dict, dict]:
    stem = _ckpt_stem(directory, epoch)
    meta = read_json(stem.with_suffix(".json"))
    key = _identity_key(ident)
    if meta.get("key") != key:
        old = meta.get("identity", {})
        diff = sorted(k for k in set(old) | set(ident) if old.get(k) != ident.get(k))
        detail = ""
        if "config" in diff:
            oc, nc = old.get("config", {}), ident["config"]
            fields = sorted(k for k in set(oc) | set(nc) if oc.get(k) != nc.get(k))
            detail = f" (config fields: {', '.join(fields)})"
        raise AddkError(
            f"{directory} holds checkpoints of another gate-training run: {', '.join(diff)} "
            f"differ{detail}. Use another checkpoint directory, or the same settings to resume."
        )
    state, _ = read_tensors(stem.with_suffix(".safetensors"), {"key": key, "epoch": epoch})
    return state, meta


# ------------------------------------------------------------------ main loop


def train_gates(
    model,
    examples: list[Example],
    means: HeadMeans,
    config: GateConfig | None = None,
    *,
    heldout_examples: Sequence[Example] | None = None,
    heldout_means: HeadMeans | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    verbose: bool = True,
    callback: Callable[[int, dict], None] | None = None,
    batch_size_eval: int = 64,
) -> GateFit:
    """Train the gate matrix (see module docstring) on zero-shot training ``examples``.

    ``means``: per-task means of the training tasks (``capture_means`` on kind ``activation``);
    ``heldout_examples``/``heldout_means``: the monitor (logged only). ``checkpoint_dir``: one
    checkpoint per epoch; an existing run there is resumed (``resume=True``) if its identity
    matches, else refused. ``callback(epoch, record)`` runs after each checkpoint (an exception
    there interrupts the run, which a later call resumes).
    """
    cfg = config or gate_config("default")
    if not examples:
        raise AddkError("no training examples: the training split is empty")
    if any(len(e.demos) for e in examples):
        examples = [e.zero_shot() for e in examples]
    check_means_model(model, means)
    layer = default_injection_layer(model.n_layers) if cfg.layer is None else cfg.layer
    resid_site(model, layer, cfg.site)
    cfg = replace(cfg, layer=layer)
    heldout = [e.zero_shot() for e in (heldout_examples or [])]
    train_tasks = set(e.task for e in examples)
    if heldout:
        if heldout_means is None:
            raise AddkError("heldout_examples need heldout_means (their own task means)")
        check_means_model(model, heldout_means)
        leak = sorted(train_tasks & {e.task for e in heldout})
        if leak:
            raise AddkError(f"tasks {leak} are both training and held-out tasks")
    missing = [t for t in sorted(train_tasks) if t not in means.tasks]
    if missing:
        raise AddkError(f"no training means for tasks {missing}")
    sub = torch.stack([means.means[means.task_index(t)] for t in sorted(train_tasks)])
    if not torch.isfinite(sub).all() or not torch.isfinite(means.z_means).all():
        raise AddkError("the training means contain NaN or inf")

    t0 = time.time()
    ident = _identity(model, cfg, examples, means, heldout, heldout_means)
    key = _identity_key(ident)
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    last, state, meta = 0, None, None
    if ckdir is not None:
        if ckdir.exists() and not ckdir.is_dir():
            raise AddkError(f"{ckdir} exists and is not a directory")
        last = _latest_checkpoint(ckdir) if ckdir.exists() else 0
        if last and not resume:
            raise AddkError(
                f"{ckdir} already holds gate checkpoints (epoch {last}); pass resume=True or "
                "use another directory"
            )
        if last:
            state, meta = _read_checkpoint(ckdir, last, ident)  # refuses another run's files
    if state is not None and last == cfg.epochs:  # finished: nothing to run
        return GateFit(
            mode=cfg.mode,
            config=cfg,
            layer=layer,
            coefficients=state["coefficients"],
            init=state["init"],
            param=state["param"],
            history=tuple(meta["history"]),
            steps=tuple(meta["steps"]),
            model_fingerprint=model.info.fingerprint,
            forward_path=meta["forward_path"],
            identity={**ident, "forward_check": meta["forward_check"]},
            timing={"wall_s": round(time.time() - t0, 3), "resumed_from_epoch": last},
        )

    problem = GateProblem(model, examples, means, cfg, batch_size=batch_size_eval)
    monitor = _Monitor(model, heldout, heldout_means, problem) if heldout else None
    shape = (model.n_layers, model.n_heads)
    param = _init_param(cfg, shape).requires_grad_(True)
    init_coefs = problem.coefficients(param.detach()).clone()
    opt = torch.optim.AdamW(
        [param], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
    )
    coef_hist: list[Tensor] = []
    history: list[dict] = []
    steps: list[dict] = []
    start_epoch = resumed_from = 0
    if state is not None:
        with torch.no_grad():
            param.copy_(state["param"])
        opt.state[param] = {
            "step": state["opt_step"].clone(),
            "exp_avg": state["exp_avg"].clone(),
            "exp_avg_sq": state["exp_avg_sq"].clone(),
        }
        coef_hist = list(state["coefficients"])
        history = list(meta["history"])
        steps = list(meta["steps"])
        start_epoch = resumed_from = last

    n = len(examples)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    bar = tqdm(
        total=total,
        initial=start_epoch * steps_per_epoch,
        desc=f"gates[{cfg.mode}]",
        disable=not verbose,
    )
    try:
        for epoch in range(start_epoch, cfg.epochs):
            gen = torch.Generator().manual_seed(_derived_seed(cfg.seed, "epoch", epoch) % 2**63)
            perm = torch.randperm(n, generator=gen)
            sums = {"loss": 0.0, "nll": 0.0, "reg": 0.0, "match": 0}
            for s in range(0, n, cfg.batch_size):
                items = perm[s : s + cfg.batch_size]
                b = len(items)
                rec = train_step(problem, param, opt, items, lr_at(cfg, len(steps), total))
                if not math.isfinite(rec["loss"]):
                    raise AddkError(
                        f"non-finite loss at epoch {epoch + 1}, step {len(steps) + 1}; lower lr"
                    )
                steps.append({"epoch": epoch + 1, "step": len(steps) + 1, **rec})
                sums["loss"] += rec["loss"] * b
                sums["nll"] += rec["nll"] * b
                sums["reg"] += rec["reg"] * b
                sums["match"] += rec["n_match"]
                sp, _ = _sparsity(cfg.mode, problem.coefficients(param.detach()))
                bar.update(1)
                bar.set_postfix(
                    loss=f"{rec['loss']:.3f}", sparsity=f"{sp:.2f}", acc=f"{rec['match']:.2f}"
                )
            coefs = problem.coefficients(param.detach()).clone()
            coef_hist.append(coefs)
            sp, nnz = _sparsity(cfg.mode, coefs)
            rec = {
                "epoch": epoch + 1,
                "loss": sums["loss"] / n,
                "nll": sums["nll"] / n,
                "reg": sums["reg"] / n,
                "train_match": sums["match"] / n,
                "sparsity": sp,
                "n_active": nnz,
                "n_selected": _n_selected(coef_hist, cfg),
                "heldout_acc": monitor.accuracy(param.detach()) if monitor else None,
            }
            history.append(rec)
            bar.set_postfix(
                loss=f"{rec['loss']:.3f}",
                sparsity=f"{sp:.2f}",
                acc=f"{rec['train_match']:.2f}",
                heldout=("-" if rec["heldout_acc"] is None else f"{rec['heldout_acc']:.2f}"),
            )
            if ckdir is not None:
                st = opt.state[param]
                _write_checkpoint(
                    ckdir,
                    epoch + 1,
                    {
                        "param": param.detach(),
                        "init": init_coefs,
                        "coefficients": torch.stack(coef_hist),
                        "opt_step": st["step"],
                        "exp_avg": st["exp_avg"],
                        "exp_avg_sq": st["exp_avg_sq"],
                    },
                    {
                        "key": key,
                        "epoch": epoch + 1,
                        "identity": ident,
                        "forward_path": problem.path,
                        "forward_check": problem.check,
                        "history": history,
                        "steps": steps,
                    },
                )
            if callback is not None:
                callback(epoch + 1, rec)
    finally:
        bar.close()
    return GateFit(
        mode=cfg.mode,
        config=cfg,
        layer=layer,
        coefficients=torch.stack(coef_hist),
        init=init_coefs,
        param=param.detach().clone(),
        history=tuple(history),
        steps=tuple(steps),
        model_fingerprint=model.info.fingerprint,
        forward_path=problem.path,
        identity={**ident, "forward_check": problem.check},
        timing={"wall_s": round(time.time() - t0, 3), "resumed_from_epoch": resumed_from},
    )


def fit_gates(
    model,
    family: TaskFamily,
    means: HeadMeans,
    heldout_means: HeadMeans | None = None,
    config: GateConfig | None = None,
    **kwargs: Any,
) -> GateFit:
    """``train_gates`` on the family's training split (``gate_training_examples``), monitored
    on its held-out split (``gate_monitor_examples``) when ``heldout_means`` is given."""
    cfg = config or gate_config("default")
    train = gate_training_examples(family, cfg)
    monitor = gate_monitor_examples(family, cfg) if heldout_means is not None else []
    return train_gates(
        model,
        train,
        means,
        cfg,
        heldout_examples=monitor or None,
        heldout_means=heldout_means if monitor else None,
        **kwargs,
    )
