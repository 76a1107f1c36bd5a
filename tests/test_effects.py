"""Effect tests: every write the toolkit makes equals the same edit done with plain PyTorch hooks
on the Hugging Face modules (``hf_reference.Ref``), with non-zero edits of realistic norm.

Checked per family (pre-norm Llama MHA/GQA, Mistral, Qwen2, GPT-2, post-norm Gemma-2/3, the
organism; Gemma-3-270m and SmolLM2-135M under the integration marker): final logits agree to
≤ 1e-4 relative; the next block reads the edited residual stream; the edit is not a no-op.
"""

import pytest
import torch
from conftest import tiny
from hf_reference import (
    Ref,
    add_after_attention,
    add_to_block_input,
    edit_heads,
    gemma_post_norm_scale,
    greedy,
    project_head_output,
)

from addk_interp.core.errors import AddkError
from addk_interp.core.prompts import encode_examples, make_batches
from addk_interp.core.scoring import greedy_decode
from addk_interp.core.tasks import arithmetic_family, sample_family
from addk_interp.hooks import interventions as iv
from addk_interp.hooks.runners import InjectionRunner

BRIDGED = [
    "tiny-llama",
    "tiny-llama-gqa",
    "tiny-mistral",
    "tiny-qwen2",
    "tiny-gemma3",
    "tiny-gemma2",
    "tiny-gpt2",
    "organism",
]
RTOL = 1e-4
_REFS: dict = {}


def reference(spec) -> Ref:
    """A separately built HF model with the same weights (never the bridge's own copy)."""
    if spec not in _REFS:
        if spec == "organism":
            from addk_interp.organism import load_organism

            hf, _ = load_organism()
        else:
            from addk_interp.models.tiny import tiny_hf_model, tiny_tokenizer

            hf = tiny_hf_model(spec, len(tiny_tokenizer()), 0)
        _REFS[spec] = Ref(hf)
    return _REFS[spec]


def model_of(spec):
    return tiny(spec)


def batch_of(model, shots=3, seed=0):
    fam = arithmetic_family("add", ks=[3, 7])
    ex = sample_family(fam, fam.train, 24, shots, seed=seed, kind="test")
    return max(make_batches(encode_examples(model, ex), 64), key=len)


def rel_err(a, b) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-12))


def realistic(ref, tokens, layer, pos, scale=2.0, seed=0):
    """A random vector with `scale` × the norm of the residual stream entering layer+1."""
    rec = ref.record(tokens)
    nxt = rec[("resid_pre", layer + 1)] if layer + 1 < len(ref.layers) else rec[("final_in", 0)]
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(nxt.shape[-1], generator=g)
    return v / v.norm() * nxt[:, pos].norm(dim=-1).mean() * scale


@pytest.mark.parametrize("spec", BRIDGED)
def test_inject_resid_mid_equals_reference(spec):
    model, ref = model_of(spec), reference(spec)
    b = batch_of(model)
    toks, q = b.tokens, b.query_pos
    for layer in (0, model.n_layers - 2):
        v = realistic(ref, toks, layer, q)
        got = model.full_logits(toks, iv.inject(model, v, q, layer))
        want = ref.logits(toks, [add_after_attention(layer, q, v)])
        clean = ref.logits(toks)
        assert rel_err(want, clean) > 1e-2, "the edit must change the logits"
        assert rel_err(got, want) <= RTOL
        # the next block reads the edited stream: its input moved by v + the MLP's own change
        rec0 = ref.record(toks)
        rec1 = ref.record(toks, [add_after_attention(layer, q, v)])
        carried = (rec1[("resid_pre", layer + 1)] - rec0[("resid_pre", layer + 1)]) - (
            rec1[("mlp", layer)] - rec0[("mlp", layer)]
        )
        assert torch.allclose(carried[:, q], v.expand_as(carried[:, q]), atol=1e-4 * v.norm())
        others = torch.cat([carried[:, :q], carried[:, q + 1 :]], dim=1)
        assert others.abs().max() <= 1e-4 * v.norm()
        # ... and the toolkit's next-block input is that same tensor
        name = model.residual_hook(layer + 1, "resid_pre")
        acts = model.run_collect(toks, [name], fwd_hooks=iv.inject(model, v, q, layer))
        assert rel_err(acts[name], rec1[("resid_pre", layer + 1)]) <= RTOL


