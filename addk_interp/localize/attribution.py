"""Per-head localization scores by attribution patching (AtP) and by exact single-head ablation.

Step of the method: an alternative to gate learning (§3) and AIE (§4.7) for ranking heads,
scored against planted ground truth by the validation benchmark.

Metric. For an n-shot prompt p with answer tokens y_1..y_A, M(p) = Σ_j log P(y_j | prefix)
(teacher forced). Intervention: replace head (l, h)'s ``hook_z`` at the query position q by
the train-task mean z̄[l, h] (mean-ablation, as in necessity §4.6).

- **Attribution patching** (Nanda; Kramár et al. 2024, arXiv 2403.00745): the first-order
  estimate ΔM̂(l, h | p) = ∂M/∂z_{l,h}[q] · (z̄[l, h] − z_{l,h}[q]), with the total derivative
  (a zero tensor δ_l is added to every layer's z at q and M is differentiated with respect to
  δ, so paths through later heads count). One forward + one backward per batch for all heads.
  On post-norm models the estimate goes through the real forward, norms included.
- **Single-head ablation**: the exact ΔM(l, h | p) = M(p | z_{l,h}[q] ← z̄) − M(p); one
  forward per head per batch of prompts (blocks from l upward, cached block inputs).

Both return ``HeadScores``: the mean over prompts of ΔM̂ (or ΔM) per [layer, head] and the
accuracy change (single-head ablation only). A head the task needs has a negative score;
``ranking()`` orders heads by score ascending (largest estimated drop first).

Cost: AtP ≈ 3 forwards per batch (forward + backward); ablation ≈ Σ_l H·(L − l)/L forwards.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from addk_interp.core.errors import AddkError
from addk_interp.core.heads import Head, head_str
from addk_interp.core.prompts import encode_examples, make_batches
from addk_interp.core.store import atomic_write_text
from addk_interp.core.tasks import Example, manifest_hash
from addk_interp.hooks.capture import HeadMeans, z_hook_name
from addk_interp.hooks.fv import check_means_model
from addk_interp.hooks.interventions import mean_ablate
from addk_interp.hooks.runners import PromptRunner
from addk_interp.models.adapter import HookedModel

METHODS = ("attribution_patching", "single_head_ablation")


@dataclass
class HeadScores:
    """Per-head scores [layer, head] of one localization method (negative = needed)."""

    method: str
    scores: Float[np.ndarray, "layer head"]
    accuracy_change: Float[np.ndarray, "layer head"] | None = None
    meta: dict = field(default_factory=dict)

    def ranking(self) -> list[Head]:
        """Scored heads by score ascending (largest drop first); ties by layer, head; heads
        not scored (NaN) are left out."""
        L, H = self.scores.shape
        return sorted(
            (
                Head(la, h)
                for la in range(L)
                for h in range(H)
                if np.isfinite(self.scores[la, h])
            ),
            key=lambda x: (float(self.scores[x.layer, x.head]), x.layer, x.head),
        )

    def top(self, k: int) -> list[Head]:
        return self.ranking()[:k]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "scores": self.scores.tolist(),
            "accuracy_change": None
            if self.accuracy_change is None
            else self.accuracy_change.tolist(),
            "ranking": [head_str(h) for h in self.ranking()],
            "meta": self.meta,
        }

    def save(self, path) -> Path:
        return atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path) -> HeadScores:
        try:
            d = json.loads(Path(path).read_text())
            acc = d.get("accuracy_change")
            return cls(
                d["method"],
                np.asarray(d["scores"], dtype=np.float64),
                None if acc is None else np.asarray(acc, dtype=np.float64),
                d.get("meta", {}),
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise AddkError(f"cannot read head scores from {path}: {e}") from None


def _zbar(model: HookedModel, train_means: HeadMeans, train_tasks: Sequence[str]) -> Tensor:
    check_means_model(model, train_means)
    train_tasks = list(train_tasks)
    if not train_tasks:
        raise AddkError("the training split is empty; z̄ needs training tasks")
    zbar = train_means.cross_task_mean(train_tasks, z=True)
    if not torch.isfinite(zbar).all():
        raise AddkError("the training means contain NaN or inf")
    return zbar


def _meta(model: HookedModel, examples, train_tasks, method: str) -> dict:
    return {
        "method": method,
        "model_fingerprint": model.info.fingerprint,
        "metric": "sum of answer-token log-probabilities (teacher forced)",
        "intervention": "hook_z at the query position replaced by the train-task mean z̄",
        "train_tasks": list(train_tasks),
        "n_examples": len(examples),
        "sample_manifest": manifest_hash(examples),
    }


def attribution_patching(
    model: HookedModel,
    examples: list[Example],
    train_means: HeadMeans,
    *,
    train_tasks: Sequence[str],
    fmt="arrow",
    batch_size: int = 16,
) -> HeadScores:
    """AtP estimate of every head's mean-ablation effect on M (module docstring)."""
    if not examples:
        raise AddkError("no examples to attribute")
    if batch_size <= 0:
        raise AddkError("batch_size must be positive")
    zbar = _zbar(model, train_means, train_tasks)
    L, H = model.n_layers, model.n_heads
    total = torch.zeros(L, H, dtype=torch.float64)
    n = 0
    for batch in make_batches(encode_examples(model, examples, fmt), batch_size):
        q = batch.query_pos
        b = len(batch)
        deltas = [
            torch.zeros(b, H, model.info.d_head, dtype=torch.float32, requires_grad=True)
            for _ in range(L)
        ]
        zq: dict[int, Tensor] = {}

        def make(layer: int):
            def fn(z, hook):
                zq[layer] = z[:, q].detach()
                d = deltas[layer].to(z.dtype)
                return torch.cat([z[:, :q], (z[:, q] + d)[:, None], z[:, q + 1 :]], dim=1)

            return fn

        hooks = [(z_hook_name(layer), make(layer)) for layer in range(L)]
        with torch.enable_grad():
            logits = model.logits_at(batch.tokens, batch.score_positions[: batch.answer_len], hooks)
            logp = torch.log_softmax(logits.float(), dim=-1)
            metric = logp.gather(-1, batch.answer_ids[..., None]).sum()
            grads = torch.autograd.grad(metric, deltas)
        for layer in range(L):
            dz = zbar[layer].to(zq[layer].dtype)[None] - zq[layer]  # [b, H, d_head]
            total[layer] += (grads[layer].double() * dz.double()).sum(dim=(0, 2))
        n += b
    meta = _meta(model, examples, train_tasks, "attribution_patching")
    meta["estimate"] = "first order: dM/dz[q] · (z̄ − z[q]), total derivative"
    return HeadScores("attribution_patching", (total / n).numpy(), None, meta)


