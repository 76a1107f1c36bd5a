"""End to end on the shipped organism (quick preset): every report figure is drawn, the report
escapes strings, and the example script (examples/figure.py) draws each of them. The report opens
with its findings, every figure has its caption, links resolve, tasks go by k, heads are
written L{l}H{h}, and proportions carry CIs with n in their hover."""

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from addk_interp.pipeline.run import PRESETS, Run, RunConfig
from addk_interp.report.figures import FIGURES, build

ROOT = Path(__file__).resolve().parents[1]


def test_example_script_lists_every_figure():
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "figure.py"), "--list"],
        capture_output=True,
        text=True,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    listed = [ln.split()[0] for ln in r.stdout.splitlines() if ln.strip()]
    assert listed == [f.slug for f in FIGURES]


@pytest.fixture(scope="module")
def organism_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("org") / "run"
    cfg = RunConfig(model="organism", preset="quick", **PRESETS["quick"])
    run = Run(cfg, out, verbose=False)
    run.execute()
    return run


def test_organism_quick_run_draws_every_figure(organism_run):
    run = organism_run
    man = json.loads((run.out / "manifest.json").read_text())
    assert all(s["status"] == "done" for s in man["stages"])
    html = (run.out / "report.html").read_text()
    assert "Not drawn" not in html
    for f in FIGURES:
        assert build(run, f.slug) is not None, f.slug
        assert f.title.replace("&", "&amp;").replace("<", "&lt;") in html
    # the mechanism stages produced their numbers for the analysis head(s)
    st = run.out / "stages"
    dem = json.loads((st / "demos" / "demos.json").read_text())
    sc = next(iter(dem["per_head"].values()))["self_correction"]
    assert sc["verdict"] and sc["identity_max_error"] < 1e-4
    proj = json.loads((st / "projections" / "projections.json").read_text())
    arms = next(iter(proj["heads"].values()))["arms"]
    assert {"zero_shot", "c0", "unprojected", "onto_full", "out_unit"} <= set(arms)
    ext = json.loads((st / "extraction" / "extraction.json").read_text())
    d = next(iter(ext["per_head"].values()))
    assert d["identity_max_rel_error"] < 1e-4 and "peaking" in d


def test_example_script_writes_its_figure(organism_run):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "figure.py"),
            "fig24_self_correction",
            "--model",
            "organism",
            "--quick",
            "--out",
            str(organism_run.out),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    page = organism_run.out / "figures" / "fig24_self_correction.html"
    assert page.exists() and str(page) in r.stdout


def test_summary_lists_the_headline_numbers(organism_run, capsys):
    from addk_interp.cli.main import main

    assert main(["summary", str(organism_run.out)]) == 0
    out = capsys.readouterr().out
    for phrase in (
        "selected heads",
        "main heads",
        "necessity",
        "PCs for 95%",
        "label share",
        "self-correction",
        "AIE top-",
    ):
        assert phrase in out, phrase
    assert main(["summary", str(organism_run.out / "stages")]) == 2


# ----------------------------------------------------------------------------- report layout
def _report(run) -> str:
    return (run.out / "report.html").read_text()


def _without_scripts(text: str) -> str:
    return re.sub(r"<script.*?</script>", "", text, flags=re.S)


def test_every_figure_has_a_one_sentence_caption_in_the_report(organism_run):
    text = _report(organism_run)
    for f in FIGURES:
        assert f.caption and f.caption.endswith("."), f.slug
        assert f.caption[0].isupper(), f.slug
        sec = re.search(rf"<section class='fig' id='fig-{f.slug}'>(.*?)</section>", text, re.S)
        assert sec is not None, f.slug
        assert f"<p class='cap'>{html.escape(f.caption)}</p>" in sec.group(1), f.slug


def test_findings_block_comes_first_and_every_link_resolves(organism_run):
    text = _report(organism_run)
    first_fig = text.index("plotly-graph-div")
    assert text.index("<section id='findings'>") < text.index("<nav id='contents'>") < first_fig
    block = re.search(r"<section id='findings'>(.*?)</section>", text, re.S).group(1)
    for key in (
        "Model",
        "Task family",
        "Clean accuracy",
        "FV recovery",
        "Heads",
        "Localization verdict",
        "Necessity vs random controls",
        "Subspace",
        "Label share (extraction)",
        "Self-correction",
    ):
        assert f"<span class='k'>{key}:</span>" in block, key
    assert "paired lift" in block and "PCs for 95%" in block and "zero-shot" in block
    # proportions come with a CI: "0.25 [0.00, 0.75]"
    assert len(re.findall(r"\d\.\d\d \[\d\.\d\d, \d\.\d\d\]", block)) >= 6
    ids = set(re.findall(r"id='([^']+)'", text)) | set(re.findall(r'id="([^"]+)"', text))
    links = re.findall(r"href='#([^']+)'", text)
    assert {f"fig-{f.slug}" for f in FIGURES} <= set(links)  # the table of contents
    assert all(x in ids for x in links), sorted(set(links) - ids)
    assert len(re.findall(r"href='#fig-", block)) >= 8  # findings link to their figures


