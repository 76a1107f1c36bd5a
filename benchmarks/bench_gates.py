"""Benchmark: one gate-training step (coef mode) vs a naive full forward + backward.

Step of the method: paper_spec §3.3 (gate training). The training step caches the input of the
injection block once and then runs only the blocks above it, unembedding the answer positions
only (``addk_interp.localize.gates``). The naive step runs the whole hooked model on the same
mini-batch, takes log-softmax logits at every position and back-propagates the same NLL. Both
losses are compared (they must agree) and the time ratio is printed (target ≤ 0.5 on the
default model, Gemma-3-270m).

Usage: ``python benchmarks/bench_gates.py [--model default] [--batch B] [--repeats 3]``.
Cost: model load + a small mean capture + (1 + repeats) × (both steps); about a minute on the
default model with one thread.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import timed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--batch", type=int, default=None, help="default: the preset's batch size")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from dataclasses import replace

    from addk_interp.core.tasks import arithmetic_family, sample_family
    from addk_interp.hooks.capture import capture_means
    from addk_interp.hooks.interventions import default_injection_layer, inject
    from addk_interp.localize.gates import (
        GateProblem,
        gate_config,
        gate_training_examples,
        task_vectors,
        train_step,
    )
    from addk_interp.models.loading import load_model

    t0 = time.time()
    model = load_model(args.model)
    t_load = time.time() - t0
    fam = arithmetic_family("add")
    means = capture_means(
        model, sample_family(fam, fam.train, 2, 5, seed=42, kind="activation"), batch_size=32
    )
    cfg = gate_config("default", layer=default_injection_layer(model.n_layers))
    if args.batch:
        cfg = replace(cfg, batch_size=args.batch)
    examples = gate_training_examples(fam, cfg)
    t0 = time.time()
    problem = GateProblem(model, examples, means, cfg)
    t_prep = time.time() - t0
    items = torch.randperm(len(examples), generator=torch.Generator().manual_seed(0))
    items = items[: cfg.batch_size]

    def split(items):
        r = problem.runner
        gi, ri = r.item_group[items], r.item_row[items]
        return [(r.groups[g], ri[gi == g]) for g in torch.unique(gi).tolist()]

    def fast_step():
        param = torch.rand(
            model.n_layers, model.n_heads, generator=torch.Generator().manual_seed(1)
        )
        param.requires_grad_(True)
        opt = torch.optim.AdamW([param], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=0)
        return train_step(problem, param, opt, items)["nll"]

    def naive_step():
        param = torch.rand(
            model.n_layers, model.n_heads, generator=torch.Generator().manual_seed(1)
        )
        param.requires_grad_(True)
        b = len(items)
        nll_total = 0.0
        for group, rows in split(items):
            ex = [examples[i] for i in group.indices[rows].tolist()]
            vec = task_vectors(means, ex, param)
            hooks = inject(model, vec, group.query_pos, cfg.layer, cfg.site)
            logits = model.full_logits(group.tokens[rows], hooks)
            logp = torch.log_softmax(logits.float(), dim=-1)
            pos = group.positions(group.answer_len)
            lp = logp[:, pos].gather(-1, group.answer_ids[rows].unsqueeze(-1)).squeeze(-1)
            nll = -lp.sum()
            (nll / b).backward()
            nll_total += float(nll.detach())
        return nll_total / b

    t_fast, nll_fast = timed(fast_step, args.repeats)
    t_naive, nll_naive = timed(naive_step, args.repeats)
    shapes = sorted({(g.prompt_len, g.answer_len) for g, _ in split(items)})
    print(
        f"model {model.info.name}: {model.n_layers} layers x {model.n_heads} heads, "
        f"injection layer {cfg.layer}, forward path {problem.path}"
    )
    print(f"load {t_load:.1f} s, cache {len(examples)} training prompts {t_prep:.1f} s")
    print(f"batch {len(items)} prompts in {len(shapes)} shape groups (P, A): {shapes}")
    print(f"fast step  {t_fast:.3f} s  (nll {nll_fast:.6f}; best of {args.repeats})")
    print(f"naive step {t_naive:.3f} s  (nll {nll_naive:.6f}; best of {args.repeats})")
    print(f"ratio fast/naive = {t_fast / t_naive:.3f}  (target <= 0.5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
