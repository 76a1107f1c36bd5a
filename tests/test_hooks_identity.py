"""Identity tests for capture and interventions on tiny MHA / GQA / post-norm / classic models."""

import pytest
import torch
from conftest import TINY, tiny

from addk_interp.core.prompts import encode_examples, make_batches
from addk_interp.core.scoring import greedy_decode, score_batch
from addk_interp.core.tasks import arithmetic_family, sample_family
from addk_interp.hooks import interventions as iv
from addk_interp.hooks.capture import bias_contribution, capture_means, capture_z, z_to_outputs


def _batch(model, n=6, shots=3, seed=0):
    fam = arithmetic_family("add", ks=[3])
    ex = sample_family(fam, fam.train, 40, shots, seed=seed, kind="test")
    enc = encode_examples(model, ex)
    b = max(make_batches(enc, 64), key=len)
    return b, ex


@pytest.mark.parametrize("spec", [*TINY, "tiny-gemma2", "tiny-gpt2", "organism"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.float64, 1e-13)])
def test_heads_sum_to_attention_increment(spec, dtype, tol):
    """Relative to the increment's scale (the organism's reach |o| ≈ 36): fp32 ≤ 2e-6, fp64
    ≤ 1e-13, except post-norm models in fp64 (HF's Gemma RMSNorm computes in float32)."""
    model = tiny(spec, dtype)
    if model.info.post_attn_norm and dtype == torch.float64:
        tol = 1e-6  # HF's Gemma RMSNorm computes in float32 even in a float64 model
    b, _ = _batch(model)
    toks = b.prompt_tokens
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(model.n_layers)]
    names += [f"blocks.{layer}.hook_resid_mid" for layer in range(model.n_layers)]
    names += [f"blocks.{layer}.attn.hook_z" for layer in range(model.n_layers)]
    acts = model.run_collect(toks, names)
    for pos in (b.query_pos, 2):
        for layer in range(model.n_layers):
            z = acts[f"blocks.{layer}.attn.hook_z"][:, pos]
            heads = z_to_outputs(model, layer, z).sum(1) + bias_contribution(model, layer, z)
            inc = (acts[f"blocks.{layer}.hook_resid_mid"] - acts[f"blocks.{layer}.hook_resid_pre"])[
                :, pos
            ]
            assert (heads - inc).abs().max().item() <= tol * inc.abs().max().item()


def test_post_norm_contribution_is_not_raw_output():
    model = tiny("tiny-gemma3")
    b, _ = _batch(model)
    z = capture_z(model, b.prompt_tokens, b.query_pos)[:, 0, 1]
    raw = torch.einsum("bhd,hdm->bhm", z, model.W_O[1]).sum(1)
    assert (raw - z_to_outputs(model, 1, z).sum(1)).abs().max() > 1e-2


@pytest.mark.parametrize("spec", TINY)
def test_noop_interventions(spec):
    model = tiny(spec)
    b, _ = _batch(model)
    base = model.full_logits(b.tokens)
    q = b.query_pos
    z_own = capture_z(model, b.tokens, q)[:, 0]
    all_heads = [(layer, h) for layer in range(model.n_layers) for h in range(model.n_heads)]
    gate1 = torch.ones(model.n_layers, model.n_heads, requires_grad=True)
    for hooks in (
        iv.inject(model, torch.zeros(model.info.d_model), q, 1),
        iv.replace_heads(model, all_heads, q, z_own),
        iv.gate_heads(model, gate1, q, z_own),
        iv.scale_heads(model, all_heads, q, 1.0),
    ):
        out = model.full_logits(b.tokens, hooks)
        assert (out - base).abs().max().item() < 1e-5


@pytest.mark.parametrize("spec", TINY)
def test_gates_zero_and_one(spec):
    model = tiny(spec)
    b, _ = _batch(model)
    b2, _ = _batch(model, seed=5)
    q = b.query_pos
    n = min(len(b), len(b2))
    tgt = b.tokens[:n]
    # source z from another run of a different prompt set with the same length
    src_tokens = b2.tokens[:n] if b2.tokens.shape == b.tokens.shape else tgt.flip(0)
    z_src = capture_z(model, src_tokens, q)[:, 0]
    zeros = torch.zeros(model.n_layers, model.n_heads)
    base = model.full_logits(tgt)
    out0 = model.full_logits(tgt, iv.gate_heads(model, zeros, q, z_src))
    assert (out0 - base).abs().max().item() < 1e-5
    all_heads = [(layer, h) for layer in range(model.n_layers) for h in range(model.n_heads)]
    rep = model.full_logits(tgt, iv.replace_heads(model, all_heads, q, z_src))
    out1 = model.full_logits(tgt, iv.gate_heads(model, torch.ones_like(zeros), q, z_src))
    assert (out1 - rep).abs().max().item() < 1e-5
    assert (rep - base).abs().max().item() > 1e-3  # the replacement did something


