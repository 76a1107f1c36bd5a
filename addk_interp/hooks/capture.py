"""Per-head outputs at chosen positions, and streaming per-task means (``HeadMeans``).

Step of the method: docs/method.md §3.1 (the "z-cache"). A head's output is its exact additive
contribution to the residual stream at position t in the same run:

    pre-norm (Llama):   o_h = z_h[t] @ W_O[l, h]                     (+ b_O once per layer)
    post-norm (Gemma):  o_h = g ⊙ (z_h[t] @ W_O[l, h]) / rms(Σ_h' z_h'[t] @ W_O[l, h'] + b_O)

where g is the post-attention norm gain and rms(x) = sqrt(mean(x²) + eps) of the run's own total
attention output. So Σ_h o_h (+ bias term) equals the attention block's residual increment in
both cases (tested). Computed from ``hook_z`` at the selected positions only, never with
``use_attn_result`` (that materializes [batch, pos, head, d_model] at every position).

``capture_means`` streams over batches and keeps per-task sums of o_h and of z_h (the latter
for mean-ablation through ``hook_z``). Cost: one forward per batch, stopped right after the last
layer's ``hook_z`` (no final MLP, no unembedding); memory O(batch × layer × head × d_model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from addk_interp._version import __version__
from addk_interp.core.errors import AddkError
from addk_interp.core.prompts import encode_examples, make_batches
from addk_interp.core.store import read_tensors, write_tensors
from addk_interp.core.tasks import Example, manifest_hash
from addk_interp.core.validate import check_position
from addk_interp.models.adapter import HookedModel


def z_hook_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def _wide(dtype: torch.dtype) -> torch.dtype:
    """The dtype the post-norm scale is computed in: at least float32, float64 kept."""
    return torch.promote_types(dtype, torch.float32)


def _raw_and_scale(
    model: HookedModel, layer: int, z: Float[Tensor, "batch head d_head"]
) -> tuple[Float[Tensor, "batch head d_model"], Float[Tensor, "batch d_model"] | None]:
    """Raw per-head outputs z·W_O and, on post-norm models, the run's scale g / rms(total).

    The scale is computed in ``_wide(z.dtype)`` (float32 for half precision, float64 kept), so
    a float64 run's per-head outputs sum to the increment to float64 rounding."""
    o = torch.einsum("bhd,hdm->bhm", z, model.W_O[layer].to(z.dtype))
    norm = model.post_attn_norm(layer)
    if norm is None:
        return o, None
    g, eps = norm
    dt = _wide(z.dtype)
    total = o.to(dt).sum(1) + model.b_O[layer].to(dt)
    rms = torch.sqrt(total.pow(2).mean(-1, keepdim=True) + eps)
    return o, g.to(dt) / rms


def z_to_outputs(
    model: HookedModel, layer: int, z: Float[Tensor, "batch head d_head"]
) -> Float[Tensor, "batch head d_model"]:
    """Per-head additive residual contributions of one layer from its ``hook_z`` rows."""
    o, scale = _raw_and_scale(model, layer, z)
    if scale is None:
        return o
    return (o.to(scale.dtype) * scale[:, None, :]).to(o.dtype)


def bias_contribution(model: HookedModel, layer: int, z: Float[Tensor, "batch head d_head"]):
    """The bias part of the residual increment (zero for bias-free models)."""
    _, scale = _raw_and_scale(model, layer, z)
    if scale is None:
        return model.b_O[layer].to(z.dtype).expand(z.shape[0], -1)
    return (model.b_O[layer].to(scale.dtype) * scale).to(z.dtype)


def capture_z(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    positions: list[int] | int,
    fwd_hooks=(),
) -> Float[Tensor, "batch n layer head d_head"]:
    """``hook_z`` rows at ``positions`` for every layer, stopping after the last layer's z."""
    pos = [positions] if isinstance(positions, int) else list(positions)
    n = tokens.shape[1]
    for p in pos:
        check_position(p, n, "capture")
    names = [z_hook_name(layer) for layer in range(model.n_layers)]
    acts = model.run_collect(tokens, names, fwd_hooks=fwd_hooks, stop_after=names[-1])
    return torch.stack([acts[n][:, pos] for n in names], dim=2)


