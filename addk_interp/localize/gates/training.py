"""Gate learning: the sparse head-coefficient matrix of localization step 1 (docs/method.md §3).

What it computes. For every training task k, mean_k[l, h] is the mean output of head (l, h) at
the last token of n-shot prompts (the z-cache of §3.1, ``HeadMeans``). Two parametrizations
share one training loop:

- ``coef`` (the paper, §3.2–§3.3): M ∈ [0, 1]^{layer × head}, init U[0, 1) from
  ``torch.Generator().manual_seed(seed)``. The function vector FV_k(M) = Σ_{l,h} M[l,h]·mean_k[l,h]
  is added to the residual stream after block ℓ's attention (``interventions.inject``, site
  ``resid_mid``) at the query position (last prompt token) of the
  zero-shot prompt ``xq->``. Loss = (1/B) Σ_batch Σ_answer-tokens −log p(y_i | prefix)
  (teacher forced, every answer token) + λ·Σ|M|. AdamW (lr 0.01, betas 0.9/0.98, eps 1e-8,
  weight decay 0); after every step the proximal soft-threshold
  M ← sign(M)·max(|M| − λ·lr, 0), then M ← clip(M, 0, 1) (the L1 acts twice, as in the paper).
- ``mask``: θ ∈ R^{layer × head}; at the query position of the zero-shot prompt every head's
  ``hook_z`` becomes σ(θ)·z̄_k + (1 − σ(θ))·z (its own zero-shot value), in every layer, through
  ``interventions.gate_heads`` with the task's z-means as source. Loss = NLL + λ·Σσ(θ); no
  proximal step or clipping. Init: σ(θ₀) = 0.1 + 0.8·U[0, 1).

The learning rate is constant (paper) or decays linearly to ``lr·lr_end_frac`` at the last step
(``lr_at``; the proximal shrink uses the current lr). Only training tasks enter the loss.
Held-out tasks (with their own means) are scored after every epoch and logged, never used to
choose anything: the coefficients do not depend on them. The data order of epoch e is
``randperm`` from a generator seeded by (seed, e), so a run is a pure function of (config,
model, data, means) and a resumed run is bitwise identical to an uninterrupted one. One
checkpoint per epoch (safetensors: parameter, AdamW state, coefficient history; JSON: config,
identity, history), written atomically; a finished run is read back without training, and
resuming with another config, model, data or monitor is refused.

Speed. An intervention at or above block s cannot change anything below it, so the input of
block s is computed once per prompt (``PromptRunner``; s = ℓ in coef mode, s = 0 in mask mode)
and each step runs blocks s..L−1, the final norm and the unembedding at the answer positions
only (never full-sequence logits). The TransformerBridge has no ``start_at_layer``: its wrapped
HF decoder layers are called directly with the keyword arguments (rotary cos/sin, causal or
sliding-window mask, position ids) the HF model passed them in a one-row run of the same length,
KV cache off, and TL hooks inside the blocks still fire (attached to the resolved
``HookPoint``s once, not through ``model.hooks``). A classic HookedTransformer's blocks are
called directly. A coef-mode mini-batch of mixed prompt shapes runs as one right-padded call
(exact: attention is causal and each row keeps its own positions). Every runner checks itself
against the full hooked forward (``logits_at``); if it disagrees (> 1e-4 relative) it falls
back to the full forward, and the path that ran is recorded (``GateFit.forward_path``).

Cost per step: coef ≈ (L − ℓ)/L of a forward + backward over B zero-shot prompts plus the
unembedding of the A answer positions of each (on Gemma-3-270m: 0.39–0.51 of a naive full
forward + backward with full logits, ``benchmarks/bench_gates.py``); mask ≈ one forward +
backward. Presets (``PRESETS``): ``paper`` (800 steps of 128) and ``default`` (100 steps of
16, sized and checked on Gemma-3-270m on CPU: ≈ 3 minutes).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from addk_interp._version import __version__
from addk_interp.core.errors import AddkError
from addk_interp.core.store import read_json, read_tensors, write_json, write_tensors
from addk_interp.core.tasks import Example, TaskFamily, manifest_hash, sample_family
from addk_interp.hooks.capture import HeadMeans
from addk_interp.hooks.fv import check_means_model
from addk_interp.hooks.interventions import (
    default_injection_layer,
    gate_heads,
    resid_site,
)
from addk_interp.hooks.runners import (
    AnswerLogits,
    InjectionRunner,
    PromptGroup,
    PromptRunner,
)
from addk_interp.localize.cuts import cut, mean_last_k
from addk_interp.localize.gates.config import (
    GateConfig,
    gate_config,
    proximal_clip,
    task_vectors,
)
from addk_interp.localize.gates.fit import GateFit, tensor_hash
from addk_interp.models.adapter import HookedModel

# ============================================================================ data


def _derived_seed(*parts: Any) -> int:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()
    return int(digest[:15], 16)


def _subsample(examples: list[Example], n: int, seed: int, kind: str) -> list[Example]:
    if len(examples) <= n:
        return examples
    keep = sorted(
        random.Random(_derived_seed(seed, kind, "subsample")).sample(range(len(examples)), n)
    )
    return [examples[i] for i in keep]


def gate_training_examples(family: TaskFamily, config: GateConfig) -> list[Example]:
    """``n_items`` zero-shot training items over the family's training tasks (kind
    ``gate_train``): ceil(n_items / tasks) per task, then a seeded subsample of n_items."""
    if not family.train:
        raise AddkError("the training split is empty; gate training needs training tasks")
    per = math.ceil(config.n_items / len(family.train))
    ex = sample_family(family, family.train, per, 0, seed=config.seed, kind="gate_train")
    return _subsample(ex, config.n_items, config.seed, "gate_train")


def gate_monitor_examples(family: TaskFamily, config: GateConfig) -> list[Example]:
    """``n_monitor`` zero-shot prompts per held-out task (kind ``gate_monitor``), or []."""
    if config.n_monitor == 0 or not family.heldout:
        return []
    return sample_family(
        family, family.heldout, config.n_monitor, 0, seed=config.seed, kind="gate_monitor"
    )


# ============================================================================ training


class GateProblem:
    """Training prompts, means and the differentiable forward of one gate mode (built once).

    coef: an ``InjectionRunner`` at the injection layer (upper-layer path when it checks out);
    mask: an ``InjectionRunner`` from block 0 (cached embeddings; every layer is gated).
    """

    def __init__(
        self,
        model: HookedModel,
        examples: list[Example],
        means: HeadMeans,
        config: GateConfig,
        *,
        batch_size: int = 64,
    ):
        self.model = model
        self.config = config
        self.examples = list(examples)
        self.means = means
        self.task_idx = torch.tensor([means.task_index(e.task) for e in examples])
        if config.mode == "coef":
            self.runner = InjectionRunner(
                model,
                self.examples,
                layer=config.layer,
                site=config.site,
                fmt=config.fmt,
                path=config.forward,
                batch_size=batch_size,
            )
            self.path = self.runner.path
        else:
            self.runner = PromptRunner(
                model,
                self.examples,
                layers=[0],
                zero_shot=True,
                fmt=config.fmt,
                path=config.forward,
                batch_size=batch_size,
            )
            self.path = f"{self.runner.path}(from block 0)"
        self.groups = self.runner.groups
        self.check = self.runner.check

    def coefficients(self, param: Tensor) -> Tensor:
        return param if self.config.mode == "coef" else torch.sigmoid(param)

    def regularizer(self, param: Tensor) -> Tensor:
        return self.coefficients(param).abs().sum()

    def vectors(self, param: Tensor, items: Int[Tensor, " batch"]) -> Tensor:
        return task_vectors(self.means, [self.examples[i] for i in items.tolist()], param)

    def mask_hooks(self, param: Tensor, group: PromptGroup, rows: Tensor, means=None) -> list:
        m = self.means if means is None else means
        items = group.indices[rows]
        z_src = m.z_means[torch.tensor([m.task_index(self.examples[i].task) for i in items])]
        return gate_heads(self.model, torch.sigmoid(param), group.query_pos, z_src)

    def answer_logits(self, param: Tensor, items: Int[Tensor, " batch"]) -> AnswerLogits:
        """Differentiable logits at every answer position of the mini-batch ``items``."""
        if self.config.mode == "coef":
            return self.runner.answer_logits(items, self.vectors(param, items))
        r = self.runner
        gi, ri = r.item_group[items], r.item_row[items]
        parts, targets, owner = [], [], []
        for g in torch.unique(gi).tolist():
            sel = (gi == g).nonzero().squeeze(1)
            grp = self.groups[g]
            hooks = self.mask_hooks(param, grp, ri[sel])
            x = r.normed(grp, ri[sel], grp.answer_len, 0, hooks)
            parts.append(x.reshape(-1, x.shape[-1]))
            targets.append(grp.answer_ids[ri[sel]].reshape(-1))
            owner.append(sel.repeat_interleave(grp.answer_len))
        return AnswerLogits(
            self.model, torch.cat(parts), torch.cat(targets), torch.cat(owner), len(items)
        )


def init_param(config: GateConfig, shape: tuple[int, int]) -> Tensor:
    gen = torch.Generator().manual_seed(config.seed)
    u = torch.rand(shape, generator=gen)
    if config.mode == "coef":
        return u
    g = 0.1 + 0.8 * u
    return torch.log(g) - torch.log1p(-g)


def _sparsity(mode: str, coefs: Tensor) -> tuple[float, int]:
    """(fraction of inactive heads, number active); active: |M| > 1e-6 (coef), σ(θ) ≥ ½ (mask)."""
    active = int((coefs.abs() > 1e-6 if mode == "coef" else coefs >= 0.5).sum())
    return 1.0 - active / coefs.numel(), active


def _n_selected(coefs_hist: list[Tensor], config: GateConfig) -> int | None:
    if config.select_rule == "fixed":
        return None
    k = min(config.select_k, len(coefs_hist))
    return cut(mean_last_k(coefs_hist, k), config.select_rule).n_selected


def lr_at(config: GateConfig, step: int, total: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based) of ``total``: constant (paper), or
    linear from lr to lr·lr_end_frac at the last step."""
    if config.lr_schedule == "constant" or total <= 1:
        return config.lr
    return config.lr * (1.0 - (1.0 - config.lr_end_frac) * step / (total - 1))


