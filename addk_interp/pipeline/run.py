"""Pipeline: ``RunConfig`` -> every stage, cached and resumable; the only place that knows order.

Stages (each a function of the previous stages' saved results):
  1. ``clean_eval``  — clean 0-shot and n-shot accuracy per task (kind ``final_eval``)
  2. ``capture``     — per-task mean head outputs: train tasks (kind ``activation``, seed) and
                       held-out tasks from separately seeded prompts (``heldout_activation``,
                       seed + 1001); h̄ uses training tasks only
  3. ``fv_eval``     — function vectors on zero-shot prompts, paired with clean n-shot:
                       "all heads at unit coefficient" (FV_t = Σ_all mean_t) and the control
                       "mean of all training tasks" (Σ_all h̄); held-out tasks use held-out means
  4. ``localize``    — gate learning over all heads on training tasks + cut → selected heads
  5. ``scan``        — recovery (dose-response) scan of the top selected heads → significant and
                       main heads (``localize.selectors``)
  6. ``headsets``    — head-set FV evaluations on held-out tasks + necessity (ablate main heads)
  7. ``subspaces``   — per analysis head: PCA, six-target periodic fit, periodogram, angles
  8. ``projections`` — causal projection tests onto / out of the fitted subspaces (§5.4)
  9. ``extraction``  — aggregation/extraction identity, token-group shares, label peaking
 10. ``circuits``    — OV maps of numbers / labels into the fitted subspace, QK role profiles
 11. ``demos``       — per-demonstration offset read-out and self-correction (add-k only)
 12. ``aie``         — AIE baseline (Todd et al.): rank heads by indirect effect, top-k FV
 13. ``report``      — ``report.html`` (plotly, self-contained) + ``manifest.json`` (written last)

A stage is reused when ``stages/<name>/done.json`` carries the same key (hash of the config
fields it depends on, the model fingerprint and the code version); otherwise it is recomputed.
Cost (default model, default preset): a few minutes on 2 CPU cores, dominated by clean_eval.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import resource
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch

from addk_interp._version import __version__
from addk_interp.core.errors import (
    AddkError,
    check_count,
    check_seed,
    check_task_files,
    check_writable_dir,
)
from addk_interp.core.heads import Head, head_str
from addk_interp.core.store import read_json, write_json, write_table

PRESETS = {
    "default": dict(k="1-30", n_eval=10, n_capture=10),
    "quick": dict(k="1-10", n_eval=4, n_capture=4),
    # the paper's protocol sizes (spec §3.3, §4): for a GPU and a model that solves the task
    "paper": dict(k="1-30", n_eval=100, n_capture=100),
}
# localization / analysis budgets per preset (gate preset, scan size, c grid, prompts), sized
# so that a default run of Gemma-3-270m fits in ≈10 minutes on 2 CPU cores (README)
STAGE_PRESETS = {
    "default": dict(
        gates="default",
        gate_overrides={},
        n_scan=3,
        c_max=6,
        n_random=20,
        n_extract=4,
        max_scan_heads=6,
        n_necessity=4,
        n_proj=3,
        max_proj_heads=2,
        n_circuit=2,
        n_aie=10,
        n_demo=12,
        max_demo_heads=1,
        max_single_heads=96,
    ),
    "quick": dict(
        gates="default",
        gate_overrides=dict(epochs=2, n_items=64, n_monitor=2),
        n_scan=2,
        c_max=4,
        n_random=5,
        n_extract=2,
        max_scan_heads=2,
        n_necessity=1,
        n_proj=2,
        max_proj_heads=1,
        n_circuit=1,
        n_aie=1,
        n_demo=2,
        max_demo_heads=1,
        max_single_heads=0,
    ),
    "paper": dict(
        gates="paper",
        gate_overrides={},
        n_scan=100,
        c_max=20,
        n_random=20,
        n_extract=40,
        max_scan_heads=64,
        n_necessity=100,
        n_proj=100,
        max_proj_heads=3,
        n_circuit=20,
        n_aie=625,
        n_demo=200,
        max_demo_heads=3,
        max_single_heads=4096,
    ),
}


@dataclass(frozen=True)
class RunConfig:
    model: str = "default"
    family: str = "add"
    k: str | None = "1-30"
    task_file: tuple[str, ...] = ()
    heldout: tuple[str, ...] = ()
    format: str = "arrow"
    shots: int = 5
    n_eval: int = 20
    n_capture: int = 20
    seed: int = 42
    layer: int | None = None
    batch_size: int = 32
    preset: str = "default"
    device: str = "cpu"
    dtype: str = "float32"
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


_TASKS = ("family", "k", "task_file", "heldout", "format", "shots", "seed")
STAGE_DEPS = {
    "clean_eval": (*_TASKS, "n_eval"),
    "capture": (*_TASKS, "n_capture"),
    "fv_eval": (*_TASKS, "n_eval", "layer"),
    "localize": (*_TASKS, "layer", "preset"),
    "scan": (*_TASKS, "layer", "preset"),
    "headsets": (*_TASKS, "n_eval", "layer", "preset"),
    "subspaces": (*_TASKS,),
    "extraction": (*_TASKS, "preset"),
    "aie": (*_TASKS, "n_eval", "layer", "preset"),
    "projections": (*_TASKS, "layer", "preset"),
    "circuits": (*_TASKS, "preset"),
    "demos": (*_TASKS, "preset"),
}
# a stage's key includes its upstream stages' keys, so a recomputed input recomputes it
STAGE_UPSTREAM = {
    "fv_eval": ("capture",),
    "localize": ("capture",),
    "scan": ("localize",),
    "headsets": ("scan",),
    "subspaces": ("scan",),
    "extraction": ("scan",),
    "aie": ("localize",),
    "projections": ("scan",),
    "circuits": ("scan",),
    "demos": ("scan",),
}


def _reset_peak_rss() -> None:
    """Linux: reset the process's peak RSS (VmHWM) so each stage reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    """Peak RSS since the last reset (VmHWM), else the process's lifetime peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@functools.cache
