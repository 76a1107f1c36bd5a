"""Gate learning over all heads (localization step 1): ``config`` (hyper-parameters, presets, the
proximal step, task vectors), ``fit`` (the result ``GateFit``), ``training`` (the loop, its
checkpoints and the method description)."""

from addk_interp.localize.gates.config import (
    MODES,
    PRESETS,
    GateConfig,
    gate_config,
    proximal_clip,
    task_vectors,
)
from addk_interp.localize.gates.fit import GateFit
from addk_interp.localize.gates.training import (
    GateProblem,
    fit_gates,
    gate_monitor_examples,
    gate_training_examples,
    init_param,
    lr_at,
    train_gates,
    train_step,
)

__all__ = [
    "MODES",
    "PRESETS",
    "GateConfig",
    "GateFit",
    "GateProblem",
    "fit_gates",
    "gate_config",
    "gate_monitor_examples",
    "gate_training_examples",
    "init_param",
    "lr_at",
    "proximal_clip",
    "task_vectors",
    "train_gates",
    "train_step",
]
