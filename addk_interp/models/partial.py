"""Partial forward from a layer's residual (the TransformerLens ``start_at_layer`` idiom):
blocks ``start..L−1`` + final norm at chosen positions (the unembedding's input, which the
callers unembed together: ``core.scoring.RowScorer``), with hooks active.

Used where only the upper layers change between forwards (gate training, injections at a
fixed layer): the block inputs of the unchanged lower layers are computed once. Its final-normed
residual equals the full hooked forward's (checked by every ``PromptRunner`` on its shortest
and longest group). Cost: the
upper blocks' forward on the given rows; the bridge path captures the decoder-layer keyword
arguments once per sequence length (one extra one-row forward).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from addk_interp.core.errors import AddkError


class _Stop(Exception):
    """Ends a forward pass from inside a hook."""


def final_hidden(x):
    """The hidden state of a block / norm output (HF layers may return a tuple)."""
    return x[0] if isinstance(x, tuple) else x


class UpperForward:
    """Run blocks ``start..L−1`` (+ final norm at chosen positions) from a cached
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
                h = final_hidden(out)
        return h

    def normed(self, x: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_model"]:
        """The final norm of selected residual rows (the unembedding's input)."""
        return final_hidden(self.model.final_norm()(x[None]))[0]

    def normed_at(
        self,
        hidden: Float[Tensor, "batch pos d_model"],
        start: int,
        positions: Sequence[int],
        fwd_hooks=(),
    ) -> Float[Tensor, "batch n d_model"]:
        """The final norm's output at ``positions`` from the input of block ``start``."""
        h = self.final_resid(hidden, start, fwd_hooks)
        b, n = h.shape[0], len(positions)
        sel = h[:, list(positions)].reshape(b * n, -1)
        return self.normed(sel).reshape(b, n, -1)
