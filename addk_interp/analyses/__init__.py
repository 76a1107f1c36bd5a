"""Explaining the selected heads: PCA, periodic and magnitude subspaces, causal projection
tests, OV/QK circuits, the aggregation/extraction identity, offset read-out and self-correction."""

from addk_interp._lazy import lazy_namespace

_EXPORTS = {
    "HeadPCA": "pca",
    "fit_head_pca": "pca",
    "fit_heads_pca": "pca",
    "SubspaceFit": "periodic",
    "TargetSpec": "periodic",
    "fit_subspace": "periodic",
    "fit_subspaces": "periodic",
    "periodogram": "periodic",
    "principal_angles": "periodic",
    "projection_tests": "projection",
    "fit_for_head": "projection",
    "iter_extractions": "extraction",
    "group_shares": "extraction",
    "qk_role_profile": "circuits",
    "ov_embedding_map": "circuits",
    "ov_label_map": "circuits",
    "offset_readout": "demos",
    "self_correction": "demos",
    "summarize_heads": "summary",
    "merged_means": "summary",
}
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS, globals())
__all__ = sorted(_EXPORTS)
