"""One-pass answer log-probabilities (models.vocab) against log_softmax through autograd."""

import pytest
import torch
from conftest import TINY, tiny

from addk_interp.models.vocab import answer_logprob, vocab_block


def _reference(x, w, b, t, cap):
    z = x @ w + (0 if b is None else b)
    logits = z if cap is None else cap * torch.tanh(z / cap)
    return torch.log_softmax(logits, -1).gather(-1, t[:, None]).squeeze(-1), logits.argmax(-1)


@pytest.mark.parametrize("cap", [None, 3.0])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("block", [1, 7, 64, 10_000])
def test_value_argmax_and_gradient_equal_autograd(cap, bias, block):
    g = torch.Generator().manual_seed(block + 2 * bias)
    n, d, v = 9, 12, 301
    w = torch.randn(d, v, generator=g, dtype=torch.float64)
    b = torch.randn(v, generator=g, dtype=torch.float64) if bias else None
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    # targets in the first, a middle and the last block, and the argmax token itself
    t = torch.tensor([0, 6, 7, 63, 64, 150, 299, 300, 5])
    xr = x.clone().requires_grad_(True)
    ref_lp, ref_arg = _reference(xr, w, b, t, cap)
    up = torch.randn(n, generator=g, dtype=torch.float64)
    (ref_lp * up).sum().backward()
    xf = x.clone().requires_grad_(True)
    lp, arg = answer_logprob(xf, w, b, t, cap, block)
    (lp * up).sum().backward()
    torch.testing.assert_close(lp.double(), ref_lp.detach(), rtol=1e-5, atol=1e-5)
    assert torch.equal(arg, ref_arg)
    torch.testing.assert_close(xf.grad, xr.grad, rtol=1e-5, atol=1e-5)
    assert lp.dtype == torch.float32 and xf.grad.dtype == torch.float64


def test_argmax_ties_take_the_lowest_id_across_blocks():
    w = torch.zeros(2, 10)
    w[0, 3] = w[0, 8] = 1.0  # tokens 3 and 8 tie, in different blocks
    x = torch.tensor([[2.0, 0.0]])
    _, arg = answer_logprob(x, w, None, torch.tensor([1]), None, 4)
    assert int(arg[0]) == 3 == int((x @ w).argmax(-1)[0])


def test_block_size_rule():
    assert vocab_block(640) == 1638 and vocab_block(4096) == 256 and vocab_block(10**7) == 128


@pytest.mark.parametrize("spec", [*TINY, "tiny-gemma2", "tiny-gpt2"])
def test_model_path_is_fused_and_equals_unembed(spec):
    """On every tiny family (Gemma-2: soft-capped logits) the adapter takes the one-pass path
    and its value and gradient equal log_softmax(unembed(x)) through autograd."""
    model = tiny(spec)
    model._weights_ok = None
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, model.info.d_model, generator=g)
    t = torch.randint(0, model.info.d_vocab, (6,), generator=g)
    xf = x.clone().requires_grad_(True)
    with torch.enable_grad():
        lp, arg, path = model.answer_logprob(xf, t)
        lp.sum().backward()
    assert path == "fused"
    xr = x.clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model.unembed(xr[None])[0].float()
        ref = torch.log_softmax(logits, -1).gather(-1, t[:, None]).squeeze(-1)
        ref.sum().backward()
    torch.testing.assert_close(lp, ref.detach(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(xf.grad, xr.grad, rtol=1e-4, atol=1e-5)
    assert torch.equal(arg, logits.argmax(-1))


@pytest.mark.parametrize("spec", ["tiny-gemma2", "tiny-gpt2", "tiny-hooked"])
def test_unembed_columns_equal_the_unembedding(spec):
    model = tiny(spec)
    x = torch.randn(5, model.info.d_model, generator=torch.Generator().manual_seed(1))
    cols = torch.tensor([0, 3, model.info.d_vocab - 1])
    with torch.no_grad():
        got = model.unembed_columns(x, cols)
        ref = model.unembed(x[None])[0][:, cols]
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_model_falls_back_when_the_weights_disagree(monkeypatch):
    """A one-pass result that does not match the real unembedding is never used."""
    model = tiny("tiny-llama")
    model._weights_ok = None
    import addk_interp.models.adapter as adapter

    def wrong(x, w, b, t, cap, block=None):
        lp, arg = answer_logprob(x, w, b, t, cap, block)
        return lp + 1.0, arg

    monkeypatch.setattr(adapter, "answer_logprob", wrong)
    x = torch.randn(3, model.info.d_model)
    t = torch.tensor([1, 2, 3])
    lp, _, path = model.answer_logprob(x, t)
    assert path == "unembed" and model.unembed_columns(x, t) is None
    ref = torch.log_softmax(model.unembed(x[None])[0].float(), -1).gather(-1, t[:, None])
    torch.testing.assert_close(lp, ref.squeeze(-1))
    model._weights_ok = None
