"""AIE baseline (Todd et al.): rank heads by average indirect effect, evaluate the top-k FV.

Step of the method: docs/method.md §4.7 (the comparison baseline for the selected set).

- Corrupted prompts: n-shot prompts of the training tasks (kind ``aie_corrupted``, 25 per task)
  whose demonstration labels are permuted within the prompt, y_i ← y_π(i), with π drawn up to
  ``max_tries`` (20) times and the draw with the fewest fixed points (y_π(i) = y_i) kept
  (``corrupt_labels``; seeded per example).
- CIE(l, h | t) = mean over corrupted prompts p of task t of
  P(y₁ | p, z_{l,h}[q] ← z̄_t[l,h]) − P(y₁ | p), where y₁ is the first answer token, q the query
  position, z̄_t the task's mean ``hook_z`` from clean n-shot prompts (``HeadMeans.z_means``)
  and P a float32 softmax. Replacing z through ``hook_z`` is what replacing the head's output
  by its task mean means here (post-attention norms are recomputed downstream).
- AIE(l, h) = (1/|T|) Σ_t CIE(l, h | t) over the training tasks T (unweighted); heads are
  ranked by signed AIE, descending (ties: lower layer, then lower head).
- Top-k FV (``aie_topk_eval``): FV_t = Σ_{h ∈ top-k} mean_t[h] (held-out means) added at
  the residual stream after block ℓ's attention (``inject``) on held-out zero-shot prompts; accuracy + bootstrap CI, paired
  with clean n-shot (k = 33 and 20 in the paper).

Cost: the corrupted prompts are cut into chunks; per chunk the input of every block is cached
once (memory chunk × pos × d_model × L), then layer l's H heads run stacked along the batch
from block l up, logits at the query position only: Σ_l (L − l)·H ≈ H·L²/2 block passes per
prompt instead of H·L² for full forwards (Gemma-3-270m: 72 heads; Llama-3-8B: 1024 heads).
Measured on Gemma-3-270m, one CPU thread: ≈ 6.4 s per corrupted 5-shot prompt (all 72 heads),
so the paper's 25 prompts × 25 tasks ≈ 1 h there; size ``examples`` to the budget.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from addk_interp.core.errors import AddkError
from addk_interp.core.heads import HeadLike as Head  # the one head type: Head or (l, h)
from addk_interp.core.scoring import evaluate
from addk_interp.core.store import read_json, read_tensors, write_json, write_tensors
from addk_interp.core.tasks import Example, manifest_hash
from addk_interp.hooks.capture import HeadMeans, z_hook_name
from addk_interp.hooks.context import EvalContext
from addk_interp.hooks.fv import check_means_model
from addk_interp.hooks.interventions import default_injection_layer
from addk_interp.hooks.runners import InjectionRunner, PromptRunner
from addk_interp.localize.headsets import ConditionSummary, headset_vectors, summarize
from addk_interp.models.adapter import HookedModel


def _rng(seed: int, e: Example, i: int) -> random.Random:
    key = f"{seed}:aie_corrupt:{e.task}:{i}:{e.query}"
    return random.Random(int(hashlib.sha256(key.encode()).hexdigest()[:16], 16))


def corrupt_labels(
    examples: Sequence[Example], seed: int = 42, max_tries: int = 20
) -> tuple[list[Example], list[int]]:
    """Permute each example's demonstration labels; keep the draw with the fewest fixed points.

    Returns the corrupted examples and their numbers of fixed points (0 unless a derangement
    was impossible or not found in ``max_tries`` draws, e.g. one demonstration).
    """
    if isinstance(max_tries, bool) or not isinstance(max_tries, int) or max_tries < 1:
        raise AddkError(f"max_tries must be an integer ≥ 1, got {max_tries!r}")
    out, fixed = [], []
    for i, e in enumerate(examples):
        labels = [y for _, y in e.demos]
        rng = _rng(seed, e, i)
        best, best_fp = list(range(len(labels))), len(labels)
        for _ in range(max_tries):
            perm = list(range(len(labels)))
            rng.shuffle(perm)
            fp = sum(labels[p] == labels[j] for j, p in enumerate(perm))
            if fp < best_fp:
                best, best_fp = perm, fp
            if best_fp == 0:
                break
        demos = tuple((x, labels[best[j]]) for j, (x, _) in enumerate(e.demos))
        out.append(e.with_demos(demos))
        fixed.append(best_fp)
    return out, fixed


class _ReplaceRowHeads:
    """TL hook on ``hook_z``: row r's head ``heads[r]`` at position q ← ``src[r]``."""

    def __init__(self, q: int, heads: Tensor, src: Tensor):
        self.q, self.heads, self.src = q, heads, src
        self.rows = torch.arange(len(heads))

    def __call__(self, z: Tensor, hook=None) -> Tensor:
        z = z.clone()
        z[self.rows, self.q, self.heads] = self.src.to(z.dtype)
        return z


