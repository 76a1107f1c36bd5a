"""Property-based fuzzing (hypothesis) of the identities and of the intervention effects over
random tiny architectures: Llama (MHA / GQA), Mistral, Qwen2, GPT-2, Gemma-2 (soft-capping) and
Gemma-3 (post-norms, sliding windows) through the TransformerBridge, and random classic
TransformerLens ``HookedTransformer`` configs (LN / RMS, learned / rotary positions, GQA, gated
MLPs, post-norms, soft-capping); random prompts, positions, layers and heads.

Every property is checked against an independent computation: plain PyTorch hooks on a
separately built HF model (``tests/hf_reference.py``) or TransformerLens' own ``run_with_hooks``
on the raw HookedTransformer, never the toolkit's own code path.

- per-head outputs (+ bias) sum to the attention block's residual increment; self-replacement
  is a no-op; ``logits_at`` equals the full forward; an injected vector gives the logits of the
  same residual add done with plain hooks (the effect identity);
- classic HookedTransformer: head sum, ``logits_at`` and injection vs ``hook_resid_mid``;
- batched ``capture_z`` = per-prompt ``capture_z`` = HF's o_proj inputs;
- mean-ablating no heads is a no-op; a random head set = the same replacement in HF;
- ``gate_heads`` endpoints (gate 0 = clean run, gate 1 = every head at its mean) and interior;
- ``project_head`` onto a full orthonormal basis is the identity; ``mode="out"`` with the full
  basis (projection onto the zero space) removes the head's output;
- the extraction identity Σ_t α_t s̃_t = head contribution (``extract_heads`` on raw tokens,
  which needs no trained model);
- plus a plain test: in float64 a post-norm block's head sum is exact to 1e-12.

Profiles: with ``ADDK_FUZZ_EXAMPLES`` unset (fast, CI) the original property runs 12 cases and
each further property ``FEW`` = 4; ``ADDK_FUZZ_EXAMPLES=N pytest tests/test_fuzz.py`` runs every
one of the seven properties at N cases: the long profile is N = 150 (1,050 cases; README has its
last result).
"""

import functools
import os
import warnings

import pytest
import torch
from hf_reference import (
    Ref,
    add_after_attention,
    edit_heads,
    gemma_post_norm_scale,
    project_head_output,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from addk_interp.analyses.extraction import extract_heads
from addk_interp.hooks import interventions as iv
from addk_interp.hooks.capture import bias_contribution, capture_z, z_hook_name, z_to_outputs
from addk_interp.models.loading import from_hf, from_hooked_transformer
from addk_interp.models.tiny import tiny_tokenizer

N = int(os.environ.get("ADDK_FUZZ_EXAMPLES", "12"))
FEW = N if "ADDK_FUZZ_EXAMPLES" in os.environ else 4  # each further property, fast profile
FAMILIES = ("llama", "mistral", "qwen2", "gpt2", "gemma2", "gemma3")
# pinned cases that always run as well (the fast profile's few draws may miss them): Gemma-3
# (post-norm, GQA, a sliding window shorter than the prompt) and a post-norm GQA classic HT
GEMMA3_GQA = ("gemma3", 2, 4, 2, 8, 7, 5)
HT_POSTNORM_GQA = (2, 4, 2, 8, "RMS", "rotary", "silu", True, True, 5.0, 7, 5)

_tok = functools.cache(tiny_tokenizer)


def _settings(n):
    return settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck),
                    derandomize=True)


@st.composite
def cases(draw):
    fam = draw(st.sampled_from(FAMILIES))
    n_layers = draw(st.integers(1, 3))
    n_heads = draw(st.sampled_from([1, 2, 4]))
    n_kv = draw(st.sampled_from([h for h in (1, 2, 4) if n_heads % h == 0]))
    d_head = draw(st.sampled_from([8, 16]))
    seq = draw(st.integers(3, 12))
    seed = draw(st.integers(0, 2**16))
    return fam, n_layers, n_heads, n_kv, d_head, seq, seed