@pytest.mark.parametrize("spec", ["tiny-llama-gqa", "tiny-gemma3", "tiny-gpt2"])
def test_inject_resid_pre_and_post_equal_reference(spec):
    model, ref = model_of(spec), reference(spec)
    b = batch_of(model)
    toks, q = b.tokens, b.query_pos
    v = realistic(ref, toks, 0, q)
    want = ref.logits(toks, [add_to_block_input(1, q, v)])
    for hooks in (iv.inject(model, v, q, 1, "resid_pre"), iv.inject(model, v, q, 0, "resid_post")):
        assert rel_err(model.full_logits(toks, hooks), want) <= RTOL
    assert rel_err(want, ref.logits(toks)) > 1e-2


def _heads(model):
    return [(0, 1), (1, 0), (1, model.n_heads - 1)]


@pytest.mark.parametrize("spec", BRIDGED)
def test_head_edits_equal_reference(spec):
    model, ref = model_of(spec), reference(spec)
    b = batch_of(model)
    toks, q = b.tokens, b.query_pos
    g = torch.Generator().manual_seed(1)
    L, H, dh = model.n_layers, model.n_heads, model.info.d_head
    z_src = torch.randn(len(toks), L, H, dh, generator=g) * 2.0
    z_mean = torch.randn(L, H, dh, generator=g)
    gate = torch.rand(L, H, generator=g)
    heads = _heads(model)
    clean = ref.logits(toks)

    def ref_edit(layer_fn):
        return [edit_heads(layer, q, (lambda rows, la=layer: layer_fn(la, rows))) for layer in range(L)]

    cases = []
    sel = {la: [h for (l2, h) in heads if l2 == la] for la in range(L)}

    def replace(la, rows, src):
        rows = rows.clone()
        if sel[la]:
            rows[:, sel[la]] = src(la)[..., sel[la], :].expand_as(rows[:, sel[la]])
        return rows

    cases.append((iv.replace_heads(model, heads, q, z_src), ref_edit(lambda la, r: replace(la, r, lambda x: z_src[:, x]))))
    cases.append((iv.mean_ablate(model, heads, q, z_mean), ref_edit(lambda la, r: replace(la, r, lambda x: z_mean[x]))))

    def scale(la, rows):
        rows = rows.clone()
        if sel[la]:
            rows[:, sel[la]] = rows[:, sel[la]] * 2.5
        return rows

    cases.append((iv.scale_heads(model, heads, q, 2.5), ref_edit(scale)))

    def gated(la, rows):
        gg = gate[la][:, None]
        return gg * z_src[:, la] + (1 - gg) * rows

    cases.append((iv.gate_heads(model, gate, q, z_src), ref_edit(gated)))
    for hooks, edits in cases:
        want = ref.logits(toks, edits)
        assert rel_err(want, clean) > 1e-3
        assert rel_err(model.full_logits(toks, hooks), want) <= RTOL


@pytest.mark.parametrize("spec", BRIDGED)
@pytest.mark.parametrize("mode", ["onto", "out"])
def test_project_head_equals_reference(spec, mode):
    model, ref = model_of(spec), reference(spec)
    b = batch_of(model)
    toks, q = b.tokens, b.query_pos
    g = torch.Generator().manual_seed(2)
    d = model.info.d_model
    basis, _ = torch.linalg.qr(torch.randn(d, 3, generator=g))
    mean = torch.randn(d, generator=g)
    layer, head = 1, 1
    scale_fn = gemma_post_norm_scale if ref.post_norm else None
    want = ref.logits(toks, [project_head_output(layer, head, q, basis, mean, mode, scale_fn)])
    assert rel_err(want, ref.logits(toks)) > 1e-3
    got = model.full_logits(toks, iv.project_head(model, (layer, head), q, basis, mean, mode))
    assert rel_err(got, want) <= RTOL


@pytest.mark.parametrize("spec", ["tiny-llama-gqa", "tiny-gemma3", "tiny-gpt2", "organism"])
def test_upper_layer_forward_equals_reference(spec):
    """The gate trainer's partial forward (cached block input, blocks ℓ.. only, right-padded
    mixed shapes) gives the reference logits of a real residual-stream add."""
    model, ref = model_of(spec), reference(spec)
    fam = arithmetic_family("add", ks=[3, 7])
    ex = sample_family(fam, fam.train, 12, 0, seed=3, kind="test")
    layer = 1
    runner = InjectionRunner(model, ex, layer=layer, path="upper", batch_size=8)
    assert runner.path == "upper"
    g = torch.Generator().manual_seed(4)
    items = torch.arange(len(ex))
    vecs = torch.randn(len(ex), model.info.d_model, generator=g) * 8.0
    al = runner.answer_logits(items, vecs)
    for grp in runner.groups:
        for r in range(len(grp)):
            i = int(grp.indices[r])
            mine = al.logits[al.owner == i]
            toks = grp.tokens[r : r + 1]
            want = ref.logits(toks, [add_after_attention(layer, grp.query_pos, vecs[i])])
            want = want[0, grp.positions(grp.answer_len)]
            assert rel_err(mine, want) <= RTOL