def _replace_row_heads(
    layer: int,
    q: int,
    heads: Int[Tensor, " batch"],
    src: Float[Tensor, "batch d_head"],
) -> list:
    """Row r: head ``heads[r]``'s ``hook_z`` at position q ← ``src[r]``."""
    return [(z_hook_name(layer), _ReplaceRowHeads(q, heads, src))]


@dataclass(frozen=True)
class AIEResult:
    """CIE per [task, layer, head], AIE per [layer, head], and the provenance of the scan."""

    tasks: tuple[str, ...]
    cie: Float[Tensor, "task layer head"]
    aie: Float[Tensor, "layer head"]
    base_prob: Float[Tensor, " task"]
    n_per_task: tuple[int, ...]
    meta: dict = field(default_factory=dict)

    def ranking(self) -> list[Head]:
        """All heads by signed AIE, descending (ties: lower layer, then lower head)."""
        n_l, n_h = self.aie.shape
        flat = [(-float(self.aie[la, h]), la, h) for la in range(n_l) for h in range(n_h)]
        return [(la, h) for _, la, h in sorted(flat)]

    def top(self, k: int) -> list[Head]:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise AddkError(f"k must be a positive integer, got {k!r}")
        return self.ranking()[:k]

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": list(self.tasks),
            "aie": self.aie.tolist(),
            "cie": self.cie.tolist(),
            "base_prob": self.base_prob.tolist(),
            "n_per_task": list(self.n_per_task),
            "ranking": [list(h) for h in self.ranking()],
            "meta": dict(self.meta),
        }

    def save(self, path) -> Path:
        """``path`` (.safetensors: cie, aie, base_prob) + the same stem ``.json``."""
        path = Path(path).with_suffix(".safetensors")
        fp = self.meta.get("model_fingerprint", "")
        write_tensors(
            path,
            {"cie": self.cie, "aie": self.aie, "base_prob": self.base_prob},
            {"model_fingerprint": fp, "kind": "aie"},
        )
        meta = {
            "tasks": list(self.tasks),
            "n_per_task": list(self.n_per_task),
            "ranking": [list(h) for h in self.ranking()],
            "meta": self.meta,
        }
        write_json(path.with_suffix(".json"), meta)
        return path

    @classmethod
    def load(cls, path, model: HookedModel | None = None) -> AIEResult:
        path = Path(path).with_suffix(".safetensors")
        expect = {"kind": "aie"}
        if model is not None:
            expect["model_fingerprint"] = model.info.fingerprint
        t, _ = read_tensors(path, expect)
        meta = read_json(path.with_suffix(".json"))
        return cls(
            tuple(meta["tasks"]),
            t["cie"],
            t["aie"],
            t["base_prob"],
            tuple(meta["n_per_task"]),
            meta["meta"],
        )


