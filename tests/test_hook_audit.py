"""Hook audit: for every hook name in README's hook table, what it resolves to on each backend,
and that reading it equals the Hugging Face tensor it claims to be (plain PyTorch hooks, no
TransformerLens on the reference side). Also: the toolkit's write sites are never the bridge's
``hook_resid_mid`` alias (the post-attention norm's input, which only the MLP reads).
"""

import pytest
import torch
from conftest import tiny
from hf_reference import Ref
from test_effects import batch_of, reference, rel_err

RTOL = 1e-5

# legacy name -> canonical hook point on the bridge (pre-norm | post-norm families)
BRIDGE_ALIASES = {
    "hook_resid_pre": ("hook_in", "hook_in"),
    "hook_resid_mid": ("ln2.hook_in", "ln2.hook_in"),
    "hook_attn_out": ("attn.hook_out", "ln1_post.hook_out"),
    "hook_resid_post": ("hook_out", "hook_out"),
    "attn.hook_z": ("attn.o.hook_in", "attn.o.hook_in"),
    "attn.hook_v": ("attn.v.hook_out", "attn.v.hook_out"),
    "attn.hook_pattern": ("attn.hook_pattern", "attn.hook_pattern"),
    "attn.hook_attn_scores": ("attn.hook_attn_scores", "attn.hook_attn_scores"),
    "ln1.hook_out": ("ln1.hook_out", "ln1.hook_out"),
}
FAMILIES = ["tiny-llama-gqa", "tiny-mistral", "tiny-qwen2", "tiny-gemma3", "tiny-gemma2", "organism"]


@pytest.mark.parametrize("spec", FAMILIES + ["tiny-gpt2"])
def test_bridge_alias_resolution(spec):
    model = tiny(spec)
    post = int(model.info.post_attn_norm)
    for layer in (0, model.n_layers - 1):
        for legacy, canon in BRIDGE_ALIASES.items():
            got = model.resolve_hook(f"blocks.{layer}.{legacy}")
            assert got == f"blocks.{layer}.{canon[post]}", (legacy, got)
        # the write sites the toolkit uses
        assert model.resolve_hook(model.residual_hook(layer, "resid_mid")) == (
            f"blocks.{layer}.{BRIDGE_ALIASES['hook_attn_out'][post]}"
        )
        assert model.resolve_hook(model.residual_hook(layer, "resid_pre")) == f"blocks.{layer}.hook_in"
        assert model.resolve_hook(model.residual_hook(layer, "resid_post")) == f"blocks.{layer}.hook_out"
        for site in ("resid_pre", "resid_mid", "resid_post"):
            assert "ln2.hook_in" not in model.resolve_hook(model.residual_hook(layer, site))


def test_classic_hooked_names_are_themselves():
    model = tiny("tiny-hooked")
    for legacy in ("hook_resid_pre", "hook_resid_mid", "hook_attn_out", "hook_resid_post", "attn.hook_z"):
        assert model.resolve_hook(f"blocks.1.{legacy}") == f"blocks.1.{legacy}"
    assert model.residual_hook(1, "resid_mid") == "blocks.1.hook_resid_mid"


def _hf_reads(ref: Ref, tokens, layer):
    """Tensors read off the HF modules with plain hooks in one clean run."""
    got = {}
    lay = ref.layers[layer]
    attn = ref.attn(layer)
    hs = []

    def keep(name, first=True):
        def fn(mod, inp, out):
            got[name] = (out[0] if (first and isinstance(out, tuple)) else out).detach()

        return fn

    hs.append(ref.o_proj(layer).register_forward_pre_hook(lambda m, a: got.__setitem__("o_in", a[0].detach())))
    hs.append(ref.attn_contribution_module(layer).register_forward_hook(keep("attn_out")))
    hs.append(attn.register_forward_hook(lambda m, i, o: got.__setitem__("pattern", o[1].detach())))
    hs.append(attn.v_proj.register_forward_hook(keep("v")))
    hs.append(lay.input_layernorm.register_forward_hook(keep("ln1")))
    hs.append(ref.final_norm.register_forward_hook(keep("ln_final")))
    hs.append(
        lay.register_forward_pre_hook(
            lambda m, a, k: got.__setitem__("resid_pre", (a[0] if a else k["hidden_states"]).detach()),
            with_kwargs=True,
        )
    )
    hs.append(lay.register_forward_hook(keep("resid_post")))
    try:
        with torch.no_grad():
            ref.m(tokens, output_attentions=True)
    finally:
        for h in hs:
            h.remove()
    return got


@pytest.mark.parametrize("spec", FAMILIES)
def test_reading_each_hook_equals_the_hf_tensor(spec):
    model, ref = tiny(spec), reference(spec)
    b = batch_of(model)
    toks = b.tokens
    layer = 1
    hf = _hf_reads(ref, toks, layer)
    names = {
        "resid_pre": f"blocks.{layer}.hook_resid_pre",
        "resid_mid": f"blocks.{layer}.hook_resid_mid",
        "attn_out": f"blocks.{layer}.hook_attn_out",
        "resid_post": f"blocks.{layer}.hook_resid_post",
        "z": f"blocks.{layer}.attn.hook_z",
        "v": f"blocks.{layer}.attn.hook_v",
        "pattern": f"blocks.{layer}.attn.hook_pattern",
        "scores": f"blocks.{layer}.attn.hook_attn_scores",
        "ln1": f"blocks.{layer}.ln1.hook_out",
    }
    acts = model.run_collect(toks, list(names.values()))
    a = {k: acts[n] for k, n in names.items()}
    bsz, pos = toks.shape
    assert rel_err(a["resid_pre"], hf["resid_pre"]) <= RTOL
    assert rel_err(a["attn_out"], hf["attn_out"]) <= RTOL  # the block's additive contribution
    # reading resid_mid gives the real residual after attention (writing it would not edit it)
    assert rel_err(a["resid_mid"], hf["resid_pre"] + hf["attn_out"]) <= RTOL
    assert rel_err(a["resid_post"], hf["resid_post"]) <= RTOL
    assert rel_err(a["z"].reshape(bsz, pos, -1), hf["o_in"]) <= RTOL
    assert a["z"].shape == (bsz, pos, model.n_heads, model.info.d_head)
    v = hf["v"].reshape(bsz, pos, model.info.n_kv_heads, model.info.d_head)
    assert a["v"].shape == v.shape and rel_err(a["v"], v) <= RTOL
    assert a["pattern"].shape == hf["pattern"].shape and rel_err(a["pattern"], hf["pattern"]) <= RTOL
    # scores are pre-softmax (after scaling and mask): their softmax is the pattern
    assert rel_err(torch.softmax(a["scores"].float(), -1), hf["pattern"]) <= 1e-4
    assert rel_err(a["ln1"], hf["ln1"]) <= RTOL
    # the final norm's output (what logits_at unembeds) equals HF's
    captured = {}
    h = model.final_norm().register_forward_hook(lambda m, i, o: captured.__setitem__("x", o))
    try:
        with torch.no_grad():
            model.model(toks)
    finally:
        h.remove()
    x = captured["x"][0] if isinstance(captured["x"], tuple) else captured["x"]
    assert rel_err(x, hf["ln_final"]) <= RTOL
