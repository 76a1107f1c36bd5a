"""The validation benchmark: every localization method scored against organism-fv's planted
heads; agreement only (and said so) on a model without ground truth; bad input refused."""

import json

import pytest

from addk_interp.cli.main import main
from addk_interp.core.heads import Head
from addk_interp.pipeline.run import PRESETS, Run, RunConfig
from addk_interp.pipeline.validation import METHODS, ground_truth_of, validate
from addk_interp.report.html import write_report


@pytest.fixture(scope="module")
def fv_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("val") / "fv"
    run = Run(RunConfig(model="organism-fv", preset="quick", **PRESETS["quick"]), out, verbose=False)
    run.execute()
    return run


def test_scores_every_method_against_the_planted_heads(fv_run):
    res = validate(fv_run, n_prompts=1)
    gt = res.ground_truth
    assert gt is not None and gt["planted_heads"] == ["L1H0", "L1H4"]
    assert [m.method for m in res.methods] == list(METHODS)
    planted = {Head.parse(h) for h in gt["planted_heads"]}
    L, H = fv_run.model.n_layers, fv_run.model.n_heads
    for m in res.methods:
        s = set(m.selected)
        assert m.precision == (len(s & planted) / len(s) if s else 0.0)
        assert m.recall == len(s & planted) / len(planted)
        assert set(m.planted_ranks) == {"L1H0", "L1H4"}
        assert all(1 <= r <= L * H for r in m.planted_ranks.values())
        assert m.wall_s >= 0
    # the subspace part compares each analysis head's fitted subspace with the planted block
    assert res.subspace["planted_periods"] == [2, 5, 10, 100, 1000]
    for d in res.subspace["per_head"].values():
        if "angles_to_planted" in d:
            assert all(0 <= a <= 90.0001 for a in d["angles_to_planted"])
    md = res.markdown()
    assert "Planted heads: L1H0, L1H4" in md and "precision" in md
    p = res.save(fv_run.out / "v.json")
    assert json.loads(p.read_text())["methods"][0]["method"] == "gates_coef"
    # the report shows the recovered vs the planted mechanism, and the validation table
    res.save(fv_run.out / "validation.json")
    html = write_report(fv_run).read_text()
    assert "Recovered vs planted mechanism" in html and "L1H0, L1H4" in html
    assert "Localization methods (addk-interp validate)" in html
    assert html.index("Recovered vs planted") < html.index("<div")  # before the first figure


def test_no_ground_truth_reports_agreement_only(tmp_path):
    out = tmp_path / "org"
    run = Run(RunConfig(model="organism", preset="quick", **PRESETS["quick"]), out, verbose=False)
    run.execute()
    assert ground_truth_of(run.model) is None
    res = validate(run, n_prompts=1)
    assert res.ground_truth is None and "No ground truth" in res.note
    assert all(m.precision is None for m in res.methods)
    assert "Recovered vs planted" not in write_report(run).read_text()
    assert len(res.agreement) == len(METHODS) * (len(METHODS) - 1) // 2


def test_bad_input_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "nothing"
    assert main(["validate", "--run", str(out), "--n-prompts", "0"]) == 2
    assert "--n-prompts must be ≥ 1" in capsys.readouterr().err
    assert not out.exists()
