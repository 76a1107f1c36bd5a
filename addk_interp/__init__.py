"""addk-interp: localize and explain in-context add-k in language models.

The curated notebook API: load a model, sample tasks, score, capture head means, intervene.
"""

__version__ = "0.1.0"

from addk_interp.errors import AddkError  # noqa: E402
from addk_interp.hooks.capture import HeadMeans, capture_means, head_outputs  # noqa: E402
from addk_interp.hooks.fv import evaluate_fv, function_vector, head_set_vectors  # noqa: E402
from addk_interp.hooks.interventions import (  # noqa: E402
    gate_heads,
    inject,
    mean_ablate,
    project_head,
    replace_heads,
    scale_heads,
)
from addk_interp.models import HookedModel, ModelInfo, from_hooked_transformer, load_model  # noqa: E402
from addk_interp.scoring import accuracy_table, evaluate, greedy_decode  # noqa: E402
from addk_interp.tasks import (  # noqa: E402
    FORMATS,
    Example,
    PromptFormat,
    arithmetic_family,
    json_family,
    render,
    sample_family,
)

__all__ = [
    "AddkError",
    "HeadMeans",
    "HookedModel",
    "ModelInfo",
    "FORMATS",
    "Example",
    "PromptFormat",
    "accuracy_table",
    "arithmetic_family",
    "capture_means",
    "evaluate",
    "evaluate_fv",
    "from_hooked_transformer",
    "function_vector",
    "gate_heads",
    "greedy_decode",
    "head_outputs",
    "head_set_vectors",
    "inject",
    "json_family",
    "load_model",
    "mean_ablate",
    "project_head",
    "render",
    "replace_heads",
    "sample_family",
    "scale_heads",
]