def train_step(
    problem: GateProblem,
    param: Tensor,
    opt: torch.optim.Optimizer,
    items: Int[Tensor, " batch"],
    lr: float | None = None,
) -> dict[str, float]:
    """One optimizer step on the mini-batch ``items``: NLL / B + λ·reg, AdamW at ``lr``
    (default ``config.lr``), then (coef mode) the proximal soft-threshold by λ·lr and the clip.
    Returns the step's numbers."""
    cfg = problem.config
    lr = cfg.lr if lr is None else lr
    for group in opt.param_groups:
        group["lr"] = lr
    b = len(items)
    opt.zero_grad(set_to_none=True)
    out = problem.answer_logits(param, items)
    nll = out.nll()
    reg = problem.regularizer(param)
    (nll / b + cfg.lam * reg).backward()
    opt.step()
    if cfg.mode == "coef" and (cfg.proximal or cfg.clip):
        with torch.no_grad():
            lam = cfg.lam if cfg.proximal else 0.0
            param.copy_(proximal_clip(param, lam, lr, clip=cfg.clip))
    n_match = int(out.match().sum())
    nll_v, reg_v = float(nll.detach()) / b, float(reg.detach())
    return {
        "loss": nll_v + cfg.lam * reg_v,
        "nll": nll_v,
        "reg": reg_v,
        "match": n_match / b,
        "n_match": n_match,
        "lr": lr,
    }


