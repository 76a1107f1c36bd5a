"""Typed views of a run directory's stage results: what the report (findings, tables, every
figure), the summary, the run headline, the validation and the ``Run`` accessors read — objects
with named fields and ``Head`` values, never dictionary keys of the stage files.

``RunResults(out)`` loads each stage's result on first access and returns None when the stage
did not run (or wrote nothing for it): CSV tables as DataFrames (``clean``, ``clean_examples``,
``fv``, ``fv_examples``, ``fv_outcomes``, ``headset_fv``, ``projections``) and the views
``selection``, ``scan``, ``scan_curves``, ``necessity``, ``subspaces``, ``extraction``,
``circuits``, ``demos``, ``aie``, ``validation``; ``fits`` (the persisted ``SubspaceFit``
objects), ``gate_fit()`` and ``aie_scores()`` load the persisted tensors. Loading never needs
the model. Each view is built by ``from_json`` from the stage's own file, the one place that
knows its layout; a corrupt or malformed file is a one-line ``AddkError`` naming it. Values a
figure draws are kept as the file holds them (ints stay ints), so the figures are unchanged
byte for byte. Not a step of the method; cost: reading small JSON / CSV files.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from addk_interp.core.errors import AddkError
from addk_interp.core.heads import Head

V = TypeVar("V")
Num = int | float  # a number as the file holds it (1 stays 1: figures draw it so)


def _heads(values) -> list[Head]:
    return [Head.parse(h) for h in values or []]


def _ci(pair) -> tuple[float, float] | None:
    return None if pair is None else (float(pair[0]), float(pair[1]))


def as_view(cls: type[V], value) -> V:
    """``value`` when it already is a ``cls``, else ``cls.from_json(value)`` (a stage file's
    dictionary, e.g. from a notebook that computed it in memory)."""
    return value if isinstance(value, cls) else cls.from_json(value)


@dataclass(frozen=True)
class Stat:
    """A mean over prompts with its spread and percentile-bootstrap 95% CI (``None`` where the
    file has none, e.g. no valid prompt)."""

    n: int
    mean: Num | None
    sd: Num | None = None
    min: Num | None = None
    max: Num | None = None
    ci_low: Num | None = None
    ci_high: Num | None = None

    @classmethod
    def from_json(cls, d) -> Stat:
        if not isinstance(d, dict):  # a bare number: a mean without spread or CI
            return cls(0, d)
        return cls(d.get("n", 0), d.get("mean"), d.get("sd"), d.get("min"), d.get("max"),
                   d.get("ci_low"), d.get("ci_high"))

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean, "sd": self.sd, "min": self.min,
                "max": self.max, "ci_low": self.ci_low, "ci_high": self.ci_high}


ShareStat = Stat  # the name summary-era code used


# ----------------------------------------------------------------------------- localize
@dataclass(frozen=True)
class Cut:
    """The selection rule's cut of the sorted |coef| curve (``selected.json``'s ``cut``)."""

    rule: str | None
    threshold: Num | None
    curve: list[Num]
    selected: list[Head]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Cut:
        return cls(d.get("rule"), d.get("threshold"), list(d.get("curve") or []),
                   _heads(d.get("selected")))


@dataclass(frozen=True)
class Selection:
    """``localize/selected.json``: the gate coefficients' cut."""

    heads: list[Head]
    rule: str
    verdict: str
    reason: str | None
    n_epochs: int | None
    k: int | None = None  # checkpoints averaged before the cut
    cut: Cut | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Selection:
        cut = d.get("cut")
        return cls(_heads(d["heads"]), str(d.get("rule")), str(d.get("verdict")),
                   d.get("reason"), d.get("n_epochs"), d.get("k"),
                   Cut.from_json(cut) if cut else None)


# ----------------------------------------------------------------------------- scan
@dataclass(frozen=True)
class ScanOutcome:
    """``scan/headsets.json``: significant and main heads, the localization verdict."""

    selected: list[Head]
    scanned: list[Head]
    not_scanned: list[Head]
    significant: list[Head]  # in scan order
    main: list[Head]
    minor: list[Head]
    gains: dict[Head, float]
    clean_acc: Num | None
    selector_verdict: str | None
    verdict: str
    reason: str | None
    significant_ranked: list[Head] = field(default_factory=list)  # by adjusted p

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
            significant_ranked=_heads(sig.get("significant")),
        )

    def by_gain(self, k: int | None = None) -> list[Head]:
        """Scanned heads by gain, highest first (ties keep the scan's order)."""
        order = sorted(self.gains, key=lambda h: -self.gains[h])
        return order if k is None else order[:k]


