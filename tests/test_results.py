"""``report.results.RunResults``: every typed view of a run directory loads from a real quick run
and holds the numbers of the raw stage file (ints stay ints: the figures draw them as written),
a stage that did not run gives None, a corrupt or malformed stage file is a one-line
``AddkError`` naming it, and the report modules (html, figures, plots) read stage results only
through these views, never a stage file's dictionary keys."""

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from addk_interp.core.errors import AddkError
from addk_interp.core.heads import Head
from addk_interp.pipeline.run import Run, RunConfig
from addk_interp.report import results as R
from addk_interp.report.results import RunResults

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results") / "run"
    cfg = RunConfig(model="organism-fv", preset="quick", k="1-10", n_eval=4, n_capture=4)
    Run(cfg, out, verbose=False).execute()
    return out


@pytest.fixture()
def res(run_dir) -> RunResults:
    return RunResults(run_dir)


def raw(run_dir: Path, stage: str, name: str) -> dict:
    return json.loads((run_dir / "stages" / stage / name).read_text())


def heads(values) -> list[Head]:
    return [Head(*h) for h in values]


def same(a, b) -> bool:
    """Equal, NaN equal to NaN, and of the same Python type (an int drawn as 1, not 1.0)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


# ----------------------------------------------------------------------------- each view
def test_selection_and_cut(res, run_dir):
    d = raw(run_dir, "localize", "selected.json")
    sel = res.selection
    assert sel.heads == heads(d["heads"]) and sel.rule == d["rule"] and sel.k == d["k"]
    assert sel.verdict == d["verdict"] and sel.n_epochs == d["n_epochs"]
    assert same(sel.cut.curve, d["cut"]["curve"]) and sel.cut.threshold == d["cut"]["threshold"]
    assert sel.cut.selected == heads(d["cut"]["selected"]) and sel.cut.rule == d["cut"]["rule"]
    assert all(isinstance(h, Head) for h in sel.heads)


def test_scan_outcome_and_curves(res, run_dir):
    d = raw(run_dir, "scan", "headsets.json")
    scan = res.scan
    assert scan.main == heads(d["main"]["main"])
    assert scan.significant_ranked == heads(d["significant"]["significant"])
    tests = d["significant"]["tests"]
    assert scan.significant == [Head.parse(k) for k, t in tests.items() if t["significant"]]
    assert scan.gains == {Head.parse(k): v for k, v in d["main"]["gains"].items()}
    assert scan.verdict == d["localization"]["verdict"]
    assert scan.reason == d["localization"]["reason"]
    assert scan.scanned == heads(d["scanned"])
    assert res.analysis_heads() == (scan.main or scan.by_gain(3))

    s = raw(run_dir, "scan", "scan.json")
    cur = res.scan_curves
    assert cur.n_eval == s["n_eval"] and same(cur.c_grid, s["c_grid"])
    assert cur.clean_correct == s["clean_correct"]
    assert cur.full_selected_fv_correct == s["full_selected_fv_correct"]
    assert cur.n_examples == s["n_examples"]
    assert list(cur.correct) == [Head.parse(k) for k in s["correct"]]
    for k, v in s["correct"].items():
        assert same(cur.correct[Head.parse(k)], v)
    for k, v in s["mean_answer_logprob"].items():
        assert same(cur.mean_answer_logprob[Head.parse(k)], v)


def test_necessity(res, run_dir):
    d = raw(run_dir, "headsets", "necessity.json")
    nec = res.necessity
    assert nec.clean_acc == d["clean_acc"] and nec.main_acc == d["main_acc"]
    assert nec.main == heads(d["main"]) and nec.n == d["n"] and nec.verdict == d["verdict"]
    assert same(nec.random_accs, d["random_accs"])
    assert same(nec.random_all_accs, d["random_all_accs"])
    assert nec.frac_random_at_least_main == d["frac_random_at_least_main"]
    assert nec.frac_random_all_at_least_main == d["frac_random_all_at_least_main"]
    assert nec.n_prompts == len(d["meta"]["prompts"]) > 0
    assert same(list(nec.clean_ci), d["clean_ci"]) and same(list(nec.main_ci), d["main_ci"])
    assert nec.single_head_accs == {Head.parse(k): v for k, v in d["single_head_accs"].items()}


def test_subspaces_and_fits(res, run_dir):
    d = raw(run_dir, "subspaces", "subspaces.json")
    sub = res.subspaces
    assert sub.heads == heads(d["heads"]) and sub.numeric_k is d["numeric_k"]
    assert sub.per_head, "the quick run has at least one analysis head"
    for v, p in zip(sub.per_head, d["per_head"], strict=True):
        assert v.head == Head(*p["head"]) and v.pcs_to_95 == p["pcs_to_95"]
        assert v.r2 == p["r2"] and same(v.peak_periods, p["peak_periods"])
        assert same(v.cumvar, p["cumvar"]) and same(v.ks, p["ks"])
        assert same(v.pc_coords, p["pc_coords_top6"])
        assert same(v.periodogram.periods, p["periodogram"]["periods"])
        assert same(v.periodogram.power, p["periodogram"]["power"])
    assert sub.angle_heads == heads(d["angle_heads"])
    assert sub.angles.names == d["angles"]["names"]
    assert same(sub.angles.mean_deg, d["angles"]["mean_deg"])
    assert same(sub.angles.max_deg, d["angles"]["max_deg"])
    assert set(res.fits) == {v.head for v in sub.per_head}


def test_extraction(res, run_dir):
    d = raw(run_dir, "extraction", "extraction.json")
    ext = res.extraction
    assert ext.heads == [Head.parse(k) for k in d["per_head"]]
    for k, p in d["per_head"].items():
        e = ext.per_head[Head.parse(k)]
        assert e.label_share.as_dict() == p["label_share"]  # same keys, same order
        assert list(e.label_share.as_dict()) == list(p["label_share"])
        assert {r: s.as_dict() for r, s in e.roles.items()} == p["roles"]
        assert e.identity_max_rel_error == p["identity_max_rel_error"]
        for m in ("task_mass", "sink_mass", "signal_cos", "full_cos", "weighting_gain"):
            assert e.peaking[m].as_dict() == p["peaking"][m], m
        assert "role_mass" not in e.peaking  # a per-role table, not one summary
        # the summary-era accessors
        assert ext.label_share[e.head] is e.label_share
        assert ext.role_share[e.head] == {r: s["mean"] for r, s in p["roles"].items()}


def test_circuits(res, run_dir):
    d = raw(run_dir, "circuits", "circuits.json")
    cir = res.circuits
    assert cir.heads == [Head.parse(k) for k in d["per_head"]]
    for k, p in d["per_head"].items():
        c = cir.per_head[Head.parse(k)]
        assert c.role_mass == p["qk"]["role_mass"] and c.n_prompts == p["qk"]["n_prompts"]
        assert same(c.label_numbers, p["qk"]["numbers"])
        assert same(c.label_scores, p["qk"]["number_centered"])
        assert c.label_counts == p["qk"].get("number_counts")
        for view, key in ((c.ov_embedding, "ov_embedding"), (c.ov_label, "ov_label")):
            assert same(view.numbers, p[key]["numbers"]) and same(view.coords, p[key]["coords"])
        assert c.ov_fraction == p["ov_decomposition"]["fraction"]


def test_demos(res, run_dir):
    d = raw(run_dir, "demos", "demos.json")
    dem = res.demos
    assert dem.heads == [Head.parse(k) for k in d["per_head"]] and dem.reason == d.get("reason")
    for k, p in d["per_head"].items():
        h = Head.parse(k)
        o, r = p["offset_readout"], dem.readout[h]
        assert r.accuracy == o["accuracy"] and list(r.ci) == o["accuracy_ci"]
        assert r.chance == o["chance"] and r.corr_own_offset == o["corr_own_offset"]
        assert same(r.decoded, o["decoded"]) and same(r.own_offset, o["own_offset"])
        assert r.n_labels == o["n_labels"]
        c, sc = p["self_correction"], dem.self_correction[h]
        assert sc.shots == c["shots"] and sc.verdict == c["verdict"]
        assert sc.n_prompts == c["n_prompts"] and sc.accuracy == c["accuracy"]
        assert same(sc.clean_contributions, c["contributions"]["clean"])
        assert [e.j for e in sc.by_position] == [row["j"] for row in c["by_position"]]
        for e, row in zip(sc.by_position, c["by_position"], strict=True):
            for got, key in ((e.d_accuracy, "d_accuracy"), (e.d_aggregate, "d_aggregate")):
                if key not in row:
                    assert got is None
                    continue
                want = row[key]
                assert got.n == want["n"] and same(got.mean, want["mean"])
                assert same(got.ci, want["ci"])


def test_aie(res, run_dir):
    d = raw(run_dir, "aie", "aie_summary.json")
    aie = res.aie
    assert aie.ranking_top == heads(d["ranking_top"])
    assert aie.overlap_with_selected == {int(k): v for k, v in d["overlap_with_selected"].items()}
    assert list(aie.topk) == [int(k) for k in d["topk"]]
    for k, v in d["topk"].items():
        t = aie.topk[int(k)]
        assert t.k == int(k) and t.accuracy == v["accuracy"] and t.n == v["n"]
        assert t.ci == (v["ci_low"], v["ci_high"]) and t.heads == heads(v["heads"])
        assert t.clean_accuracy == v["clean_accuracy"]
        assert t.mean_answer_logprob == v["mean_answer_logprob"]
    assert res.aie_scores().aie.shape[0] > 0


def test_tables_and_persisted_objects(res, run_dir):
    st = run_dir / "stages"
    for attr, path in (
        ("clean", "clean_eval/accuracy.csv"),
        ("clean_examples", "clean_eval/examples.csv"),
        ("fv", "fv_eval/fv_summary.csv"),
        ("fv_examples", "fv_eval/fv_examples.csv"),
        ("headset_fv", "headsets/headset_summary.csv"),
        ("projections", "projections/projections.csv"),
    ):
        pd.testing.assert_frame_equal(getattr(res, attr), pd.read_csv(st / path), obj=attr)
    text = res.fv_outcomes
    assert all(isinstance(q, str) for q in text["query"]) and len(text) == len(res.fv_examples)
    fit = res.gate_fit()
    assert fit is not None and len(fit.history) == res.selection.n_epochs
    assert res.done("clean_eval") and not res.done("no_such_stage")
    assert res.validation is None  # addk-interp validate has not run


def test_validation_view():
    v = R.Validation.from_json(
        {
            "note": "scored",
            "methods": [
                {"method": "gates_coef", "selected": ["L1H0"], "ranking": ["L1H0", "L0H2"],
                 "precision": 1.0, "recall": 0.5, "planted_ranks": {"L1H0": 1}, "wall_s": 2.5}
            ],
        }
    )
    m = v.methods[0]
    assert v.note == "scored" and m.selected == [Head(1, 0)]
    assert m.ranking == [Head(1, 0), Head(0, 2)] and m.planted_ranks == {"L1H0": 1}


# ----------------------------------------------------------------------------- missing / corrupt
def test_a_stage_that_did_not_run_gives_none(tmp_path):
    (tmp_path / "stages").mkdir()
    res = RunResults(tmp_path)
    for attr in (
        "clean", "clean_examples", "fv", "fv_examples", "fv_outcomes", "headset_fv",
        "projections", "selection", "scan", "scan_curves", "necessity", "subspaces",
        "extraction", "circuits", "demos", "aie", "validation", "manifest",
    ):
        assert getattr(res, attr) is None, attr
    assert res.fits == {} and res.analysis_heads() == []
    assert res.gate_fit() is None and res.aie_scores() is None


VIEWS = (
    ("localize", "selected.json", "selection"),
    ("scan", "headsets.json", "scan"),
    ("scan", "scan.json", "scan_curves"),
    ("headsets", "necessity.json", "necessity"),
    ("subspaces", "subspaces.json", "subspaces"),
    ("extraction", "extraction.json", "extraction"),
    ("circuits", "circuits.json", "circuits"),
    ("demos", "demos.json", "demos"),
    ("aie", "aie_summary.json", "aie"),
)


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run_dir, out, ignore=shutil.ignore_patterns("*.safetensors", "checkpoints*"))
    return out


def _one_line_naming(err: pytest.ExceptionInfo, path: Path) -> None:
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg


@pytest.mark.parametrize("stage,name,attr", VIEWS, ids=[v[2] for v in VIEWS])
def test_a_corrupt_stage_file_is_one_line_naming_it(run_dir, tmp_path, stage, name, attr):
    out = _copy(run_dir, tmp_path)
    p = out / "stages" / stage / name
    p.write_text(p.read_text()[: len(p.read_text()) // 2])  # truncated
    with pytest.raises(AddkError) as err:
        getattr(RunResults(out), attr)
    _one_line_naming(err, p)
    p.write_bytes(b"\xff\xfe\x00garbage")  # not text
    with pytest.raises(AddkError) as err:
        getattr(RunResults(out), attr)
    _one_line_naming(err, p)


@pytest.mark.parametrize("stage,name,attr", VIEWS, ids=[v[2] for v in VIEWS])
def test_a_stage_file_of_another_layout_is_one_line_naming_it(run_dir, tmp_path, stage, name, attr):
    out = _copy(run_dir, tmp_path)
    p = out / "stages" / stage / name
    p.write_text("[1, 2]")  # valid JSON, not a stage result
    with pytest.raises(AddkError) as err:
        getattr(RunResults(out), attr)
    _one_line_naming(err, p)


BAD_HEAD = (
    ("circuits", "circuits.json", "circuits", "per_head"),
    ("extraction", "extraction.json", "extraction", "per_head"),
    ("demos", "demos.json", "demos", "per_head"),
    ("headsets", "necessity.json", "necessity", "single_head_accs"),
)


@pytest.mark.parametrize("stage,name,attr,key", BAD_HEAD, ids=[v[2] for v in BAD_HEAD])
def test_an_unparseable_head_is_one_line_naming_the_file(run_dir, tmp_path, stage, name, attr, key):
    out = _copy(run_dir, tmp_path)
    p = out / "stages" / stage / name
    d = json.loads(p.read_text())
    first = next(iter(d[key]))
    d[key] = {"head seven": d[key][first]}
    p.write_text(json.dumps(d))
    with pytest.raises(AddkError) as err:
        getattr(RunResults(out), attr)
    _one_line_naming(err, p)
    assert "head seven" in str(err.value)


def test_an_empty_table_is_one_line_naming_it(run_dir, tmp_path):
    out = _copy(run_dir, tmp_path)
    p = out / "stages" / "fv_eval" / "fv_summary.csv"
    p.write_text("")
    with pytest.raises(AddkError) as err:
        _ = RunResults(out).fv
    _one_line_naming(err, p)


# ----------------------------------------------------------------------------- views ↔ plots
def test_plots_draw_the_same_figure_from_a_view_and_from_the_stage_dict(res, run_dir):
    """Notebooks hand the plot functions the stage dictionaries they computed in memory; the
    functions read them through the views' ``from_json``, so both draw the same figure."""
    from addk_interp.report import plots, plots_mech

    cases = [
        (plots_mech.qk_roles, res.circuits, raw(run_dir, "circuits", "circuits.json")),
        (plots_mech.label_alignment, res.extraction, raw(run_dir, "extraction", "extraction.json")),
        (plots.share_bars, res.extraction, raw(run_dir, "extraction", "extraction.json")),
        (plots_mech.self_correction, res.demos, raw(run_dir, "demos", "demos.json")),
        (plots_mech.offset_readout, res.demos, raw(run_dir, "demos", "demos.json")),
        (plots_mech.aie_bars, res.aie, raw(run_dir, "aie", "aie_summary.json")),
        (plots.necessity_plot, res.necessity, raw(run_dir, "headsets", "necessity.json")),
        (plots.sorted_coef, res.selection.cut, raw(run_dir, "localize", "selected.json")["cut"]),
    ]
    sub = raw(run_dir, "subspaces", "subspaces.json")
    cases += [
        (plots.cumvar_plot, res.subspaces.per_head, sub["per_head"]),
        (plots.periodogram_plot, res.subspaces.per_head, sub["per_head"]),
        (plots.pc_coords_plot, res.subspaces.per_head[0], sub["per_head"][0]),
        (plots_mech.angle_heatmap, res.subspaces.angles, sub["angles"]),
    ]
    for fn, view, d in cases:
        assert fn(view).to_json() == fn(d).to_json(), fn.__name__
    main = res.scan.main
    assert (
        plots.dose_response(res.scan_curves, main).to_json()
        == plots.dose_response(raw(run_dir, "scan", "scan.json"), main).to_json()
    )