def head_outputs(
    model: HookedModel, tokens: Int[Tensor, "batch pos"], position: int, fwd_hooks=()
) -> Float[Tensor, "batch layer head d_model"]:
    """Per-head residual contributions at one position (see module docstring)."""
    z = capture_z(model, tokens, position, fwd_hooks)[:, 0]
    return torch.stack(
        [z_to_outputs(model, layer, z[:, layer]) for layer in range(model.n_layers)], dim=1
    )


@dataclass
class HeadMeans:
    """Per-task mean head outputs [task, layer, head, d_model] (+ z means) and provenance."""

    tasks: list[str]
    means: Float[Tensor, "task layer head d_model"]
    z_means: Float[Tensor, "task layer head d_head"]
    counts: Int[Tensor, " task"]
    provenance: dict = field(default_factory=dict)

    def task_index(self, task: str) -> int:
        try:
            return self.tasks.index(task)
        except ValueError:
            raise AddkError(f"no means for task {task!r} (have {self.tasks})") from None

    def of(self, task: str) -> Float[Tensor, "layer head d_model"]:
        return self.means[self.task_index(task)]

    def cross_task_mean(self, tasks=None, *, z: bool = False) -> Tensor:
        """h̄: the mean over ``tasks`` (callers pass the training tasks only)."""
        names = self.tasks if tasks is None else list(tasks)
        if not names:
            raise AddkError("cross-task mean over an empty task list")
        idx = [self.task_index(t) for t in names]
        src = self.z_means if z else self.means
        return src[idx].mean(0)

    def save(self, path) -> Path:
        meta = dict(self.provenance)
        meta["tasks"] = self.tasks
        return write_tensors(
            path, {"means": self.means, "z_means": self.z_means, "counts": self.counts}, meta
        )

    @classmethod
    def load(cls, path, model: HookedModel | None = None, expect: dict | None = None) -> HeadMeans:
        want = dict(expect or {})
        if model is not None:
            want["model_fingerprint"] = model.info.fingerprint
        t, meta = read_tensors(path, want)
        tasks = meta.pop("tasks")
        return cls(tasks, t["means"], t["z_means"], t["counts"], meta)


def capture_means(
    model: HookedModel,
    examples: list[Example],
    fmt="arrow",
    *,
    batch_size: int = 32,
    verbose: bool = False,
    desc: str = "capture",
    extra_provenance: dict | None = None,
) -> HeadMeans:
    """Stream over few-shot examples; mean head outputs at the query's last token per task."""
    if not examples:
        raise AddkError("no examples to capture")
    tasks = list(dict.fromkeys(e.task for e in examples))
    tix = {t: i for i, t in enumerate(tasks)}
    info = model.info
    sums = torch.zeros(len(tasks), info.n_layers, info.n_heads, info.d_model, dtype=torch.float64)
    zsums = torch.zeros(len(tasks), info.n_layers, info.n_heads, info.d_head, dtype=torch.float64)
    counts = torch.zeros(len(tasks), dtype=torch.long)
    enc = encode_examples(model, examples, fmt)
    with torch.no_grad():
        for batch in tqdm(
            make_batches(enc, batch_size, prompt_only=True), desc=desc, disable=not verbose
        ):
            z = capture_z(model, batch.prompt_tokens, batch.query_pos)[:, 0]
            outs = torch.stack(
                [z_to_outputs(model, layer, z[:, layer]) for layer in range(info.n_layers)], dim=1
            )
            idx = torch.tensor([tix[examples[i].task] for i in batch.indices])
            sums.index_add_(0, idx, outs.double())
            zsums.index_add_(0, idx, z.double())
            counts += torch.bincount(idx, minlength=len(tasks))
    denom = counts.clamp(min=1).double()
    prov = {
        "model_fingerprint": info.fingerprint,
        "model": info.name,
        "dtype": info.dtype,
        "processing": info.processing,
        "position": "query_last_token",
        "format": fmt if isinstance(fmt, str) else fmt.name,
        "shots": sorted({len(e.demos) for e in examples}),
        "sample_manifest": manifest_hash(examples),
        "head_output": "post_norm_contribution" if info.post_attn_norm else "z_W_O",
        "code_version": __version__,
    }
    prov.update(extra_provenance or {})
    return HeadMeans(
        tasks,
        (sums / denom[:, None, None, None]).float(),
        (zsums / denom[:, None, None, None]).float(),
        counts,
        prov,
    )
