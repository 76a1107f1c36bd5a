"""End to end on the shipped organism (quick preset): every report figure is drawn, the report
escapes strings, and each figure has its example script that reproduces it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from addk_interp.pipeline.run import PRESETS, Run, RunConfig
from addk_interp.report.figures import FIGURES, build

ROOT = Path(__file__).resolve().parents[1]


def test_one_example_script_per_figure():
    scripts = sorted(p.stem for p in (ROOT / "examples").glob("fig*.py"))
    assert scripts == sorted(f.slug for f in FIGURES)
    for f in FIGURES:
        text = (ROOT / "examples" / f"{f.slug}.py").read_text()
        assert f'main("{f.slug}"' in text


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
            str(ROOT / "examples" / "fig24_self_correction.py"),
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
    html = organism_run.out / "figures" / "fig24_self_correction.html"
    assert html.exists() and str(html) in r.stdout


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
