"""Presenting a run: plotly figures, the figure registry, the self-contained HTML report and
the run summary; reads run directories, never recomputes."""

from addk_interp._lazy import lazy_namespace

_EXPORTS = {
    "FIGURES": "figures",
    "build": "figures",
    "write_report": "html",
    "summarize_run": "summary",
    "to_markdown": "summary",
}
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS, globals())
__all__ = sorted(_EXPORTS)
