"""Typed views of a run directory's stage results: what the report, the summary, the run
headline, the validation and the ``Run`` accessors read — objects with named fields and ``Head``
values, never dictionary keys of the stage files.

``RunResults(out)`` loads each stage's result on first access and returns None when the stage
did not run (or wrote nothing for it): ``clean`` (accuracy table), ``fv`` (FV summary),
``selection``, ``scan``, ``headset_fv``, ``necessity``, ``subspaces``, ``fits`` (the persisted
``SubspaceFit`` objects), ``extraction``, ``demos``, ``aie``. Loading never needs the model.
Each view is built by ``from_json`` from the stage's own file, the one place that knows its
layout. Not a step of the method; cost: reading small JSON / CSV files.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from addk_interp.core.errors import AddkError
from addk_interp.core.heads import Head


def _heads(values) -> list[Head]:
    return [Head.parse(h) for h in values or []]


def _ci(pair) -> tuple[float, float] | None:
    return None if pair is None else (float(pair[0]), float(pair[1]))


@dataclass(frozen=True)
class Selection:
    """``localize/selected.json``: the gate coefficients' cut."""

    heads: list[Head]
    rule: str
    verdict: str
    reason: str | None
    n_epochs: int | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Selection:
        return cls(_heads(d["heads"]), str(d.get("rule")), str(d.get("verdict")),
                   d.get("reason"), d.get("n_epochs"))


@dataclass(frozen=True)
class ScanOutcome:
    """``scan/headsets.json``: significant and main heads, the localization verdict."""

    selected: list[Head]
    scanned: list[Head]
    not_scanned: list[Head]
    significant: list[Head]
    main: list[Head]
    minor: list[Head]
    gains: dict[Head, float]
    clean_acc: float | None
    selector_verdict: str | None
    verdict: str
    reason: str | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ScanOutcome:
        sig = d.get("significant") or {}
        tests = sig.get("tests") or {}
        significant = [Head.parse(k) for k, t in tests.items()
                       if isinstance(t, dict) and t.get("significant")]
        m = d.get("main") or {}
        loc = d.get("localization") or {}
        return cls(
            selected=_heads(d.get("selected")),
            scanned=_heads(d.get("scanned")),
            not_scanned=_heads(d.get("not_scanned")),
            significant=significant,
            main=_heads(m.get("main")),
            minor=_heads(m.get("minor")),
            gains={Head.parse(k): float(v) for k, v in (m.get("gains") or {}).items()},
            clean_acc=m.get("clean_acc"),
            selector_verdict=m.get("verdict"),
            verdict=str(loc.get("verdict", d.get("verdict", "n/a"))),
            reason=loc.get("reason"),
        )

    def by_gain(self, k: int | None = None) -> list[Head]:
        """Scanned heads by gain, highest first (ties keep the scan's order)."""
        order = sorted(self.gains, key=lambda h: -self.gains[h])
        return order if k is None else order[:k]


@dataclass(frozen=True)
class Necessity:
    """``headsets/necessity.json``: clean n-shot accuracy with the main heads mean-ablated vs
    random subsets of the same size."""

    n: int
    clean_acc: float
    clean_ci: tuple[float, float] | None
    main: list[Head]
    main_acc: float | None
    main_ci: tuple[float, float] | None
    random_accs: list[float]
    random_all_accs: list[float]
    single_head_accs: dict[Head, float]
    verdict: str | None
    frac_random_all_at_least_main: float | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Necessity:
        return cls(
            n=int(d.get("n", 0)),
            clean_acc=float(d["clean_acc"]),
            clean_ci=_ci(d.get("clean_ci")),
            main=_heads(d.get("main")),
            main_acc=d.get("main_acc"),
            main_ci=_ci(d.get("main_ci")),
            random_accs=[float(x) for x in d.get("random_accs") or []],
            random_all_accs=[float(x) for x in d.get("random_all_accs") or []],
            single_head_accs={Head.parse(k): float(v)
                              for k, v in (d.get("single_head_accs") or {}).items()},
            verdict=d.get("verdict"),
            frac_random_all_at_least_main=d.get("frac_random_all_at_least_main"),
        )


