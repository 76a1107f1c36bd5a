"""addk-interp: localize and explain in-context add-k in language models.

The curated notebook API: load a model, sample tasks, score, capture head means, intervene.
"""

from typing import TYPE_CHECKING

from addk_interp._lazy import lazy_namespace
from addk_interp._version import __version__

# The public names load on first use (PEP 562), so `addk-interp --help` does not import torch.
_LAZY = {
    "AddkError": "core.errors",
    "HeadMeans": "hooks.capture",
    "capture_means": "hooks.capture",
    "head_outputs": "hooks.capture",
    "evaluate_fv": "hooks.fv",
    "function_vector": "hooks.fv",
    "head_set_vectors": "hooks.fv",
    "gate_heads": "hooks.interventions",
    "inject": "hooks.interventions",
    "mean_ablate": "hooks.interventions",
    "project_head": "hooks.interventions",
    "replace_heads": "hooks.interventions",
    "scale_heads": "hooks.interventions",
    "HookedModel": "models.adapter",
    "ModelInfo": "models.adapter",
    "from_hooked_transformer": "models.loading",
    "load_model": "models.loading",
    "accuracy_table": "core.scoring",
    "evaluate": "core.scoring",
    "greedy_decode": "core.scoring",
    "FORMATS": "core.tasks",
    "Example": "core.tasks",
    "PromptFormat": "core.tasks",
    "arithmetic_family": "core.tasks",
    "json_family": "core.tasks",
    "render": "core.tasks",
    "sample_family": "core.tasks",
    "Head": "core.heads",
}


__getattr__, __dir__ = lazy_namespace(__name__, _LAZY, globals())


if TYPE_CHECKING:  # for type checkers and IDEs
    from addk_interp.core.errors import AddkError  # noqa: F401
    from addk_interp.core.heads import Head  # noqa: F401
    from addk_interp.core.scoring import accuracy_table, evaluate, greedy_decode  # noqa: F401
    from addk_interp.core.tasks import (  # noqa: F401
        FORMATS,
        Example,
        PromptFormat,
        arithmetic_family,
        json_family,
        render,
        sample_family,
    )
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


__all__ = [
    "__version__",
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
