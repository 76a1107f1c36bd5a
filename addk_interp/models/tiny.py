"""Tiny random models built from configs (tests, fuzzing, examples): Llama (MHA / GQA), Mistral,
Qwen2, Gemma-2/3, GPT-2, GPT-NeoX and a classic HookedTransformer, with a small character-level
tokenizer. Never downloads. Cost: milliseconds.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import torch
from torch import Tensor

from addk_interp._version import __version__
from addk_interp.core.errors import AddkError
from addk_interp.core.store import cache_dir

# ====================================================================== tiny models
_TINY_CHARS = (
    list("0123456789")
    + list("->#:|()\n ?=,.+*")
    + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    + [chr(c) for c in range(ord("a"), ord("z") + 1)]
)



def tiny_tokenizer():
    """A character-level (digit-split) fast tokenizer, saved to and loaded from the cache."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = cache_dir() / f"tiny-tokenizer-2-v{__version__}"
    if not (path / "tokenizer.json").exists():
        vocab = {"<bos>": 0, "<eos>": 1, "<pad>": 2, "<unk>": 3}
        for ch in _TINY_CHARS:
            vocab.setdefault(ch, len(vocab))
        tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
        tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
        tk.decoder = decoders.Fuse()
        tok = PreTrainedTokenizerFast(
            tokenizer_object=tk,
            bos_token="<bos>",
            eos_token="<eos>",
            pad_token="<pad>",
            unk_token="<unk>",
        )
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tok.save_pretrained(tmp)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    return AutoTokenizer.from_pretrained(str(path))



def _perturb(model, which: Callable[[str, Tensor], bool], std: float) -> None:
    """Redraw the parameters ``which`` selects from N(0, std²) (seeded by the caller), so tests
    of norms and biases cannot pass on their default values (ones / zeros)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if which(name, p):
                p.normal_(0, std)



# the shape every tiny HF model shares: d_model 64, 3 layers, 4 heads (d_head 16), MLP 128
_SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=512,
    initializer_range=0.2,
)


def tiny_hf_model(kind: str, vocab: int, seed: int = 0, dtype=torch.float32):
    """A random tiny HF model of family ``kind`` (``BUILTIN_SPECS``' tiny-* entries), seeded;
    norm gains and biases are redrawn where a family has them, so no test passes on defaults."""
    import transformers as tf

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, **_SHAPE)
    if kind in ("tiny-llama", "tiny-llama-gqa"):
        kv = 4 if kind == "tiny-llama" else 2
        model = tf.LlamaForCausalLM(
            tf.LlamaConfig(**common, num_key_value_heads=kv, architectures=["LlamaForCausalLM"])
        )
    elif kind == "tiny-gemma3":
        model = tf.Gemma3ForCausalLM(
            tf.Gemma3TextConfig(
                **common,
                num_key_value_heads=1,
                head_dim=16,
                sliding_window=16,
                layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                architectures=["Gemma3ForCausalLM"],
            )
        )
        _perturb(model, lambda name, p: "norm" in name, 0.3)  # non-trivial norm gains
    elif kind in ("tiny-mistral", "tiny-qwen2"):
        cls, conf = (
            (tf.MistralForCausalLM, tf.MistralConfig)
            if kind == "tiny-mistral"
            else (tf.Qwen2ForCausalLM, tf.Qwen2Config)
        )
        model = cls(conf(**common, num_key_value_heads=2, architectures=[cls.__name__]))
    elif kind == "tiny-gemma2":
        model = tf.Gemma2ForCausalLM(
            tf.Gemma2Config(
                **common,
                num_key_value_heads=2,
                head_dim=16,
                sliding_window=16,
                final_logit_softcapping=5.0,
                attn_logit_softcapping=20.0,
                architectures=["Gemma2ForCausalLM"],
            )
        )
        _perturb(model, lambda name, p: "norm" in name, 0.3)
    elif kind == "tiny-gpt2":
        model = tf.GPT2LMHeadModel(
            tf.GPT2Config(
                vocab_size=vocab,
                n_embd=64,
                n_layer=3,
                n_head=4,
                n_positions=512,
                initializer_range=0.2,
                architectures=["GPT2LMHeadModel"],
            )
        )
        _perturb(model, lambda name, p: name.endswith("bias") and p.ndim == 1, 0.2)  # biases ≠ 0
    elif kind == "tiny-neox":
        model = tf.GPTNeoXForCausalLM(
            tf.GPTNeoXConfig(
                **common, use_parallel_residual=True, architectures=["GPTNeoXForCausalLM"]
            )
        )
    else:
        raise AddkError(f"unknown tiny model {kind!r}")
    return model.to(dtype).eval()


def tiny_hooked_transformer(seed: int = 0, dtype=torch.float32):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    tok = tiny_tokenizer()
    cfg = HookedTransformerConfig(
        n_layers=3,
        d_model=64,
        n_heads=4,
        n_key_value_heads=2,
        d_head=16,
        d_mlp=128,
        d_vocab=len(tok),
        n_ctx=512,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        gated_mlp=True,
        seed=seed,
        dtype=dtype,
        default_prepend_bos=True,
        initializer_range=0.2,
    )
    model = HookedTransformer(cfg, tokenizer=tok, move_to_device=False)
    return model.eval()