def test_dose_response_reads_the_released_scan_layout():
    from addk_interp.report.plots import dose_response

    d = json.loads((ROOT / "addk_interp" / "data" / "llama3_addk_recovery_scan.json").read_text())
    curves = R.ScanCurves.from_json(d)
    assert curves.n_eval == d["n_eval"] and len(curves.correct) == len(d["correct"])
    fig = dose_response(curves, [Head(15, 2)])
    assert len(fig.data) == len(d["correct"])
    assert np.isclose(fig.data[0].y[0], next(iter(d["correct"].values()))[0] / d["n_eval"])


# ----------------------------------------------------------------------------- no dict reads
REPORT_MODULES = ("html.py", "figures.py", "plots.py", "plots_mech.py")


@pytest.mark.parametrize("name", REPORT_MODULES)
def test_report_modules_read_stage_results_only_through_the_views(name):
    src = (ROOT / "addk_interp" / "report" / name).read_text()
    for pattern in (
        r"stage_json\(",  # the store's dict reader
        r"\b_json\(",  # a local dict reader
        r"read_csv\(",  # a stage table read around RunResults
        r"read_json\(",
        r"json\.loads\(\s*(?:p|path|vj|.*read_text)",  # a file parsed in place
        r"""/ ["']stages["']""",  # a stage file's path built by hand
        r"""\.get\(["'](?:per_head|topk|main|significant|heads|roles|peaking|cut|"""
        r"""self_correction|offset_readout|qk|meta|accuracy_ci|ranking)["']""",
    ):
        hits = [ln for ln in src.splitlines() if re.search(pattern, ln)]
        assert not hits, (name, pattern, hits)
