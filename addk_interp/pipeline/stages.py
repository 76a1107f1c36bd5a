"""The stage protocol and the ordered registry ``STAGES``: the one place that says which stages
a run has, in which order, what each reads and what invalidates it.

A :class:`Stage` names its science call ``run(ctx, sdir) -> files`` (``ctx``: the executing
:class:`addk_interp.pipeline.run.Run`, which gives the model, the task family, the config, the
budget and the saved results of earlier stages), the stages it reads (``upstream``), the
``RunConfig`` fields its result depends on (``config_fields``) and the budget keys of
``presets.STAGE_PRESETS`` it reads (``budget``). ``Run`` derives from the registry the order of
execution, every stage's cache key

    key(s) = sha256(config fields of s, model fingerprint, code version, family fingerprint,
                    [key(u) for u in s.upstream])[:16]

the manifest's stage list and the tests' expectations. Adding a stage: write ``fn(ctx, sdir)``
in a science-facing stage module and append one ``Stage`` here (docs/developer.md has a worked
example). Cost: nothing (a table).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# the task definition every stage's prompts depend on
TASK_FIELDS = ("family", "k", "task_file", "heldout", "format", "shots", "seed")


@dataclass(frozen=True)
class Stage:
    name: str
    module: str  # where ``function`` lives (imported on first run: the registry stays cheap)
    function: str
    upstream: tuple[str, ...] = ()
    config_fields: tuple[str, ...] = TASK_FIELDS
    budget: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    summary: str = ""

    def run(self, ctx: Any, sdir: Path) -> list[Path]:
        import importlib

        fn: Callable[[Any, Path], list[Path]] = getattr(
            importlib.import_module(self.module), self.function
        )
        return list(fn(ctx, sdir))


_E, _L, _A = (
    "addk_interp.pipeline.eval_stages",
    "addk_interp.pipeline.localize_stages",
    "addk_interp.pipeline.analysis_stages",
)

STAGES: tuple[Stage, ...] = (
    Stage("clean_eval", _E, "clean_eval", (), (*TASK_FIELDS, "n_eval"), (),
          ("examples.csv", "accuracy.csv"), "clean 0-shot and n-shot accuracy per task"),
    Stage("capture", _E, "capture", (), (*TASK_FIELDS, "n_capture"), (),
          ("means_train.safetensors", "means_heldout.safetensors"),
          "per-task mean head outputs (train; held-out from separately seeded prompts)"),
    Stage("fv_eval", _E, "fv_eval", ("capture",), (*TASK_FIELDS, "n_eval", "layer"), (),
          ("fv_examples.csv", "fv_summary.csv"), "all-head function vectors on zero-shot prompts"),
    Stage("localize", _L, "localize", ("capture",), (*TASK_FIELDS, "layer", "preset"),
          ("gates", "gate_overrides"), ("gates.safetensors", "selected.json"),
          "gate learning over all heads + cut → selected heads"),
    Stage("scan", _L, "scan", ("localize",), (*TASK_FIELDS, "layer", "preset"),
          ("n_scan", "c_max", "max_scan_heads"), ("scan.json", "headsets.json"),
          "recovery scan → significant and main heads, localization verdict"),
    Stage("headsets", _L, "headsets", ("scan",), (*TASK_FIELDS, "n_eval", "layer", "preset"),
          ("n_necessity", "n_random", "max_single_heads"),
          ("headset_summary.csv", "headset_examples.csv", "necessity.json"),
          "head-set FVs on held-out tasks + necessity vs random subsets"),
    Stage("subspaces", _A, "subspaces", ("scan",), TASK_FIELDS, (),
          ("subspaces.json", "fits.safetensors"),
          "per analysis head: PCA, periodic fit (persisted), periodogram, angles"),
    Stage("projections", _A, "projections", ("scan", "subspaces"),
          (*TASK_FIELDS, "layer", "preset"), ("n_proj", "max_proj_heads"),
          ("projections.json", "projections.csv"),
          "causal projection tests onto / out of the fitted subspaces"),
    Stage("extraction", _A, "extraction", ("scan", "subspaces"), (*TASK_FIELDS, "preset"),
          ("n_extract",), ("extraction.json",),
          "aggregation/extraction identity, token-group shares, label peaking"),
    Stage("circuits", _A, "circuits", ("scan", "subspaces"), (*TASK_FIELDS, "preset"),
          ("n_circuit", "max_proj_heads"), ("circuits.json",),
          "OV maps into the fitted subspace, QK role profiles"),
    Stage("demos", _A, "demos", ("scan",), (*TASK_FIELDS, "preset"),
          ("n_demo", "max_demo_heads"), ("demos.json",),
          "per-demonstration offset read-out and self-correction"),
    Stage("aie", _A, "aie", ("localize",), (*TASK_FIELDS, "n_eval", "layer", "preset"),
          ("n_aie",), ("aie.safetensors", "aie_summary.json"),
          "AIE baseline: heads ranked by indirect effect, top-k FV"),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)


def stage_by_name(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}: one of {', '.join(STAGE_NAMES)}")


def check_registry(stages: tuple[Stage, ...] = STAGES) -> None:
    """Names unique, upstream stages earlier in the order (a DAG executed in order)."""
    seen: set[str] = set()
    for s in stages:
        if s.name in seen:
            raise ValueError(f"stage {s.name!r} registered twice")
        missing = [u for u in s.upstream if u not in seen]
        if missing:
            raise ValueError(f"stage {s.name!r} reads {missing} which do not run before it")
        seen.add(s.name)
