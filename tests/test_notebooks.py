"""The notebooks in ``notebooks/`` (jupytext percent format) execute end to end.

Each ``notebooks/NN_*.py`` is converted with jupytext and run cell by cell with nbclient on an
ipykernel ``python3`` kernel of this very interpreter (a temporary kernelspec pins it), in a
small configuration (``ADDK_NB_SMALL=1``, the shipped model organism, one torch thread). Any
cell error fails the test. Everything the kernel writes (notebook outputs, IPython and Jupyter
runtime files) goes to pytest's temporary directory.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import ipykernel  # noqa: F401  (the kernel below runs this interpreter's ipykernel)
import jupytext
import nbclient
import pytest

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.py"))
EXPECTED = ["01_tour.py", "02_localization.py", "03_subspaces.py", "04_extraction.py"]
CELL_TIMEOUT_S = 300


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


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """Environment for the kernels: a python3 kernelspec of this interpreter, private
    IPython/Jupyter dirs, offline hub, small notebook settings."""
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
        "ADDK_NB_MODEL": "organism",
        "ADDK_NB_SMALL": "1",
        "ADDK_NB_THREADS": "1",
    }
    return env


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, kernel_env, tmp_path, monkeypatch):
    out = tmp_path / "out"
    for key, value in {**kernel_env, "ADDK_NB_OUT": str(out)}.items():
        monkeypatch.setenv(key, value)
    nb = jupytext.read(path, fmt="py:percent")
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    t0 = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:  # keep the traceback readable
        plain = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
        pytest.fail(f"{path.name}: a cell failed\n{plain}", pytrace=False)
    wall = time.perf_counter() - t0
    print(f"{path.name}: {len(nb.cells)} cells in {wall:.1f} s")
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "a code cell did not run"
    # nothing was written outside ADDK_NB_OUT (the kernel's cwd is tmp_path)
    assert {p.name for p in tmp_path.iterdir()} <= {"out"}
    assert out.is_dir()