def _hf(fam, n_layers, n_heads, n_kv, d_head, vocab, seed):
    import transformers as tf

    torch.manual_seed(seed)
    d = n_heads * d_head
    common = dict(
        vocab_size=vocab,
        hidden_size=d,
        intermediate_size=2 * d,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        max_position_embeddings=64,
        initializer_range=0.2,
    )
    if fam == "gpt2":
        cfg = tf.GPT2Config(vocab_size=vocab, n_embd=d, n_layer=n_layers, n_head=n_heads, n_positions=64,
                            initializer_range=0.2)
        m = tf.GPT2LMHeadModel(cfg)
    elif fam in ("gemma2", "gemma3"):
        cls, conf = (tf.Gemma2ForCausalLM, tf.Gemma2Config) if fam == "gemma2" else (
            tf.Gemma3ForCausalLM, tf.Gemma3TextConfig
        )
        extra = dict(head_dim=d_head, sliding_window=4)
        if fam == "gemma2":
            extra["final_logit_softcapping"] = 5.0
        else:
            extra["layer_types"] = ["sliding_attention"] * (n_layers - 1) + ["full_attention"]
        m = cls(conf(**common, **extra))
    else:
        cls, conf = {
            "llama": (tf.LlamaForCausalLM, tf.LlamaConfig),
            "mistral": (tf.MistralForCausalLM, tf.MistralConfig),
            "qwen2": (tf.Qwen2ForCausalLM, tf.Qwen2Config),
        }[fam]
        m = cls(conf(**common))
    with torch.no_grad():  # non-trivial norms and biases
        for name, p in m.named_parameters():
            if "norm" in name or "ln" in name or (name.endswith("bias") and p.ndim == 1):
                p.normal_(0, 0.3)
    m.config.architectures = [type(m).__name__]
    return m.eval()


@_settings(N)
@given(cases())
def test_identities_and_effect_on_random_architectures(case):
    fam, n_layers, n_heads, n_kv, d_head, seq, seed = case
    tok = _tok()
    model = from_hf(_hf(fam, n_layers, n_heads, n_kv, d_head, len(tok), seed), tok, name=f"fuzz-{fam}")
    ref = Ref(_hf(fam, n_layers, n_heads, n_kv, d_head, len(tok), seed))
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(4, len(tok), (2, seq), generator=g)
    pos = int(torch.randint(0, seq, (1,), generator=g))
    layer = int(torch.randint(0, n_layers, (1,), generator=g))
    full = model.full_logits(toks)
    scale = float(full.abs().max())
    # logits at chosen positions = the full forward (soft-capping included)
    assert (model.logits_at(toks, [pos]) - full[:, [pos]]).abs().max() <= 1e-5 * scale
    # head sum (+ bias) = the attention block's residual increment
    name = model.attn_contribution_hook(layer)
    acts = model.run_collect(toks, [name, f"blocks.{layer}.attn.hook_z"])
    z = acts[f"blocks.{layer}.attn.hook_z"][:, pos]
    heads = z_to_outputs(model, layer, z).sum(1) + bias_contribution(model, layer, z)
    inc = acts[name][:, pos]
    assert (heads - inc).abs().max() <= 2e-5 * max(1e-6, float(inc.abs().max()))
    # self-replacement is a no-op
    z_own = capture_z(model, toks, pos)[:, 0]
    all_heads = [(la, h) for la in range(n_layers) for h in range(n_heads)]
    same = model.full_logits(toks, iv.replace_heads(model, all_heads, pos, z_own))
    assert (same - full).abs().max() <= 1e-5 * scale
    # the effect identity: an injected vector is a residual-stream add (plain-HF reference)
    v = torch.randn(model.info.d_model, generator=g) * 3.0
    got = model.full_logits(toks, iv.inject(model, v, pos, layer))
    want = ref.logits(toks, [add_after_attention(layer, pos, v)])
    assert (got - want).abs().max() <= 1e-4 * float(want.abs().max())


