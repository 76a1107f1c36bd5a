"""Capture benchmark (issue: hooks): last-position head outputs from ``hook_z`` · W_O vs
(a) a forward returning last-position logits only, on the same batch, and (b) the original
pipeline's approach (spec §9.5): a classic HookedTransformer with ``use_attn_result=True``,
one prompt at a time, reading ``hook_result`` at the last token. Both give the same per-task
means of the raw head outputs z·W_O (max |Δ| printed).

    python benchmarks/bench_capture.py --model default
"""

from __future__ import annotations

import argparse
import time

import torch
from common import add_batches, timed

from addk_interp.core.store import cache_dir
from addk_interp.hooks.capture import capture_z
from addk_interp.models.loading import _load_hf_dir, load_model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32, help="examples per task (4 tasks)")
    ap.add_argument("--n-orig", type=int, default=24, help="prompts run the original way")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    model = load_model("default")
    ex, batches = add_batches(model, n_per_task=args.n)
    b = max(batches, key=len)
    q = b.query_pos
    toks = b.prompt_tokens
    t_cap, z = timed(lambda: capture_z(model, toks, q))
    t_fwd, _ = timed(lambda: model.logits_at(toks, [q]))

    # ours over all prompts: raw per-head outputs z·W_O at the query position, batches
    # bucketed by prompt length only (as capture_means does)
    from addk_interp.core.prompts import encode_examples, make_batches

    cap_batches = make_batches(encode_examples(model, ex), 16, prompt_only=True)
    t = time.perf_counter()
    ours = {}
    for bb in cap_batches:
        zz = capture_z(model, bb.prompt_tokens, bb.query_pos)[:, 0]
        out = torch.einsum("blhd,lhdm->blhm", zz, model.W_O)
        for j, i in enumerate(bb.indices):
            ours[i] = out[j]
    t_ours = time.perf_counter() - t

    # original approach: HookedTransformer + use_attn_result, one prompt at a time
    from transformer_lens import HookedTransformer

    hf, tok = _load_hf_dir(cache_dir() / f"hf-{model.info.source['sha256'][:16]}", torch.float32)
    ht = HookedTransformer.from_pretrained_no_processing(
        "google/gemma-3-270m", hf_model=hf, tokenizer=tok, dtype=torch.float32, device="cpu"
    )
    ht.cfg.use_attn_result = True
    ht.setup()
    names = [f"blocks.{i}.attn.hook_result" for i in range(ht.cfg.n_layers)]
    subset = sorted(ours)[: args.n_orig]
    enc = encode_examples(model, ex)
    t = time.perf_counter()
    rows = []
    for i in subset:
        one = torch.tensor([list(enc[i].prompt_ids)])
        _, cache = ht.run_with_cache(one, names_filter=lambda n: n in names)
        rows.append(torch.stack([cache[n][0, -1] for n in names]))
    orig_mean = torch.stack(rows).mean(0)
    t_orig = time.perf_counter() - t
    ours_mean = torch.stack([ours[i] for i in subset]).mean(0)

    n = len(ex)
    rate_ours, rate_orig = n / t_ours, len(subset) / t_orig
    print(f"model {model.info.name}; batch {len(b)}×{toks.shape[1]}")
    print("| measurement | value |")
    print("|---|---|")
    print(f"| capture (hook_z·W_O, last position) | {t_cap * 1000:.0f} ms |")
    print(f"| forward with last-position logits | {t_fwd * 1000:.0f} ms |")
    print(f"| capture / forward | {t_cap / t_fwd:.2f} |")
    print(f"| ours (batched, {n} prompts) | {rate_ours:.2f} prompts/s |")
    print(
        f"| original approach (1 prompt, use_attn_result, {len(subset)} prompts) | "
        f"{rate_orig:.2f} prompts/s |"
    )
    print(f"| speed-up (throughput) | {rate_ours / rate_orig:.1f}× |")
    print(
        f"| max abs diff of the means over the same {len(subset)} prompts | "
        f"{(ours_mean - orig_mean).abs().max().item():.2e} |"
    )
    print(
        f"| retained per batch (capture) | {z.numel() * 4 / 1e6:.2f} MB (batch×layer×head×d_head) |"
    )


if __name__ == "__main__":
    main()