class _Monitor:
    """Held-out accuracy with the current coefficients (logged only; no gradients)."""

    def __init__(self, model: HookedModel, examples, means: HeadMeans, problem: GateProblem):
        self.means = means
        self.problem = problem
        cfg = problem.config
        path = "auto" if problem.runner.path == "upper" else "full"
        if cfg.mode == "coef":
            self.runner = InjectionRunner(
                model, examples, layer=cfg.layer, site=cfg.site, fmt=cfg.fmt, path=path
            )
        else:
            self.runner = PromptRunner(
                model, examples, layers=[0], zero_shot=True, fmt=cfg.fmt, path=path
            )
        self.task_idx = torch.tensor([means.task_index(e.task) for e in examples])

    def accuracy(self, param: Tensor) -> float:
        r = self.runner
        if self.problem.config.mode == "coef":
            vec = task_vectors(self.means, r.examples, param.detach())
            return float(r.score_vectors(vec, logprob=False).correct.mean())
        gate = torch.sigmoid(param.detach())

        def hooks_fn(g, rows, _var):
            z_src = self.means.z_means[self.task_idx[g.indices[rows]]]
            return gate_heads(r.model, gate, g.query_pos, z_src)

        return float(r.score(hooks_fn, 0, logprob=False).correct.mean())