@dataclass(frozen=True)
class HeadSubspaceView:
    head: Head
    pcs_to_95: int | None
    r2: dict[str, float]
    peak_periods: list[float]
    fit_error: str | None


@dataclass(frozen=True)
class Subspaces:
    """``subspaces/subspaces.json``: per analysis head, PCs for 95 %, R² per target, peak
    periods; principal angles between heads."""

    heads: list[Head]
    numeric_k: bool
    per_head: list[HeadSubspaceView]
    angle_heads: list[Head] = field(default_factory=list)
    angles: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Subspaces:
        per = [
            HeadSubspaceView(Head.parse(p["head"]), p.get("pcs_to_95"), dict(p.get("r2") or {}),
                             list(p.get("peak_periods") or []), p.get("fit_error"))
            for p in d.get("per_head") or []
        ]
        return cls(_heads(d.get("heads")), bool(d.get("numeric_k")), per,
                   _heads(d.get("angle_heads")), dict(d.get("angles") or {}))


@dataclass(frozen=True)
class ShareStat:
    mean: float
    ci_low: float | None
    ci_high: float | None
    n: int


@dataclass(frozen=True)
class Extraction:
    """``extraction/extraction.json``: per analysis head, the label share of its task signal
    and the aggregation/extraction identity's worst error."""

    label_share: dict[Head, ShareStat]
    identity_max_rel_error: dict[Head, float]
    role_share: dict[Head, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Extraction:
        shares, errs, roles = {}, {}, {}
        for k, v in (d.get("per_head") or {}).items():
            h = Head.parse(k)
            roles[h] = {r: float((m or {}).get("mean") or 0.0)
                        for r, m in (v.get("roles") or {}).items()}
            s = v.get("label_share") or {}
            if "mean" in s:
                shares[h] = ShareStat(float(s["mean"]), s.get("ci_low"), s.get("ci_high"),
                                      int(s.get("n", 0)))
            if "identity_max_rel_error" in v:
                errs[h] = float(v["identity_max_rel_error"])
        return cls(shares, errs, roles)


@dataclass(frozen=True)
class CircuitView:
    role_mass: dict[str, float]  # query-row attention by token role
    ov_fraction: dict[str, float] | None  # OV of label residuals: variance in unit / magnitude


@dataclass(frozen=True)
class Circuits:
    """``circuits/circuits.json``: per analysis head, the QK role profile and the OV split."""

    per_head: dict[Head, CircuitView]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Circuits:
        out = {}
        for k, v in (d.get("per_head") or {}).items():
            dec = v.get("ov_decomposition")
            out[Head.parse(k)] = CircuitView(
                {r: float(x or 0.0) for r, x in v["qk"]["role_mass"].items()},
                dict(dec["fraction"]) if dec else None,
            )
        return cls(out)


@dataclass(frozen=True)
class OffsetReadoutView:
    accuracy: float
    ci: tuple[float, float] | None
    chance: float
    corr_own_offset: float | None
    corr_query_k: float | None


@dataclass(frozen=True)
class SelfCorrectionView:
    shots: int
    accuracy: dict[str, float]  # "clean", "j0".."j{shots-1}" (wrong label at demo j), "shuffled"
    verdict: str


@dataclass(frozen=True)
class Demos:
    """``demos/demos.json``: offset read-out accuracy vs chance and the self-correction
    summary per head (or the reason the stage skipped)."""

    readout: dict[Head, OffsetReadoutView]
    self_correction: dict[Head, SelfCorrectionView]
    reason: str | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Demos:
        ro, sc = {}, {}
        for k, v in (d.get("per_head") or {}).items():
            h = Head.parse(k)
            o = v.get("offset_readout")
            if o:
                ro[h] = OffsetReadoutView(float(o["accuracy"]), _ci(o.get("accuracy_ci")),
                                          float(o.get("chance", 0.0)), o.get("corr_own_offset"),
                                          o.get("corr_query_k"))
            c = v.get("self_correction")
            if c:
                sc[h] = SelfCorrectionView(int(c["shots"]),
                                           {a: float("nan") if x is None else float(x)
                                            for a, x in (c.get("accuracy") or {}).items()},
                                           str(c.get("verdict")))
        return cls(ro, sc, d.get("reason"))


@dataclass(frozen=True)
class TopK:
    k: int
    accuracy: float
    ci: tuple[float, float]
    n: int
    heads: list[Head]


@dataclass(frozen=True)
class AIESummary:
    """``aie/aie_summary.json``: the AIE ranking's top heads and the top-k FV accuracies."""

    n_corrupted_prompts: int
    ranking_top: list[Head]
    overlap_with_selected: dict[int, int]
    topk: dict[int, TopK]
    reason: str | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AIESummary:
        topk = {
            int(k): TopK(int(k), float(v["accuracy"]), (float(v["ci_low"]), float(v["ci_high"])),
                         int(v["n"]), _heads(v.get("heads")))
            for k, v in (d.get("topk") or {}).items()
        }
        return cls(int(d.get("n_corrupted_prompts", 0)), _heads(d.get("ranking_top")),
                   {int(k): int(v) for k, v in (d.get("overlap_with_selected") or {}).items()},
                   topk, d.get("reason"))


class RunResults:
    """Typed, lazily loaded results of the run in ``out`` (see module docstring)."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.stages = self.out / "stages"

    def _json(self, stage: str, name: str) -> dict | None:
        p = self.stages / stage / name
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise AddkError(f"{p}: corrupt JSON ({e.msg})") from None

    def _csv(self, stage: str, name: str):
        import pandas as pd

        p = self.stages / stage / name
        if not p.exists():
            return None
        try:
            return pd.read_csv(p)
        except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
            raise AddkError(f"{p}: unreadable table ({type(e).__name__})") from None

    def _view(self, cls, stage: str, name: str):
        d = self._json(stage, name)
        if d is None:
            return None
        try:
            return cls.from_json(d)
        except (KeyError, TypeError, ValueError) as e:
            raise AddkError(
                f"{self.stages / stage / name}: not a valid {stage} result ({e})"
            ) from None

    @functools.cached_property
    def manifest(self) -> dict | None:
        p = self.out / "manifest.json"
        return json.loads(p.read_text()) if p.exists() else None

    @functools.cached_property
    def clean(self):
        """Clean accuracy per (task, k, shots, split) with CIs (a DataFrame)."""
        return self._csv("clean_eval", "accuracy.csv")

    @functools.cached_property
    def fv(self):
        """FV summary per (split, condition) with CIs (a DataFrame)."""
        return self._csv("fv_eval", "fv_summary.csv")

    @functools.cached_property
    def headset_fv(self):
        return self._csv("headsets", "headset_summary.csv")

    @functools.cached_property
    def selection(self) -> Selection | None:
        return self._view(Selection, "localize", "selected.json")

    @functools.cached_property
    def scan(self) -> ScanOutcome | None:
        return self._view(ScanOutcome, "scan", "headsets.json")

    @functools.cached_property
    def necessity(self) -> Necessity | None:
        return self._view(Necessity, "headsets", "necessity.json")

    @functools.cached_property
    def subspaces(self) -> Subspaces | None:
        return self._view(Subspaces, "subspaces", "subspaces.json")

    @functools.cached_property
    def fits(self) -> dict:
        """{Head: SubspaceFit} persisted by the subspaces stage ({} when absent)."""
        from addk_interp.analyses.periodic import load_fits

        p = self.stages / "subspaces" / "fits.safetensors"
        return load_fits(p) if p.exists() else {}

    @functools.cached_property
    def extraction(self) -> Extraction | None:
        return self._view(Extraction, "extraction", "extraction.json")

    @functools.cached_property
    def circuits(self) -> Circuits | None:
        return self._view(Circuits, "circuits", "circuits.json")

    @functools.cached_property
    def projections(self):
        """Projection-test arms per head (a DataFrame)."""
        return self._csv("projections", "projections.csv")

    @functools.cached_property
    def demos(self) -> Demos | None:
        return self._view(Demos, "demos", "demos.json")

    @functools.cached_property
    def aie(self) -> AIESummary | None:
        return self._view(AIESummary, "aie", "aie_summary.json")

    def analysis_heads(self) -> list[Head]:
        """Main heads; else the scanned heads by gain (at most 3); else none."""
        scan = self.scan
        if scan is None:
            return []
        return scan.main or scan.by_gain(3)
