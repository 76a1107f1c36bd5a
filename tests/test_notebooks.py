"""The notebooks in ``notebooks/`` (jupytext percent format) execute end to end, and their HTML
export shows every figure without a network.

Each ``notebooks/NN_*.py`` is converted with jupytext and run cell by cell with nbclient on an
ipykernel ``python3`` kernel of this very interpreter (a temporary kernelspec pins it), in a
small configuration (``ADDK_NB_SMALL=1``, the shipped model organism, one torch thread), once
per module (a module-scoped fixture): one test checks the execution (any cell error fails it),
another exports the executed notebook with nbconvert's ``HTMLExporter`` and counts the figures
in the page. The kernel sees ``notebooks/`` on ``PYTHONPATH`` (as it does when Jupyter runs a
notebook from its own directory) for the figure helper ``notebooks/_show.py``. Figures use its
``ADDK_NB_FIGURES`` setting from the environment (default ``auto``: PNG where kaleido and a
Chrome/Chromium binary work, else inline HTML with plotly.js embedded once). Everything the
kernel writes (notebook outputs, IPython and Jupyter runtime files) goes to pytest's temporary
directory.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import ipykernel  # noqa: F401  (the kernel below runs this interpreter's ipykernel)
import jupytext
import nbclient
import nbformat
import pytest
from nbconvert import HTMLExporter

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.py"))
EXPECTED = ["01_tour.py", "02_localization.py", "03_subspaces.py", "04_extraction.py"]
CELL_TIMEOUT_S = 300
PLOTLY_MIME = "application/vnd.plotly.v1+json"
PLOTLY_DIV = re.compile(r'<div\b[^>]*\bclass="plotly-graph-div"')  # nbconvert reorders attributes
PLOTLY_JS = re.compile(r"\* plotly\.js v\d")  # the library's licence banner, once per copy
# a resource the browser would fetch from elsewhere (links <a href> are not fetched)
REMOTE = re.compile(
    r"""<(?:script|img|iframe|link|embed|source)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//""",
    re.I,
)


def test_the_four_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_percent_format_header(path):
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "# ---", "the jupytext header must open the file"
    end = lines.index("# ---", 1)
    header = "\n".join(lines[: end + 1])
    for needle in ("jupytext:", "format_name: percent", "kernelspec:", "name: python3"):
        assert needle in header, f"{path.name}: header lacks {needle!r}"
    assert "# %%" in text and "# %% [markdown]" in text
    nb = jupytext.reads(text, fmt="py:percent")
    assert nb.metadata["jupytext"]["text_representation"]["format_name"] == "percent"
    kinds = {c.cell_type for c in nb.cells}
    assert kinds == {"code", "markdown"}
    # settings come from the environment, and files go to ADDK_NB_OUT (or a temporary dir)
    for var in ("ADDK_NB_MODEL", "ADDK_NB_SMALL", "ADDK_NB_OUT"):
        assert var in text, f"{path.name} does not read {var}"
    # figures go through the helper with the static fallback, and nothing points at a CDN
    assert "from _show import show" in text, f"{path.name} does not use notebooks/_show.py"
    assert '"cdn"' not in text and "cdn.plot.ly" not in text


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """Environment for the kernels: a python3 kernelspec of this interpreter, private
    IPython/Jupyter dirs, offline hub, small notebook settings, ``notebooks/`` importable."""
    root = tmp_path_factory.mktemp("nbkernel")
    spec_dir = root / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
            }
        )
    )
    pythonpath = os.pathsep.join(p for p in (str(NB_DIR), os.environ.get("PYTHONPATH")) if p)
    env = {
        "JUPYTER_PATH": str(root / "jupyter"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "IPYTHONDIR": str(root / "ipython"),
        "MPLBACKEND": "Agg",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "PYTHONPATH": pythonpath,  # notebooks/_show.py (Jupyter: the notebook's own directory)
        "PYTHONDONTWRITEBYTECODE": "1",  # no notebooks/__pycache__ from the test
        "ADDK_NB_MODEL": "organism",
        "ADDK_NB_SMALL": "1",
        "ADDK_NB_THREADS": "1",
    }
    return env


@dataclass
class Run:
    """One executed notebook: the node with its outputs, the kernel's cwd, the failure."""

    path: Path
    nb: nbformat.NotebookNode
    workdir: Path
    out: Path
    wall_s: float
    error: str | None


def execute(nb, workdir: Path, env: dict, allow_errors: bool = False) -> tuple[float, str | None]:
    """Run ``nb`` in place on a fresh kernel (cwd ``workdir``, ``env`` set); (seconds, error)."""
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(workdir)}},
    )
    t0 = time.perf_counter()
    error = None
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        try:
            client.execute()
        except nbclient.exceptions.CellExecutionError as err:  # keep the traceback readable
            error = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    return time.perf_counter() - t0, error


@pytest.fixture(scope="module", params=NOTEBOOKS, ids=lambda p: p.stem)
def executed(request, kernel_env, tmp_path_factory) -> Run:
    """Each notebook runs once; the execution and the export tests both read the result."""
    path = request.param
    workdir = tmp_path_factory.mktemp(path.stem)
    out = workdir / "out"
    nb = jupytext.read(path, fmt="py:percent")
    wall, error = execute(nb, workdir, {**kernel_env, "ADDK_NB_OUT": str(out)})
    return Run(path, nb, workdir, out, wall, error)