@dataclass(frozen=True)
class ScanCurves:
    """``scan/scan.json`` (also the released scan's layout): per scanned head, correct counts
    out of ``n_eval`` and the mean answer log-probability at each coefficient c."""

    n_eval: int
    c_grid: list[Num]
    correct: dict[Head, list[int]]
    clean_correct: int
    full_selected_fv_correct: int | None
    mean_answer_logprob: dict[Head, list[Num | None]] = field(default_factory=dict)
    n_examples: int | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ScanCurves:
        return cls(
            n_eval=int(d["n_eval"]),
            c_grid=list(d["c_grid"]),
            correct={Head.parse(k): list(v) for k, v in d["correct"].items()},
            clean_correct=d["clean_correct"],
            full_selected_fv_correct=d.get("full_selected_fv_correct"),
            mean_answer_logprob={Head.parse(k): list(v)
                                 for k, v in (d.get("mean_answer_logprob") or {}).items()},
            n_examples=d.get("n_examples"),
        )


# ----------------------------------------------------------------------------- headsets
@dataclass(frozen=True)
class Necessity:
    """``headsets/necessity.json``: clean n-shot accuracy with the main heads mean-ablated vs
    random subsets of the same size (of the other selected heads, and of all other heads), and
    every single head ablated alone."""

    n: int
    clean_acc: float
    clean_ci: tuple[float, float] | None
    main: list[Head]
    main_acc: Num | None
    main_ci: tuple[float, float] | None
    random_accs: list[float]
    random_all_accs: list[float]
    single_head_accs: dict[Head, float]
    verdict: str | None
    frac_random_all_at_least_main: Num | None = None
    frac_random_at_least_main: Num | None = None
    n_prompts: int = 0  # prompts recorded in the file's meta (0: not recorded)

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
            frac_random_at_least_main=d.get("frac_random_at_least_main"),
            n_prompts=len((d.get("meta") or {}).get("prompts") or []),
        )


# ----------------------------------------------------------------------------- subspaces
@dataclass(frozen=True)
class Periodogram:
    periods: list[Num]
    power: list[Num]


@dataclass(frozen=True)
class HeadSubspaceView:
    head: Head
    pcs_to_95: int | None
    r2: dict[str, Num | None]
    peak_periods: list[Num]
    fit_error: str | None
    cumvar: list[Num] = field(default_factory=list)  # cumulative variance by #components
    ks: list[Num] = field(default_factory=list)  # the tasks' k, one per row of pc_coords
    pc_coords: list[list[Num]] = field(default_factory=list)  # top-6 PC coordinates per k
    periodogram: Periodogram | None = None

    @classmethod
    def from_json(cls, p: dict[str, Any]) -> HeadSubspaceView:
        pg = p.get("periodogram")
        return cls(Head.parse(p["head"]), p.get("pcs_to_95"), dict(p.get("r2") or {}),
                   list(p.get("peak_periods") or []), p.get("fit_error"),
                   list(p.get("cumvar") or []), list(p.get("ks") or []),
                   list(p.get("pc_coords_top6") or []),
                   Periodogram(list(pg["periods"]), list(pg["power"])) if pg else None)


@dataclass(frozen=True)
class Angles:
    """Principal angles (degrees) between the subspaces of ``names`` (square matrices)."""

    names: list[str]
    mean_deg: list[list[Num]]
    max_deg: list[list[Num]] | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Angles:
        return cls([str(n) for n in d.get("names") or []], list(d.get("mean_deg") or []),
                   d.get("max_deg"))


@dataclass(frozen=True)
class Subspaces:
    """``subspaces/subspaces.json``: per analysis head, PCs for 95 %, R² per target, peak
    periods, cumulative variance, periodogram, PC coordinates; principal angles between
    heads."""

    heads: list[Head]
    numeric_k: bool
    per_head: list[HeadSubspaceView]
    angle_heads: list[Head] = field(default_factory=list)
    angles: Angles | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Subspaces:
        per = [HeadSubspaceView.from_json(p) for p in d.get("per_head") or []]
        ang = d.get("angles")
        return cls(_heads(d.get("heads")), bool(d.get("numeric_k", True)), per,
                   _heads(d.get("angle_heads")), Angles.from_json(ang) if ang else None)


