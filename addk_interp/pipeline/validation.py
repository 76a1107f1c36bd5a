"""Validation benchmark: how well each localization method recovers a planted mechanism.

Not a step of the paper's method: a check *of* the method. On a model whose answer is known
(``organism-fv``: a function vector planted in named heads, a helix of periods planted in the
number embeddings; its checkpoint manifest's ``ground_truth``), every localization method is
scored against the planted heads; on models without ground truth (the natural organism,
Gemma-3-270m) only the agreement between methods is reported, and the result says so.

Methods (each gives a per-head score, a ranking and a selected set):
- ``gates_coef``: the run's gate coefficients (``localize`` stage; selected = the run's cut);
- ``gates_mask``: mask-logit gates σ(θ) trained with the same budget (selected = same cut rule);
- ``aie``: the run's AIE (``aie`` stage; selected = largest-gap cut of max(AIE, 0));
- ``attribution_patching``: AtP estimate of each head's mean-ablation effect (selected =
  largest-gap cut of max(−score, 0));
- ``single_head_ablation``: the exact effect of mean-ablating each head alone (same cut).

Scores against the planted set P (for a selected set S and a ranking R): precision |S∩P|/|S|,
recall |S∩P|/|P|, precision@|P| of R, the 1-based rank of each planted head in R, wall seconds.
Agreement without ground truth: pairwise Jaccard of the methods' top-n sets (n = the gate
selection's size, at least 2). Subspace: principal angles (degrees) between each analysis
head's fitted six-target subspace (``analyses.periodic``) and the planted probe block (the
residual coordinates the planted heads were trained to write φ(k) into), and the periods
the toolkit's periodogram finds vs the planted periods.

Cost: the pipeline run (cached) + one mask-gate training + one AtP pass + L·H ablation passes
over ``n_prompts`` n-shot prompts per training task.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from addk_interp.core.errors import AddkError
from addk_interp.core.heads import Head, head_str
from addk_interp.organism.recipe_fv import ground_truth_of

METHODS = ("gates_coef", "gates_mask", "aie", "attribution_patching", "single_head_ablation")


@dataclass
class MethodScore:
    method: str
    selected: list[Head]
    ranking: list[Head]
    wall_s: float
    precision: float | None = None
    recall: float | None = None
    precision_at_p: float | None = None
    planted_ranks: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["selected"] = [head_str(h) for h in self.selected]
        d["ranking"] = [head_str(h) for h in self.ranking]
        return d


@dataclass
class ValidationResult:
    model: str
    fingerprint: str
    ground_truth: dict | None
    methods: list[MethodScore]
    agreement: dict[str, float]
    subspace: dict[str, Any]
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "fingerprint": self.fingerprint,
            "ground_truth": self.ground_truth,
            "methods": [m.to_dict() for m in self.methods],
            "agreement": self.agreement,
            "subspace": self.subspace,
            "note": self.note,
        }

    def save(self, path) -> Path:
        from addk_interp.core.store import atomic_write_text

        return atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1) + "\n")

    def markdown(self) -> str:
        lines = [f"Model `{self.model}` ({self.fingerprint}). {self.note}", ""]
        gt = self.ground_truth is not None
        if gt:
            planted = ", ".join(self.ground_truth["planted_heads"])
            lines.append(f"Planted heads: {planted}.")
            lines.append("")
            lines.append(
                "| method | selected | precision | recall | precision@|P| | planted ranks | "
                "wall s |"
            )
            lines.append("|---|---|---|---|---|---|---|")
        else:
            lines.append("| method | selected | top of ranking | wall s |")
            lines.append("|---|---|---|---|")
        for m in self.methods:
            sel = ", ".join(head_str(h) for h in m.selected) or "none"
            if gt:
                ranks = ", ".join(f"{k} {v}" for k, v in m.planted_ranks.items())
                lines.append(
                    f"| {m.method} | {sel} | {_f(m.precision)} | {_f(m.recall)} | "
                    f"{_f(m.precision_at_p)} | {ranks} | {m.wall_s:.1f} |"
                )
            else:
                top = ", ".join(head_str(h) for h in m.ranking[:5])
                lines.append(f"| {m.method} | {sel} | {top} | {m.wall_s:.1f} |")
        if self.agreement:
            lines += [
                "",
                "Agreement (Jaccard of top-n sets): "
                + "; ".join(f"{k} {v:.2f}" for k, v in self.agreement.items())
                + ".",
            ]
        sub = self.subspace
        if sub.get("per_head"):
            lines.append("")
            for h, d in sub["per_head"].items():
                ang = d.get("angles_to_planted")
                lines.append(
                    f"- {h}: periodogram peaks {d.get('peak_periods')}"
                    + (
                        f"; principal angles to the planted probe block (deg) "
                        f"{', '.join(f'{a:.0f}' for a in ang)}"
                        if ang is not None
                        else ""
                    )
                )
            if sub.get("planted_periods"):
                lines.append(f"- planted periods: {sub['planted_periods']}")
        return "\n".join(lines)


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _score(m: MethodScore, planted: list[Head]) -> MethodScore:
    p = set(planted)
    s = set(m.selected)
    m.precision = len(s & p) / len(s) if s else 0.0
    m.recall = len(s & p) / len(p)
    top = set(m.ranking[: len(p)])
    m.precision_at_p = len(top & p) / len(p)
    pos = {h: i + 1 for i, h in enumerate(m.ranking)}
    m.planted_ranks = {head_str(h): pos.get(h, -1) for h in planted}
    return m


def _cut_selected(scores: np.ndarray) -> list[Head]:
    from addk_interp.localize.cuts import cut

    pos = np.clip(np.nan_to_num(scores, nan=0.0), 0.0, None)
    if not (pos > 0).any():
        return []
    c = cut(pos, "largest_gap")
    return [Head(int(a), int(b)) for a, b in c.selected]


def _ranking(scores: np.ndarray) -> list[Head]:
    L, H = scores.shape
    return sorted(
        (Head(la, h) for la in range(L) for h in range(H) if np.isfinite(scores[la, h])),
        key=lambda x: (-float(scores[x]), x.layer, x.head),
    )


def validate(run, *, n_prompts: int = 4, verbose: bool = False) -> ValidationResult:
    """Score every localization method on ``run``'s model (``run``: an executed
    ``pipeline.Run``; its cached stages are reused)."""
    import torch

    from addk_interp.localize.aie import AIEResult
    from addk_interp.localize.attribution import attribution_patching, single_head_ablation
    from addk_interp.localize.gates import GateFit, fit_gates, gate_config
    from addk_interp.localize.headsets import select_heads

    if isinstance(n_prompts, bool) or not isinstance(n_prompts, int) or n_prompts < 1:
        raise AddkError(f"n_prompts must be an integer ≥ 1, got {n_prompts!r}")
    model = run.model
    st = run.out / "stages"
    man = json.loads((run.out / "manifest.json").read_text())
    walls = {s["name"]: float(s.get("wall_s", 0.0)) for s in man["stages"]}
    gt = ground_truth_of(model)
    planted = [Head.parse(h) for h in gt["planted_heads"]] if gt else []
    train_m, held_m = run.load_means()
    train = list(run.family.train)
    methods: list[MethodScore] = []

    fit = GateFit.load(st / "localize" / "gates.safetensors", model)
    coef = fit.final.abs().double().numpy()
    methods.append(
        MethodScore(
            "gates_coef",
            [Head(*h) for h in run.selected_heads()],
            _ranking(coef),
            walls.get("localize", float("nan")),
        )
    )
    t0 = time.time()
    cfg = gate_config(
        run.budget["gates"],
        layer=run.layer,
        seed=run.cfg.seed,
        fmt=run.cfg.format,
        mode="mask",
        **run.budget["gate_overrides"],
    )
    mfit = fit_gates(model, run.family, train_m, None, cfg, verbose=verbose)
    msel = select_heads(mfit)
    methods.append(
        MethodScore(
            "gates_mask",
            [Head(*h) for h in msel.heads],
            _ranking(mfit.final.double().numpy()),
            time.time() - t0,
        )
    )
    aie = AIEResult.load(st / "aie" / "aie.safetensors", model)
    a = aie.aie.double().numpy()
    methods.append(
        MethodScore("aie", _cut_selected(a), _ranking(a), walls.get("aie", float("nan")))
    )
    ex = run.examples(train, n_prompts, "validation_scores")
    t0 = time.time()
    atp = attribution_patching(
        model, ex, train_m, train_tasks=train, fmt=run.cfg.format, batch_size=run.cfg.batch_size
    )
    methods.append(
        MethodScore(
            "attribution_patching",
            _cut_selected(-atp.scores),
            _ranking(-atp.scores),
            time.time() - t0,
        )
    )
    t0 = time.time()
    abl = single_head_ablation(
        model, ex, train_m, train_tasks=train, fmt=run.cfg.format, batch_size=run.cfg.batch_size
    )
    methods.append(
        MethodScore(
            "single_head_ablation",
            _cut_selected(-abl.scores),
            _ranking(-abl.scores),
            time.time() - t0,
        )
    )
    if planted:
        methods = [_score(m, planted) for m in methods]
    n_top = max(2, len(planted) or len(methods[0].selected))
    agreement = {}
    for i, m1 in enumerate(methods):
        for m2 in methods[i + 1 :]:
            s1, s2 = set(m1.ranking[:n_top]), set(m2.ranking[:n_top])
            agreement[f"{m1.method} vs {m2.method}"] = len(s1 & s2) / len(s1 | s2)
    subspace = _subspace(run, gt, torch)
    note = (
        "Scored against the planted ground truth."
        if gt
        else "No ground truth for this model: only the agreement between methods is reported."
    )
    return ValidationResult(
        model.info.name, model.info.fingerprint, gt, methods, agreement, subspace, note
    )


def _subspace(run, gt: dict | None, torch) -> dict[str, Any]:
    from addk_interp.analyses.periodic import principal_angles

    results = run.results()
    sub = results.subspaces
    out: dict[str, Any] = {"per_head": {}}
    fits = results.fits
    planted_basis = None
    if gt is not None:
        d = run.model.info.d_model
        planted_basis = np.eye(d)[:, gt["probe_dims"]]
        out["planted_periods"] = gt["planted_periods"]
        out["planted_subspace"] = (
            f"residual coordinates {gt['probe_dims'][0]}..{gt['probe_dims'][-1]}"
        )
    for d in sub.per_head if sub else []:
        h = d.head
        row: dict[str, Any] = {"peak_periods": list(d.peak_periods)[:5]}
        fit = fits.get(h)
        if planted_basis is not None and fit is not None:
            row["angles_to_planted"] = [
                float(a) for a in principal_angles(fit.bases["onto_full"], planted_basis)
            ]
        out["per_head"][head_str(h)] = row
    return out