# ====================================================================== float64 post-norm
def _pre_norm_input(ref: Ref, layer, tokens):
    """The input of block ``layer``'s post-attention norm (the o_proj output), plain HF hooks."""
    got = {}
    norm = ref.layers[layer].post_attention_layernorm
    h = norm.register_forward_pre_hook(lambda mod, args: got.__setitem__("x", args[0].detach()))
    try:
        ref.logits(tokens)
    finally:
        h.remove()
    return got["x"], norm


@pytest.mark.parametrize("fam", ["gemma2", "gemma3", "hooked"])
def test_post_norm_head_sum_float64(fam):
    """In float64 the per-head outputs (+ bias) of a post-norm block sum to its increment to
    float64 rounding (≤ 1e-12 relative). Reference: HF Gemma-2/3's RMSNorm computes in float32
    even for a float64 model (``_norm(x.float())``, gain ``1 + w.float()``), so its output is
    only float32-accurate; the reference is the same norm (same float32 gain) evaluated in
    float64 on the recorded norm input. On the classic HookedTransformer (RMSNorm in float64)
    the reference is the model's own ``hook_attn_out``."""
    tok = _tok()
    toks = torch.randint(4, len(tok), (3, 9), generator=torch.Generator().manual_seed(7))
    if fam == "hooked":
        ht = _ht(2, 4, 2, 8, "RMS", "rotary", "gelu", True, True, None, len(tok), 3, torch.float64)
        model = from_hooked_transformer(ht, name="fuzz-hooked-f64")
    else:
        model = from_hf(_hf(fam, 2, 4, 2, 8, len(tok), 3).double(), tok, name=f"fuzz-{fam}-f64")
        ref = Ref(_hf(fam, 2, 4, 2, 8, len(tok), 3).double())
    assert model.info.post_attn_norm and model.info.dtype == "float64"
    for layer in range(2):
        name = model.attn_contribution_hook(layer)
        acts = model.run_collect(toks, [z_hook_name(layer), name])
        for pos in (0, 4, 8):
            z = acts[z_hook_name(layer)][:, pos]
            heads = z_to_outputs(model, layer, z).sum(1) + bias_contribution(model, layer, z)
            assert heads.dtype == torch.float64
            if fam == "hooked":
                want = acts[name][:, pos]
            else:
                x, norm = _pre_norm_input(ref, layer, toks)
                x = x[:, pos]
                g = (1.0 + norm.weight.float()).double()  # HF's own gain (float32)
                want = g * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)
                # HF's float32 norm agrees with the float64 reference to float32 accuracy
                assert (acts[name][:, pos] - want).abs().max() <= 1e-6 * want.abs().max()
            assert (heads - want).abs().max() <= 1e-12 * want.abs().max()


