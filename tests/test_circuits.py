"""OV / QK circuits on tiny MHA, GQA, post-norm and classic models (GQA-correct weights)."""

import numpy as np
import pytest
import torch
from conftest import TINY, tiny

from addk_interp.analyses import circuits as ci
from addk_interp.analyses import extraction as ex
from addk_interp.analyses.periodic import fit_subspace_from_means
from addk_interp.core.errors import AddkError
from addk_interp.core.prompts import encode_examples, make_batches
from addk_interp.core.tasks import arithmetic_family, sample_family
from addk_interp.models.adapter import HookedModel

torch.set_num_threads(1)  # the machine's cores are shared


def _batch(model, n=10, shots=3, seed=0, ks=(3, 5)):
    fam = arithmetic_family("add", ks=list(ks))
    exs = sample_family(fam, fam.train, n, shots, seed=seed, kind="test")
    return max(make_batches(encode_examples(model, exs), 64), key=len)


def _orth(d, k, seed=0):
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=torch.Generator().manual_seed(seed)))
    return q


class _Swapped(HookedModel):
    """A model view whose W_V / W_K / W_Q are replaced (all else delegated to the wrapped
    model). A ``HookedModel`` subclass, so the library's beartype-checked ``model`` parameters
    accept it."""

    def __init__(self, model, **weights):
        object.__setattr__(self, "_m", model)
        object.__setattr__(self, "_w", weights)

    def __getattribute__(self, name):
        if name in ("_m", "_w", "__class__"):
            return object.__getattribute__(self, name)
        w = object.__getattribute__(self, "_w")
        if name in w:
            return w[name]
        return getattr(object.__getattribute__(self, "_m"), name)


@pytest.mark.parametrize("spec", TINY)
def test_attention_inputs_feed_hook_v(spec):
    model = tiny(spec)
    b = _batch(model)
    x = ci.attention_inputs(model, b.prompt_tokens, [0, 2])
    acts = model.run_collect(b.prompt_tokens, ["blocks.0.attn.hook_v", "blocks.2.attn.hook_v"])
    for layer in (0, 2):
        v = torch.einsum("bpm,kmd->bpkd", x[layer], model.W_V[layer])
        assert (v - acts[f"blocks.{layer}.attn.hook_v"]).abs().max() < 1e-5


def test_attention_inputs_apply_classic_ln_weight():
    model = tiny("tiny-hooked")
    ln = model.model.blocks[1].ln1
    saved = ln.w.detach().clone()
    b = _batch(model)
    try:
        with torch.no_grad():
            ln.w.mul_(torch.linspace(0.5, 2.0, ln.w.shape[0]))
        x = ci.attention_inputs(model, b.prompt_tokens, [1])[1]
        v = model.run_collect(b.prompt_tokens, ["blocks.1.attn.hook_v"])["blocks.1.attn.hook_v"]
    finally:
        with torch.no_grad():
            ln.w.copy_(saved)
    assert (torch.einsum("bpm,kmd->bpkd", x, model.W_V[1]) - v).abs().max() < 1e-5


@pytest.mark.parametrize("spec", ["tiny-llama-gqa", "tiny-hooked", "tiny-gemma3"])
def test_ov_uses_own_kv_head(spec):
    model = tiny(spec)
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(0))
    head = (1, 1)  # kv head 0 on tiny-llama-gqa / tiny-hooked; the only kv head on Gemma
    base = ci.ov_apply(model, head, x)
    w_v = model.W_V.clone()
    own = model.kv_head(1)
    for kv in range(model.info.n_kv_heads):
        w = w_v.clone()
        w[1, kv] += 0.3
        out = ci.ov_apply(_Swapped(model, W_V=w), head, x)
        if kv == own:
            assert (out - base).abs().max() > 1e-3
        else:
            assert torch.equal(out, base)
    # the same through the live weights (what the forward uses)
    if model.backend == "bridge" and model.info.n_kv_heads > 1:
        p = model.model.blocks[1].attn._original_component.v_proj._original_component.weight
        saved = p.detach().clone()
        d = model.info.d_head
        try:
            with torch.no_grad():
                p[d : 2 * d] += 0.3  # kv head 1: read by heads 2 and 3 only
            assert torch.equal(ci.ov_apply(model, head, x), base)
            assert (ci.ov_apply(model, (1, 3), x) - base).abs().max() > 1e-3
        finally:
            with torch.no_grad():
                p.copy_(saved)


