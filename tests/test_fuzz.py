"""Property-based fuzzing (hypothesis) of the identities and of the intervention effect over
random tiny architectures: Llama (MHA / GQA), Mistral, Qwen2, GPT-2, Gemma-2 (soft-capping) and
Gemma-3 (post-norms, sliding windows), random prompts and positions.

For every drawn case: per-head outputs (+ bias) sum to the attention block's residual increment;
replacing every head by its own z is a no-op; ``logits_at`` equals the full forward; an injected
vector gives the logits of the same add done with plain PyTorch hooks on a separately built HF
model (the effect identity: the vector reaches the residual stream). The fast profile
(``ADDK_FUZZ_EXAMPLES`` unset: 12 cases) runs in CI; ``ADDK_FUZZ_EXAMPLES=1000 pytest
tests/test_fuzz.py`` is the long profile.
"""

import os

import torch
from hf_reference import Ref, add_after_attention
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addk_interp.hooks import interventions as iv
from addk_interp.hooks.capture import bias_contribution, capture_z, z_to_outputs
from addk_interp.models import from_hf, tiny_tokenizer

N = int(os.environ.get("ADDK_FUZZ_EXAMPLES", "12"))
FAMILIES = ("llama", "mistral", "qwen2", "gpt2", "gemma2", "gemma3")


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


@settings(max_examples=N, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(cases())
def test_identities_and_effect_on_random_architectures(case):
    fam, n_layers, n_heads, n_kv, d_head, seq, seed = case
    tok = tiny_tokenizer()
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