def test_missing_stages_show_na_instead_of_crashing(organism_run, tmp_path):
    from addk_interp.report.html import NA, findings_text, write_report

    out = tmp_path / "partial"
    shutil.copytree(organism_run.out, out)
    for stage in ("demos", "aie", "extraction"):
        shutil.rmtree(out / "stages" / stage)
    run = Run(organism_run.cfg, out, verbose=False, model=organism_run.model)
    text = write_report(run).read_text()
    lines = {ln.split(":", 1)[0]: ln for ln in findings_text(text).splitlines()}
    for key in ("Self-correction", "AIE baseline", "Label share (extraction)"):
        assert NA in lines[key], lines[key]
    assert NA not in lines["Clean accuracy"]
    assert "Not drawn" in text and "fig-fig24_self_correction" not in text


def test_report_is_byte_identical_for_the_same_run(organism_run):
    from addk_interp.report.html import write_report

    before = (organism_run.out / "report.html").read_bytes()
    assert write_report(organism_run).read_bytes() == before


def test_tasks_in_numeric_order_of_k(organism_run):
    text = _without_scripts(_report(organism_run))
    table = text[text.index("<h2>Clean accuracy per task</h2>") :]
    tasks = re.findall(r"<td>(add\d+)</td>", table)
    ks = [int(t[3:]) for t in tasks]
    n = len(ks) // 2  # two shot counts, each in numeric order of k
    assert ks[:n] == sorted(ks[:n]) and ks[n:] == sorted(ks[n:]) and ks[:n] == ks[n:]
    fig = build(organism_run, "fig01_accuracy_vs_k")
    for tr in fig.data:
        assert list(tr.x) == sorted(tr.x)
    assert fig.layout.xaxis.dtick == 1


def test_heads_are_written_LxHy_never_as_lists(organism_run):
    text = _without_scripts(_report(organism_run))
    assert not re.search(r"\[\[\d+, \d+\]", text)
    assert not re.search(r"\(\d+, \d+\)", text)
    assert re.search(r"L\d+H\d+", text)
    for f in FIGURES:
        fig = build(organism_run, f.slug)
        for tr in fig.data:
            name = str(tr.name or "")
            assert not re.search(r"[\[(]\d+, \d+[\])]", name), (f.slug, name)


PROPORTION_FIGURES = (
    "fig01_accuracy_vs_k",
    "fig03_fv_accuracy",
    "fig07_dose_response",
    "fig08_headset_fv",
    "fig09_necessity",
    "fig15_projection_tests",
    "fig24_self_correction",
    "fig25_aie_baseline",
)


def test_proportions_have_error_bars_and_hover_with_n_and_ci(organism_run):
    for slug in PROPORTION_FIGURES:
        fig = build(organism_run, slug)
        with_bars = [tr for tr in fig.data if getattr(tr, "error_y", None) and tr.error_y.array]
        assert with_bars, slug
        for tr in with_bars:
            assert "CI" in tr.hovertemplate and "n = " in tr.hovertemplate, (slug, tr.name)
    # every error bar anywhere says what n is
    for f in FIGURES:
        for tr in build(organism_run, f.slug).data:
            if getattr(tr, "error_y", None) and tr.error_y.array:
                assert "n = " in (tr.hovertemplate or ""), (f.slug, tr.name)


def test_reference_lines_and_integer_ticks(organism_run):
    fv = build(organism_run, "fig03_fv_accuracy")
    refs = [s for s in fv.layout.annotations if s.text in ("zero-shot", "clean n-shot")]
    assert {a.text for a in refs} == {"zero-shot", "clean n-shot"}
    assert build(organism_run, "fig25_aie_baseline").layout.shapes  # clean / zero-shot lines
    for slug, axis in (
        ("fig06_gate_training", "xaxis"),
        ("fig07_dose_response", "xaxis"),
        ("fig11_pc_coordinates", "xaxis"),
        ("fig24_self_correction", "xaxis"),
        ("fig02_head_norms", "yaxis"),
    ):
        ax = build(organism_run, slug).layout[axis]
        assert ax.tickformat == "d" or ax.dtick == 1, slug
    ro = build(organism_run, "fig23_offset_readout")
    assert any(tr.name == "y = x (correct)" for tr in ro.data)