@pytest.mark.parametrize("spec", ["tiny-llama", "tiny-gemma3", "tiny-gpt2", "organism"])
def test_pinned_greedy_decoding_equals_reference(spec):
    model, ref = model_of(spec), reference(spec)
    b = batch_of(model)
    q = b.query_pos
    v = realistic(ref, b.prompt_tokens, 1, q, scale=3.0, seed=5)
    n = b.answer_len + 2
    for hooks, edits in (
        (iv.inject(model, v, q, 1), [add_after_attention(1, q, v)]),
        (iv.scale_heads(model, [(1, 0), (1, 1)], q, 3.0), None),
    ):
        got = greedy_decode(model, b, n, fwd_hooks=hooks)
        if edits is None:

            def sc(rows):
                rows = rows.clone()
                rows[:, [0, 1]] *= 3.0
                return rows

            edits = [edit_heads(1, q, sc)]
        want = greedy(ref, b.prompt_tokens, n, edits)
        assert torch.equal(got, want)


def test_classic_hooked_inject_equals_module_hook():
    """Classic HookedTransformer: a plain torch forward hook on the attention module (whose
    output the block adds to the residual stream) is the reference."""
    model = tiny("tiny-hooked")
    b = batch_of(model)
    toks, q = b.tokens, b.query_pos
    v = torch.linspace(-1, 1, model.info.d_model) * 6.0

    def add(mod, inp, out):
        out = out.clone()
        out[:, q] += v
        return out

    h = model.model.blocks[1].attn.register_forward_hook(add)
    try:
        with torch.no_grad():
            want = model.model(toks)
    finally:
        h.remove()
    got = model.full_logits(toks, iv.inject(model, v, q, 1))
    assert rel_err(want, model.full_logits(toks)) > 1e-2
    assert rel_err(got, want) <= RTOL


def test_parallel_attention_refuses_resid_mid():
    model = tiny("tiny-neox")
    assert model.parallel_attn
    with pytest.raises(AddkError, match="parallel attention"):
        iv.inject(model, torch.ones(model.info.d_model), 3, 1)
    # resid_pre / resid_post stay available and are real edits
    b = batch_of(model)
    v = torch.linspace(-1, 1, model.info.d_model) * 5.0
    a = model.full_logits(b.tokens, iv.inject(model, v, b.query_pos, 1, "resid_pre"))
    c = model.full_logits(b.tokens, iv.inject(model, v, b.query_pos, 0, "resid_post"))
    assert rel_err(a, c) <= RTOL and rel_err(a, model.full_logits(b.tokens)) > 1e-2


def test_bad_positions_and_layers():
    model = tiny("tiny-llama")
    b = batch_of(model)
    v = torch.ones(model.info.d_model)
    with pytest.raises(AddkError, match="outside the prompt"):
        model.full_logits(b.tokens, iv.inject(model, v, b.tokens.shape[1] + 3, 1))
    with pytest.raises(AddkError, match="out of range"):
        iv.inject(model, v, 1, 99)
    with pytest.raises(AddkError, match="NaN"):
        iv.inject(model, v * float("nan"), 1, 1)
    with pytest.raises(AddkError, match="twice"):
        iv.scale_heads(model, [(1, 1), (1, 1)], 1, 2.0)
    with pytest.raises(AddkError, match="finite"):
        iv.scale_heads(model, [(1, 1)], 1, float("inf"))
    with pytest.raises(AddkError, match="z values must be"):
        iv.replace_heads(model, [(1, 1)], 1, torch.zeros(3, 4, 5))