# ----------------------------------------------------------------------------- extraction
@dataclass(frozen=True)
class HeadExtraction:
    """One head's extraction result: the label share of its task signal, the signed share per
    token role, the label-peaking metrics, and the identity's worst relative error."""

    head: Head
    label_share: Stat | None
    roles: dict[str, Stat]
    peaking: dict[str, Stat]  # the metrics summarized over prompts (mean, CI)
    identity_max_rel_error: Num | None

    @classmethod
    def from_json(cls, head: Head, v: dict[str, Any]) -> HeadExtraction:
        ls = v.get("label_share")
        peaking = {k: Stat.from_json(s) for k, s in (v.get("peaking") or {}).items()
                   if isinstance(s, dict) and "mean" in s}
        return cls(head, Stat.from_json(ls) if ls else None,
                   {r: Stat.from_json(s) for r, s in (v.get("roles") or {}).items()},
                   peaking, v.get("identity_max_rel_error"))


@dataclass(frozen=True)
class Extraction:
    """``extraction/extraction.json``: per analysis head (file order), its ``HeadExtraction``."""

    per_head: dict[Head, HeadExtraction]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Extraction:
        out = {}
        for k, v in (d.get("per_head") or {}).items():
            h = Head.parse(k)
            out[h] = HeadExtraction.from_json(h, v)
        return cls(out)

    @property
    def heads(self) -> list[Head]:
        return list(self.per_head)

    @property
    def label_share(self) -> dict[Head, Stat]:
        """Heads with a label share (a mean over at least one valid prompt)."""
        return {h: e.label_share for h, e in self.per_head.items()
                if e.label_share is not None and e.label_share.mean is not None}

    @property
    def identity_max_rel_error(self) -> dict[Head, float]:
        return {h: float(e.identity_max_rel_error) for h, e in self.per_head.items()
                if e.identity_max_rel_error is not None}

    @property
    def role_share(self) -> dict[Head, dict[str, float]]:
        """Mean signed share per role, per head (0 where the file has no mean)."""
        return {h: {r: float(s.mean or 0.0) for r, s in e.roles.items()}
                for h, e in self.per_head.items()}


# ----------------------------------------------------------------------------- circuits
@dataclass(frozen=True)
class OVMap:
    """OV read-out of number inputs: ``coords[i]`` (head's fitted basis) of ``numbers[i]``."""

    numbers: list[Num]
    coords: list[list[Num]]


@dataclass(frozen=True)
class CircuitView:
    role_mass: dict[str, float]  # query-row attention by token role
    ov_fraction: dict[str, Num] | None  # OV of label residuals: variance in unit / magnitude
    n_prompts: int = 0  # prompts the QK statistics average over
    label_numbers: list[Num] = field(default_factory=list)  # label numbers seen in context
    label_scores: list[Num | None] = field(default_factory=list)  # centered QK score per number
    label_counts: list[int] | None = None  # labels per number
    ov_embedding: OVMap | None = None  # OV of the number-token embeddings
    ov_label: OVMap | None = None  # OV of the residuals at in-context labels


def _ov(m) -> OVMap | None:
    return OVMap(list(m["numbers"]), list(m["coords"])) if m else None


@dataclass(frozen=True)
class Circuits:
    """``circuits/circuits.json``: per analysis head, the QK role profile and label scores, the
    OV maps and the OV split."""

    per_head: dict[Head, CircuitView]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Circuits:
        out = {}
        for k, v in (d.get("per_head") or {}).items():
            dec = v.get("ov_decomposition")
            q = v["qk"]
            out[Head.parse(k)] = CircuitView(
                {r: float(x or 0.0) for r, x in q["role_mass"].items()},
                dict(dec["fraction"]) if dec else None,
                q.get("n_prompts", 0),
                list(q.get("numbers") or []),
                list(q.get("number_centered") or []),
                q.get("number_counts"),
                _ov(v.get("ov_embedding")),
                _ov(v.get("ov_label")),
            )
        return cls(out)

    @property
    def heads(self) -> list[Head]:
        return list(self.per_head)


# ----------------------------------------------------------------------------- demos
@dataclass(frozen=True)
class OffsetReadoutView:
    accuracy: float
    ci: tuple[float, float] | None
    chance: float
    corr_own_offset: Num | None
    corr_query_k: Num | None
    own_offset: list[Num] | None = None  # per label: its own offset y − x
    decoded: list[Num] | None = None  # per label: the offset read out of its signal
    n_labels: int | None = None