@pytest.mark.parametrize("spec", TINY)
def test_intervention_leaves_earlier_positions(spec):
    model = tiny(spec)
    b, _ = _batch(model)
    q = b.query_pos
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(model.n_layers)]
    base = model.run_collect(b.tokens, names)
    v = torch.randn(model.info.d_model) * 5
    hooked = model.run_collect(b.tokens, names, fwd_hooks=iv.inject(model, v, q, 0))
    for n in names:
        assert torch.equal(base[n][:, :q], hooked[n][:, :q])
        assert (base[n][:, q] - hooked[n][:, q]).abs().max() > 1e-3


@pytest.mark.parametrize("spec", TINY)
def test_batched_capture_equals_single(spec):
    model = tiny(spec)
    fam = arithmetic_family("add", ks=[1, 4])
    ex = sample_family(fam, fam.train, 6, 3, seed=1, kind="test")
    batched = capture_means(model, ex, batch_size=16)
    single = capture_means(model, ex, batch_size=1)
    assert torch.allclose(batched.means, single.means, atol=1e-5)
    assert torch.equal(batched.counts, single.counts)


@pytest.mark.parametrize("spec", ["tiny-llama-gqa", "tiny-hooked"])
def test_teacher_forcing_equals_greedy_under_intervention(spec):
    model = tiny(spec)
    fam = arithmetic_family("add", ks=[1, 2, 3, 4, 5])
    ex = sample_family(fam, fam.train, 26, 2, seed=0, kind="test")
    enc = encode_examples(model, ex)
    torch.manual_seed(0)
    v = torch.randn(model.info.d_model) * 3
    n = 0
    for b in make_batches(enc, 32):
        hooks = iv.inject(model, v, b.query_pos, 1)
        sc = score_batch(model, b, hooks)
        gen = greedy_decode(model, b, fwd_hooks=hooks)
        a = b.answer_len
        # the teacher-forced argmax equals the greedy token wherever the prefix agrees
        assert torch.equal(sc.pred[:, 0], gen[:, 0])
        agree_prefix = (gen[:, :a] == b.answer_ids).all(-1)
        assert torch.equal(sc.pred[agree_prefix, a], gen[agree_prefix, a])
        n += len(b)
    assert n >= 100


def test_bad_inputs():
    model = tiny("tiny-llama-gqa")
    from addk_interp.core.errors import AddkError

    with pytest.raises(AddkError, match="does not exist"):
        iv.check_heads(model, [(99, 0)])
    with pytest.raises(AddkError, match="out of range"):
        iv.inject(model, torch.zeros(model.info.d_model), 3, 50)
    with pytest.raises(AddkError, match="width"):
        iv.inject(model, torch.zeros(7), 3, 1)
    with pytest.raises(AddkError, match="not orthonormal|rank-deficient"):
        iv.check_basis(torch.ones(model.info.d_model, 2))


@pytest.mark.parametrize("spec", ["tiny-llama", "tiny-llama-gqa", "tiny-hooked"])
def test_projection_identities(spec):
    model = tiny(spec)
    b, _ = _batch(model)
    q = b.query_pos
    base = model.full_logits(b.tokens)
    d = model.info.d_model
    full, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0)))
    mu = torch.randn(d)
    # onto the whole space (any centre) and out of an empty-effect subspace are no-ops
    same = model.full_logits(b.tokens, iv.project_head(model, (1, 2), q, full, mu, "onto"))
    assert (same - base).abs().max().item() < 1e-4
    # onto a subspace then out of it: the two edits sum to removing the centred part twice
    sub = full[:, :3]
    onto = model.full_logits(b.tokens, iv.project_head(model, (1, 2), q, sub, mu, "onto"))
    assert (onto - base).abs().max().item() > 1e-4
    # projecting onto a subspace equals replacing the head output by hand
    z = capture_z(model, b.tokens, q)[:, 0, 1, 2]
    o = z @ model.W_O[1, 2]
    new = mu + (o - mu) @ sub @ sub.T
    hand = model.full_logits(
        b.tokens,
        [
            (
                "blocks.1.hook_attn_out",
                lambda act, hook: torch.cat(
                    [act[:, :q], (act[:, q] + new - o)[:, None], act[:, q + 1 :]], 1
                ),
            )
        ],
    )
    assert (onto - hand).abs().max().item() < 1e-5


def test_projection_post_norm_full_space_is_noop_and_bad_basis():
    from addk_interp.core.errors import AddkError

    g = tiny("tiny-gemma3")
    b, _ = _batch(g)
    d = g.info.d_model
    full, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0)))
    base = g.full_logits(b.tokens)
    same = g.full_logits(b.tokens, iv.project_head(g, (1, 0), b.query_pos, full, torch.randn(d)))
    assert (same - base).abs().max().item() <= 1e-5 * base.abs().max().item()
    with pytest.raises(AddkError, match="NaN"):
        iv.project_head(g, (0, 0), 3, torch.full((d, 2), float("nan")))
    m = tiny("tiny-llama")
    with pytest.raises(AddkError, match="rank-deficient"):
        iv.project_head(m, (0, 0), 3, torch.zeros(m.info.d_model, 2))
