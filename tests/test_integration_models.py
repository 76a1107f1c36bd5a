"""Integration: the offline pretrained models (Gemma-3-270m default, SmolLM2-135M).

Parity with plain HF, teacher-forced exact match = greedy decoding on ≥100 prompts, and the
head-sum identity on the real post-norm model. Marked ``integration`` (CI runs them).
"""

import pytest
import torch

from addk_interp.core.prompts import encode_examples, make_batches
from addk_interp.core.scoring import greedy_correct, score_batch
from addk_interp.core.tasks import arithmetic_family, sample_family
from addk_interp.hooks.capture import bias_contribution, z_to_outputs
from addk_interp.models.loading import _load_hf_dir, load_model

pytestmark = pytest.mark.integration
_M = {}


def model(spec):
    if spec not in _M:
        _M.clear()
        _M[spec] = load_model(spec)
    return _M[spec]


def _examples(n_per_task, shots, ks=(1, 2, 5, 10)):
    fam = arithmetic_family("add", ks=list(ks))
    return sample_family(fam, fam.tasks, n_per_task, shots, seed=0, kind="integration")


@pytest.mark.parametrize("spec", ["default", "smollm2-135m"])
def test_parity_with_hf(spec):
    m = model(spec)
    hf_dir = m.info.source["sha256"][:16]
    from addk_interp.core.store import cache_dir

    hf, _ = _load_hf_dir(cache_dir() / f"hf-{hf_dir}", torch.float32)
    enc = encode_examples(m, _examples(2, 3))
    b = make_batches(enc, 8)[0]
    with torch.no_grad():
        ref = torch.log_softmax(hf(b.tokens).logits[:, b.score_positions].float(), -1)
        ours = torch.log_softmax(m.logits_at(b.tokens, b.score_positions).float(), -1)
    assert (ref - ours).abs().max().item() <= 1e-3
    assert torch.equal(ref.argmax(-1), ours.argmax(-1))


def test_teacher_forcing_equals_greedy_default():
    m = model("default")
    enc = encode_examples(m, _examples(26, 5))
    n = agree = correct = 0
    for b in make_batches(enc, 16):
        tf = score_batch(m, b).correct
        gr = greedy_correct(m, b)
        agree += int((tf == gr).sum())
        correct += int(tf.sum())
        n += len(b)
    assert n >= 100 and agree == n
    assert correct >= 10  # the comparison covers correct answers, not only failures


def test_head_sum_identity_default():
    m = model("default")
    enc = encode_examples(m, _examples(1, 5))
    b = make_batches(enc, 4)[0]
    layers = [0, 6, 17]
    names = [
        f"blocks.{i}.{h}"
        for i in layers
        for h in ("hook_resid_pre", "hook_resid_mid", "attn.hook_z")
    ]
    acts = m.run_collect(b.prompt_tokens, names)
    for i in layers:
        z = acts[f"blocks.{i}.attn.hook_z"][:, b.query_pos]
        heads = z_to_outputs(m, i, z).sum(1) + bias_contribution(m, i, z)
        inc = (acts[f"blocks.{i}.hook_resid_mid"] - acts[f"blocks.{i}.hook_resid_pre"])[
            :, b.query_pos
        ]
        assert (heads - inc).abs().max().item() <= 1e-4 * max(1.0, inc.abs().max().item())


def _gemma_batch(n=4, seed=0):
    m = model("default")
    enc = encode_examples(m, _examples(3, 5, ks=(1, 2)))
    b = max(make_batches(enc, n), key=len)
    return m, b


def test_noop_and_gate_identities_default():
    """On the real post-norm model: zero injection, replacing every head by its own z, gates
    at 1 with source = own run and scaling by 1 are no-ops; gates at 0 = the target run and at
    1 = replacing by the source; an intervention at the query leaves earlier positions alone."""
    from addk_interp.hooks import interventions as iv
    from addk_interp.hooks.capture import capture_z

    m, b = _gemma_batch()
    q = b.query_pos
    with torch.no_grad():
        base = m.logits_at(b.tokens, b.score_positions)
        z_own = capture_z(m, b.tokens, q)[:, 0]
        every = [(la, h) for la in range(m.n_layers) for h in range(m.n_heads)]
        ones = torch.ones(m.n_layers, m.n_heads)
        tol = 1e-4 * max(1.0, base.abs().max().item())
        for hooks in (
            iv.inject(m, torch.zeros(m.info.d_model), q, 6),
            iv.replace_heads(m, every, q, z_own),
            iv.gate_heads(m, ones, q, z_own),
            iv.scale_heads(m, every, q, 1.0),
        ):
            assert (m.logits_at(b.tokens, b.score_positions, hooks) - base).abs().max() <= tol
        z_src = z_own.flip(0)  # another prompt's heads (same length)
        out0 = m.logits_at(b.tokens, b.score_positions, iv.gate_heads(m, 0 * ones, q, z_src))
        assert (out0 - base).abs().max() <= tol
        rep = m.logits_at(b.tokens, b.score_positions, iv.replace_heads(m, every, q, z_src))
        out1 = m.logits_at(b.tokens, b.score_positions, iv.gate_heads(m, ones, q, z_src))
        assert (out1 - rep).abs().max() <= tol and (rep - base).abs().max() > 1e-2
        names = [f"blocks.{la}.hook_resid_post" for la in (6, 11, 17)]
        ref = m.run_collect(b.tokens, names)
        v = torch.randn(m.info.d_model, generator=torch.Generator().manual_seed(0)) * 50
        hooked = m.run_collect(b.tokens, names, fwd_hooks=iv.inject(m, v, q, 6))
        for n in names:
            assert torch.equal(ref[n][:, :q], hooked[n][:, :q])
            assert (ref[n][:, q] - hooked[n][:, q]).abs().max() > 1e-3


def test_batched_capture_equals_single_default():
    from addk_interp.hooks.capture import capture_means

    m = model("default")
    ex = _examples(2, 3, ks=(1, 7))
    batched = capture_means(m, ex, batch_size=8, verbose=False)
    single = capture_means(m, ex, batch_size=1, verbose=False)
    assert torch.equal(batched.counts, single.counts)
    assert (batched.means - single.means).abs().max() <= 1e-4 * batched.means.abs().max()


def test_extraction_identity_default():
    """Σ_t α_t s̃_t = the head's residual contribution on the real post-norm model, all heads of
    three layers, fp32 ≤ 1e-5 relative; shares of a prompt sum to 1."""
    from addk_interp.analyses import extraction as ex
    from addk_interp.hooks.capture import capture_means

    m, b = _gemma_batch()
    heads = [(la, h) for la in (0, 9, 17) for h in range(m.n_heads)]
    res = ex.extract_heads(m, b, heads)
    for r in res.values():
        assert r.identity_rel_error <= 1e-5 and r.identity_min_cos >= 0.9999
    means = capture_means(m, _examples(2, 5, ks=(1, 2)), verbose=False)
    r = res[(9, 1)]
    gs = ex.group_shares([r], [ex.directions_from_means(means, (9, 1), r)])
    assert gs.n_valid >= 1
    assert abs(gs.shares.sum(1) - 1.0).max() <= 1e-6
