"""Finding the heads: gate learning, cut rules, the recovery scan and head-set selectors
(significant / main heads), average indirect effect, attribution patching."""

from addk_interp._lazy import lazy_namespace

_EXPORTS = {
    "GateFit": "gates",
    "GateProblem": "gates",
    "fit_gates": "gates",
    "gate_config": "gates",
    "task_vectors": "gates",
    "Cut": "cuts",
    "cut": "cuts",
    "RULES": "cuts",
    "RecoveryScan": "selectors",
    "main_set": "selectors",
    "significant_set": "selectors",
    "weak_rule": "selectors",
    "load_scan_json": "selectors",
    "save_scan_json": "selectors",
    "select_from_scan": "selectors",
    "HeadSets": "headsets",
    "head_sets": "headsets",
    "necessity": "headsets",
    "recovery_scan": "headsets",
    "AIEResult": "aie",
    "aie_scan": "aie",
    "aie_topk_eval": "aie",
    "HeadScores": "attribution",
    "attribution_patching": "attribution",
    "single_head_ablation": "attribution",
}
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS, globals())
__all__ = sorted(_EXPORTS)
