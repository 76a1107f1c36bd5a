"""Head sets: the selected set, the recovery scan, head-set FV evaluations and necessity.

Step of the method: docs/method.md §3.4 → §4.1 → §4.5 → §4.6 (localization steps 1–3 and the
head-set numbers). Notation: S = selected heads, mean_t[h] = mean output of head h on task t
(``HeadMeans``), h̄[h] = its mean over the *training* tasks, ℓ = injection layer.

- ``select_heads``: the selected set S = a cut rule (``fit.config.select_rule``; the paper's is
  largest_gap) on |M| averaged over the last k epoch checkpoints of a ``GateFit`` (§3.4). An
  empty cut is a verdict, not a crash; ``head_sets`` applies the §4.2–§4.4 selectors to a scan.
- ``recovery_scan`` (§4.1): for each h ∈ S and c ∈ {0..c_max}, on the zero-shot prompts of the
  training tasks, FV_t(h, c) = c·mean_t[h] + Σ_{h' ∈ S∖{h}} h̄[h'] is added at
  the residual stream after block ℓ's attention (``inject``; query position). Per-example 0/1 outcomes are kept (paired
  across c), plus the clean n-shot and full-selected (Σ_{h∈S} mean_t[h]) baselines on the same
  examples and the mean-FV control (Σ_{h∈S} h̄[h]); returns ``selectors.RecoveryScan``.
  All c of one head run stacked along the batch, and only blocks ℓ..L−1 run (the input of
  block ℓ is cached once for every prompt: ``hooks.runners.InjectionRunner``).
- ``headset_evals`` (§4.5): on held-out prompts with held-out means and train-only h̄:
  full_selected Σ_{h∈S} mean_t[h]; raw_coef Σ_{all l,h} M_final[l,h]·mean_t[l,h]; main_meanab
  Σ_{h∈main} mean_t[h] + Σ_{h∈S∖main} h̄[h]; controls mean_fv Σ_{h∈S} h̄[h] and zero_shot
  (no vector). Each: accuracy, percentile-bootstrap CI, and the 2×2 pairing with clean n-shot.
- ``necessity`` (§4.6): clean n-shot prompts; at the query position the ``hook_z`` of every
  ablated head is replaced by its train-task mean z̄ (``interventions.mean_ablate``). Main set
  vs ``n_random`` seeded random same-size subsets of S∖main; reports every accuracy, the
  fraction of random subsets at least as accurate as the main ablation, and the fraction within
  ``near_clean_tol`` of clean (the paper's "95 % of random triples stay ≥ 0.86").

Cost (n examples, |S| heads, L layers): scan ≈ |S|·(c_max+1)·n upper-layer forwards of the
zero-shot prompt (Llama add-k corrected protocol: 33·21·2500 ≈ 1.7 M) plus one partial forward
per prompt for the cache; answer position j is unembedded only for rows whose positions < j
matched (large vocabularies make the unembedding the main cost). Head-set evals ≈ 5 zero-shot
+ 1 n-shot pass over n; necessity ≈ (2 + n_random) n-shot passes over n, each from the lowest
ablated layer up. Measured on Gemma-3-270m, one CPU thread: scan ≈ 20 ms per (head, c, example)
row; head-set evals ≈ 0.07 s per example and condition; necessity ≤ 0.16 s per example and
ablation (5-shot prompts).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from addk_interp.core.errors import AddkError
from addk_interp.core.heads import HeadLike as Head
from addk_interp.core.heads import (
    check_heads as validate_heads,  # the one head type: Head or (l, h)
)
from addk_interp.core.heads import head_str
from addk_interp.core.scoring import bootstrap_ci, evaluate
from addk_interp.core.tasks import Example, manifest_hash, render
from addk_interp.hooks.capture import HeadMeans
from addk_interp.hooks.context import EvalContext
from addk_interp.hooks.fv import check_means_model
from addk_interp.hooks.interventions import (
    default_injection_layer,
    inject,
    mean_ablate,
)
from addk_interp.hooks.runners import InjectionRunner, PromptRunner
from addk_interp.localize.cuts import Cut
from addk_interp.localize.gates import GateFit
from addk_interp.localize.selectors import (
    RELEASE_WEAK_PARAMS,
    MainSetResult,
    RecoveryScan,
    SignificantSetResult,
    WeakRuleResult,
    load_scan_json,
    main_set,
    significant_set,
    weak_rule,
)
from addk_interp.models.adapter import HookedModel

# ============================================================================ the selected set


@dataclass(frozen=True)
class SelectedSet:
    """The selected heads (ordered by |coef| descending) and how they were cut.

    ``verdict``: ``"selected"`` or ``"empty"`` (then ``reason`` says why; downstream steps that
    need heads refuse with that reason).
    """

    heads: tuple[Head, ...]
    cut: dict
    rule: str
    k: int
    n_epochs: int
    verdict: str
    reason: str | None = None

    @property
    def empty(self) -> bool:
        return not self.heads

    def to_dict(self) -> dict[str, Any]:
        return {
            "heads": [list(h) for h in self.heads],
            "n_selected": len(self.heads),
            "rule": self.rule,
            "k": self.k,
            "n_epochs": self.n_epochs,
            "verdict": self.verdict,
            "reason": self.reason,
            "cut": self.cut,
        }


def select_heads(
    fit: GateFit, rule: str | None = None, k: int | None = None, **params: float
) -> SelectedSet:
    """S = ``rule`` (default ``fit.config.select_rule``) on the mean of the last ``k`` epoch
    checkpoints (default ``fit.config.select_k``, at most the number of epochs)."""
    k_used = min(fit.config.select_k if k is None else k, fit.n_epochs)
    c: Cut = fit.select(rule, k_used, **params)
    reason = None
    if c.empty or not c.selected:
        reason = c.reason or f"the {c.rule} cut keeps no head (all |coef| ≤ {c.threshold:g})"
    return SelectedSet(
        heads=tuple((int(a), int(b)) for a, b in c.selected),
        cut=c.to_dict(),
        rule=c.rule,
        k=k_used,
        n_epochs=fit.n_epochs,
        verdict="empty" if reason else "selected",
        reason=reason,
    )


def checked_heads(model: HookedModel, heads, what: str, *, allow_empty: bool = False) -> list[Head]:
    if isinstance(heads, SelectedSet):
        if heads.empty and not allow_empty:
            raise AddkError(f"the selected set is empty ({heads.reason}); nothing to {what}")
        heads = heads.heads
    return validate_heads(
        heads, model.n_layers, model.n_heads,
        allow_empty=allow_empty, allow_duplicates=False, what=what,
    )


def check_means(model: HookedModel, means: HeadMeans, tasks: Sequence[str], what: str) -> None:
    check_means_model(model, means)
    missing = sorted(set(tasks) - set(means.tasks))
    if missing:
        raise AddkError(f"no {what} means for tasks {missing}")
    idx = [means.task_index(t) for t in dict.fromkeys(tasks)]
    if not (torch.isfinite(means.means[idx]).all() and torch.isfinite(means.z_means[idx]).all()):
        raise AddkError(f"the {what} means contain NaN or inf")


def _per_example(
    means: HeadMeans, examples: list[Example], head: Head
) -> Float[Tensor, "example d_model"]:
    """mean_{t(i)}[head] for every example i."""
    tasks = list(dict.fromkeys(e.task for e in examples))
    vals = torch.stack([means.of(t)[head[0], head[1]] for t in tasks])
    row = {t: i for i, t in enumerate(tasks)}
    return vals[torch.tensor([row[e.task] for e in examples])].float()


def headset_vectors(
    means: HeadMeans,
    examples: list[Example],
    heads: Sequence[Head],
    *,
    mean_heads: Sequence[Head] = (),
    bar: Float[Tensor, "layer head d_model"] | None = None,
    coefs: Float[Tensor, "layer head"] | None = None,
) -> Float[Tensor, "example d_model"]:
    """Per example: Σ_{h∈heads} c_h·mean_t[h] + Σ_{h∈mean_heads} h̄[h] (c = ``coefs`` or 1).

    With ``coefs`` and ``heads`` empty, the sum runs over all heads: Σ_{l,h} c[l,h]·mean_t[l,h].
    """
    d = means.means.shape[-1]
    tasks = list(dict.fromkeys(e.task for e in examples))
    per_task = []
    for t in tasks:
        m = means.of(t).float()
        if coefs is not None and not heads:
            v = torch.einsum("lh,lhd->d", coefs.float(), m)
        else:
            v = torch.zeros(d)
            for la, h in heads:
                c = 1.0 if coefs is None else float(coefs[la, h])
                v = v + c * m[la, h]
        per_task.append(v)
    fv = torch.stack(per_task)
    if mean_heads:
        if bar is None:
            raise AddkError("mean_heads need the cross-task mean h̄ (bar)")
        fv = fv + sum(bar[la, h].float() for la, h in mean_heads)
    row = {t: i for i, t in enumerate(tasks)}
    return fv[torch.tensor([row[e.task] for e in examples])]


def _outcome_string(x: Bool[np.ndarray, " n"]) -> str:
    return "".join("1" if v else "0" for v in np.asarray(x, dtype=bool))


# ============================================================================ recovery scan


def recovery_scan(
    ctx: EvalContext | HookedModel,
    examples: list[Example],
    means: HeadMeans,
    heads: Sequence[Head] | SelectedSet,
    *,
    train_tasks: Sequence[str],
    c_max: int = 20,
    stack_c: bool = True,
    clean: pd.DataFrame | None = None,
    logprob: bool = False,
) -> RecoveryScan:
    """The recovery (dose-response) scan of §4.1 over ``heads`` (see module docstring).

    ``examples``: n-shot scan prompts of training tasks (kind ``scan``); their zero-shot
    versions carry the FV, the n-shot versions give the clean baseline (or pass ``clean``, an
    ``evaluate`` frame of the same examples). ``means``: training-task means; h̄ averages them
    over ``train_tasks``. ``stack_c=False`` runs one c at a time (same outcomes, slower).
    ``logprob=True`` also records the mean answer log-probability per (head, c) in
    ``meta["mean_answer_logprob"]`` (costs the unembedding of every answer position; without
    it a position is unembedded only for rows still matching).
    """
    model, fmt, batch_size, layer, seed, path, verbose = EvalContext.of(ctx).astuple()
    heads = checked_heads(model, heads, "scan")
    if not examples:
        raise AddkError("no scan examples")
    if isinstance(c_max, bool) or not isinstance(c_max, int) or c_max < 1:
        raise AddkError(f"c_max must be an integer ≥ 1, got {c_max!r}")
    train_tasks = list(train_tasks)
    if not train_tasks:
        raise AddkError("the training split is empty; the scan needs training tasks")
    foreign = sorted({e.task for e in examples} - set(train_tasks))
    if foreign:
        raise AddkError(f"the scan is a selection step and uses training tasks only; got {foreign}")
    check_means(model, means, train_tasks, "training")
    layer = default_injection_layer(model.n_layers) if layer is None else layer
    bar = means.cross_task_mean(train_tasks).float()
    base = sum(bar[la, h] for la, h in heads)
    runner = InjectionRunner(
        model, examples, layer=layer, fmt=fmt, path=path, batch_size=batch_size
    )
    if clean is None:
        clean = evaluate(model, examples, fmt, batch_size=batch_size)
    elif len(clean) != len(examples):
        raise AddkError(f"clean has {len(clean)} rows for {len(examples)} examples")
    clean_ok = clean["correct"].to_numpy().astype(bool)
    c_grid = list(range(c_max + 1))
    cs = torch.tensor(c_grid, dtype=torch.float32)
    n_c = len(c_grid)
    full_vec = headset_vectors(means, examples, heads)
    own = torch.stack([_per_example(means, examples, h) for h in heads])  # [head, ex, d]
    others = torch.stack([base - bar[la, hh] for la, hh in heads])  # [head, d]
    outcomes: dict[Head, np.ndarray] = {}
    mean_lp: dict[str, list[float]] = {}

    def vectors(ex: Tensor, var: Tensor) -> Tensor:
        """Variant 0: every selected head's own mean (full); 1: h̄ over them (mean FV);
        2 + i·C + j: head i at c_j, the others at h̄."""
        v = torch.empty(len(ex), base.shape[-1])
        v[var == 0] = full_vec[ex[var == 0]].to(v.dtype)
        v[var == 1] = base.to(v.dtype)
        sel = var >= 2
        if sel.any():
            hi, ci = (var[sel] - 2) // n_c, (var[sel] - 2) % n_c
            v[sel] = cs[ci][:, None] * own[hi, ex[sel]] + others[hi]
        return v

    def hooks_fn(g, rows, var):
        return inject(model, vectors(g.indices[rows], var), g.query_pos, layer, "resid_mid")

    if stack_c:  # the baselines and every (head, c) in one pass: one shared unembedding
        sc = runner.score(hooks_fn, layer, 2 + len(heads) * n_c, logprob=logprob)
        full, mean_fv = sc.correct[0], sc.correct[1]
        for i, head in enumerate(heads):
            outcomes[head] = sc.correct[2 + i * n_c : 2 + (i + 1) * n_c]
            if logprob:
                lp = sc.answer_logprob[2 + i * n_c : 2 + (i + 1) * n_c]
                mean_lp[head_str(head)] = lp.mean(axis=1).tolist()
    else:  # one variant at a time (same outcomes, slower)

        def one(k: int):
            def fn(g, rows, var):
                return hooks_fn(g, rows, torch.full_like(var, k))

            return runner.score(fn, layer, 1, logprob=logprob)

        full, mean_fv = one(0).correct[0], one(1).correct[0]
        for i, head in enumerate(tqdm(heads, desc="recovery scan", disable=not verbose)):
            parts = [one(2 + i * n_c + j) for j in range(n_c)]
            outcomes[head] = np.concatenate([p.correct for p in parts])
            if logprob:
                lp = np.concatenate([p.answer_logprob for p in parts])
                mean_lp[head_str(head)] = lp.mean(axis=1).tolist()
    meta = {
        "protocol": "corrected: train tasks, zero-shot FV at the query position, h̄ train-only",
        "model_fingerprint": model.info.fingerprint,
        "layer": layer,
        "site": "resid_mid",
        "format": fmt if isinstance(fmt, str) else fmt.name,
        "heads": [list(h) for h in heads],
        "train_tasks": train_tasks,
        "n_examples": len(examples),
        "shots": sorted({len(e.demos) for e in examples}),
        "sample_manifest": manifest_hash(examples),
        "forward_path": runner.path,
        "forward_check": runner.check,
        "stacked_over_c": stack_c,
        "mean_answer_logprob": mean_lp if logprob else None,
        "mean_fv_correct": int(mean_fv.sum()),
        "mean_fv_acc": float(mean_fv.mean()),
        "clean_outcomes": _outcome_string(clean_ok),
        "full_selected_outcomes": _outcome_string(full),
        "mean_fv_outcomes": _outcome_string(mean_fv),
        "tasks": [e.task for e in examples],
    }
    try:
        return RecoveryScan.from_outcomes(
            c_grid=c_grid,
            outcomes=outcomes,
            clean_correct=int(clean_ok.sum()),
            full_selected_correct=int(full.sum()),
            meta=meta,
        )
    except ValueError as e:
        raise AddkError(f"invalid recovery scan: {e}") from None


# ============================================================================ selectors


@dataclass(frozen=True)
class HeadSets:
    """selected ⊇ significant ⊇ main from one recovery scan (§4.2–§4.3) + the weak rule (§4.4)."""

    selected: tuple[Head, ...]
    significant: SignificantSetResult
    main: MainSetResult
    weak: WeakRuleResult

    def localization(self) -> tuple[str, str]:
        """The run's verdict, following the significance test, and its reason.

        ``main.verdict`` is the §4.3 selector's own verdict (kept unchanged, so the released
        scan reproduces exactly); it looks at gains only. The localization verdict also asks
        whether the gains are beyond noise: ``no_localization`` when no main head is
        significant (McNemar + multiplicity correction at q), else ``localized`` (≤
        ``max_localized`` significant main heads) or ``distributed``.
        """
        m, sig = self.main, set(self.significant.significant)
        if m.verdict in ("not_applicable", "not_material"):
            return "no_localization", str(m.reason)
        strong = [h for h in m.main if h in sig]
        if not strong:
            gains = ", ".join(f"{head_str(h)} {m.gains[h]:+.3f}" for h in m.main) or "none"
            return "no_localization", (
                f"main-head gains ({gains}; n = {m.n_eval}) are within noise: none is "
                f"significant ({self.significant.name} at q = {self.significant.q}; "
                f"{len(sig)} of {len(self.selected)} scanned heads significant)"
            )
        verdict = "localized" if len(strong) <= m.max_localized else "distributed"
        return verdict, (
            f"{len(strong)} significant main head(s): {', '.join(map(head_str, strong))}"
        )

    def to_dict(self) -> dict[str, Any]:
        main = self.main.to_dict()
        main["gains"] = {head_str(h): g for h, g in self.main.gains.items()}
        verdict, reason = self.localization()
        return {
            "selected": [list(h) for h in self.selected],
            "significant": self.significant.to_dict(),
            "main": main,
            "weak_rule": self.weak.to_dict(),
            "localization": {"verdict": verdict, "reason": reason},
        }


def head_sets(
    scan: RecoveryScan | str,
    *,
    q: float = 0.05,
    method: str = "bh",
    beta: float = 0.25,
    floor: float = 0.0,
    clean_min: float = 0.25,
    weak_params: dict[str, float] | None = None,
) -> HeadSets:
    """Apply the §4.2–§4.4 selectors to a scan (or a scan JSON path); a malformed scan (NaN,
    ragged, counts out of range, no per-example outcomes for the paired test) → AddkError."""
    try:
        if not isinstance(scan, RecoveryScan):
            scan = load_scan_json(scan)
        if scan.outcomes is None:
            raise AddkError("the scan has no per-example outcomes; §4.2 needs paired outcomes")
        return HeadSets(
            selected=tuple(scan.heads),
            significant=significant_set(scan, q=q, method=method),
            main=main_set(scan, beta=beta, floor=floor, clean_min=clean_min),
            weak=weak_rule(scan, **(weak_params or RELEASE_WEAK_PARAMS)),
        )
    except AddkError:
        raise
    except (ValueError, FileNotFoundError) as e:
        raise AddkError(f"invalid recovery scan: {e}") from None


# ============================================================================ head-set evals


@dataclass(frozen=True)
class ConditionSummary:
    """One evaluated condition, paired with clean n-shot on the same examples."""

    condition: str
    n: int
    accuracy: float
    ci_low: float
    ci_high: float
    clean_accuracy: float
    both_correct: int
    only_condition: int
    only_clean: int
    neither: int
    heads: tuple[Head, ...] = ()
    # graded metric beside exact match: mean log p(answer tokens), teacher forced (None when
    # the condition was scored without it)
    mean_answer_logprob: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["heads"] = [list(h) for h in self.heads]
        return d


def summarize(
    condition: str,
    correct: Bool[np.ndarray, " n"],
    clean: Bool[np.ndarray, " n"],
    *,
    heads: Sequence[Head] = (),
    seed: int = 0,
    n_boot: int = 2000,
    answer_logprob: Float[np.ndarray, " n"] | None = None,
) -> ConditionSummary:
    """Accuracy + percentile bootstrap CI + the 2×2 pairing with clean (+ the mean answer
    log-probability when given)."""
    c = np.asarray(correct, dtype=bool)
    k = np.asarray(clean, dtype=bool)
    lo, hi = bootstrap_ci(c.astype(float), n_boot=n_boot, seed=seed)
    return ConditionSummary(
        condition=condition,
        n=int(c.size),
        accuracy=float(c.mean()),
        ci_low=lo,
        ci_high=hi,
        clean_accuracy=float(k.mean()),
        both_correct=int((c & k).sum()),
        only_condition=int((c & ~k).sum()),
        only_clean=int((~c & k).sum()),
        neither=int((~c & ~k).sum()),
        heads=tuple(heads),
        mean_answer_logprob=(
            None if answer_logprob is None else float(np.mean(np.asarray(answer_logprob)))
        ),
    )


@dataclass(frozen=True)
class HeadsetEval:
    """§4.5 results: one ``ConditionSummary`` per condition and the per-example outcomes."""

    summary: tuple[ConditionSummary, ...]
    per_example: pd.DataFrame
    meta: dict = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([s.to_dict() for s in self.summary])

    def get(self, condition: str) -> ConditionSummary:
        for s in self.summary:
            if s.condition == condition:
                return s
        raise AddkError(f"no condition {condition!r} (have {[s.condition for s in self.summary]})")

    def to_dict(self) -> dict[str, Any]:
        return {"summary": [s.to_dict() for s in self.summary], "meta": dict(self.meta)}


def headset_evals(
    ctx: EvalContext | HookedModel,
    examples: list[Example],
    means: HeadMeans,
    train_means: HeadMeans,
    *,
    train_tasks: Sequence[str],
    selected: Sequence[Head] | SelectedSet,
    main: Sequence[Head],
    raw_coef: Float[Tensor, "layer head"] | GateFit | None = None,
    clean: pd.DataFrame | None = None,
) -> HeadsetEval:
    """Head-set FV accuracies of §4.5 (see module docstring) on ``examples``.

    ``examples``: n-shot prompts (held-out tasks × kind ``final_eval`` in the corrected
    protocol); ``means``: means of those tasks (held-out means from ``heldout_activation``
    prompts); ``train_means`` + ``train_tasks``: h̄. ``raw_coef``: the final-epoch matrix (a
    ``GateFit`` gives ``fit.final``); None skips that condition.
    """
    model, fmt, batch_size, layer, seed, path, verbose = EvalContext.of(ctx).astuple()
    sel = checked_heads(model, selected, "evaluate", allow_empty=True)
    main = checked_heads(model, main, "evaluate", allow_empty=True)
    outside = sorted(set(main) - set(sel))
    if outside:
        raise AddkError(f"main heads {outside} are not in the selected set")
    if not examples:
        raise AddkError("no evaluation examples")
    train_tasks = list(train_tasks)
    if not train_tasks:
        raise AddkError("the training split is empty; h̄ needs training tasks")
    check_means(model, means, [e.task for e in examples], "evaluation")
    check_means(model, train_means, train_tasks, "training")
    layer = default_injection_layer(model.n_layers) if layer is None else layer
    bar = train_means.cross_task_mean(train_tasks).float()
    if isinstance(raw_coef, GateFit):
        if raw_coef.model_fingerprint != model.info.fingerprint:
            raise AddkError(
                f"raw_coef is a gate fit of model fingerprint {raw_coef.model_fingerprint}, not "
                f"{model.info.fingerprint} ({model.info.name}); refit the gates on this model"
            )
        raw_coef = raw_coef.final
    if raw_coef is not None:
        raw_coef = torch.as_tensor(raw_coef, dtype=torch.float32)
        if tuple(raw_coef.shape) != (model.n_layers, model.n_heads):
            raise AddkError(f"raw_coef must be [{model.n_layers}, {model.n_heads}]")
        if not torch.isfinite(raw_coef).all():
            raise AddkError("raw_coef contains NaN or inf")
    runner = InjectionRunner(
        model, examples, layer=layer, fmt=fmt, path=path, batch_size=batch_size
    )
    if clean is None:
        clean = evaluate(model, examples, fmt, batch_size=batch_size)
    clean_ok = clean["correct"].to_numpy().astype(bool)
    rest = [h for h in sel if h not in set(main)]
    conds: list[tuple[str, Tensor, tuple[Head, ...]]] = [
        ("full_selected", headset_vectors(means, examples, sel), tuple(sel)),
        (
            "main_meanab",
            headset_vectors(means, examples, main, mean_heads=rest, bar=bar),
            tuple(main),
        ),
        ("mean_fv", headset_vectors(means, examples, [], mean_heads=sel, bar=bar), tuple(sel)),
        ("zero_shot", torch.zeros(len(examples), model.info.d_model), ()),
    ]
    if raw_coef is not None:
        conds.insert(1, ("raw_coef", headset_vectors(means, examples, [], coefs=raw_coef), ()))
    sc = runner.score_vectors(torch.stack([v for _, v, _ in conds]), logprob=False)
    df = pd.DataFrame(
        {
            "task": [e.task for e in examples],
            "query": [e.query for e in examples],
            "answer": [e.answer for e in examples],
            "clean": clean_ok,
        }
    )
    summary = [summarize("clean", clean_ok, clean_ok, seed=seed)]
    for i, (name, _, hs) in enumerate(conds):
        df[name] = sc.correct[i]
        summary.append(summarize(name, sc.correct[i], clean_ok, heads=hs, seed=seed))
    meta = {
        "model_fingerprint": model.info.fingerprint,
        "layer": layer,
        "selected": [list(h) for h in sel],
        "main": [list(h) for h in main],
        "train_tasks": train_tasks,
        "eval_tasks": list(dict.fromkeys(e.task for e in examples)),
        "sample_manifest": manifest_hash(examples),
        "raw_coef": "final checkpoint, all heads" if raw_coef is not None else None,
        "forward_path": runner.path,
        "bootstrap": {"n_boot": 2000, "alpha": 0.05, "seed": seed},
    }
    return HeadsetEval(tuple(summary), df, meta)


# ============================================================================ necessity


@dataclass(frozen=True)
class NecessityResult:
    """§4.6: clean vs main-ablated vs random same-size ablations of S∖main (n-shot)."""

    n: int
    clean_acc: float
    main: tuple[Head, ...]
    main_acc: float
    random_subsets: tuple[tuple[Head, ...], ...]
    random_accs: tuple[float, ...]
    frac_random_at_least_main: float | None
    frac_random_near_clean: float | None
    near_clean_tol: float
    seed: int
    verdict: str
    clean_ci: tuple[float, float] = (float("nan"), float("nan"))
    main_ci: tuple[float, float] = (float("nan"), float("nan"))
    meta: dict = field(default_factory=dict)
    random_all_subsets: tuple[tuple[Head, ...], ...] = ()
    random_all_accs: tuple[float, ...] = ()
    single_head_accs: dict = field(default_factory=dict)  # Head -> accuracy when ablated alone

    def to_dict(self) -> dict[str, Any]:
        return {
            "random_all_subsets": [[list(h) for h in s] for s in self.random_all_subsets],
            "random_all_accs": list(self.random_all_accs),
            "frac_random_all_at_least_main": (
                float(np.mean([a >= self.main_acc for a in self.random_all_accs]))
                if self.random_all_accs
                else None
            ),
            "single_head_accs": {head_str(h): a for h, a in self.single_head_accs.items()},
            "n": self.n,
            "clean_acc": self.clean_acc,
            "clean_ci": list(self.clean_ci),
            "main": [list(h) for h in self.main],
            "main_acc": self.main_acc,
            "main_ci": list(self.main_ci),
            "random_subsets": [[list(h) for h in s] for s in self.random_subsets],
            "random_accs": list(self.random_accs),
            "frac_random_at_least_main": self.frac_random_at_least_main,
            "frac_random_near_clean": self.frac_random_near_clean,
            "near_clean_tol": self.near_clean_tol,
            "seed": self.seed,
            "verdict": self.verdict,
            "meta": dict(self.meta),
        }


def random_subsets(heads: Sequence[Head], size: int, n: int, seed: int) -> list[tuple[Head, ...]]:
    """``n`` seeded draws of ``size`` distinct heads from ``heads`` (draws may repeat)."""
    pool = sorted(heads)
    rng = random.Random(seed)
    return [tuple(sorted(rng.sample(pool, size))) for _ in range(n)]


def necessity(
    ctx: EvalContext | HookedModel,
    examples: list[Example],
    train_means: HeadMeans,
    *,
    train_tasks: Sequence[str],
    main: Sequence[Head],
    selected: Sequence[Head] | SelectedSet,
    n_random: int = 20,
    near_clean_tol: float = 0.01,
    clean: pd.DataFrame | None = None,
    n_random_all: int | None = None,
    single_heads: Sequence[Head] | None = (),
) -> NecessityResult:
    """Mean-ablate the main heads (train-task z̄, query position) in the clean n-shot run vs
    ``n_random`` random same-size subsets of S∖main (see module docstring).

    ``main=[]`` ablates nothing (equals clean). When S∖main has fewer heads than main, no
    random subsets are drawn and the verdict says so. Controls that exist whatever the
    selected set: ``n_random_all`` (default ``n_random``) random same-size subsets drawn from
    all heads but the main ones, and a single-head ablation table over ``single_heads``
    (``None``: every head of the model; ``()``: none), each head mean-ablated alone.
    """
    model, fmt, batch_size, layer, seed, path, verbose = EvalContext.of(ctx).astuple()
    sel = checked_heads(model, selected, "ablate", allow_empty=True)
    main = checked_heads(model, main, "ablate", allow_empty=True)
    if not examples:
        raise AddkError("no evaluation examples")
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 0:
        raise AddkError(f"n_random must be an integer ≥ 0, got {n_random!r}")
    if near_clean_tol < 0:
        raise AddkError("near_clean_tol must be ≥ 0")
    train_tasks = list(train_tasks)
    if not train_tasks:
        raise AddkError("the training split is empty; z̄ needs training tasks")
    check_means(model, train_means, train_tasks, "training")
    zbar = train_means.cross_task_mean(train_tasks, z=True)
    others = [h for h in sel if h not in set(main)]
    subsets: list[tuple[Head, ...]] = []
    verdict = "ok"
    if not main:
        verdict = "empty main set: nothing ablated (equals clean)"
    elif len(others) < len(main):
        verdict = (
            f"not enough other selected heads ({len(others)}) for random subsets of size "
            f"{len(main)}"
        )
    elif n_random:
        subsets = random_subsets(others, len(main), n_random, seed)
    n_all = n_random if n_random_all is None else n_random_all
    if isinstance(n_all, bool) or not isinstance(n_all, int) or n_all < 0:
        raise AddkError(f"n_random_all must be an integer ≥ 0, got {n_random_all!r}")
    main_set_ = set(main)
    pool = [
        (la, h)
        for la in range(model.n_layers)
        for h in range(model.n_heads)
        if (la, h) not in main_set_
    ]
    all_subsets = (
        random_subsets(pool, len(main), n_all, seed + 1) if main and len(pool) >= len(main) else []
    )
    if single_heads is None:
        single_heads = [(la, h) for la in range(model.n_layers) for h in range(model.n_heads)]
    single_list = [tuple(h) for h in checked_heads(model, single_heads, "ablate", allow_empty=True)]
    starts = {
        min(la for la, _ in s)
        for s in [tuple(main), *subsets, *all_subsets, *[(h,) for h in single_list]]
        if s
    }
    runner = PromptRunner(
        model,
        examples,
        layers=sorted(starts) or [0],
        zero_shot=False,
        fmt=fmt,
        path=path,
        batch_size=batch_size,
    )
    if clean is None:
        clean = evaluate(model, examples, fmt, batch_size=batch_size)
    clean_ok = clean["correct"].to_numpy().astype(bool)

    def job(heads: Sequence[Head]):
        if not heads:
            return (lambda g, r, v: [], runner.layers[0], 1)
        start = min(la for la, _ in heads)
        return (lambda g, r, v: mean_ablate(model, heads, g.query_pos, zbar), start, 1)

    # every ablation in one pass of the runner: one shared unembedding of the scored rows
    sets = [list(main), *subsets, *all_subsets, *[[h] for h in single_list]]
    res = [sc.correct[0] for sc in runner.score_many([job(s) for s in sets], logprob=False)]
    main_ok = res[0]
    res = res[1:]
    accs = [float(x.mean()) for x in res[: len(subsets)]]
    res = res[len(subsets) :]
    all_accs = [float(x.mean()) for x in res[: len(all_subsets)]]
    singles = {h: float(x.mean()) for h, x in zip(single_list, res[len(all_subsets) :])}
    main_acc = float(main_ok.mean())
    clean_acc = float(clean_ok.mean())
    return NecessityResult(
        n=len(examples),
        clean_acc=clean_acc,
        main=tuple(main),
        main_acc=main_acc,
        random_subsets=tuple(subsets),
        random_accs=tuple(accs),
        frac_random_at_least_main=float(np.mean([a >= main_acc for a in accs])) if accs else None,
        frac_random_near_clean=(
            float(np.mean([a >= clean_acc - near_clean_tol for a in accs])) if accs else None
        ),
        near_clean_tol=near_clean_tol,
        seed=seed,
        verdict=verdict,
        random_all_subsets=tuple(all_subsets),
        random_all_accs=tuple(all_accs),
        single_head_accs=singles,
        clean_ci=bootstrap_ci(clean_ok.astype(float), seed=seed),
        main_ci=bootstrap_ci(main_ok.astype(float), seed=seed),
        meta={
            "model_fingerprint": model.info.fingerprint,
            "train_tasks": train_tasks,
            "eval_tasks": list(dict.fromkeys(e.task for e in examples)),
            "sample_manifest": manifest_hash(examples),
            "shots": sorted({len(e.demos) for e in examples}),
            "ablation": "hook_z at the query position replaced by the train-task mean z̄",
            "forward_path": runner.path,
            "main_outcomes": _outcome_string(main_ok),
            "clean_outcomes": _outcome_string(clean_ok),
            "prompts": [render(e, fmt).text for e in examples],
            "answers": [e.answer for e in examples],
        },
    )