def code_version() -> str:
    """``__version__`` + a hash of the package's source: editing the code invalidates caches."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"


class Run:
    """Executes the stages of one run directory."""

    def __init__(
        self,
        cfg: RunConfig,
        out: Path,
        *,
        verbose: bool = True,
        force: bool = False,
        model=None,
        on_stage=None,
    ):
        """``model``: an already loaded ``HookedModel`` (e.g. a multi-GPU HookedTransformer
        wrapped by ``from_hooked_transformer``) used instead of loading ``cfg.model``; cached
        stages are keyed by its fingerprint, so another model never reuses them."""
        self.cfg = cfg
        self.out = Path(out)
        self.verbose = verbose
        self.stages: list[dict] = []
        self._model = model
        self._family = None
        self._on_stage = on_stage  # called with each stage's record (the CLI prints it)
        self._check_out_dir(force)

    # ------------------------------------------------------------------ setup
    def _check_out_dir(self, force: bool) -> None:
        check_writable_dir(self.out)
        if not self.out.exists():
            return
        if not self.out.is_dir():
            raise AddkError(f"{self.out} exists and is not a directory")
        entries = [p.name for p in self.out.iterdir()]
        if not entries:
            return
        if "run.json" not in entries:
            raise AddkError(
                f"{self.out} is not empty and holds no addk-interp run (no run.json); "
                "choose another --out, nothing was written"
            )
        prev = read_json(self.out / "run.json")
        if prev.get("model") != self.cfg.model and not force:
            raise AddkError(
                f"{self.out} holds a run of model {prev.get('model')!r}, not {self.cfg.model!r}; "
                "use another --out (or --force to replace it)"
            )

    @property
    def family(self):
        if self._family is None:
            from addk_interp.core.tasks import arithmetic_family, json_family, parse_k_range

            c = self.cfg
            if c.task_file:
                self._family = json_family(list(c.task_file), heldout=c.heldout)
            else:
                ks = parse_k_range(c.k) if c.k else None
                self._family = arithmetic_family(c.family, ks=ks)
            if not self._family.train:
                raise AddkError("the training split is empty; selection needs training tasks")
        return self._family

    @property
    def model(self):
        if self._model is None:
            from addk_interp.models.adapter import load_model

            self._model = load_model(self.cfg.model, device=self.cfg.device, dtype=self.cfg.dtype)
        return self._model

    @property
    def layer(self) -> int:
        from addk_interp.hooks.interventions import default_injection_layer

        if self.cfg.layer is not None:
            if not 0 <= self.cfg.layer < self.model.n_layers:
                raise AddkError(
                    f"--layer {self.cfg.layer} out of range 0..{self.model.n_layers - 1}"
                )
            return self.cfg.layer
        return default_injection_layer(self.model.n_layers)

    def _key(self, name: str) -> str:
        d = {f: getattr(self.cfg, f) for f in STAGE_DEPS.get(name, ())}
        d["model"] = self.model.info.fingerprint
        d["code"] = code_version()
        d["family"] = self.family.fingerprint()
        d["upstream"] = [self._key(u) for u in STAGE_UPSTREAM.get(name, ())]
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def stage(self, name: str, fn):
        sdir = self.out / "stages" / name
        done = sdir / "done.json"
        key = self._key(name)
        reason = None
        if done.exists():
            try:
                prev = read_json(done)
            except AddkError:
                prev, reason = {}, "done.json unreadable"
            if prev.get("key") == key:
                reason = self._changed_output(prev)
                if reason is None:
                    prev["status"] = "cached"
                    self.stages.append(prev)
                    if self._on_stage:
                        self._on_stage(prev)
                    return
        t0 = time.time()
        _reset_peak_rss()
        files = fn(sdir)
        rel = [str(Path(f).relative_to(self.out)) for f in files]
        rec = {
            "name": name,
            "status": "done" if reason is None else f"recomputed ({reason})",
            "key": key,
            "wall_s": round(time.time() - t0, 2),
            "peak_rss_mb": _peak_rss_mb(),
            "files": rel,
            "sha256": {r: _sha256(self.out / r) for r in rel},
        }
        write_json(done, rec)
        self.stages.append(rec)
        if self._on_stage:
            self._on_stage(rec)

    def _changed_output(self, rec: dict) -> str | None:
        """Why a cached stage cannot be reused (an output missing or changed since it was
        written: truncated, hand-edited, deleted), or None."""
        hashes = rec.get("sha256")
        if hashes is None:
            return "no output hashes recorded"
        for r in rec.get("files", []):
            p = self.out / r
            if not p.is_file():
                return f"{r} is missing"
            if hashes.get(r) != _sha256(p):
                return f"{r} changed since it was written"
        return None

    # ------------------------------------------------------------------ stages
    def _examples(self, tasks, n, kind, seed=None, shots=None):
        from addk_interp.core.tasks import sample_family

        return sample_family(
            self.family,
            tasks,
            n,
            self.cfg.shots if shots is None else shots,
            seed=self.cfg.seed if seed is None else seed,
            kind=kind,
        )

    def clean_eval(self, sdir: Path):
        from addk_interp.core.scoring import accuracy_table, evaluate
        from addk_interp.pipeline.evaluation import paired_shot_examples

        per = paired_shot_examples(
            self.family,
            list(self.family.tasks),
            [0, self.cfg.shots],
            self.cfg.n_eval,
            self.cfg.seed,
        )
        frames = [
            evaluate(
                self.model,
                ex,
                self.cfg.format,
                batch_size=self.cfg.batch_size,
                verbose=self.verbose,
                desc=f"clean {s}-shot",
            )
            for s, ex in per.items()
        ]
        df = pd.concat(frames, ignore_index=True)
        table = accuracy_table(df, by=("task", "k", "shots"), seed=self.cfg.seed)
        table["split"] = ["heldout" if t in self.family.heldout else "train" for t in table["task"]]
        return [write_table(sdir / "examples.csv", df), write_table(sdir / "accuracy.csv", table)]

    def clean_results(self, examples) -> pd.DataFrame | None:
        """Clean n-shot outcomes of ``examples`` from the clean_eval stage when they are the
        same prompts (same seed, kind ``final_eval``, shots); None otherwise (recompute)."""
        p = self.out / "stages" / "clean_eval" / "examples.csv"
        if not p.exists():
            return None
        df = pd.read_csv(p, dtype={"query": str, "answer": str, "pred": str}, keep_default_na=False)
        df = df[df["shots"] == self.cfg.shots]
        by = {
            (t, q, a): r
            for t, q, a, r in zip(
                df["task"], df["query"], df["answer"], range(len(df)), strict=True
            )
        }
        try:
            rows = [by[(e.task, str(e.query), str(e.answer))] for e in examples]
        except KeyError:
            return None
        out = df.iloc[rows].reset_index(drop=True).copy()
        out["correct"] = out["correct"].astype(bool)
        return out

    def capture(self, sdir: Path):
        from addk_interp.hooks.capture import capture_means

        c = self.cfg
        train = self._examples(self.family.train, c.n_capture, "activation")
        files = []
        m = capture_means(
            self.model,
            train,
            c.format,
            batch_size=c.batch_size,
            verbose=self.verbose,
            desc="capture train",
            extra_provenance={"split": "train", "seed": c.seed},
        )
        files.append(m.save(sdir / "means_train.safetensors"))
        if self.family.heldout:
            held = self._examples(
                self.family.heldout, c.n_capture, "heldout_activation", seed=c.seed + 1001
            )
            h = capture_means(
                self.model,
                held,
                c.format,
                batch_size=c.batch_size,
                verbose=self.verbose,
                desc="capture held-out",
                extra_provenance={"split": "heldout", "seed": c.seed + 1001},
            )
            files.append(h.save(sdir / "means_heldout.safetensors"))
        return files

    def load_means(self):
        from addk_interp.hooks.capture import HeadMeans

        sdir = self.out / "stages" / "capture"
        train = HeadMeans.load(sdir / "means_train.safetensors", self.model)
        held = None
        if (sdir / "means_heldout.safetensors").exists():
            held = HeadMeans.load(sdir / "means_heldout.safetensors", self.model)
        return train, held

    def fv_eval(self, sdir: Path):
        from addk_interp.core.scoring import evaluate
        from addk_interp.hooks.fv import evaluate_fv, head_set_vectors

        c = self.cfg
        train_m, held_m = self.load_means()
        frames = []
        for split, tasks, means in (
            ("heldout", self.family.heldout, held_m),
            ("train", self.family.train, train_m),
        ):
            if not tasks or means is None:
                continue
            ex = self._examples(tasks, c.n_eval, "final_eval")
            clean = self.clean_results(ex)
            if clean is None:
                clean = evaluate(self.model, ex, c.format, batch_size=c.batch_size)
            for label, vecs in (
                ("all_heads_unit", head_set_vectors(means, tasks, None)),
                (
                    "mean_of_train_tasks",
                    head_set_vectors(train_m, tasks, None, mean_of=self.family.train),
                ),
            ):
                df = evaluate_fv(
                    self.model,
                    ex,
                    vecs,
                    layer=self.layer,
                    fmt=c.format,
                    batch_size=c.batch_size,
                    clean=clean,
                    label=label,
                )
                df["split"] = split
                frames.append(df)
            zero = evaluate(self.model, ex, c.format, zero_shot=True, batch_size=c.batch_size)
            zero["clean_correct"] = clean["correct"].to_numpy()
            zero["condition"] = "zero_shot_no_fv"
            zero["split"] = split
            frames.append(zero)
        df = pd.concat(frames, ignore_index=True)
        summary = (
            df.groupby(["split", "condition"])
            .agg(
                n=("correct", "size"),
                fv_accuracy=("correct", "mean"),
                clean_accuracy=("clean_correct", "mean"),
            )
            .reset_index()
        )
        from addk_interp.core.scoring import bootstrap_ci

        cis = [
            bootstrap_ci(g["correct"].to_numpy(), seed=c.seed)
            for _, g in df.groupby(["split", "condition"])
        ]
        summary["ci_low"] = [a for a, _ in cis]
        summary["ci_high"] = [b for _, b in cis]
        summary["layer"] = self.layer
        return [
            write_table(sdir / "fv_examples.csv", df),
            write_table(sdir / "fv_summary.csv", summary),
        ]

    # ------------------------------------------------------------------ localization
    @property
    def budget(self) -> dict:
        return STAGE_PRESETS.get(self.cfg.preset, STAGE_PRESETS["default"])

    def localize(self, sdir: Path):
        from addk_interp.localize.gates import fit_gates, gate_config
        from addk_interp.localize.headsets import select_heads

        train_m, held_m = self.load_means()
        cfg = gate_config(
            self.budget["gates"],
            layer=self.layer,
            seed=self.cfg.seed,
            fmt=self.cfg.format,
            **self.budget["gate_overrides"],
        )
        # checkpoints are per stage key: an interrupted run resumes, a changed config starts over
        ckpt = sdir / f"checkpoints-{self._key('localize')}"
        for stale in sdir.glob("checkpoints-*") if sdir.exists() else []:
            if stale != ckpt:
                shutil.rmtree(stale)
        fit = fit_gates(
            self.model,
            self.family,
            train_m,
            held_m,
            cfg,
            checkpoint_dir=ckpt,
            verbose=self.verbose,
        )
        sel = select_heads(fit)
        return [
            fit.save(sdir / "gates.safetensors"),
            write_json(sdir / "selected.json", sel.to_dict()),
        ]

    def selected_heads(self) -> list[tuple[int, int]]:
        d = read_json(self.out / "stages" / "localize" / "selected.json")
        return [tuple(h) for h in d["heads"]]

    def scan(self, sdir: Path):
        from addk_interp.localize.headsets import head_sets, recovery_scan
        from addk_interp.localize.selectors import save_scan_json

        selected = self.selected_heads()
        # cost control: scan the top heads of the selected set by |coef| (all when it is small)
        heads = selected[: self.budget["max_scan_heads"]]
        files = []
        if not heads:
            return [
                write_json(
                    sdir / "headsets.json", {"verdict": "empty selection", "main": {"main": []}}
                )
            ]
        train_m, _ = self.load_means()
        ex = self._examples(self.family.train, self.budget["n_scan"], "scan")
        scan = recovery_scan(
            self.model,
            ex,
            train_m,
            heads,
            train_tasks=self.family.train,
            layer=self.layer,
            c_max=self.budget["c_max"],
            fmt=self.cfg.format,
            batch_size=self.cfg.batch_size,
            verbose=self.verbose,
        )
        files.append(save_scan_json(scan, sdir / "scan.json"))
        hs = head_sets(scan)
        d = hs.to_dict()
        d["scanned"] = [list(h) for h in heads]
        d["not_scanned"] = [list(h) for h in selected[len(heads) :]]
        files.append(write_json(sdir / "headsets.json", d))
        return files

    def headset_result(self) -> dict:
        return read_json(self.out / "stages" / "scan" / "headsets.json")

    def main_heads(self) -> list[tuple[int, int]]:
        main = self.headset_result().get("main", {})
        return [tuple(h) for h in main.get("main", [])]

    def headsets(self, sdir: Path):
        from addk_interp.localize.gates import GateFit
        from addk_interp.localize.headsets import headset_evals, necessity

        sel = self.selected_heads()
        main = self.main_heads()
        train_m, held_m = self.load_means()
        files = []
        tasks = self.family.heldout if held_m is not None else self.family.train
        means = held_m if held_m is not None else train_m
        ex = self._examples(tasks, self.cfg.n_eval, "final_eval")
        fit = GateFit.load(self.out / "stages" / "localize" / "gates.safetensors", self.model)
        clean = self.clean_results(ex)
        ev = headset_evals(
            self.model,
            ex,
            means,
            train_m,
            train_tasks=self.family.train,
            selected=sel,
            main=main,
            raw_coef=fit,
            layer=self.layer,
            fmt=self.cfg.format,
            batch_size=self.cfg.batch_size,
            seed=self.cfg.seed,
            clean=clean,
        )
        files.append(write_table(sdir / "headset_summary.csv", ev.table()))
        files.append(write_table(sdir / "headset_examples.csv", ev.per_example))
        # necessity runs 1 + n_random full n-shot forwards per prompt: its own smaller subset
        per_task: dict[str, int] = {}
        nec_ex = []
        for e in ex:
            if per_task.get(e.task, 0) < self.budget["n_necessity"]:
                per_task[e.task] = per_task.get(e.task, 0) + 1
                nec_ex.append(e)
        nec = necessity(
            self.model,
            nec_ex,
            train_m,
            clean=self.clean_results(nec_ex),
            train_tasks=self.family.train,
            main=main,
            selected=sel,
            n_random=self.budget["n_random"],
            seed=self.cfg.seed,
            fmt=self.cfg.format,
            batch_size=self.cfg.batch_size,
            # single-head ablations: every head when the model has at most max_single_heads
            # heads, else the selected ones (budget); the manifest records the choice
            single_heads=(
                None
                if self.model.n_layers * self.model.n_heads <= self.budget["max_single_heads"]
                else sel
            ),
        )
        files.append(write_json(sdir / "necessity.json", nec.to_dict()))
        return files

    def analysis_heads(self) -> list[tuple[int, int]]:
        """Main heads; else the selected heads by gain (at most 3); else none."""
        main = self.main_heads()
        if main:
            return main
        gains = self.headset_result().get("main", {}).get("gains", {})
        ranked = sorted(gains, key=lambda h: -gains[h])[:3]
        return [tuple(Head.parse(h)) for h in ranked]

    def subspaces(self, sdir: Path):
        from addk_interp.analyses.summary import angle_matrix, merged_means, summarize_heads

        heads = self.analysis_heads()
        train_m, held_m = self.load_means()
        means, tasks = merged_means(train_m, held_m)
        ks = [self.family.tasks[t].k for t in tasks]
        res = {"heads": [list(h) for h in heads], "numeric_k": all(k is not None for k in ks)}
        if heads and res["numeric_k"]:
            subs = summarize_heads(means, ks, heads)
            res["per_head"] = [s.to_dict() for s in subs]
            # angles: the analysis heads and the top selected heads (up to 6 in all)
            extra = [h for h in self.selected_heads() if h not in heads][: max(0, 6 - len(heads))]
            res["angle_heads"] = [list(h) for h in heads + extra]
            res["angles"] = angle_matrix(
                subs + (summarize_heads(means, ks, extra) if extra else [])
            )
        return [write_json(sdir / "subspaces.json", res)]

    def extraction(self, sdir: Path):
        from addk_interp.analyses.extraction import (
            directions_from_means,
            group_shares,
            iter_extractions,
            label_peaking,
        )
        from addk_interp.pipeline import analysis_stages

        heads = self.analysis_heads()
        res: dict = {"heads": [list(h) for h in heads], "per_head": {}}
        if heads:
            train_m, _ = self.load_means()
            ex = self._examples(self.family.train, self.budget["n_extract"], "extraction", seed=0)
            collected: dict = {h: ([], []) for h in heads}
            for results in iter_extractions(
                self.model, ex, heads, self.cfg.format, batch_size=self.cfg.batch_size
            ):
                for h, r in results.items():
                    collected[h][0].append(r)
                    collected[h][1].append(directions_from_means(train_m, h, r))
            fits = analysis_stages.head_fits(self, heads)
            for h, (rs, ds) in collected.items():
                gs = group_shares(rs, ds)
                d = gs.to_dict()
                basis = fits[h].basis("full", "onto") if h in fits else None
                d["peaking"] = label_peaking(rs, ds, basis, seed=self.cfg.seed).to_dict()
                d["identity_max_rel_error"] = max(float(r.identity_rel_error) for r in rs)
                d["identity_min_cos"] = min(float(r.identity_min_cos) for r in rs)
                res["per_head"][head_str(h)] = d
        return [write_json(sdir / "extraction.json", res)]

    # ------------------------------------------------------------------ main
    def validate(self) -> None:
        """Tasks, prompt format, injection layer and that one n-shot prompt per task can be
        sampled and fits the context: every refusal here comes before anything is written."""
        from addk_interp.core.prompts import encode_examples
        from addk_interp.core.tasks import get_format

        _ = self.family  # tasks first: no model load for a bad task spec
        get_format(self.cfg.format)
        self.model.residual_hook(self.layer, "resid_mid")  # the site exists (not parallel attn)
        probe = self._examples(list(self.family.tasks), 1, "validate")
        encode_examples(self.model, probe, self.cfg.format)

    def execute(self) -> Path:
        from addk_interp.pipeline import analysis_stages
        from addk_interp.report.html import write_report

        t0 = time.time()
        self.validate()  # nothing is written before the inputs are known to be usable
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "run.json", {"model": self.cfg.model, "config": self.cfg.to_dict()})
        self.stage("clean_eval", self.clean_eval)
        self.stage("capture", self.capture)
        self.stage("fv_eval", self.fv_eval)
        self.stage("localize", self.localize)
        self.stage("scan", self.scan)
        self.stage("headsets", self.headsets)
        self.stage("subspaces", self.subspaces)
        self.stage("projections", lambda d: analysis_stages.projections(self, d))
        self.stage("extraction", self.extraction)
        self.stage("circuits", lambda d: analysis_stages.circuits(self, d))
        self.stage("demos", lambda d: analysis_stages.demos(self, d))
        self.stage("aie", lambda d: analysis_stages.aie(self, d))
        t1 = time.time()
        _reset_peak_rss()
        report = write_report(self)
        self.stages.append(
            {
                "name": "report",
                "status": "done",
                "wall_s": round(time.time() - t1, 2),
                "peak_rss_mb": _peak_rss_mb(),
                "files": [report.name],
            }
        )
        self.write_manifest(time.time() - t0)
        return report

    def write_manifest(self, wall: float) -> None:
        import transformer_lens
        import transformers

        write_json(
            self.out / "manifest.json",
            {
                "config": self.cfg.to_dict(),
                "injection_layer": self.layer,
                "model": self.model.info.to_dict(),
                "family": {
                    "name": self.family.name,
                    "fingerprint": self.family.fingerprint(),
                    "train": list(self.family.train),
                    "heldout": list(self.family.heldout),
                },
                "versions": {
                    "addk_interp": code_version(),
                    "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "transformer_lens": getattr(transformer_lens, "__version__", "3.x"),
                    "python": platform.python_version(),
                },
                "stages": self.stages,
                "wall_s": round(wall, 2),
                # the per-stage peaks reset the kernel's high-water mark, so the run's is their max
                "peak_rss_mb": max([s.get("peak_rss_mb", 0.0) for s in self.stages] + [0.0]),
            },
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def config_from_args(args) -> RunConfig:
    name = "quick" if args.quick else args.preset
    if args.quick and args.preset not in ("default", "quick"):
        raise AddkError("--quick and --preset are exclusive")
    check_seed(args.seed)
    check_task_files(args.task_file)
    for flag, v in (("--n-eval", args.n_eval), ("--n-capture", args.n_capture)):
        if v is not None:
            check_count(v, flag)
    check_count(args.shots, "--shots", hi=1000)
    check_count(args.batch_size, "--batch-size", hi=65_536)
    preset = PRESETS[name]
    cfg = RunConfig(
        model=args.model,
        family=args.family,
        k=args.k or preset["k"],
        task_file=tuple(args.task_file or ()),
        heldout=tuple(args.heldout or ()),
        format=args.format,
        shots=args.shots,
        n_eval=args.n_eval or preset["n_eval"],
        n_capture=args.n_capture or preset["n_capture"],
        seed=args.seed,
        layer=args.layer,
        batch_size=args.batch_size,
        preset=name,
        device=args.device,
        dtype=args.dtype,
    )
    if cfg.family != "add" and not args.k:
        cfg = replace(cfg, k=None if name != "quick" else "1-10")
    for name in ("shots", "n_eval", "n_capture", "batch_size"):
        if getattr(cfg, name) <= 0:
            raise AddkError(f"--{name.replace('_', '-')} must be positive")
    return cfg
