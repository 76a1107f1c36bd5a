"""Function vectors: build FV_t = Σ_h c_h · mean_t[h] and score it on zero-shot prompts.

Step of the method: docs/method.md §3.2 and §4.5. The FV is added to the residual stream
after block ℓ's attention (``interventions.inject``, site ``resid_mid``) at the last token of the zero-shot prompt ``xq->`` and stays at
that position during decoding. Every FV accuracy is paired with the clean n-shot accuracy of the
same examples. Cost: one zero-shot forward per example (plus one n-shot forward for the
paired clean score).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from addk_interp.core.errors import AddkError
from addk_interp.core.heads import HeadLike as Head
from addk_interp.core.scoring import evaluate
from addk_interp.core.tasks import Example
from addk_interp.core.validate import check_finite
from addk_interp.hooks.capture import HeadMeans
from addk_interp.hooks.interventions import inject
from addk_interp.models.adapter import HookedModel


def check_means_model(model: HookedModel, means: HeadMeans) -> None:
    fp = means.provenance.get("model_fingerprint")
    if fp != model.info.fingerprint:
        raise AddkError(
            f"head means come from model fingerprint {fp}, not {model.info.fingerprint} "
            f"({model.info.name}); recapture them on this model"
        )


def function_vector(
    source: Float[Tensor, "layer head d_model"],
    heads: Sequence[Head] | None = None,
    coefs: Sequence[float] | Float[Tensor, "layer head"] | None = None,
) -> Float[Tensor, " d_model"]:
    """Σ_h c_h · source[h] over ``heads`` (all heads when None); c = 1 by default."""
    n_layers, n_heads, _ = source.shape
    if not torch.isfinite(source).all():
        raise AddkError("the head means contain NaN or inf")
    if coefs is not None and not torch.isfinite(torch.as_tensor(coefs, dtype=torch.float64)).all():
        raise AddkError("the coefficients contain NaN or inf")
    if isinstance(coefs, Tensor) and coefs.ndim == 2:
        return torch.einsum("lh,lhd->d", coefs.to(source.dtype), source)
    if heads is None:
        heads = [(layer, h) for layer in range(n_layers) for h in range(n_heads)]
    if coefs is None:
        coefs = [1.0] * len(heads)
    if len(coefs) != len(heads):
        raise AddkError(f"{len(coefs)} coefficients for {len(heads)} heads")
    out = torch.zeros(source.shape[-1], dtype=source.dtype)
    for (layer, h), c in zip(heads, coefs):
        out = out + float(c) * source[layer, h]
    return out


def fv_hooks_fn(
    model: HookedModel, vectors: Float[Tensor, "example d_model"], layer: int, site: str = "resid_mid"
):
    """hooks_fn for ``scoring.evaluate``: row i of the batch gets ``vectors[index_i]``."""

    def make(batch):
        return inject(model, vectors[batch.indices], batch.query_pos, layer, site)

    return make


def evaluate_fv(
    model: HookedModel,
    examples: list[Example],
    vectors: dict[str, Float[Tensor, " d_model"]],
    *,
    layer: int,
    fmt="arrow",
    batch_size: int = 32,
    clean: pd.DataFrame | None = None,
    verbose: bool = False,
    label: str = "fv",
) -> pd.DataFrame:
    """Score zero-shot prompts with the task's FV injected; paired with clean n-shot rows."""
    missing = sorted({e.task for e in examples} - set(vectors))
    if missing:
        raise AddkError(f"no function vector for tasks {missing}")
    model.residual_hook(layer, "resid_mid")  # refuse a bad layer / missing site before any work
    for t, v in vectors.items():
        check_finite(v, f"the function vector of task {t!r}")
    per_ex = torch.stack([vectors[e.task] for e in examples]).float()
    df = evaluate(
        model,
        examples,
        fmt,
        zero_shot=True,
        batch_size=batch_size,
        hooks_fn=fv_hooks_fn(model, per_ex, layer),
        verbose=verbose,
        desc=label,
    )
    if clean is None:
        clean = evaluate(model, examples, fmt, batch_size=batch_size, verbose=verbose, desc="clean")
    df["clean_correct"] = clean["correct"].to_numpy()
    df["condition"] = label
    df["shots"] = len(examples[0].demos)
    return df


def head_set_vectors(
    means: HeadMeans,
    tasks: Sequence[str],
    heads: Sequence[Head] | None,
    coefs=None,
    *,
    mean_of: Sequence[str] | None = None,
) -> dict[str, Tensor]:
    """{task: FV}; with ``mean_of`` the control Σ_h c_h h̄[h] (same vector for every task)."""
    if mean_of is not None:
        v = function_vector(means.cross_task_mean(mean_of), heads, coefs)
        return {t: v for t in tasks}
    return {t: function_vector(means.of(t), heads, coefs) for t in tasks}