def single_head_ablation(
    model: HookedModel,
    examples: list[Example],
    train_means: HeadMeans,
    *,
    train_tasks: Sequence[str],
    heads: Sequence[Any] | None = None,
    fmt="arrow",
    batch_size: int = 32,
    path: str = "auto",
) -> HeadScores:
    """Exact ΔM and Δaccuracy of mean-ablating each head alone (``heads``: all when None;
    heads not scored get NaN)."""
    if not examples:
        raise AddkError("no examples to ablate")
    zbar = _zbar(model, train_means, train_tasks)
    L, H = model.n_layers, model.n_heads
    todo = (
        [Head(la, h) for la in range(L) for h in range(H)]
        if heads is None
        else [Head.parse(h).check(L, H) for h in heads]
    )
    layers = sorted({h.layer for h in todo} | {0})
    runner = PromptRunner(
        model, examples, layers=layers, zero_shot=False, fmt=fmt, path=path, batch_size=batch_size
    )
    base = runner.score(lambda g, r, v: [], 0)
    base_lp, base_ok = base.answer_logprob[0], base.correct[0]
    scores = np.full((L, H), np.nan)
    dacc = np.full((L, H), np.nan)
    for hd in todo:
        sc = runner.score(
            lambda g, r, v, hd=hd: mean_ablate(model, [hd], g.query_pos, zbar), hd.layer
        )
        scores[hd] = float(np.mean(sc.answer_logprob[0] - base_lp))
        dacc[hd] = float(np.mean(sc.correct[0].astype(float) - base_ok.astype(float)))
    meta = _meta(model, examples, train_tasks, "single_head_ablation")
    meta.update({"forward_path": runner.path, "clean_accuracy": float(base_ok.mean())})
    return HeadScores("single_head_ablation", scores, dacc, meta)
