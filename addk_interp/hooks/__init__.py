"""Reading and writing head outputs: capture (per-head outputs, task means), interventions
(inject, replace, ablate, scale, gate, project), function vectors, and the prompt / injection
runners the localization stages share."""

from addk_interp._lazy import lazy_namespace

_EXPORTS = {
    "EvalContext": "context",
    "HeadMeans": "capture",
    "capture_means": "capture",
    "capture_z": "capture",
    "head_outputs": "capture",
    "z_to_outputs": "capture",
    "bias_contribution": "capture",
    "inject": "interventions",
    "replace_heads": "interventions",
    "mean_ablate": "interventions",
    "scale_heads": "interventions",
    "gate_heads": "interventions",
    "project_head": "interventions",
    "default_injection_layer": "interventions",
    "function_vector": "fv",
    "evaluate_fv": "fv",
    "head_set_vectors": "fv",
}
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS, globals())
__all__ = sorted(_EXPORTS)
