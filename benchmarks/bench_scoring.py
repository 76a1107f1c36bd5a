"""Scoring benchmark (issue: foundation): teacher-forced exact match vs greedy decoding, and
last-position logits vs full logits, on one model in one run.

    python benchmarks/bench_scoring.py --model default
"""

from __future__ import annotations

import argparse
import time

import torch
from common import add_batches, timed

from addk_interp.core.scoring import greedy_correct, score_batch
from addk_interp.models.loading import load_model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--n", type=int, default=16, help="examples per task (4 tasks)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    model = load_model(args.model)
    ex, batches = add_batches(model, n_per_task=args.n)
    n = len(ex)

    t = time.perf_counter()
    tf = {i: bool(c) for b in batches for i, c in zip(b.indices, score_batch(model, b).correct)}
    t_tf = time.perf_counter() - t
    t = time.perf_counter()
    gr = {i: bool(c) for b in batches for i, c in zip(b.indices, greedy_correct(model, b))}
    t_gr = time.perf_counter() - t
    agree = sum(tf[i] == gr[i] for i in tf)

    b = max(batches, key=len)
    last = [b.tokens.shape[1] - 1]
    t_last, _ = timed(lambda: model.logits_at(b.tokens, last))
    t_full, _ = timed(lambda: model.full_logits(b.tokens))
    print(
        f"model {model.info.name}; {n} prompts (5-shot add-k), batch {len(b)}×{b.tokens.shape[1]}"
    )
    print("| measurement | value |")
    print("|---|---|")
    print(f"| teacher-forced scoring | {n / t_tf:.1f} prompts/s |")
    print(f"| greedy decoding (reference) | {n / t_gr:.1f} prompts/s |")
    print(f"| speed-up | {t_gr / t_tf:.2f}× |")
    print(f"| agreement TF vs greedy | {agree}/{n} (accuracy {sum(tf.values()) / n:.3f}) |")
    print(f"| last-position logits forward | {t_last * 1000:.0f} ms |")
    print(f"| full-logits forward | {t_full * 1000:.0f} ms |")
    print(f"| full / last | {t_full / t_last:.2f}× |")


if __name__ == "__main__":
    main()