@dataclass(frozen=True)
class Effect:
    """A mean change with its 95% CI over ``n`` prompts."""

    n: int
    mean: Num
    ci: list[Num]


@dataclass(frozen=True)
class PositionEffect:
    """The effect of a wrong label at demonstration ``j`` (0-based)."""

    j: int
    d_accuracy: Effect | None
    d_aggregate: Effect | None


def _effect(e) -> Effect | None:
    return Effect(e["n"], e["mean"], list(e["ci"])) if e is not None else None


@dataclass(frozen=True)
class SelfCorrectionView:
    shots: int
    accuracy: dict[str, float]  # "clean", "j0".."j{shots-1}" (wrong label at demo j), "shuffled"
    verdict: str
    n_prompts: int = 0
    by_position: list[PositionEffect] = field(default_factory=list)
    clean_contributions: list[list[Num | None]] | None = None  # [prompt, demo], clean prompts

    @classmethod
    def from_json(cls, c: dict[str, Any]) -> SelfCorrectionView:
        return cls(
            int(c.get("shots", 0)),
            {a: float("nan") if x is None else float(x)
             for a, x in (c.get("accuracy") or {}).items()},
            str(c.get("verdict")),
            int(c.get("n_prompts") or 0),
            [PositionEffect(r["j"], _effect(r.get("d_accuracy")), _effect(r.get("d_aggregate")))
             for r in c.get("by_position") or []],
            (c.get("contributions") or {}).get("clean"),
        )


@dataclass(frozen=True)
class Demos:
    """``demos/demos.json``: offset read-out accuracy vs chance and the self-correction
    summary per head (or the reason the stage skipped); ``heads`` in file order."""

    readout: dict[Head, OffsetReadoutView]
    self_correction: dict[Head, SelfCorrectionView]
    reason: str | None
    heads: list[Head] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Demos:
        ro, sc, heads = {}, {}, []
        for k, v in (d.get("per_head") or {}).items():
            h = Head.parse(k)
            heads.append(h)
            o = v.get("offset_readout")
            if o:
                ro[h] = OffsetReadoutView(
                    float(o["accuracy"]), _ci(o.get("accuracy_ci")), float(o.get("chance", 0.0)),
                    o.get("corr_own_offset"), o.get("corr_query_k"), o.get("own_offset"),
                    o.get("decoded"), o.get("n_labels"))
            c = v.get("self_correction")
            if c:
                sc[h] = SelfCorrectionView.from_json(c)
        return cls(ro, sc, d.get("reason"), heads)


# ----------------------------------------------------------------------------- aie
@dataclass(frozen=True)
class TopK:
    k: int
    accuracy: float
    ci: tuple[float, float]
    n: int
    heads: list[Head]
    clean_accuracy: Num | None = None
    mean_answer_logprob: Num | None = None


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
                         int(v["n"]), _heads(v.get("heads")), v.get("clean_accuracy"),
                         v.get("mean_answer_logprob"))
            for k, v in (d.get("topk") or {}).items()
        }
        return cls(int(d.get("n_corrupted_prompts", 0)), _heads(d.get("ranking_top")),
                   {int(k): int(v) for k, v in (d.get("overlap_with_selected") or {}).items()},
                   topk, d.get("reason"))


# ----------------------------------------------------------------------------- validation
@dataclass(frozen=True)
class ValidationMethod:
    method: str
    selected: list[Head]
    ranking: list[Head]  # every head, largest effect first
    precision: Num | None
    recall: Num | None
    planted_ranks: dict[str, int | None]
    wall_s: Num


@dataclass(frozen=True)
class Validation:
    """``validation.json`` (``addk-interp validate``): each localization method's selection,
    ranking and (with a ground truth) precision / recall."""

    methods: list[ValidationMethod]
    note: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Validation:
        return cls([
            ValidationMethod(m["method"], _heads(m.get("selected")), _heads(m.get("ranking")),
                             m.get("precision"), m.get("recall"),
                             dict(m.get("planted_ranks") or {}), m["wall_s"])
            for m in d.get("methods") or []
        ], str(d.get("note", "")))


