"""report.html in a real browser: headless Chromium loads the report of a quick organism-fv run
and must log no console message at all (Chromium's ``--enable-logging=stderr`` prints every
console message, errors and uncaught exceptions included, as one ``CONSOLE`` line without its
level, so any such line fails), draw every plotly figure (each ``plotly-graph-div`` holds a
rendered ``svg.main-svg`` in the DOM dumped after 10 s of virtual time) and show the findings
block before the first figure. Skips, saying how to install it, when Chromium is missing."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from addk_interp.pipeline.run import PRESETS, Run, RunConfig
from addk_interp.report.figures import FIGURES

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM = next((p for p in map(shutil.which, BROWSERS) if p), None)
SKIP = "chromium not found: install with apt-get install chromium"


def _need_browser():
    if CHROMIUM is None:
        print(SKIP)
        pytest.skip(SKIP)


def load(page: Path) -> tuple[str, list[str]]:
    """(DOM after the page's scripts ran, console lines) of ``page`` in headless Chromium."""
    r = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    console = [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    return r.stdout, console


def undrawn(source: str, dom: str) -> list[str]:
    """Ids of the page's plotly divs that hold no rendered ``main-svg`` in the DOM."""
    ids = re.findall(r'<div id="([^"]+)" class="plotly-graph-div"', source)
    bad = []
    for i, pid in enumerate(ids):
        start = dom.find(f'id="{pid}"')
        end = dom.find(f'id="{ids[i + 1]}"') if i + 1 < len(ids) else len(dom)
        if start < 0 or 'class="main-svg"' not in dom[start:end]:
            bad.append(pid)
    return bad


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    _need_browser()
    out = tmp_path_factory.mktemp("browser") / "run"
    cfg = RunConfig(model="organism-fv", preset="quick", **PRESETS["quick"])
    return Run(cfg, out, verbose=False).execute()


def test_report_renders_every_figure_without_console_messages(report):
    source = report.read_text()
    dom, console = load(report)
    assert console == [], "\n".join(console)
    ids = re.findall(r'<div id="([^"]+)" class="plotly-graph-div"', source)
    assert ids == [f"plot-{f.slug}" for f in FIGURES]  # every figure of the registry is there
    assert undrawn(source, dom) == []
    # the attention view's head/prompt menu is drawn
    att = dom[dom.find('id="plot-fig27_attention_patterns"') :]
    assert 'class="updatemenu-container"' in att
    # findings before the first figure, in the rendered page
    assert 0 <= dom.find('<section id="findings">') < dom.find("plotly-graph-div")
    assert "Clean accuracy:" in dom and "Localization verdict:" in dom


def test_the_checks_catch_console_errors_and_undrawn_figures(tmp_path):
    """The harness is not vacuous: an uncaught error, a console.error and a plotly div that
    no script draws are each reported."""
    _need_browser()
    page = tmp_path / "bad.html"
    source = (
        "<html><body><script>console.error('boom')</script>"
        "<script>notDefinedAnywhere()</script>"
        '<div id="plot-x" class="plotly-graph-div"></div></body></html>'
    )
    page.write_text(source)
    dom, console = load(page)
    assert any("boom" in ln for ln in console)
    assert any("Uncaught ReferenceError" in ln for ln in console)
    assert undrawn(source, dom) == ["plot-x"]
