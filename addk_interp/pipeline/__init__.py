"""The pipeline: stage registry, the cached ``Run``, presets, clean evaluation and the
ground-truth validation."""

from addk_interp._lazy import lazy_namespace

_EXPORTS = {
    "Run": "run",
    "RunConfig": "run",
    "PRESETS": "run",
    "config_from_args": "run",
    "run_eval": "evaluation",
    "validate": "validation",
    "ValidationResult": "validation",
}
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS, globals())
__all__ = sorted(_EXPORTS)