# ====================================================================== classic HookedTransformer
def _ht(n_layers, n_heads, n_kv, d_head, norm, pos_emb, act, gated, post_norm, softcap, vocab,
        seed, dtype=torch.float32):
    """A random classic ``HookedTransformer`` with non-trivial norm gains and biases."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    d = n_heads * d_head
    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d,
        n_heads=n_heads,
        n_key_value_heads=None if n_kv == n_heads else n_kv,
        d_head=d_head,
        d_mlp=2 * d,
        d_vocab=vocab,
        n_ctx=64,
        act_fn=act,
        normalization_type=norm,
        positional_embedding_type=pos_emb,
        gated_mlp=gated,
        use_normalization_before_and_after=post_norm,
        output_logits_soft_cap=softcap or -1.0,
        seed=seed,
        dtype=dtype,
        default_prepend_bos=True,
        initializer_range=0.2,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ht = HookedTransformer(cfg, tokenizer=_tok(), move_to_device=False)
    torch.manual_seed(seed)
    with torch.no_grad():
        for pname, p in ht.named_parameters():
            leaf = pname.rsplit(".", 1)[-1]
            if leaf == "w":  # norm gains
                p.normal_(1.0, 0.3)
            elif leaf.lstrip("_").startswith("b"):  # every bias
                p.normal_(0.0, 0.2)
    return ht.eval()


@st.composite
def ht_cases(draw):
    n_layers = draw(st.integers(1, 3))
    n_heads = draw(st.sampled_from([1, 2, 4]))
    n_kv = draw(st.sampled_from([h for h in (1, 2, 4) if n_heads % h == 0]))
    d_head = draw(st.sampled_from([8, 16]))
    norm = draw(st.sampled_from(["LN", "RMS"]))
    pos_emb = draw(st.sampled_from(["standard", "rotary"]))
    act = draw(st.sampled_from(["gelu", "silu", "relu"]))
    gated = draw(st.booleans())
    post_norm = norm == "RMS" and draw(st.booleans())  # TL has post-norms for RMS only
    softcap = draw(st.sampled_from([None, 5.0]))
    seq = draw(st.integers(3, 12))
    seed = draw(st.integers(0, 2**16))
    return n_layers, n_heads, n_kv, d_head, norm, pos_emb, act, gated, post_norm, softcap, seq, seed


@_settings(FEW)
@given(ht_cases())
@example(HT_POSTNORM_GQA)
def test_classic_hooked_transformer_family(case):
    """Head sum, ``logits_at`` = full forward and the injection on the classic backend, against
    TransformerLens' own ``run_with_hooks`` on the raw HookedTransformer (whose
    ``hook_resid_mid`` is the real residual stream after attention)."""
    *arch, seq, seed = case
    n_layers, n_heads = arch[0], arch[1]
    ht = _ht(*arch, len(_tok()), seed)
    model = from_hooked_transformer(ht, name="fuzz-hooked")
    assert model.backend == "hooked" and model.info.post_attn_norm == arch[8]
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(4, len(_tok()), (2, seq), generator=g)
    pos = int(torch.randint(0, seq, (1,), generator=g))
    layer = int(torch.randint(0, n_layers, (1,), generator=g))
    with torch.no_grad():
        full = ht(toks)  # TL's own forward, soft-cap included
    scale = float(full.abs().max())
    assert (model.logits_at(toks, [pos]) - full[:, [pos]]).abs().max() <= 1e-5 * scale
    acts = model.run_collect(toks, [z_hook_name(layer), f"blocks.{layer}.hook_attn_out"])
    z = acts[z_hook_name(layer)][:, pos]
    assert z.shape[1:] == (n_heads, arch[3])
    heads = z_to_outputs(model, layer, z).sum(1) + bias_contribution(model, layer, z)
    inc = acts[f"blocks.{layer}.hook_attn_out"][:, pos]
    assert (heads - inc).abs().max() <= 2e-5 * max(1e-6, float(inc.abs().max()))
    v = torch.randn(model.info.d_model, generator=g) * 3.0

    def add(act, hook):
        act = act.clone()
        act[:, pos] = act[:, pos] + v
        return act

    got = model.full_logits(toks, iv.inject(model, v, pos, layer))
    with torch.no_grad():
        want = ht.run_with_hooks(toks, fwd_hooks=[(f"blocks.{layer}.hook_resid_mid", add)])
    assert (got - want).abs().max() <= 1e-5 * float(want.abs().max())
    assert (want - full).abs().max() > 1e-4 * scale  # the add did something


# ====================================================================== further properties
def _pair(case):
    """The toolkit's model and an independent plain-HF reference built from the same seed."""
    fam, n_layers, n_heads, n_kv, d_head, seq, seed = case
    vocab = len(_tok())
    model = from_hf(_hf(fam, n_layers, n_heads, n_kv, d_head, vocab, seed), _tok(),
                    name=f"fuzz-{fam}")
    ref = Ref(_hf(fam, n_layers, n_heads, n_kv, d_head, vocab, seed))
    g = torch.Generator().manual_seed(seed + 1)
    return model, ref, g


def _o_proj_inputs(ref: Ref, tokens):
    """Every layer's per-head z ([batch, pos, head, d_head]): the o_proj input, plain HF hooks."""
    got = {}
    handles = [
        ref.o_proj(i).register_forward_pre_hook(
            lambda mod, args, i=i: got.__setitem__(i, args[0].detach().clone())
        )
        for i in range(len(ref.layers))
    ]
    try:
        ref.logits(tokens)
    finally:
        for h in handles:
            h.remove()
    return {i: x.view(*x.shape[:2], ref.n_heads, ref.d_head) for i, x in got.items()}


