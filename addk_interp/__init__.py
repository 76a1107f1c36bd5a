"""addk-interp: localize and explain in-context add-k in language models.

The curated notebook API: load a model, sample tasks, score, capture head means, intervene.
"""

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

# The public names load on first use (PEP 562), so `addk-interp --help` does not import torch.
_LAZY = {
    "AddkError": "addk_interp.errors",
    "HeadMeans": "addk_interp.hooks.capture",
    "capture_means": "addk_interp.hooks.capture",
    "head_outputs": "addk_interp.hooks.capture",
    "evaluate_fv": "addk_interp.hooks.fv",
    "function_vector": "addk_interp.hooks.fv",
    "head_set_vectors": "addk_interp.hooks.fv",
    "gate_heads": "addk_interp.hooks.interventions",
    "inject": "addk_interp.hooks.interventions",
    "mean_ablate": "addk_interp.hooks.interventions",
    "project_head": "addk_interp.hooks.interventions",
    "replace_heads": "addk_interp.hooks.interventions",
    "scale_heads": "addk_interp.hooks.interventions",
    "HookedModel": "addk_interp.models",
    "ModelInfo": "addk_interp.models",
    "from_hooked_transformer": "addk_interp.models",
    "load_model": "addk_interp.models",
    "accuracy_table": "addk_interp.scoring",
    "evaluate": "addk_interp.scoring",
    "greedy_decode": "addk_interp.scoring",
    "FORMATS": "addk_interp.tasks",
    "Example": "addk_interp.tasks",
    "PromptFormat": "addk_interp.tasks",
    "arithmetic_family": "addk_interp.tasks",
    "json_family": "addk_interp.tasks",
    "render": "addk_interp.tasks",
    "sample_family": "addk_interp.tasks",
    "Head": "addk_interp.heads",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'addk_interp' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # for type checkers and IDEs
    from addk_interp.errors import AddkError  # noqa: F401
    from addk_interp.heads import Head  # noqa: F401
    from addk_interp.hooks.capture import HeadMeans, capture_means, head_outputs  # noqa: F401
    from addk_interp.hooks.fv import evaluate_fv, function_vector, head_set_vectors  # noqa: F401
    from addk_interp.hooks.interventions import (  # noqa: F401
        gate_heads,
        inject,
        mean_ablate,
        project_head,
        replace_heads,
        scale_heads,
    )
    from addk_interp.models import HookedModel, ModelInfo, from_hooked_transformer, load_model  # noqa: F401
    from addk_interp.scoring import accuracy_table, evaluate, greedy_decode  # noqa: F401
    from addk_interp.tasks import (  # noqa: F401
        FORMATS,
        Example,
        PromptFormat,
        arithmetic_family,
        json_family,
        render,
        sample_family,
    )

__all__ = [
    "Head",
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