# ---------------------------------------------------------------------- the offline models
@pytest.mark.integration
@pytest.mark.parametrize("spec", ["default", "smollm2-135m"])
def test_real_models_inject_and_head_edit_equal_reference(spec):
    from addk_interp.models.loading import (
        GEMMA_GGUF_SHA256,
        SMOLLM2_GGUF_SHA256,
        _gemma_gguf_path,
        _hf_dir_from_gguf,
        _load_hf_dir,
        _smollm2_gguf_path,
    )

    model = tiny(spec)
    path, sha = (
        (_gemma_gguf_path(), GEMMA_GGUF_SHA256)
        if spec == "default"
        else (_smollm2_gguf_path(), SMOLLM2_GGUF_SHA256)
    )
    hf, _ = _load_hf_dir(_hf_dir_from_gguf(path, sha)[0], torch.float32)
    ref = Ref(hf)
    b = batch_of(model, shots=2)
    toks, q = b.tokens[:4], b.query_pos
    layer = model.n_layers // 3
    v = realistic(ref, toks, layer, q)
    want = ref.logits(toks, [add_after_attention(layer, q, v)])
    assert rel_err(want, ref.logits(toks)) > 1e-3
    assert rel_err(model.full_logits(toks, iv.inject(model, v, q, layer)), want) <= RTOL

    def sc(rows):
        rows = rows.clone()
        rows[:, 0] *= 3.0
        return rows

    want = ref.logits(toks, [edit_heads(layer, q, sc)])
    got = model.full_logits(toks, iv.scale_heads(model, [(layer, 0)], q, 3.0))
    assert rel_err(got, want) <= RTOL
    d = model.info.d_model
    basis, _ = torch.linalg.qr(torch.randn(d, 4, generator=torch.Generator().manual_seed(0)))
    scale_fn = gemma_post_norm_scale if ref.post_norm else None
    want = ref.logits(toks, [project_head_output(layer, 0, q, basis, torch.zeros(d), "out", scale_fn)])
    got = model.full_logits(toks, iv.project_head(model, (layer, 0), q, basis, None, "out"))
    assert rel_err(got, want) <= RTOL


@pytest.mark.parametrize("spec", [*BRIDGED, "tiny-hooked", "tiny-neox"])
def test_logits_at_equals_the_full_forward(spec):
    """Logits at chosen positions (final norm + unembedding of selected rows, soft-capping
    included: Gemma-2) equal the full forward's and HF's own logits."""
    model = model_of(spec)
    b = batch_of(model)
    pos = [1, b.query_pos, b.tokens.shape[1] - 1]
    full = model.full_logits(b.tokens)
    assert rel_err(model.logits_at(b.tokens, pos), full[:, pos]) <= 1e-5
    if spec in BRIDGED:
        assert rel_err(full, reference(spec).logits(b.tokens)) <= 1e-5
    if spec == "tiny-gemma2":
        assert model.logit_softcap == 5.0 and full.abs().max() < 5.0


@pytest.mark.parametrize("spec", ["tiny-llama-gqa", "tiny-gemma3", "tiny-hooked"])
def test_transformer_lens_idioms(spec):
    """run_with_cache / run_with_hooks / to_tokens / to_str_tokens delegate with the toolkit's
    semantics: the cache equals run_collect, hooks edit the residual like inject."""
    model = model_of(spec)
    toks = model.to_tokens("12->15#3->")
    assert model.to_str_tokens(toks)[0] == model.tokenizer.decode([model.bos_id()])
    assert "".join(model.to_str_tokens("12->15#3->")[1:]) == "12->15#3->"
    logits, cache = model.run_with_cache(toks, names_filter=lambda n: n.endswith("hook_pattern"))
    ref = model.run_collect(toks, ["blocks.1.attn.hook_pattern"])["blocks.1.attn.hook_pattern"]
    assert torch.allclose(cache["pattern", 1], ref) and torch.allclose(logits, model.full_logits(toks))
    v = torch.linspace(-1, 1, model.info.d_model) * 5
    hooks = iv.inject(model, v, toks.shape[1] - 1, 1)
    assert torch.equal(model.run_with_hooks(toks, hooks), model.full_logits(toks, hooks))
    assert rel_err(model.run_with_hooks(toks, hooks), logits) > 1e-3


def test_api_refuses_positions_outside_and_nonfinite_fv():
    from addk_interp.hooks.capture import head_outputs
    from addk_interp.hooks.fv import function_vector

    model = model_of("tiny-llama")
    toks = model.to_tokens("12->15#3->")
    with pytest.raises(AddkError, match="outside the prompt"):
        head_outputs(model, toks, toks.shape[1] + 2)
    src = torch.ones(model.n_layers, model.n_heads, model.info.d_model)
    with pytest.raises(AddkError, match="coefficients contain NaN"):
        function_vector(src, [(0, 1)], [float("nan")])
    with pytest.raises(AddkError, match="head means contain NaN"):
        function_vector(src * float("inf"))