def _close(a, b, tol=1e-4):
    assert a.shape == b.shape
    assert (a - b).abs().max() <= tol * max(1e-6, float(b.abs().max()))


def _ref_head_outputs(ref: Ref, layer, z_rows):
    """Per-head residual contributions from z rows with HF's weights (post-norm aware)."""
    with torch.no_grad():
        raw = torch.einsum("bhd,hdm->bhm", z_rows, ref.o_weight(layer).to(z_rows.dtype))
        return gemma_post_norm_scale(ref, layer, raw) if ref.post_norm else raw


@_settings(FEW)
@given(cases(), st.integers(2, 4))
@example(GEMMA3_GQA, 3)
def test_batched_capture_equals_unbatched(case, batch):
    """``capture_z`` on a batch = per-prompt captures, and both are HF's o_proj inputs."""
    model, ref, g = _pair(case)
    seq = case[5]
    toks = torch.randint(4, len(_tok()), (batch, seq), generator=g)
    positions = sorted({int(p) for p in torch.randint(-seq, seq, (3,), generator=g)})
    both = capture_z(model, toks, positions)
    one = torch.cat([capture_z(model, toks[i : i + 1], positions) for i in range(batch)])
    assert both.shape == (batch, len(positions), model.n_layers, model.n_heads, model.info.d_head)
    _close(both, one, 1e-5)
    zs = _o_proj_inputs(ref, toks)
    want = torch.stack([zs[la][:, positions] for la in range(model.n_layers)], dim=2)
    _close(both, want, 1e-4)


def _z_means(model, toks, pos):
    return capture_z(model, toks, pos)[:, 0].mean(0)  # [layer, head, d_head]


@_settings(FEW)
@given(cases())
@example(GEMMA3_GQA)
def test_mean_ablation_empty_is_noop_subset_matches_reference(case):
    """Mean-ablating no heads changes nothing; a random head set gives HF's logits with those
    heads' z replaced by their means at o_proj's input."""
    model, ref, g = _pair(case)
    seq = case[5]
    toks = torch.randint(4, len(_tok()), (2, seq), generator=g)
    pos = int(torch.randint(0, seq, (1,), generator=g))
    zbar = _z_means(model, toks, pos)
    clean = ref.logits(toks)
    _close(model.full_logits(toks, iv.mean_ablate(model, [], pos, zbar)), clean, 1e-5)
    every = [(la, h) for la in range(model.n_layers) for h in range(model.n_heads)]
    keep = torch.rand(len(every), generator=g) < 0.5
    keep[int(torch.randint(0, len(every), (1,), generator=g))] = True  # at least one head
    heads = [hd for hd, k in zip(every, keep.tolist(), strict=True) if k]
    got = model.full_logits(toks, iv.mean_ablate(model, heads, pos, zbar))
    edits = []
    for la in sorted({la for la, _ in heads}):
        hs = [h for la2, h in heads if la2 == la]

        def rows_fn(rows, la=la, hs=hs):
            rows[:, hs] = zbar[la, hs].to(rows.dtype)
            return rows

        edits.append(edit_heads(la, pos, rows_fn))
    _close(got, ref.logits(toks, edits), 1e-4)