@pytest.mark.parametrize("spec", ["tiny-llama-gqa", "tiny-hooked"])
def test_ov_of_label_inputs_equals_extracted_signal(spec):
    model = tiny(spec)
    b = _batch(model)
    head = (2, 3)
    lv = ci.label_vectors(model, b, 2)
    r = ex.extract_head(model, b, head)
    rows = {idx: i for i, idx in enumerate(r.indices)}
    out = ci.ov_apply(model, head, lv.vectors)
    for j in range(len(lv.numbers)):
        i = rows[int(lv.prompt_indices[j])]
        pos = ex.label_slots(r.groups[i])[int(lv.demo_indices[j])][-1]
        assert (out[j] - r.signals[i, pos]).abs().max() < 1e-5
    # numbers are the demos' labels
    exs = [e.prompt.example for e in b.encoded]
    want = [int(y) for e in exs for _, y in e.demos]
    assert lv.numbers.tolist() == want
    basis = _orth(64, 4)
    nm = ci.ov_label_map(model, head, lv, basis)
    assert nm.counts.sum() == len(want) and list(nm.numbers) == sorted(set(want))
    n0 = nm.numbers[0]
    sel = torch.from_numpy(lv.numbers == n0)
    hand = (out[sel].double() @ basis.double()).mean(0)
    assert np.allclose(nm.coords[0], hand.numpy(), atol=1e-6)
    assert nm.to_dict()["source"] == "label_residual"