def _identity(model: HookedModel, config, examples, means, heldout_examples, heldout_means) -> dict:
    train_tasks = list(dict.fromkeys(e.task for e in examples))
    ident = {
        "model_fingerprint": model.info.fingerprint,
        "config": config.to_dict(),
        "train_tasks": train_tasks,
        "train_manifest": manifest_hash(examples),
        "train_means": tensor_hash(
            torch.stack([means.means[means.task_index(t)] for t in train_tasks])
        )
        + tensor_hash(torch.stack([means.z_means[means.task_index(t)] for t in train_tasks])),
        "heldout_tasks": list(dict.fromkeys(e.task for e in heldout_examples)),
        "heldout_manifest": manifest_hash(heldout_examples) if heldout_examples else None,
        "heldout_means": None,
        "code_version": __version__,
    }
    if heldout_examples:
        ht = ident["heldout_tasks"]
        ident["heldout_means"] = tensor_hash(
            torch.stack([heldout_means.means[heldout_means.task_index(t)] for t in ht])
        ) + tensor_hash(
            torch.stack([heldout_means.z_means[heldout_means.task_index(t)] for t in ht])
        )
    return ident


def _identity_key(ident: dict) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ checkpoints


def _ckpt_stem(directory: Path, epoch: int) -> Path:
    return directory / f"epoch_{epoch:04d}"


def _latest_checkpoint(directory: Path) -> int:
    """Largest epoch whose JSON (written last) and safetensors both exist; 0 if none."""
    best = 0
    for p in directory.glob("epoch_*.json"):
        try:
            e = int(p.stem.split("_")[1])
        except (IndexError, ValueError):
            continue
        if p.with_suffix(".safetensors").exists():
            best = max(best, e)
    return best


def _write_checkpoint(directory: Path, epoch: int, state: dict, meta: dict) -> None:
    stem = _ckpt_stem(directory, epoch)
    write_tensors(stem.with_suffix(".safetensors"), state, {"key": meta["key"], "epoch": epoch})
    write_json(stem.with_suffix(".json"), meta)  # the commit marker: written last


def _read_checkpoint(directory: Path, epoch: int, ident: dict) -> tuple[dict, dict]:
    stem = _ckpt_stem(directory, epoch)
    meta = read_json(stem.with_suffix(".json"))
    key = _identity_key(ident)
    if meta.get("key") != key:
        old = meta.get("identity", {})
        diff = sorted(k for k in set(old) | set(ident) if old.get(k) != ident.get(k))
        detail = ""
        if "config" in diff:
            oc, nc = old.get("config", {}), ident["config"]
            fields = sorted(k for k in set(oc) | set(nc) if oc.get(k) != nc.get(k))
            detail = f" (config fields: {', '.join(fields)})"
        raise AddkError(
            f"{directory} holds checkpoints of another gate-training run: {', '.join(diff)} "
            f"differ{detail}. Use another checkpoint directory, or the same settings to resume."
        )
    state, _ = read_tensors(stem.with_suffix(".safetensors"), {"key": key, "epoch": epoch})
    return state, meta


# ------------------------------------------------------------------ main loop