@_settings(FEW)
@given(cases())
@example(GEMMA3_GQA)
def test_gate_endpoints_and_interior(case):
    """``gate_heads`` (the mask-mode gate of ``localize.gates``: z ← g·z̄ + (1 − g)·z): gate 0 on
    every head is the clean run, gate 1 replaces every head by its mean (= ``mean_ablate`` of
    all heads), an interior gate is the same convex mix done with plain HF hooks."""
    model, ref, g = _pair(case)
    seq = case[5]
    n_layers, n_heads = model.n_layers, model.n_heads
    toks = torch.randint(4, len(_tok()), (2, seq), generator=g)
    pos = int(torch.randint(0, seq, (1,), generator=g))
    zbar = _z_means(model, toks, pos)
    clean = ref.logits(toks)
    zero, one = torch.zeros(n_layers, n_heads), torch.ones(n_layers, n_heads)
    _close(model.full_logits(toks, iv.gate_heads(model, zero, pos, zbar)), clean, 1e-5)
    every = [(la, h) for la in range(n_layers) for h in range(n_heads)]
    gate1 = model.full_logits(toks, iv.gate_heads(model, one, pos, zbar))
    _close(gate1, model.full_logits(toks, iv.mean_ablate(model, every, pos, zbar)), 1e-5)
    _close(gate1, ref.logits(toks, [edit_heads(la, pos, lambda r, la=la: zbar[la].expand_as(r))
                                    for la in range(n_layers)]), 1e-4)
    gate = torch.rand(n_layers, n_heads, generator=g)

    def mix(rows, la):
        return gate[la][:, None] * zbar[la] + (1 - gate[la][:, None]) * rows

    want = ref.logits(toks, [edit_heads(la, pos, lambda r, la=la: mix(r, la))
                             for la in range(n_layers)])
    _close(model.full_logits(toks, iv.gate_heads(model, gate, pos, zbar)), want, 1e-4)


@_settings(FEW)
@given(cases())
@example(GEMMA3_GQA)
def test_projection_full_space_and_zero_space(case):
    """``project_head`` onto a full orthonormal basis of d_model (any centre μ) is the identity;
    the complement of the full space (``mode="out"``, μ = 0: onto the zero space) removes the
    head's output, checked against HF hooks that subtract the head's contribution (pre-norm:
    also = zeroing the head's z)."""
    model, ref, g = _pair(case)
    seq = case[5]
    d = model.info.d_model
    toks = torch.randint(4, len(_tok()), (2, seq), generator=g)
    pos = int(torch.randint(0, seq, (1,), generator=g))
    head = (int(torch.randint(0, model.n_layers, (1,), generator=g)),
            int(torch.randint(0, model.n_heads, (1,), generator=g)))
    basis = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0].float()
    mu = torch.randn(d, generator=g)
    clean = ref.logits(toks)
    _close(model.full_logits(toks, iv.project_head(model, head, pos, basis, mu, "onto")), clean)
    removed = model.full_logits(toks, iv.project_head(model, head, pos, basis, None, "out"))
    scale_fn = gemma_post_norm_scale if ref.post_norm else None
    eye, zero = torch.eye(d), torch.zeros(d)
    want = ref.logits(toks, [project_head_output(*head, pos, eye, zero, "out", scale_fn)])
    _close(removed, want)
    if not ref.post_norm:  # linear: removing o_h = zeroing z_h
        def zero_head(rows, h=head[1]):
            rows[:, h] = 0
            return rows

        _close(removed, ref.logits(toks, [edit_heads(head[0], pos, zero_head)]))


@_settings(FEW)
@given(cases())
@example(GEMMA3_GQA)
def test_extraction_identity(case):
    """``analyses.extraction.extract_heads`` on raw tokens: Σ_t α_t s̃_t (the reconstruction
    from per-token value signals) equals the head's residual contribution computed from HF's
    o_proj input and weights, and the query row of attention sums to 1."""
    model, ref, g = _pair(case)
    seq = case[5]
    toks = torch.randint(4, len(_tok()), (2, seq), generator=g)
    pos = int(torch.randint(0, seq, (1,), generator=g))
    layer = int(torch.randint(0, model.n_layers, (1,), generator=g))
    h = int(torch.randint(0, model.n_heads, (1,), generator=g))
    res = extract_heads(model, toks, [(layer, h)], query_pos=pos)[(layer, h)]
    assert res.identity_rel_error <= 1e-4
    _close(res.attention.sum(-1), torch.ones(2), 1e-5)
    want = _ref_head_outputs(ref, layer, _o_proj_inputs(ref, toks)[layer][:, pos])[:, h]
    _close(res.reconstruction(), want)
    _close(res.contribution, want)