def test_ov_embedding_coordinates_by_hand():
    model = tiny("tiny-llama-gqa")
    layer, h = 1, 2
    numbers = [7, 3, 9, 3]
    basis = _orth(64, 6, seed=3)
    ids = [model.tokenizer(str(n), add_special_tokens=False)["input_ids"][0] for n in numbers]
    e = model.W_E[ids].double()
    w_v, w_o = model.W_V[layer, h // 2].double(), model.W_O[layer, h].double()
    raw = ci.ov_coordinates(model, (layer, h), model.W_E[ids], basis)
    assert torch.allclose(raw, e @ w_v @ w_o @ basis.double(), atol=1e-5)
    # through ln1: x / sqrt(mean(x²) + eps) * g (HF LlamaRMSNorm)
    norm = model.model.blocks[layer].ln1._original_component
    x = e / torch.sqrt(e.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    x = x * norm.weight.double()
    nm = ci.ov_embedding_map(model, (layer, h), numbers, basis)
    hand = x @ w_v @ w_o @ basis.double()
    assert list(nm.numbers) == [3, 7, 9] and list(nm.counts) == [2, 1, 1]
    assert np.allclose(nm.coords[0], hand[1].numpy(), atol=1e-5)
    assert np.allclose(nm.coords[1], hand[0].numpy(), atol=1e-5)
    # post-norm model: the OV output carries the post-attention-norm gain g
    g_model = tiny("tiny-gemma3")
    g, _ = g_model.post_attn_norm(1)
    y = torch.randn(3, 64)
    plain = ci.ov_apply(g_model, (1, 0), y, post_norm_gain=False)
    assert torch.allclose(ci.ov_apply(g_model, (1, 0), y), plain * g.float(), atol=1e-6)


def test_decompose_ov_against_subspace_fit():
    gen = np.random.default_rng(0)
    ks = np.arange(1, 31)
    dirs = np.linalg.qr(gen.normal(size=(64, 6)))[0]
    waves = np.stack(
        [
            np.cos(2 * np.pi * ks / 50),
            np.cos(np.pi * ks),
            np.cos(2 * np.pi * ks / 5),
            np.cos(2 * np.pi * ks / 10),
            np.sin(2 * np.pi * ks / 10),
            np.cos(2 * np.pi * ks / 25),
        ],
        axis=1,
    )
    means = waves @ dirs.T + 0.01 * gen.normal(size=(30, 64)) + 1.0
    fit = fit_subspace_from_means(means, ks)
    bu = torch.from_numpy(np.array(fit.basis("unit")))
    inside = torch.randn(4, 4, dtype=torch.float64) @ bu.T
    dec = ci.decompose_ov(fit, inside)
    assert np.isclose(dec.fraction["unit"], 1.0)
    assert np.allclose(dec.coords["unit"], (inside @ bu).numpy())
    assert np.allclose(dec.norms["unit"], dec.total_norm)
    bm = torch.from_numpy(np.array(fit.basis("magnitude")))
    assert np.allclose(dec.coords["magnitude"], (inside @ bm).numpy())
    assert dec.to_dict()["parts"] == ["unit", "magnitude"]
    with pytest.raises(AddkError, match="no subspace"):
        ci.decompose_ov(fit, inside, parts=("tens",))


@pytest.mark.parametrize("spec", TINY)
def test_qk_role_profile_sums_to_attention_mass(spec):
    model = tiny(spec)
    b = _batch(model)
    head = (1, 3)
    qk = ci.qk_role_profile(model, b, head)
    assert qk.softmax_error < 1e-5
    assert np.allclose(qk.total_mass(), 1.0, atol=1e-5)
    acts = model.run_collect(
        b.prompt_tokens, ["blocks.1.attn.hook_attn_scores", "blocks.1.attn.hook_pattern"]
    )
    sc = acts["blocks.1.attn.hook_attn_scores"][:, 3, b.query_pos]
    pat = acts["blocks.1.attn.hook_pattern"][:, 3, b.query_pos]
    # label scores are the actual scores at each label's last token
    want, want_mass = [], []
    for i, enc in enumerate(b.encoded):
        roles = [ex.group_role(g) for g in enc.groups]
        want_mass.append(float(sum(pat[i, t] for t, r in enumerate(roles) if r == "label")))
        for pos in ex.label_slots(enc.groups):
            if sc[i, pos[-1]] > -1e30:
                want.append(float(sc[i, pos[-1]]))
    assert np.allclose(qk.label_scores, want, atol=1e-6)
    assert len(want) + qk.n_masked_labels == 3 * len(b)
    assert np.allclose(qk.role_mass["label"], want_mass, atol=1e-6)
    assert qk.number_counts.sum() == len(want)
    j = 0
    sel = qk.label_numbers == qk.numbers[j]
    assert np.isclose(qk.number_score[j], qk.label_scores[sel].mean())
    assert set(qk.to_dict()["role_mass"]) == set(ex.ROLES)


@pytest.mark.parametrize("spec", ["tiny-llama-gqa", "tiny-hooked"])
def test_actual_scores_are_rotary_q_dot_k_of_own_kv_head(spec):
    model = tiny(spec)
    b = _batch(model)
    names = [f"blocks.2.attn.{n}" for n in ("hook_rot_q", "hook_rot_k", "hook_attn_scores")]
    a = model.run_collect(b.prompt_tokens, names)
    q, k, sc = (a[n] for n in names)
    t = b.query_pos
    for h in range(4):
        kv = model.kv_head(h)
        hand = torch.einsum("bd,bpd->bp", q[:, t, h], k[:, : t + 1, kv]) / 4.0
        assert (hand - sc[:, h, t, : t + 1]).abs().max() < 1e-5


def test_qk_bilinear_gqa_and_scale():
    model = tiny("tiny-llama-gqa")
    gen = torch.Generator().manual_seed(0)
    qv, kv = torch.randn(3, 64, generator=gen), torch.randn(5, 64, generator=gen)
    s = ci.qk_bilinear(model, (0, 3), qv, kv)
    hand = (qv @ model.W_Q[0, 3]) @ (kv @ model.W_K[0, 1]).T / 4.0
    assert torch.allclose(s, hand, atol=1e-5)
    w_k = model.W_K.clone()
    w_k[0, 0] += 1.0  # kv head 0 is not read by head 3
    assert torch.equal(ci.qk_bilinear(_Swapped(model, W_K=w_k), (0, 3), qv, kv), s)
    w_k[0, 1] += 1.0
    assert (ci.qk_bilinear(_Swapped(model, W_K=w_k), (0, 3), qv, kv) - s).abs().max() > 1e-3
    assert torch.allclose(ci.qk_bilinear(model, (0, 3), qv, kv, scale=1.0), hand * 4.0, atol=1e-4)


def test_bad_inputs():
    model = tiny("tiny-llama")
    basis = _orth(64, 2)
    with pytest.raises(AddkError, match="tokens on this tokenizer"):
        ci.ov_embedding_map(model, (0, 0), [12], basis)
    nm = ci.ov_embedding_map(model, (0, 0), [12, 2], basis, which="last")
    assert list(nm.numbers) == [2, 12]
    assert np.allclose(nm.coords[0], nm.coords[1])  # both read the token "2"
    with pytest.raises(AddkError, match="which must be"):
        ci.number_token_ids(model, [1], which="middle")
    with pytest.raises(AddkError, match="no numbers"):
        ci.ov_embedding_map(model, (0, 0), [], basis)
    with pytest.raises(AddkError, match="does not exist"):
        ci.ov_apply(model, (0, 9), torch.zeros(1, 64))
    with pytest.raises(AddkError, match="width"):
        ci.ov_apply(model, (0, 0), torch.zeros(1, 32))
    with pytest.raises(AddkError, match="not orthonormal"):
        ci.ov_coordinates(model, (0, 0), torch.zeros(1, 64), torch.ones(64, 2))
    with pytest.raises(AddkError, match="layer"):
        ci.attention_input_hook(model, 7)
    b = _batch(model)
    lv = ci.label_vectors(model, b, 1)
    with pytest.raises(AddkError, match="from layer 1"):
        ci.ov_label_map(model, (2, 0), lv, basis)
    with pytest.raises(AddkError, match="label_token"):
        ci.qk_role_profile(model, b, (0, 0), label_token="first")
    with pytest.raises(AddkError, match="no prompt batches"):
        ci.label_vectors(model, [], 0)
    fam = arithmetic_family("add", ks=[3])
    zero = sample_family(fam, fam.train, 3, 0, seed=0, kind="test")
    zb = make_batches(encode_examples(model, zero), 8)[0]
    with pytest.raises(AddkError, match="no demonstrations"):
        ci.qk_role_profile(model, zb, (0, 0))