def aie_scan(
    ctx: EvalContext | HookedModel,
    examples: list[Example],
    means: HeadMeans,
    *,
    train_tasks: Sequence[str],
    corrupt: bool = True,
    max_tries: int = 20,
    chunk_size: int = 128,
) -> AIEResult:
    """CIE of every head on corrupted prompts of the training tasks, and AIE (module docstring).

    ``examples``: n-shot prompts of training tasks (kind ``aie_corrupted``); corrupted here
    unless ``corrupt=False`` (then taken as given). ``means``: training-task means (z̄_t).
    """
    model, fmt, batch_size, layer, seed, path, verbose = EvalContext.of(ctx).astuple()
    if not examples:
        raise AddkError("no AIE examples")
    train_tasks = list(train_tasks)
    if not train_tasks:
        raise AddkError("the training split is empty; the AIE uses training tasks only")
    foreign = sorted({e.task for e in examples} - set(train_tasks))
    if foreign:
        raise AddkError(f"the AIE ranking uses training tasks only; got {foreign}")
    check_means_model(model, means)
    missing = sorted({e.task for e in examples} - set(means.tasks))
    if missing:
        raise AddkError(f"no training means for tasks {missing}")
    if not torch.isfinite(means.z_means).all():
        raise AddkError("the training means contain NaN or inf")
    if any(len(e.demos) < 1 for e in examples):
        raise AddkError("AIE prompts need at least one demonstration")
    if chunk_size <= 0:
        raise AddkError("chunk_size must be positive")
    fixed = [0] * len(examples)
    if corrupt:
        examples, fixed = corrupt_labels(examples, seed, max_tries)
    tasks = list(dict.fromkeys(e.task for e in examples))
    t_of = torch.tensor([tasks.index(e.task) for e in examples])
    z_src = means.z_means[torch.tensor([means.task_index(t) for t in tasks])].float()
    n_l, n_h = model.n_layers, model.n_heads
    base = np.zeros(len(examples))
    patched = np.zeros((n_l, n_h, len(examples)))
    paths = set()
    starts = range(0, len(examples), chunk_size)
    bar = tqdm(total=len(starts) * n_l, desc="AIE", disable=not verbose)
    for s in starts:
        chunk = examples[s : s + chunk_size]
        tix = t_of[s : s + chunk_size]
        runner = PromptRunner(
            model,
            chunk,
            layers=range(n_l),
            zero_shot=False,
            fmt=fmt,
            path=path,
            batch_size=batch_size,
        )
        paths.add(runner.path)
        base[s : s + len(chunk)] = runner.first_token_probs(lambda g, r, v: [], 0)[0]
        for layer in range(n_l):

            def hooks_fn(g, rows, var, layer=layer, tix=tix):
                src = z_src[tix[g.indices[rows]], layer, var]
                return _replace_row_heads(layer, g.query_pos, var, src)

            p = runner.first_token_probs(hooks_fn, layer, n_h)
            patched[layer, :, s : s + len(chunk)] = p
            bar.update(1)
    bar.close()
    delta = patched - base[None, None, :]
    cie = np.zeros((len(tasks), n_l, n_h))
    base_t = np.zeros(len(tasks))
    counts = []
    for ti in range(len(tasks)):
        m = (t_of == ti).numpy()
        cie[ti] = delta[:, :, m].mean(-1)
        base_t[ti] = base[m].mean()
        counts.append(int(m.sum()))
    return AIEResult(
        tasks=tuple(tasks),
        cie=torch.tensor(cie, dtype=torch.float64),
        aie=torch.tensor(cie.mean(0), dtype=torch.float64),
        base_prob=torch.tensor(base_t, dtype=torch.float64),
        n_per_task=tuple(counts),
        meta={
            "model_fingerprint": model.info.fingerprint,
            "train_tasks": train_tasks,
            "sample_manifest": manifest_hash(examples),
            "corrupted": corrupt,
            "seed": seed,
            "max_tries": max_tries,
            "fixed_points": {
                "max": int(max(fixed)),
                "mean": float(np.mean(fixed)),
                "n_with_fixed_points": int(sum(f > 0 for f in fixed)),
            },
            "shots": sorted({len(e.demos) for e in examples}),
            "intervention": "hook_z of one head at the query position <- task mean z",
            "probability": "float32 softmax of the first answer token at the query position",
            "aggregation": "CIE: mean over prompts of a task; AIE: unweighted mean over tasks",
            "forward_path": sorted(paths),
        },
    )


def aie_topk_eval(
    ctx: EvalContext | HookedModel,
    result: AIEResult,
    examples: list[Example],
    means: HeadMeans,
    *,
    ks: Sequence[int] = (33, 20),
    clean: pd.DataFrame | None = None,
) -> dict[int, ConditionSummary]:
    """Top-k AIE FV accuracy (Σ_{top-k} mean_t[h], held-out means) on zero-shot prompts of
    ``examples`` (held-out tasks × ``final_eval``), paired with their clean n-shot run."""
    model, fmt, batch_size, layer, seed, path, verbose = EvalContext.of(ctx).astuple()
    if not examples:
        raise AddkError("no evaluation examples")
    check_means_model(model, means)
    missing = sorted({e.task for e in examples} - set(means.tasks))
    if missing:
        raise AddkError(f"no means for evaluation tasks {missing}")
    leak = sorted({e.task for e in examples} & set(result.tasks))
    if leak:
        raise AddkError(f"evaluation tasks {leak} were used to rank the heads")
    n_all = model.n_layers * model.n_heads
    ks = [int(k) for k in ks]
    bad = [k for k in ks if not 1 <= k <= n_all]
    if bad:
        raise AddkError(f"k must lie in 1..{n_all}, got {bad}")
    layer = default_injection_layer(model.n_layers) if layer is None else layer
    runner = InjectionRunner(
        model, examples, layer=layer, fmt=fmt, path=path, batch_size=batch_size
    )
    if clean is None:
        clean = evaluate(model, examples, fmt, batch_size=batch_size)
    clean_ok = clean["correct"].to_numpy().astype(bool)
    vecs = torch.stack([headset_vectors(means, examples, result.top(k)) for k in ks])
    sc = runner.score_vectors(vecs, logprob=True)
    return {
        k: summarize(
            f"aie_top{k}",
            sc.correct[i],
            clean_ok,
            heads=result.top(k),
            seed=seed,
            answer_logprob=sc.answer_logprob[i],
        )
        for i, k in enumerate(ks)
    }
