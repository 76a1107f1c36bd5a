"""Analytic FLOP counts for the benchmarks (matmul FLOPs only; norms, softmax, rotary ignored).

Per token through one transformer block: 2 × (parameters of that block) (every weight is used
in one multiply-add per token), plus the attention matmuls 4 × n_heads × d_head × (attended
positions) (QKᵀ and AV; an eager/SDPA kernel computes the full P × P square, so a block call on
[batch, P] costs 4·batch·H·d_head·P²). Per unembedded row: 2 × d_model × d_vocab. Embedding
look-ups are free. A backward pass with frozen weights (gradients only w.r.t. activations, as
in gate training) costs about as much as the forward again.

``FlopCounter(model)`` counts what actually ran: a forward pre-hook on every block adds the
batch × positions it was called on, and one on the unembedding adds its rows, so padding,
re-run prefixes (decoding without a KV cache), self-checks and full-sequence logits are all
charged to whoever ran them. Hooks cost microseconds per block call. Rows scored by the one-pass
log-probability (``models.vocab``, gate training) skip the unembedding module: they are counted
by wrapping ``addk_interp.models.adapter.answer_logprob`` while the counter is active, at
4 × d_model × d_vocab per row (its forward does the logits and the gradient's product), never
multiplied by a backward factor.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def block_params(model) -> list[int]:
    """Parameters of each block (``HookedModel`` over a bridge or a HookedTransformer)."""
    return [sum(p.numel() for p in b.parameters()) for b in model.model.blocks]


def non_embedding_params(model) -> int:
    return sum(block_params(model))


def forward_flops(model, n_tokens: int, positions: int | None = None, layers=None) -> float:
    """≈ FLOPs of ``n_tokens`` tokens through ``layers`` (default all) of ``model``;
    ``positions`` (sequence length) adds the attention term."""
    bp = block_params(model)
    layers = range(len(bp)) if layers is None else layers
    info = model.info
    per_tok = sum(2.0 * bp[i] for i in layers)
    if positions:
        per_tok += len(list(layers)) * 4.0 * info.n_heads * info.d_head * positions
    return per_tok * n_tokens


def unembed_flops(model, rows: int) -> float:
    return 2.0 * model.info.d_model * model.info.d_vocab * rows


@dataclass
class FlopCounter:
    """Context manager: counts block tokens and unembedded rows of every forward inside it."""

    model: object
    block_tokens: int = 0
    attn_flops: float = 0.0
    dense_flops: float = 0.0
    unembed_rows: int = 0
    unembed_calls: int = 0
    fused_rows: int = 0
    fused_calls: int = 0
    _handles: list = field(default_factory=list)
    _patched: object = None

    def __post_init__(self):
        self._bp = block_params(self.model)
        info = self.model.info
        self._attn = 4.0 * info.n_heads * info.d_head
        self._unembed = 2.0 * info.d_model * info.d_vocab

    def _block_hook(self, i):
        def pre(_mod, args, kwargs):
            x = args[0] if args else next(iter(kwargs.values()))
            if isinstance(x, tuple):
                x = x[0]
            b, p = int(x.shape[0]), int(x.shape[1])
            self.block_tokens += b * p
            self.dense_flops += 2.0 * self._bp[i] * b * p
            self.attn_flops += self._attn * b * p * p

        return pre

    def _unembed_hook(self, _mod, args):
        x = args[0]
        self.unembed_rows += int(x.numel() // x.shape[-1])
        self.unembed_calls += 1

    def __enter__(self):
        for i, blk in enumerate(self.model.model.blocks):
            self._handles.append(
                blk.register_forward_pre_hook(self._block_hook(i), with_kwargs=True)
            )
        self._handles.append(self.model.model.unembed.register_forward_pre_hook(self._unembed_hook))
        import addk_interp.models.adapter as adapter

        inner = adapter.answer_logprob
        self._patched = (adapter, inner)

        def counted(x, *args, **kwargs):
            self.fused_rows += int(x.shape[0])
            self.fused_calls += 1
            return inner(x, *args, **kwargs)

        adapter.answer_logprob = counted
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self._patched is not None:
            adapter, inner = self._patched
            adapter.answer_logprob = inner
            self._patched = None
        return False

    @property
    def unembed_flops(self) -> float:
        return self._unembed * self.unembed_rows

    @property
    def fused_flops(self) -> float:
        return 2.0 * self._unembed * self.fused_rows

    def total(self, backward_factor: float = 1.0) -> float:
        """Forward FLOPs × ``backward_factor`` (2.0 when every forward was back-propagated),
        plus the one-pass log-probability rows (forward and gradient already in)."""
        fwd = self.dense_flops + self.attn_flops + self.unembed_flops
        return fwd * backward_factor + self.fused_flops

    def to_dict(self) -> dict:
        return {
            "block_tokens": self.block_tokens,
            "unembed_rows": self.unembed_rows,
            "dense_gflop": self.dense_flops / 1e9,
            "attn_gflop": self.attn_flops / 1e9,
            "unembed_gflop": self.unembed_flops / 1e9,
            "unembed_calls": self.unembed_calls,
            "fused_rows": self.fused_rows,
            "fused_calls": self.fused_calls,
            "fused_gflop": self.fused_flops / 1e9,
        }