def test_gate_training_has_one_quantity_per_panel(organism_run):
    fig = build(organism_run, "fig06_gate_training")
    axes: dict[str, set[str]] = {}
    for tr in fig.data:
        axes.setdefault(tr.yaxis, set()).add(tr.name)
    assert len(axes) >= 3
    for names in axes.values():
        kinds = {
            "loss" if n in ("loss", "nll") else "count" if n.startswith("n_") else "rate"
            for n in names
        }
        assert len(kinds) == 1, names


def test_fitted_targets_one_color_per_head():
    import numpy as np

    from addk_interp.report.plots_mech import fitted_targets

    class Fit:
        def __init__(self, phase):
            self.ks = np.arange(1.0, 11.0)
            self.target_names = ("mod2", "mod5")
            self.target_values = np.stack(
                [np.cos(np.pi * self.ks + phase), np.cos(2 * np.pi * self.ks / 5)], axis=1
            )
            self.fitted = self.target_values * 0.9
            self.r2 = np.array([0.8, 0.7])

    fig = fitted_targets({(1, 0): Fit(0.0), (1, 4): Fit(1.0)})
    color: dict[str, set] = {}
    for tr in fig.data:
        head = tr.legendgroup
        color.setdefault(head, set()).add(
            tr.marker.color if tr.mode == "markers" else tr.line.color
        )
    assert set(color) == {"L1H0", "L1H4"}
    assert all(len(c) == 1 for c in color.values())
    assert color["L1H0"] != color["L1H4"]
    legend = [tr.name for tr in fig.data if tr.showlegend is not False]
    assert legend == ["L1H0 (markers: target, line: fit)", "L1H4 (markers: target, line: fit)"]


def test_small_signals_and_single_angles_are_numbers_not_plots():
    import plotly.graph_objects as go

    from addk_interp.core.heads import Head
    from addk_interp.report.plots import accuracy_vs_k
    from addk_interp.report.plots_mech import angle_heatmap, demo_trajectories
    from addk_interp.report.results import Angles, Demos, SelfCorrectionView

    def demos(contrib):
        sc = SelfCorrectionView(5, {}, "n/a", clean_contributions=contrib)
        return Demos({}, {Head(1, 3): sc}, None, [Head(1, 3)])

    fig = demo_trajectories(demos([[3e-5] * 5]))
    assert not fig.data and "no signal" in fig.layout.annotations[0].text
    assert "3.0e-05" in fig.layout.annotations[0].text
    assert len(demo_trajectories(demos([[0.2] * 5])).data) == 1
    one = angle_heatmap(Angles(["L1H0", "L1H4"], [[0, 40], [40, 0]]))
    assert isinstance(one.data[0], go.Table) and "40.0" in one.data[0].cells.values[2]
    three = angle_heatmap(Angles(["a", "b", "c"], [[0, 1, 2], [1, 0, 3], [2, 3, 0]]))
    assert isinstance(three.data[0], go.Heatmap)
    # a stage dictionary (as a notebook computes it) draws the same figure
    quiet = {"per_head": {"L1H3": {"self_correction": {"contributions": {"clean": [[3e-5] * 5]}}}}}
    assert demo_trajectories(quiet).to_json() == demo_trajectories(demos([[3e-5] * 5])).to_json()
    import pandas as pd

    t = pd.DataFrame(
        {
            "task": [f"t{k}" for k in (10, 2, 1)],
            "k": [None, None, None],
            "shots": 5,
            "n": 4,
            "accuracy": 0.5,
            "ci_low": 0.1,
            "ci_high": 0.9,
        }
    )
    assert list(accuracy_vs_k(t).data[0].x) == ["t1", "t2", "t10"]


def test_head_effect_heatmaps_and_attention_view(organism_run):
    L, H = organism_run.model.n_layers, organism_run.model.n_heads
    eff = build(organism_run, "fig26_head_effects")
    maps = [tr for tr in eff.data if tr.type == "heatmap"]
    assert len(maps) >= 2  # AIE and single-head ablation
    for tr in maps:
        assert list(tr.y) == list(range(L)) and list(tr.x) == list(range(H))
        assert tr.text[0][0] == "L0H0" and tr.text[L - 1][H - 1] == f"L{L - 1}H{H - 1}"
        assert "%{text}" in tr.hovertemplate
    att = build(organism_run, "fig27_attention_patterns")
    heads = organism_run.analysis_heads()
    buttons = att.layout.updatemenus[0].buttons
    assert len(att.data) == len(buttons) == 2 * len(heads)  # two fixed prompts per head
    assert [tr.visible for tr in att.data] == [True] + [False] * (len(att.data) - 1)
    ticks = " ".join(att.layout.xaxis.ticktext)
    for role in ("demo input", "demo answer", "separator", "query"):
        assert f"({role})" in ticks, role
    z = [[v for v in row if v is not None] for row in att.data[0].z]
    assert all(abs(sum(row) - 1) < 1e-3 for row in z)  # attention rows sum to 1
