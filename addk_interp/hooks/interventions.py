"""Interventions: composable TransformerLens hook builders (lists of ``(name, fn)``).

Step of the method: docs/method.md §3.2 (function-vector injection), §4.1/§4.5/§4.6 (replace,
mean-ablate, scale heads), §5.4 (project a head's output onto / out of a subspace), and the
differentiable gate of gate learning (§3). Every builder returns plain hook lists, applied
with ``model.hooks(...)`` / ``model.logits_at(..., fwd_hooks)``, which always removes them,
even on exceptions. Positions are absolute indices, so during greedy decoding an intervention
stays at its original position on every step.

    inject:      resid_mid[:, t] += v   (the residual stream after block ℓ's attention; hook
                 resolved per backend by ``HookedModel.residual_hook``, never the bridge's
                 ``hook_resid_mid`` alias, which is only the MLP's input)
    replace:     z_h[:, t] ← z_src            (through hook_z, so later layers see the change)
    mean-ablate: z_h[:, t] ← z̄_h               scale: z_h[:, t] ← s · z_h[:, t]
    project:     o_h ← μ + B Bᵀ(o_h − μ), applied as an additive delta on the block's attention
                 contribution (post-norm aware)
    gate:        z_h[:, t] ← g[l,h] · z_src + (1 − g[l,h]) · z_h[:, t]   (g carries gradients)

Cost: each hook touches one position of one activation: O(batch × head × d_head).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from addk_interp.core.errors import AddkError
from addk_interp.core.heads import Head, HeadLike, parse_heads  # noqa: F401  (re-exported)
from addk_interp.core.heads import check_heads as validate_heads
from addk_interp.core.validate import check_finite, check_position
from addk_interp.hooks.capture import z_hook_name, z_to_outputs
from addk_interp.models.adapter import HookedModel


def default_injection_layer(n_layers: int) -> int:
    """About one third of depth (Llama-3-8B: 32 layers -> 10, the paper's site)."""
    return max(0, round(n_layers * 10 / 32))


def check_heads(model: HookedModel, heads: Sequence[Any]) -> list[Head]:
    """Every head parsed and checked against the model's shape (``core.heads.check_heads``)."""
    return validate_heads(heads, model.n_layers, model.n_heads)


def resid_site(model: HookedModel, layer: int, site: str = "resid_mid") -> str:
    """The hook whose write edits the residual stream at ``site`` of ``layer`` (resolved by the
    adapter per backend: ``HookedModel.residual_hook``; never the bridge's ``hook_resid_mid``
    alias, which edits only the MLP input)."""
    return model.residual_hook(layer, site)


def _check_position(position: int, act: Tensor, what: str) -> None:
    check_position(position, act.shape[1], what)


def inject(
    model: HookedModel,
    vector: Float[Tensor, "*batch d_model"],
    position: int,
    layer: int,
    site: str = "resid_mid",
) -> list:
    """Add ``vector`` ([d_model] or [batch, d_model]) to the residual stream at ``position``.

    ``site="resid_mid"`` (the method's site): after block ``layer``'s attention (after its
    post-norm where there is one), so block ``layer``'s MLP, every later block and the final
    norm read the edited stream. ``resid_pre`` / ``resid_post``: block input / output.
    """
    name = resid_site(model, layer, site)
    if vector.shape[-1] != model.info.d_model:
        raise AddkError(
            f"vector width {vector.shape[-1]} does not match d_model={model.info.d_model}"
        )
    check_finite(vector, "the injected vector")

    def fn(act, hook):
        _check_position(position, act, "inject")
        act = act.clone()
        act[:, position] = act[:, position] + vector.to(act)
        return act

    return [(name, fn)]


def _z_edit(model: HookedModel, heads: Sequence[HeadLike], position: int, edit) -> list:
    """Group heads by layer; ``edit(layer, head_idx_list, z_rows) -> new rows``."""
    by_layer: dict[int, list[int]] = {}
    checked = check_heads(model, heads)
    if len(set(checked)) != len(checked):
        raise AddkError("a head is listed twice")
    for layer, head in checked:
        by_layer.setdefault(layer, []).append(head)
    hooks = []
    for layer, hs in sorted(by_layer.items()):

        def fn(z, hook, layer=layer, hs=hs):
            _check_position(position, z, "head intervention")
            z = z.clone()
            z[:, position, hs] = edit(layer, hs, z[:, position, hs]).to(z)
            return z

        hooks.append((z_hook_name(layer), fn))
    return hooks


def replace_heads(
    model: HookedModel,
    heads: Sequence[HeadLike],
    position: int,
    z_values: Float[Tensor, "*batch layer head d_head"],
) -> list:
    """Set the heads' ``hook_z`` at ``position`` to ``z_values[..., layer, head, :]``."""
    want = (model.n_layers, model.n_heads, model.info.d_head)
    if z_values.ndim < 3 or tuple(z_values.shape[-3:]) != want:
        raise AddkError(
            f"z values must be [..., layer={want[0]}, head={want[1]}, d_head={want[2]}], "
            f"got {tuple(z_values.shape)}"
        )
    if not torch.isfinite(z_values).all():
        raise AddkError("z values contain NaN or inf")
    return _z_edit(
        model, heads, position, lambda layer, hs, rows: z_values[..., layer, hs, :].expand_as(rows)
    )


def mean_ablate(
    model: HookedModel, heads: Sequence[HeadLike], position: int, z_means: Float[Tensor, "layer head d_head"]
) -> list:
    """Replace the heads' ``hook_z`` by their (cross-task) mean ``z̄``."""
    return replace_heads(model, heads, position, z_means)


def scale_heads(model: HookedModel, heads: Sequence[HeadLike], position: int, factor: float) -> list:
    """Multiply the heads' ``hook_z`` at ``position`` by ``factor``."""
    if not math.isfinite(float(factor)):
        raise AddkError(f"scale factor must be finite, got {factor}")
    return _z_edit(model, heads, position, lambda layer, hs, rows: rows * factor)


def gate_heads(
    model: HookedModel,
    gate: Float[Tensor, "layer head"],
    position: int,
    z_source: Float[Tensor, "*batch layer head d_head"],
) -> list:
    """Differentiable gate on every head: z ← g·z_source + (1 − g)·z (at ``position``)."""
    if tuple(gate.shape) != (model.n_layers, model.n_heads):
        raise AddkError(
            f"gate must be [{model.n_layers}, {model.n_heads}], got {tuple(gate.shape)}"
        )
    want = (model.n_layers, model.n_heads, model.info.d_head)
    if z_source.ndim < 3 or tuple(z_source.shape[-3:]) != want:
        raise AddkError(
            f"z_source must end in [layer, head, d_head] = {list(want)}, "
            f"got {tuple(z_source.shape)}"
        )
    check_finite(z_source, "z_source (the gate's mean values)")

    hooks = []
    for layer in range(model.n_layers):

        def fn(z, hook, layer=layer):
            _check_position(position, z, "gate_heads")
            pos = position % z.shape[1]
            g = gate[layer].to(z)[:, None]
            src = z_source[..., layer, :, :].to(z)
            new = g * src + (1 - g) * z[:, pos]
            before, after = z[:, :pos], z[:, pos + 1 :]
            return torch.cat([before, new[:, None], after], dim=1)

        hooks.append((z_hook_name(layer), fn))
    return hooks


def check_basis(basis: Float[Tensor, "d_model k"], tol: float = 1e-4) -> Tensor:
    if basis.ndim != 2 or basis.shape[1] == 0:
        raise AddkError(f"basis must be [d_model, k] with k ≥ 1, got {tuple(basis.shape)}")
    check_finite(basis, "subspace basis")
    gram = basis.T.double() @ basis.double()
    err = (gram - torch.eye(basis.shape[1], dtype=torch.float64)).abs().max().item()
    if err > tol:
        rank = torch.linalg.matrix_rank(basis.double()).item()
        what = "rank-deficient" if rank < basis.shape[1] else "not orthonormal"
        raise AddkError(
            f"subspace basis is {what} (max |BᵀB − I| = {err:.2e}); "
            "orthonormalize it (e.g. torch.linalg.qr) first"
        )
    return basis


def project_head(
    model: HookedModel,
    head: HeadLike,
    position: int,
    basis: Float[Tensor, "d_model k"],
    mean: Float[Tensor, " d_model"] | None = None,
    mode: str = "onto",
) -> list:
    """Replace head ``head``'s output o (its additive residual contribution, post-norm aware:
    ``capture.z_to_outputs``) by μ + B Bᵀ(o − μ) (``onto``) or o − B Bᵀ(o − μ) (``out``),
    applied as the delta (new − o) added to the block's attention contribution
    (``HookedModel.attn_contribution_hook``). On post-norm models the other heads'
    contributions keep the run's own norm scale, exactly as in the capture definition."""
    ((layer, h),) = check_heads(model, [head])
    check_basis(basis)
    if basis.shape[0] != model.info.d_model:
        raise AddkError(f"basis width {basis.shape[0]} != d_model {model.info.d_model}")
    if mode not in ("onto", "out"):
        raise AddkError(f"mode must be 'onto' or 'out', got {mode!r}")
    mu = torch.zeros(model.info.d_model) if mean is None else mean
    if mu.shape != (model.info.d_model,) or not torch.isfinite(mu).all():
        raise AddkError(f"mean must be a finite [d_model={model.info.d_model}] vector")
    store: dict[str, Tensor] = {}

    def grab(z, hook):
        _check_position(position, z, "project_head")
        store["o"] = z_to_outputs(model, layer, z[:, position])[:, h]
        return z

    def apply(out, hook):
        o = store["o"].to(out)
        b = basis.to(out)
        inside = (o - mu.to(o)) @ b @ b.T
        new = mu.to(o) + inside if mode == "onto" else o - inside
        out = out.clone()
        out[:, position] = out[:, position] + (new - o)
        return out

    return [(z_hook_name(layer), grab), (model.attn_contribution_hook(layer), apply)]