# ----------------------------------------------------------------------------- the run
class RunResults:
    """Typed, lazily loaded results of the run in ``out`` (see module docstring)."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.stages = self.out / "stages"

    def done(self, stage: str) -> bool:
        """Whether ``stage`` finished (its ``done.json`` exists)."""
        return (self.stages / stage / "done.json").exists()

    def _read_json(self, p: Path) -> Any:
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise AddkError(f"{p}: corrupt JSON ({e.msg})") from None
        except UnicodeDecodeError:
            raise AddkError(f"{p}: corrupt JSON (not UTF-8 text)") from None

    def _json(self, stage: str, name: str) -> Any:
        return self._read_json(self.stages / stage / name)

    def _csv(self, stage: str, name: str, **read_kw):
        import pandas as pd

        p = self.stages / stage / name
        if not p.exists():
            return None
        try:
            return pd.read_csv(p, **read_kw)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
            raise AddkError(f"{p}: unreadable table ({type(e).__name__})") from None

    def _parse(self, cls, d, path: Path, what: str):
        if d is None:
            return None
        if not isinstance(d, dict):
            raise AddkError(
                f"{path}: not a valid {what} result (a JSON {type(d).__name__}, not an object)"
            )
        try:
            return cls.from_json(d)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise AddkError(f"{path}: not a valid {what} result ({e})") from None

    def _view(self, cls, stage: str, name: str):
        return self._parse(cls, self._json(stage, name), self.stages / stage / name, stage)

    @functools.cached_property
    def manifest(self) -> dict | None:
        return self._read_json(self.out / "manifest.json")

    # tables (DataFrames)
    @functools.cached_property
    def clean(self):
        """Clean accuracy per (task, k, shots, split) with CIs (a DataFrame)."""
        return self._csv("clean_eval", "accuracy.csv")

    @functools.cached_property
    def clean_examples(self):
        """Clean n-shot / zero-shot outcome per prompt (a DataFrame)."""
        return self._csv("clean_eval", "examples.csv")

    @functools.cached_property
    def fv(self):
        """FV summary per (split, condition) with CIs (a DataFrame)."""
        return self._csv("fv_eval", "fv_summary.csv")

    @functools.cached_property
    def fv_examples(self):
        """FV outcome per (prompt, condition), numbers parsed (a DataFrame)."""
        return self._csv("fv_eval", "fv_examples.csv")

    @functools.cached_property
    def fv_outcomes(self):
        """``fv_examples.csv`` with every cell as written (``query`` / ``answer`` as text, no
        NA parsing): the prompts pair up exactly across conditions."""
        return self._csv("fv_eval", "fv_examples.csv", dtype={"query": str, "answer": str},
                         keep_default_na=False)

    @functools.cached_property
    def headset_fv(self):
        """Head-set FV accuracy per condition with CIs (a DataFrame)."""
        return self._csv("headsets", "headset_summary.csv")

    @functools.cached_property
    def projections(self):
        """Projection-test arms per head (a DataFrame)."""
        return self._csv("projections", "projections.csv")

    # views
    @functools.cached_property
    def selection(self) -> Selection | None:
        return self._view(Selection, "localize", "selected.json")

    @functools.cached_property
    def scan(self) -> ScanOutcome | None:
        return self._view(ScanOutcome, "scan", "headsets.json")

    @functools.cached_property
    def scan_curves(self) -> ScanCurves | None:
        return self._view(ScanCurves, "scan", "scan.json")

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
    def demos(self) -> Demos | None:
        return self._view(Demos, "demos", "demos.json")

    @functools.cached_property
    def aie(self) -> AIESummary | None:
        return self._view(AIESummary, "aie", "aie_summary.json")

    @functools.cached_property
    def validation(self) -> Validation | None:
        """``addk-interp validate``'s result (None when it has not run)."""
        p = self.out / "validation.json"
        return self._parse(Validation, self._read_json(p), p, "validation")

    # persisted tensors (checked against ``model``'s fingerprint when given)
    def gate_fit(self, model=None):
        """The gate fit (``localize.gates.GateFit``: final coefficients, history) or None."""
        from addk_interp.localize.gates import GateFit

        p = self.stages / "localize" / "gates.safetensors"
        if not p.exists():
            return None
        return GateFit.load(p) if model is None else GateFit.load(p, model)

    def aie_scores(self, model=None):
        """The AIE per head (``localize.aie.AIEResult``) or None."""
        from addk_interp.localize.aie import AIEResult

        p = self.stages / "aie" / "aie.safetensors"
        if not p.exists():
            return None
        return AIEResult.load(p) if model is None else AIEResult.load(p, model)

    def analysis_heads(self) -> list[Head]:
        """Main heads; else the scanned heads by gain (at most 3); else none."""
        scan = self.scan
        if scan is None:
            return []
        return scan.main or scan.by_gain(3)
