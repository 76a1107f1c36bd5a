"""Figure display for the notebooks: interactive in Jupyter, static where there is no plotly.

Not part of the package (``addk_interp`` never prints or shows). ``show(fig)`` displays one
output carrying two representations of a plotly figure:

- ``application/vnd.plotly.v1+json``: the interactive figure (JupyterLab, VS Code);
- a fallback that renders without a network and without plotly's Jupyter extension
  (nbconvert's HTML export; GitHub's notebook viewer for PNG):

  * ``png``: ``image/png`` rendered by kaleido (``pip install kaleido``), which needs a
    Chrome/Chromium binary on the machine (e.g. ``apt-get install chromium``);
  * ``html``: ``text/html`` drawing the figure with plotly.js, the library inlined (~5 MB)
    in the first figure of the kernel session only; later figures wait for it. Works with
    the plotly package alone. (GitHub does not run scripts, so it shows nothing for these.)

``ADDK_NB_FIGURES`` picks the fallback: ``auto`` (default: PNG when kaleido can export on this
machine, otherwise HTML; an export that fails or takes over ``PNG_TIMEOUT_S`` switches the
session to HTML), ``png`` (an error when it cannot) or ``html``. Importing this module
also makes it plotly's default renderer, so a bare ``fig`` or ``fig.show()`` does the same.

Exported HTML pages are complete only when the notebook ran top to bottom in one kernel
(``jupyter nbconvert --execute`` does that); after re-running cells by hand, ``reset()``
re-embeds plotly.js with the next figure.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import uuid
import warnings

import plotly.io as pio
from plotly.io.base_renderers import MimetypeRenderer

PLOTLY_MIME = "application/vnd.plotly.v1+json"
MODES = ("auto", "png", "html")
DEFAULT_WIDTH, DEFAULT_HEIGHT = 900, 500  # px, when the figure's layout sets none
PNG_TIMEOUT_S = 60  # one PNG export, browser start included

_state: dict = {
    "png": None,  # None: not tried yet; True: PNG works here; False: gave up (auto -> HTML)
    "png_error": None,
    "server": False,
    "lib_cell": None,
    "lib_sent": False,
}


def mode() -> str:
    value = os.environ.get("ADDK_NB_FIGURES", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"ADDK_NB_FIGURES={value!r}; use one of {', '.join(MODES)}")
    return value


def reset() -> None:
    """Forget that plotly.js was embedded (the next HTML figure carries it again)."""
    _state.update(lib_cell=None, lib_sent=False)


def _size(fig_dict: dict) -> tuple[int, int]:
    layout = fig_dict.get("layout") or {}
    return int(layout.get("width") or DEFAULT_WIDTH), int(layout.get("height") or DEFAULT_HEIGHT)


def _with_timeout(fn, seconds: float):
    """``fn()`` in a daemon thread; TimeoutError if it has not returned after ``seconds`` (a
    browser that hangs must not hang the notebook; the stuck thread is left behind)."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as err:  # handed to the caller
            box["error"] = err

    worker = threading.Thread(target=run, name="addk-png-export", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError(f"PNG export did not finish within {seconds} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _png(fig_dict: dict) -> bytes:
    import kaleido  # optional: pip install kaleido (and a Chrome/Chromium binary)

    width, height = _size(fig_dict)

    def render() -> bytes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "kopts ignored when using a server" and the like
            return pio.to_image(fig_dict, format="png", width=width, height=height, scale=1)

    image = _with_timeout(render, PNG_TIMEOUT_S)
    if not _state["server"]:
        # The first export ran without kaleido's sync server (which waits forever when there
        # is no browser); it worked, so keep one browser for the session (closed at exit).
        kaleido.start_sync_server(n=1, timeout=PNG_TIMEOUT_S, silence_warnings=True)
        _state["server"] = True
    return image


def _cell_id() -> str | None:
    """The id of the executing cell where the front end sends it (JupyterLab does)."""
    try:
        from IPython import get_ipython

        parent = get_ipython().kernel.get_parent()
        return (parent.get("metadata") or {}).get("cellId")
    except Exception:
        return None


def _html(fig_dict: dict) -> str:
    from plotly.offline import get_plotlyjs

    div = f"addk-fig-{uuid.uuid4().hex[:12]}"
    _, height = _size(fig_dict)
    data = pio.to_json(fig_dict, validate=False).replace("</", "<\\/")
    cell = _cell_id()
    lib = ""
    # plotly.js goes into the first figure (and again if that same cell is re-run)
    if not _state["lib_sent"] or (cell is not None and cell == _state["lib_cell"]):
        lib = (
            "<script type=\"text/javascript\">window.PlotlyConfig = {MathJaxConfig: 'local'};"
            '</script>\n<script type="text/javascript">' + get_plotlyjs() + "</script>\n"
        )
        _state.update(lib_sent=True, lib_cell=cell)
    draw = (
        "(function () {\n"
        f"  var fig = {data};\n"
        "  var tries = 0;\n"
        "  function draw() {\n"
        "    if (window.Plotly) {\n"
        f'      window.Plotly.newPlot("{div}", fig.data, fig.layout || {{}}, {{responsive: true}});\n'
        "    } else if (++tries < 600) {\n"
        "      setTimeout(draw, 50);\n"
        "    }\n"
        "  }\n"
        "  draw();\n"
        "})();"
    )
    return (
        f'{lib}<div id="{div}" class="plotly-graph-div" '
        f'style="height:{height}px; width:100%;"></div>\n'
        f'<script type="text/javascript">\n{draw}\n</script>'
    )


def bundle(fig) -> dict:
    """The mime bundle of a figure (a ``go.Figure`` or its dict): plotly JSON + a fallback."""
    fig_dict = fig if isinstance(fig, dict) else fig.to_dict()
    fig_json = json.loads(pio.to_json(fig_dict, validate=False, remove_uids=False))
    title = (fig_json.get("layout") or {}).get("title") or {}
    title = (title.get("text") if isinstance(title, dict) else title) or "untitled"
    out = {PLOTLY_MIME: fig_json, "text/plain": f"<plotly figure: {title}>"}
    want = mode()
    if want in ("auto", "png") and _state["png"] is not False:
        try:
            out["image/png"] = base64.b64encode(_png(fig_dict)).decode("ascii")
            _state["png"] = True
            return out
        except Exception as err:  # no kaleido, no Chrome, a browser that would not start
            _state["png_error"] = f"{type(err).__name__}: {err}".strip()
            if want == "png":
                raise RuntimeError(
                    "ADDK_NB_FIGURES=png: static PNG export failed (needs `pip install kaleido` "
                    "and a Chrome/Chromium binary); use ADDK_NB_FIGURES=html or auto. "
                    f"Cause: {_state['png_error']}"
                ) from err
            _state["png"] = False  # auto: HTML for the rest of the session
    out["text/html"] = _html(fig_dict)
    return out


def show(fig) -> None:
    """Display a plotly figure with its static fallback (see the module docstring)."""
    from IPython.display import display

    display(bundle(fig), raw=True)


class _Renderer(MimetypeRenderer):
    def to_mimebundle(self, fig_dict):
        return bundle(fig_dict)


pio.renderers["addk_static"] = _Renderer()
pio.renderers.default = "addk_static"