def train_gates(
    model: HookedModel,
    examples: list[Example],
    means: HeadMeans,
    config: GateConfig | None = None,
    *,
    heldout_examples: Sequence[Example] | None = None,
    heldout_means: HeadMeans | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    verbose: bool = True,
    callback: Callable[[int, dict], None] | None = None,
    batch_size_eval: int = 64,
) -> GateFit:
    """Train the gate matrix (see module docstring) on zero-shot training ``examples``.

    ``means``: per-task means of the training tasks (``capture_means`` on kind ``activation``);
    ``heldout_examples``/``heldout_means``: the monitor (logged only). ``checkpoint_dir``: one
    checkpoint per epoch; an existing run there is resumed (``resume=True``) if its identity
    matches, else refused. ``callback(epoch, record)`` runs after each checkpoint (an exception
    there interrupts the run, which a later call resumes).
    """
    cfg = config or gate_config("default")
    if not examples:
        raise AddkError("no training examples: the training split is empty")
    if any(len(e.demos) for e in examples):
        examples = [e.zero_shot() for e in examples]
    check_means_model(model, means)
    layer = default_injection_layer(model.n_layers) if cfg.layer is None else cfg.layer
    resid_site(model, layer, cfg.site)
    cfg = replace(cfg, layer=layer)
    heldout = [e.zero_shot() for e in (heldout_examples or [])]
    train_tasks = set(e.task for e in examples)
    if heldout:
        if heldout_means is None:
            raise AddkError("heldout_examples need heldout_means (their own task means)")
        check_means_model(model, heldout_means)
        leak = sorted(train_tasks & {e.task for e in heldout})
        if leak:
            raise AddkError(f"tasks {leak} are both training and held-out tasks")
    missing = [t for t in sorted(train_tasks) if t not in means.tasks]
    if missing:
        raise AddkError(f"no training means for tasks {missing}")
    sub = torch.stack([means.means[means.task_index(t)] for t in sorted(train_tasks)])
    if not torch.isfinite(sub).all() or not torch.isfinite(means.z_means).all():
        raise AddkError("the training means contain NaN or inf")

    t0 = time.time()
    ident = _identity(model, cfg, examples, means, heldout, heldout_means)
    key = _identity_key(ident)
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    last, state, meta = 0, None, None
    if ckdir is not None:
        if ckdir.exists() and not ckdir.is_dir():
            raise AddkError(f"{ckdir} exists and is not a directory")
        last = _latest_checkpoint(ckdir) if ckdir.exists() else 0
        if last and not resume:
            raise AddkError(
                f"{ckdir} already holds gate checkpoints (epoch {last}); pass resume=True or "
                "use another directory"
            )
        if last:
            state, meta = _read_checkpoint(ckdir, last, ident)  # refuses another run's files
    if state is not None and last == cfg.epochs:  # finished: nothing to run
        return GateFit(
            mode=cfg.mode,
            config=cfg,
            layer=layer,
            coefficients=state["coefficients"],
            init=state["init"],
            param=state["param"],
            history=tuple(meta["history"]),
            steps=tuple(meta["steps"]),
            model_fingerprint=model.info.fingerprint,
            forward_path=meta["forward_path"],
            identity={**ident, "forward_check": meta["forward_check"]},
            timing={"wall_s": round(time.time() - t0, 3), "resumed_from_epoch": last},
        )

    problem = GateProblem(model, examples, means, cfg, batch_size=batch_size_eval)
    monitor = _Monitor(model, heldout, heldout_means, problem) if heldout else None
    shape = (model.n_layers, model.n_heads)
    param = init_param(cfg, shape).requires_grad_(True)
    init_coefs = problem.coefficients(param.detach()).clone()
    opt = torch.optim.AdamW(
        [param], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
    )
    coef_hist: list[Tensor] = []
    history: list[dict] = []
    steps: list[dict] = []
    start_epoch = resumed_from = 0
    if state is not None:
        with torch.no_grad():
            param.copy_(state["param"])
        opt.state[param] = {
            "step": state["opt_step"].clone(),
            "exp_avg": state["exp_avg"].clone(),
            "exp_avg_sq": state["exp_avg_sq"].clone(),
        }
        coef_hist = list(state["coefficients"])
        history = list(meta["history"])
        steps = list(meta["steps"])
        start_epoch = resumed_from = last

    n = len(examples)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    bar = tqdm(
        total=total,
        initial=start_epoch * steps_per_epoch,
        desc=f"gates[{cfg.mode}]",
        disable=not verbose,
    )
    try:
        for epoch in range(start_epoch, cfg.epochs):
            gen = torch.Generator().manual_seed(_derived_seed(cfg.seed, "epoch", epoch) % 2**63)
            perm = torch.randperm(n, generator=gen)
            sums = {"loss": 0.0, "nll": 0.0, "reg": 0.0, "match": 0}
            for s in range(0, n, cfg.batch_size):
                items = perm[s : s + cfg.batch_size]
                b = len(items)
                rec = train_step(problem, param, opt, items, lr_at(cfg, len(steps), total))
                if not math.isfinite(rec["loss"]):
                    raise AddkError(
                        f"non-finite loss at epoch {epoch + 1}, step {len(steps) + 1}; lower lr"
                    )
                steps.append({"epoch": epoch + 1, "step": len(steps) + 1, **rec})
                sums["loss"] += rec["loss"] * b
                sums["nll"] += rec["nll"] * b
                sums["reg"] += rec["reg"] * b
                sums["match"] += rec["n_match"]
                sp, _ = _sparsity(cfg.mode, problem.coefficients(param.detach()))
                bar.update(1)
                bar.set_postfix(
                    loss=f"{rec['loss']:.3f}", sparsity=f"{sp:.2f}", acc=f"{rec['match']:.2f}"
                )
            coefs = problem.coefficients(param.detach()).clone()
            coef_hist.append(coefs)
            sp, nnz = _sparsity(cfg.mode, coefs)
            rec = {
                "epoch": epoch + 1,
                "loss": sums["loss"] / n,
                "nll": sums["nll"] / n,
                "reg": sums["reg"] / n,
                "train_match": sums["match"] / n,
                "sparsity": sp,
                "n_active": nnz,
                "n_selected": _n_selected(coef_hist, cfg),
                "heldout_acc": monitor.accuracy(param.detach()) if monitor else None,
            }
            history.append(rec)
            bar.set_postfix(
                loss=f"{rec['loss']:.3f}",
                sparsity=f"{sp:.2f}",
                acc=f"{rec['train_match']:.2f}",
                heldout=("-" if rec["heldout_acc"] is None else f"{rec['heldout_acc']:.2f}"),
            )
            if ckdir is not None:
                st = opt.state[param]
                _write_checkpoint(
                    ckdir,
                    epoch + 1,
                    {
                        "param": param.detach(),
                        "init": init_coefs,
                        "coefficients": torch.stack(coef_hist),
                        "opt_step": st["step"],
                        "exp_avg": st["exp_avg"],
                        "exp_avg_sq": st["exp_avg_sq"],
                    },
                    {
                        "key": key,
                        "epoch": epoch + 1,
                        "identity": ident,
                        "forward_path": problem.path,
                        "forward_check": problem.check,
                        "history": history,
                        "steps": steps,
                    },
                )
            if callback is not None:
                callback(epoch + 1, rec)
    finally:
        bar.close()
    return GateFit(
        mode=cfg.mode,
        config=cfg,
        layer=layer,
        coefficients=torch.stack(coef_hist),
        init=init_coefs,
        param=param.detach().clone(),
        history=tuple(history),
        steps=tuple(steps),
        model_fingerprint=model.info.fingerprint,
        forward_path=problem.path,
        identity={**ident, "forward_check": problem.check},
        timing={"wall_s": round(time.time() - t0, 3), "resumed_from_epoch": resumed_from},
    )


def fit_gates(
    model: HookedModel,
    family: TaskFamily,
    means: HeadMeans,
    heldout_means: HeadMeans | None = None,
    config: GateConfig | None = None,
    **kwargs: Any,
) -> GateFit:
    """``train_gates`` on the family's training split (``gate_training_examples``), monitored
    on its held-out split (``gate_monitor_examples``) when ``heldout_means`` is given."""
    cfg = config or gate_config("default")
    train = gate_training_examples(family, cfg)
    monitor = gate_monitor_examples(family, cfg) if heldout_means is not None else []
    return train_gates(
        model,
        train,
        means,
        cfg,
        heldout_examples=monitor or None,
        heldout_means=heldout_means if monitor else None,
        **kwargs,
    )