def test_notebook_executes(executed):
    run = executed
    if run.error:
        pytest.fail(f"{run.path.name}: a cell failed\n{run.error}", pytrace=False)
    print(f"{run.path.name}: {len(run.nb.cells)} cells in {run.wall_s:.1f} s")
    errors = [
        o
        for c in run.nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
    code = [c for c in run.nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "a code cell did not run"
    # nothing was written outside ADDK_NB_OUT (the kernel's cwd is the run's workdir)
    assert {p.name for p in run.workdir.iterdir()} <= {"out"}
    assert run.out.is_dir()


def check_export(nb, name: str, html_dir: Path) -> dict:
    """Export ``nb`` with nbconvert's HTMLExporter and check that every figure is rendered
    offline; returns the counts."""
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    figures = [o for o in outputs if PLOTLY_MIME in o.get("data", {})]
    png = [o for o in figures if "image/png" in o["data"]]
    inline = [o for o in figures if PLOTLY_DIV.search(o["data"].get("text/html", ""))]
    both = [o for o in png if o in inline]
    assert not both, f"{name}: {len(both)} figures carry both PNG and HTML fallbacks"
    assert len(png) + len(inline) == len(figures), (
        f"{name}: {len(figures) - len(png) - len(inline)} of {len(figures)} figures have no "
        "static fallback (display them with notebooks/_show.py's show)"
    )
    images = sum("image/png" in o.get("data", {}) for o in outputs)

    html, _ = HTMLExporter().from_notebook_node(nb)
    html_dir.mkdir(parents=True, exist_ok=True)
    (html_dir / f"{name}.html").write_text(html, encoding="utf-8")
    body = html.split("<body", 1)[1]
    # the markup without the scripts' contents (plotly.js itself holds such strings)
    tags = re.sub(r"(<script\b[^>]*>).*?</script>", r"\1</script>", body, flags=re.S | re.I)
    counts = {
        "figures": len(figures),
        "png": len(re.findall(r"<img\b[^>]*\bsrc=\"data:image/png", tags)),
        "plotly_divs": len(PLOTLY_DIV.findall(tags)),
        "plotly_js": len(PLOTLY_JS.findall(html)),
        "mb": len(html.encode()) / 1e6,
    }
    assert counts["png"] == images, f"{name}: {counts['png']} PNGs rendered, {images} in outputs"
    assert counts["plotly_divs"] == len(inline), f"{name}: {counts}, {len(inline)} inline"
    assert counts["png"] + counts["plotly_divs"] >= len(figures)
    if inline:  # the library once per notebook, in the first inline figure's own output
        assert counts["plotly_js"] == 1, f"{name}: plotly.js embedded {counts['plotly_js']}×"
        assert PLOTLY_JS.search(inline[0]["data"]["text/html"])
    else:
        assert counts["plotly_js"] == 0
    # no figure needs the network: no remote src/href in the body's markup, no script (other
    # than plotly.js itself, whose unused map-topojson default names its CDN) importing from
    # one. (The nbconvert template's own <head> loads require.js and MathJax from CDNs.)
    remote = REMOTE.findall(tags)
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", body, flags=re.S | re.I)
    remote += [
        s[:120]
        for s in scripts
        if not PLOTLY_JS.search(s)
        and ("cdn.plot.ly" in s or re.search(r"""import\s*\(?\s*["'](?:https?:)?//""", s))
    ]
    assert not remote, f"{name}: the page body references the network: {remote[:3]}"
    return counts


def test_notebook_html_export(executed, tmp_path):
    run = executed
    if run.error:
        pytest.skip("the notebook did not execute (see test_notebook_executes)")
    counts = check_export(run.nb, run.path.stem, tmp_path)
    assert counts["figures"] > 0, f"{run.path.name} displayed no figure"
    print(
        f"{run.path.name}: {counts['figures']} figures → {counts['png']} PNG + "
        f"{counts['plotly_divs']} inline plotly ({counts['plotly_js']}× plotly.js), "
        f"{counts['mb']:.1f} MB of HTML"
    )


MINI = [
    "import plotly.graph_objects as go\nfrom _show import show\n"
    "show(go.Figure(go.Bar(x=[1, 2], y=[3, 4]), layout_title_text='a </script> b'))",
    "fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 1]))\nfig  # a bare figure: same renderer",
    "fig.show()",
]


@pytest.mark.parametrize("mode", ["html", "png"])
def test_figure_fallbacks(mode, kernel_env, tmp_path):
    """Both fallbacks of ``notebooks/_show.py`` on a three-figure notebook, whatever ``auto``
    picks on this machine. PNG needs kaleido and a Chrome/Chromium binary: skipped without."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in MINI]
    env = {**kernel_env, "ADDK_NB_FIGURES": mode}
    _, error = execute(nb, tmp_path, env)
    if error and mode == "png" and "static PNG export failed" in error:
        pytest.skip("PNG export unavailable here: " + error.strip().splitlines()[-1][:300])
    assert error is None, error
    counts = check_export(nb, f"mini_{mode}", tmp_path / "html")
    assert counts["figures"] == 3
    if mode == "png":
        assert counts["png"] == 3 and counts["plotly_divs"] == 0
    else:
        assert counts["plotly_divs"] == 3 and counts["plotly_js"] == 1
