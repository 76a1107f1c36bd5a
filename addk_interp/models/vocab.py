"""Answer log-probabilities over the vocabulary in one pass over the unembedding, with gradient.

What it computes. For final-normed rows x_i and target tokens t_i, with logits
ℓ_iv = s(x_i·W[:, v] + b_v) (s the final-logit soft-cap c·tanh(·/c), or the identity),
``answer_logprob`` returns log p_i(t_i) = ℓ_it − logsumexp_v ℓ_iv (fp32) and argmax_v ℓ_iv, and
its gradient with respect to x_i,

    ∂ log p_i(t_i) / ∂x_i = s'(z_it)·W[:, t_i] − Σ_v p_iv · s'(z_iv) · W[:, v],

is accumulated in the same pass: the vocabulary is walked in column blocks of W; each block's
logits update a running max, a rescaled running sum of exp (online log-sum-exp) and the running
Σ_v exp(ℓ_iv − m_i)·s'(z_iv)·W[:, v], while the block is still in cache. The backward is then
one scale of that saved gradient.

Which step. The teacher-forced NLL of gate training (docs/method.md §3.3); the loss and its
gradient equal ``log_softmax(unembed(x))`` through autograd (tests/test_vocab.py).

Cost. The same multiply-adds as an unembedding forward + backward (4·n·d_model·vocab FLOPs),
but W [d_model, vocab] is walked once instead of twice, each column block used for both
products while it is in cache, and no [n, vocab] logits or log-softmax buffers are written.
With the few rows of a gate-training batch, products over the whole of W run far below the
matmul peak (Gemma-3's 262k × 640 W is 671 MB in fp32); measured on Gemma-3-270m, one thread,
32 rows: 0.35 s against 0.46 s for the autograd forward + backward
(``benchmarks/bench_stages.py``, stage gate_step, for the whole step).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor


def vocab_block(d_model: int) -> int:
    """Columns of W per block: ≈ 2²⁰ weights (4 MiB in fp32), at least 128."""
    return max(128, 2**20 // max(1, d_model))


class _AnswerLogprob(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, targets, cap, block):  # noqa: D102
        n, d = x.shape
        vocab = w.shape[1]
        dev = x.device
        targets = targets.to(dev)
        m = torch.full((n,), float("-inf"), device=dev)
        s = torch.zeros(n, device=dev)
        acc = torch.zeros(n, d, device=dev)
        t_logit = torch.zeros(n, device=dev)
        t_slope = torch.ones(n, device=dev)
        best = torch.full((n,), float("-inf"), device=dev)
        arg = torch.zeros(n, dtype=torch.long, device=dev)
        rows = torch.arange(n, device=dev)
        for c0 in range(0, vocab, block):
            c1 = min(vocab, c0 + block)
            wc = w[:, c0:c1]
            z = x @ wc
            if b is not None:
                z = z + b[c0:c1]
            z = z.float()
            if cap is not None:
                th = torch.tanh(z / cap)
                logit, slope = cap * th, 1.0 - th * th
            else:
                logit, slope = z, None
            cmax, cidx = logit.max(-1)
            better = cmax > best  # ties keep the earlier (lower) id, as torch.argmax
            arg = torch.where(better, cidx + c0, arg)
            best = torch.where(better, cmax, best)
            inside = (targets >= c0) & (targets < c1)
            if inside.any():
                r, col = rows[inside], targets[inside] - c0
                t_logit[inside] = logit[r, col]
                if slope is not None:
                    t_slope[inside] = slope[r, col]
            new_m = torch.maximum(m, cmax)
            rescale = torch.exp(m - new_m)
            e = torch.exp(logit - new_m[:, None])
            s = s * rescale + e.sum(-1)
            weight = e if slope is None else e * slope
            acc = acc * rescale[:, None] + (weight.to(wc.dtype) @ wc.T).float()
            m = new_m
        logp = t_logit - (m + torch.log(s))
        w_t = w[:, targets].T.float()  # [n, d]
        grad = t_slope[:, None] * w_t - acc / s[:, None]
        ctx.save_for_backward(grad)
        ctx.x_dtype = x.dtype
        ctx.mark_non_differentiable(arg)
        return logp, arg

    @staticmethod
    def backward(ctx, g_logp, _g_arg):  # noqa: D102
        (grad,) = ctx.saved_tensors
        return (g_logp[:, None] * grad).to(ctx.x_dtype), None, None, None, None, None


def answer_logprob(
    x: Float[Tensor, "n d_model"],
    w: Float[Tensor, "d_model vocab"],
    b: Float[Tensor, " vocab"] | None,
    targets: Int[Tensor, " n"],
    cap: float | None = None,
    block: int | None = None,
) -> tuple[Float[Tensor, " n"], Int[Tensor, " n"]]:
    """(fp32 log p(target), argmax) per row of final-normed ``x``; differentiable in ``x``
    (not in ``w`` / ``b``). ``cap``: the final-logit soft-cap, or None."""
    blk = block or vocab_block(x.shape[1])
    return _AnswerLogprob.apply(x, w.detach(), None if b is None else b.detach(), targets, cap, blk)
