"""The command line (``addk-interp``): argument parsing and printing only; every
``AddkError`` becomes one line on stderr and exit code 2."""

from addk_interp._lazy import lazy_namespace

_EXPORTS = {
    "main": "main",
}
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS, globals())
__all__ = sorted(_EXPORTS)
