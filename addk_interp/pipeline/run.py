"""The cached, resumable ``Run``: ``RunConfig`` → every stage of ``pipeline.stages.STAGES`` in
registry order → ``report.html`` + ``manifest.json`` (written last).

A stage is reused when ``stages/<name>/done.json`` carries the same key (``Run.stage_key``: the
config fields the stage declares, the model fingerprint, the code version, the task family and
the upstream stages' keys) and every output file it recorded still has its sha256; otherwise it
is recomputed and says why. ``Run`` also serves the stages' shared inputs: the model, the task
family, seeded prompt samples (``examples``), the saved means, heads and fits of earlier stages.
Cost: the stages' (README's run-time table); the bookkeeping is negligible.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import resource
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from addk_interp._version import __version__
from addk_interp.core.errors import AddkError
from addk_interp.core.heads import Head
from addk_interp.core.store import read_json, sha256_file, write_json
from addk_interp.core.validate import check_count, check_seed, check_task_files, check_writable_dir
from addk_interp.pipeline.presets import PRESETS, STAGE_PRESETS
from addk_interp.pipeline.stages import STAGES, Stage, check_registry


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

    def to_dict(self) -> dict:
        return asdict(self)


def reset_peak_rss() -> None:
    """Linux: reset the process's peak RSS (VmHWM) so each stage reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
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
    root = Path(__file__).resolve().parents[1]  # the whole addk_interp package
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
        stages: tuple[Stage, ...] | None = None,
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
        # the stages this run executes, in order (default: the registry; a user's extra stage
        # is one more entry, see docs/developer.md)
        self.registry: tuple[Stage, ...] = tuple(STAGES if stages is None else stages)
        self._notes: dict[str, object] = {}  # non-artifact facts of the running stage (timings)
        check_registry(self.registry)
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
            from addk_interp.models.loading import load_model

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

    @property
    def context(self):
        """The evaluation context of this run's stages (model, format, batch size, injection
        layer, seed, progress): ``hooks.context.EvalContext``."""
        from addk_interp.hooks.context import EvalContext

        return EvalContext(
            self.model,
            fmt=self.cfg.format,
            batch_size=self.cfg.batch_size,
            layer=self.layer,
            seed=self.cfg.seed,
            verbose=self.verbose,
        )

    def stage_key(self, name: str) -> str:
        """The cache key of stage ``name`` (``pipeline.stages``: config fields, model, code,
        family and the upstream stages' keys)."""
        st = next((s for s in self.registry if s.name == name), None)
        if st is None:
            raise KeyError(f"stage {name!r} is not in this run's registry")
        d = {f: getattr(self.cfg, f) for f in st.config_fields}
        d["model"] = self.model.info.fingerprint
        d["code"] = code_version()
        d["family"] = self.family.fingerprint()
        d["upstream"] = [self.stage_key(u) for u in st.upstream]
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def stage(self, st: Stage) -> None:
        """Run registry stage ``st`` unless its cached outputs are current."""
        name = st.name
        sdir = self.out / "stages" / name
        done = sdir / "done.json"
        key = self.stage_key(name)
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
        reset_peak_rss()
        self._notes = {}
        files = st.run(self, sdir)
        unknown = [Path(f).name for f in files if Path(f).name not in st.outputs]
        if unknown:
            raise RuntimeError(f"stage {name} wrote {unknown}, not declared in pipeline.stages")
        rel = [str(Path(f).relative_to(self.out)) for f in files]
        rec = {
            "name": name,
            "status": "done" if reason is None else f"recomputed ({reason})",
            "key": key,
            "wall_s": round(time.time() - t0, 2),
            "peak_rss_mb": peak_rss_mb(),
            "files": rel,
            "sha256": {r: sha256_file(self.out / r) for r in rel},
        }
        if self._notes:
            rec["notes"] = dict(self._notes)
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
            if hashes.get(r) != sha256_file(p):
                return f"{r} changed since it was written"
        return None

    # ------------------------------------------------------------------ stages
    def note(self, **facts) -> None:
        """Record facts of the running stage that are not results (timings, where a resumed
        computation started) in its ``done.json``: every timing of a run lives in done.json and
        manifest.json, so the artifacts of two same-seed runs are byte-identical."""
        self._notes.update(facts)

    def examples(self, tasks, n, kind, seed=None, shots=None):
        from addk_interp.core.tasks import sample_family

        return sample_family(
            self.family,
            tasks,
            n,
            self.cfg.shots if shots is None else shots,
            seed=self.cfg.seed if seed is None else seed,
            kind=kind,
        )

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

    def load_means(self):
        from addk_interp.hooks.capture import HeadMeans

        sdir = self.out / "stages" / "capture"
        train = HeadMeans.load(sdir / "means_train.safetensors", self.model)
        held = None
        if (sdir / "means_heldout.safetensors").exists():
            held = HeadMeans.load(sdir / "means_heldout.safetensors", self.model)
        return train, held

    # ------------------------------------------------------------------ localization
    @property
    def budget(self) -> dict:
        return STAGE_PRESETS.get(self.cfg.preset, STAGE_PRESETS["default"])

    def results(self):
        """Typed views of this run's saved stage results (``report.results.RunResults``),
        read afresh: each call sees the files as they are now."""
        from addk_interp.report.results import RunResults

        return RunResults(self.out)

    def _need(self, value, stage: str):
        if value is None:
            raise AddkError(f"stage {stage} has no result in {self.out} (run it first)")
        return value

    def selected_heads(self) -> list[Head]:
        return self._need(self.results().selection, "localize").heads

    def scan_outcome(self):
        """The scan stage's significant / main heads and verdict (``ScanOutcome``)."""
        return self._need(self.results().scan, "scan")

    def main_heads(self) -> list[Head]:
        return self.scan_outcome().main

    def analysis_heads(self) -> list[Head]:
        """Main heads; else the scanned heads by gain (at most 3); else none."""
        return self.results().analysis_heads()

    # ------------------------------------------------------------------ main
    def validate(self) -> None:
        """Tasks, prompt format, injection layer and that one n-shot prompt per task can be
        sampled and fits the context: every refusal here comes before anything is written."""
        from addk_interp.core.prompts import encode_examples
        from addk_interp.core.tasks import get_format

        _ = self.family  # tasks first: no model load for a bad task spec
        get_format(self.cfg.format)
        self.model.residual_hook(self.layer, "resid_mid")  # the site exists (not parallel attn)
        probe = self.examples(list(self.family.tasks), 1, "validate")
        encode_examples(self.model, probe, self.cfg.format)

    def execute(self) -> Path:
        from addk_interp.report.html import write_report

        t0 = time.time()
        self.validate()  # nothing is written before the inputs are known to be usable
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "run.json", {"model": self.cfg.model, "config": self.cfg.to_dict()})
        for st in self.registry:
            self.stage(st)
        t1 = time.time()
        reset_peak_rss()
        report = write_report(self)
        self.stages.append(
            {
                "name": "report",
                "status": "done",
                "wall_s": round(time.time() - t1, 2),
                "peak_rss_mb": peak_rss_mb(),
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
