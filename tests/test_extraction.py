"""Aggregation / extraction identity, token-group shares and label-peaking metrics (§6.1–6.3)."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY, tiny

from addk_interp.analyses import extraction as ex
from addk_interp.core.errors import AddkError
from addk_interp.core.prompts import encode, encode_examples, make_batches
from addk_interp.core.tasks import Example, arithmetic_family, render, sample_family
from addk_interp.hooks.capture import capture_means

torch.set_num_threads(1)  # the machine's cores are shared

ALL_HEADS = [(layer, h) for layer in range(3) for h in range(4)]


def _batch(model, n=10, shots=3, seed=0, ks=(3, 5)):
    fam = arithmetic_family("add", ks=list(ks))
    exs = sample_family(fam, fam.train, n, shots, seed=seed, kind="test")
    return max(make_batches(encode_examples(model, exs), 64), key=len), exs


def _v_weight(model, layer):
    """The parameter holding W_V of ``layer`` (bridge: HF v_proj [kv*d_head, d_model])."""
    attn = model.model.blocks[layer].attn
    if model.backend == "hooked":
        return attn._W_V
    return attn._original_component.v_proj._original_component.weight


@pytest.mark.parametrize("spec", TINY)
def test_identity_all_heads(spec):
    model = tiny(spec)
    b, _ = _batch(model)
    res = ex.extract_heads(model, b, ALL_HEADS)
    acts = model.run_collect(b.prompt_tokens, [f"blocks.{la}.attn.hook_v" for la in range(3)])
    rep = model.info.n_heads // model.info.n_kv_heads
    for (layer, h), r in res.items():
        assert r.identity_rel_error <= 1e-5
        assert r.identity_min_cos >= 0.999
        assert r.kv_head == h // rep
        # s_t by hand: hook_v of the head's KV group, through the head's W_O
        v = acts[f"blocks.{layer}.attn.hook_v"][:, :, h // rep]
        assert torch.allclose(r.signals, v @ model.W_O[layer, h], atol=1e-6)
        assert torch.allclose(r.attention.sum(-1), torch.ones(len(b)), atol=1e-5)
        # the raw identity holds against z W_O whatever the norm
        raw = torch.einsum("bp,bpm->bm", r.attention, r.signals)
        assert (raw - r.head_output).abs().max() <= 1e-5 * max(1.0, r.head_output.abs().max())
        assert r.value_bias_signal.abs().max() == 0  # no attention biases in the tiny models
        assert r.to_dict()["post_norm"] == model.info.post_attn_norm


def test_post_norm_scaled_identity_differs_from_raw():
    model = tiny("tiny-gemma3")
    b, _ = _batch(model)
    r = ex.extract_head(model, b, (1, 2))
    assert r.post_norm and r.scale is not None
    assert (r.contribution - r.head_output).abs().max() > 1e-2
    assert (r.reconstruction() - r.contribution).abs().max() <= 1e-5 * max(
        1.0, r.contribution.abs().max()
    )


@pytest.mark.parametrize("spec", ["tiny-llama-gqa", "tiny-hooked"])
def test_gqa_signal_ignores_other_kv_head(spec):
    model = tiny(spec)
    b, _ = _batch(model)
    layer, h = 1, 1  # kv head 0; heads 2, 3 read kv head 1
    before = ex.extract_heads(model, b, [(layer, h), (layer, 3)])
    w = _v_weight(model, layer)
    saved = w.detach().clone()
    d = model.info.d_head
    try:
        with torch.no_grad():
            if model.backend == "hooked":
                w[1] += 0.5
            else:
                w[d : 2 * d] += 0.5
        after = ex.extract_heads(model, b, [(layer, h), (layer, 3)])
    finally:
        with torch.no_grad():
            w.copy_(saved)
    assert torch.equal(before[(layer, h)].signals, after[(layer, h)].signals)
    assert (before[(layer, 3)].signals - after[(layer, 3)].signals).abs().max() > 1e-2
    assert after[(layer, 3)].identity_rel_error <= 1e-5


def test_value_bias_is_inside_the_signal():
    from addk_interp.analyses import circuits as ci

    model = tiny("tiny-hooked")
    attn = model.model.blocks[2].attn
    saved = attn._b_V.detach().clone()
    b, _ = _batch(model)
    try:
        with torch.no_grad():
            attn._b_V.copy_(
                torch.randn(attn._b_V.shape, generator=torch.Generator().manual_seed(0))
            )
        r = ex.extract_head(model, b, (2, 3))
        lv = ci.label_vectors(model, b, 2)
        ov = ci.ov_apply(model, (2, 3), lv.vectors)
        ov_nob = ci.ov_apply(model, (2, 3), lv.vectors, include_value_bias=False)
    finally:
        with torch.no_grad():
            attn._b_V.copy_(saved)
    c = r.value_bias_signal
    assert c.abs().max() > 1e-3
    assert r.identity_rel_error <= 1e-5  # Σ_t α_t = 1 absorbs the constant b_V W_O
    assert torch.allclose(ov - ov_nob, c.expand_as(ov), atol=1e-5)
    i, pos = 0, ex.label_slots(r.groups[0])[0][-1]
    j = [k for k in range(len(lv.numbers)) if lv.prompt_indices[k] == r.indices[i]][0]
    assert torch.allclose(ov[j], r.signals[i, pos], atol=1e-5)


def test_raw_tokens_and_projection():
    model = tiny("tiny-llama")
    b, _ = _batch(model)
    r = ex.extract_head(model, b.prompt_tokens, (2, 0))
    assert r.query_pos == b.query_pos and r.groups is None
    with pytest.raises(AddkError, match="without token groups"):
        ex.group_shares(r, r.contribution)
    basis, _ = torch.linalg.qr(torch.randn(64, 5, generator=torch.Generator().manual_seed(1)))
    coords = ex.project_signals(r, basis)
    agg = torch.einsum("bp,bpk->bk", r.attention.double(), coords)
    assert torch.allclose(agg, r.contribution.double() @ basis.double(), atol=1e-5)
    mu = torch.randn(64)
    coords_c = ex.project_signals(r, basis.numpy(), center=mu)
    agg_c = torch.einsum("bp,bpk->bk", r.attention.double(), coords_c)
    want = (r.contribution.double() - mu.double()) @ basis.double()
    assert torch.allclose(agg_c, want, atol=1e-5)


@pytest.mark.parametrize("spec", ["tiny-llama-gqa", "tiny-gemma3"])
def test_shares_sum_to_one_with_task_means(spec):
    model = tiny(spec)
    b, exs = _batch(model)
    means = capture_means(model, exs)
    r = ex.extract_head(model, b, (1, 2))
    d = ex.directions_from_means(means, (1, 2), r)
    gs = ex.group_shares(r, d)
    assert gs.n_prompts == len(b)
    assert gs.n_valid + len(gs.degenerate_indices) + len(gs.negative_indices) == len(b)
    assert np.allclose(gs.shares.sum(1), 1.0, atol=1e-9)
    assert np.isfinite(gs.shares).all()
    assert gs.group_names[0] == "bos" and gs.group_names[-1] == "query_arrow"
    roles = gs.role_shares()
    assert np.allclose(sum(roles.values()), 1.0, atol=1e-9)
    out = gs.to_dict()
    assert out["label_share"]["n"] == gs.n_valid
    lo, hi = out["label_share"]["ci_low"], out["label_share"]["ci_high"]
    assert lo <= out["label_share"]["mean"] <= hi
    # the share is a ratio: scaling the direction does not change it
    gs2 = ex.group_shares(r, d * 7.0)
    assert np.allclose(gs2.shares, gs.shares)


def test_degenerate_and_negative_denominators_are_counted():
    model = tiny("tiny-llama")
    b, _ = _batch(model)
    r = ex.extract_head(model, b, (1, 0))
    c = r.reconstruction().double()
    d = c.clone()
    d[1] = -c[1]  # negative denominator
    rnd = torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    d[2] = rnd - (rnd @ c[2]) / (c[2] @ c[2]) * c[2]  # orthogonal: |denominator| ≈ 0
    gs = ex.group_shares(r, d, eps=1e-6)
    assert gs.negative_indices == (r.indices[1],)
    assert gs.degenerate_indices == (r.indices[2],)
    assert gs.n_valid == len(b) - 2
    assert np.isfinite(gs.shares).all() and np.allclose(gs.shares.sum(1), 1.0)
    info = gs.to_dict()
    assert info["n_negative"] == 1 and info["n_degenerate"] == 1


def test_shares_across_batches_union_groups():
    model = tiny("tiny-llama")
    fam = arithmetic_family("add", ks=[4])
    exs = sample_family(fam, fam.train, 12, 2, seed=3, kind="test")
    results = [next(iter(r.values())) for r in ex.iter_extractions(model, exs, [(0, 1)])]
    assert sum(r.n_prompts for r in results) == 12
    dirs = [r.contribution for r in results]
    gs = ex.group_shares(results, dirs)
    assert gs.n_prompts == 12 and sorted(gs.all_indices) == list(range(12))
    assert np.allclose(gs.shares.sum(1), 1.0)
    with pytest.raises(AddkError, match="direction tensors"):
        ex.group_shares(results, dirs[:1])


@pytest.mark.parametrize("spec", TINY)
def test_padded_extraction_equals_one_forward_per_batch(spec):
    """iter_extractions runs length buckets right-padded in one forward: every batch's result
    equals extract_heads on that batch alone (signals, attention, contribution, identity)."""
    model = tiny(spec)
    fam = arithmetic_family("add", ks=[1, 9, 30])
    exs = sample_family(fam, fam.train, 4, 2, seed=5, kind="test")
    heads = [(0, 1), (2, 3)]
    batches = make_batches(encode_examples(model, exs), 64)
    assert len({b.prompt_tokens.shape[1] for b in batches}) > 1
    got = list(ex.iter_extractions(model, exs, heads, batch_size=64))
    assert len(got) == len(batches)
    for b, res in zip(batches, got):
        ref = ex.extract_heads(model, b, heads)
        for h in heads:
            a, r = res[h], ref[h]
            assert a.indices == r.indices and a.query_pos == r.query_pos and a.groups == r.groups
            for f in ("signals", "attention", "contribution", "head_output"):
                torch.testing.assert_close(getattr(a, f), getattr(r, f), rtol=1e-5, atol=1e-5)
            assert a.identity_rel_error <= 1e-4
    with pytest.raises(AddkError, match="no heads requested"):
        next(ex.iter_extractions(model, exs, []))
    # a batch size below the sample still covers every prompt once
    small = list(ex.iter_extractions(model, exs, heads, batch_size=3))
    assert sorted(i for r in small for i in r[heads[0]].indices) == list(range(len(exs)))


def _merging_tokenizer(tmp_path):
    """Fast tokenizer whose vocabulary merges '5#' (label + separator), '2-' and '->'."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<bos>": 0, "<unk>": 1, "5#": 2, "2-": 3, "->": 4}
    for ch in "0123456789->#":
        vocab.setdefault(ch, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"5#|2-|->|."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", unk_token="<unk>")
    tok.save_pretrained(tmp_path)
    return tok


def test_group_assignment_by_first_character_on_merging_tokenizer(tmp_path):
    tok = _merging_tokenizer(tmp_path)
    fake = SimpleNamespace(tokenizer=tok, bos_id=lambda: 0, info=SimpleNamespace(n_ctx=512))
    e = Example("add3", 3, (("12", "15"), ("3", "6")), "7", "10")
    enc = encode(fake, render(e, "arrow"))
    pieces = [tok.convert_ids_to_tokens(i) for i in enc.prompt_ids]
    assert pieces == ["<bos>", "1", "2-", ">", "1", "5#", "3", "->", "6", "#", "7", "->"]
    assert enc.groups == (
        "bos",
        "demo0_input",
        "demo0_input",  # '2-' starts in the input: the whole token is input
        "demo0_arrow",
        "demo0_output",
        "demo0_output",  # '5#' starts in the label: the label's last token, no demo0_sep token
        "demo1_input",
        "demo1_arrow",
        "demo1_output",
        "demo1_sep",
        "query_input",
        "query_arrow",
    )
    assert ex.label_slots(enc.groups) == [[4, 5], [8]]
    # shares and peaking run on these groups (synthetic signals, no demo0_sep group)
    n = len(enc.groups)
    gen = torch.Generator().manual_seed(0)
    alpha = torch.softmax(torch.randn(1, n, generator=gen), -1)
    s = torch.randn(1, n, 64, generator=gen)
    contrib = torch.einsum("bp,bpm->bm", alpha, s)
    r = ex.ExtractionResult(
        head=(0, 0),
        kv_head=0,
        query_pos=n - 1,
        signals=s,
        attention=alpha,
        head_output=contrib,
        contribution=contrib,
        scale=None,
        value_bias_signal=torch.zeros(64),
        identity_max_error=0.0,
        identity_rel_error=0.0,
        identity_min_cos=1.0,
        groups=(enc.groups,),
        indices=(0,),
        tasks=("add3",),
        labels=(("15", "6"),),
    )
    gs = ex.group_shares(r, contrib[0])
    assert "demo0_sep" not in gs.group_names and "demo1_sep" in gs.group_names
    assert np.allclose(gs.shares.sum(1), 1.0)
    want = sum(float(alpha[0, t] * (s[0, t] @ contrib[0])) for t in (4, 5, 8))
    assert np.isclose(gs.label_share[0], want / float(contrib[0] @ contrib[0]), atol=1e-6)


def test_group_helpers():
    names = ["query_arrow", "demo1_output", "bos", "demo0_sep", "demo10_input", "query_input"]
    assert sorted(names, key=ex.group_sort_key) == [
        "bos",
        "demo0_sep",
        "demo1_output",
        "demo10_input",
        "query_input",
        "query_arrow",
    ]
    assert ex.group_role("demo3_arrow") == "arrow" and ex.group_role("demo0_sep") == "separator"
    with pytest.raises(AddkError, match="unknown token group"):
        ex.group_role("instruction")


@pytest.mark.parametrize("spec", ["tiny-llama-gqa", "tiny-hooked"])
def test_peaking_metrics(spec):
    model = tiny(spec)
    b, _ = _batch(model)
    r = ex.extract_head(model, b, (2, 3))
    d = r.contribution
    basis, _ = torch.linalg.qr(torch.randn(64, 6, generator=torch.Generator().manual_seed(2)))
    pk = ex.label_peaking(r, d, basis, n_perm=30, seed=0)
    masses = sum(pk.role_mass.values())
    assert np.allclose(masses, 1.0, atol=1e-5)
    assert np.allclose(
        pk.task_mass + pk.sink_mass + pk.role_mass["input"] + pk.role_mass["query_input"], 1.0
    )
    assert len(pk.routing_null) == 30 and len(pk.weighting_null) == 30
    assert np.allclose(pk.weighting_gain, pk.weighted_cos - pk.uniform_cos)
    assert pk.signal_cos is not None and np.all(np.abs(pk.signal_cos) <= 1 + 1e-9)
    assert np.all(np.abs(pk.routing) <= 1 + 1e-9)
    # hand check of one prompt's peaking ratio and weighting gain ("last" label tokens)
    g = r.groups[0]
    lab = [t for t, name in enumerate(g) if ex.group_role(name) == "label"]
    other = [t for t in range(len(g)) if t not in lab]
    a = r.attention[0].double()
    assert np.isclose(pk.peaking_ratio[0], float(a[lab].mean() / a[other].mean()))
    last = [p[-1] for p in ex.label_slots(g)]
    s_i = r.signals[0, last].double()
    w = a[last] / a[last].sum()
    hk = d[0].double()
    cos = torch.nn.functional.cosine_similarity
    gain = cos((w[:, None] * s_i).sum(0), hk, dim=0) - cos(s_i.mean(0), hk, dim=0)
    assert np.isclose(pk.weighting_gain[0], float(gain), atol=1e-9)
    again = ex.label_peaking(r, d, basis, n_perm=30, seed=0)
    assert np.array_equal(again.routing_null, pk.routing_null)
    out = pk.to_dict()
    assert out["routing_null"]["n_perm"] == 30 and out["task_mass"]["n"] == len(b)
    pooled = ex.label_peaking(r, d, label_signal="pooled", n_perm=0)
    assert pooled.signal_cos is None and pooled.to_dict()["signal_cos"] is None


def test_zero_label_mass_is_reported_not_nan():
    model = tiny("tiny-llama")
    b, _ = _batch(model)
    r = ex.extract_head(model, b, (1, 1))
    lab = torch.tensor([[ex.group_role(n) == "label" for n in g] for g in r.groups])
    alpha = r.attention.clone()
    alpha[0][lab[0]] = 0.0
    alpha[0] = alpha[0] / alpha[0].sum()
    r0 = dataclasses.replace(r, attention=alpha)
    pk = ex.label_peaking(r0, r.contribution, n_perm=5)
    assert pk.zero_label_mass_indices == (r.indices[0],)
    assert len(pk.full_cos) == len(b) - 1
    assert pk.task_mass[0] == 0.0 and pk.peaking_ratio[0] == 0.0
    for arr in (pk.full_cos, pk.weighting_gain, pk.routing, pk.weighting_null):
        assert np.isfinite(arr).all()
    assert pk.to_dict()["n_zero_label_mass"] == 1


def test_bad_inputs():
    model = tiny("tiny-llama-gqa")
    fam = arithmetic_family("add", ks=[3])
    zero = sample_family(fam, fam.train, 3, 0, seed=0, kind="test")
    with pytest.raises(AddkError, match="no demonstrations"):
        next(ex.iter_extractions(model, zero, [(0, 0)]))
    zb = make_batches(encode_examples(model, zero), 8)[0]
    with pytest.raises(AddkError, match="no demonstrations"):
        ex.extract_head(model, zb, (0, 0))
    b, _ = _batch(model)
    with pytest.raises(AddkError, match="does not exist"):
        ex.extract_head(model, b, (5, 0))
    with pytest.raises(AddkError, match="no heads"):
        ex.extract_heads(model, b, [])
    with pytest.raises(AddkError, match="query position"):
        ex.extract_head(model, b.prompt_tokens, (0, 0), query_pos=999)
    r = ex.extract_head(model, b, (0, 0))
    with pytest.raises(AddkError, match="not orthonormal"):
        ex.project_signals(r, torch.ones(64, 2))
    with pytest.raises(AddkError, match="basis must be"):
        ex.project_signals(r, torch.eye(32))
    with pytest.raises(AddkError, match="directions must be"):
        ex.group_shares(r, torch.ones(3, 64))
    with pytest.raises(AddkError, match="NaN"):
        ex.group_shares(r, torch.full((64,), float("nan")))
    with pytest.raises(AddkError, match="label_signal"):
        ex.label_peaking(r, r.contribution, label_signal="first")
    r2 = ex.extract_head(model, b, (0, 1))
    with pytest.raises(AddkError, match="mix heads"):
        ex.group_shares([r, r2], [r.contribution, r2.contribution])
    assert ex.summarize([])["n"] == 0 and ex.summarize([])["mean"] is None
