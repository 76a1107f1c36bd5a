"""The evaluation context: what every scored forward needs besides its data.

One frozen value — the model, the prompt format, the batch size, the injection layer (None: the
model's default, round(L / 3)), the seed of any random choice, the forward path of the runners
(``auto`` / ``upper`` / ``full``) and whether to show progress — passed to the localization and
analysis functions (``recovery_scan``, ``headset_evals``, ``necessity``, ``aie_scan``,
``aie_topk_eval``, ``projection_tests``) instead of six threaded keyword arguments. Those
functions also accept a bare ``HookedModel`` (the defaults below). Validated once, at
construction. Not a step of the method; cost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from addk_interp.core.errors import AddkError
from addk_interp.core.tasks import get_format
from addk_interp.core.validate import check_count, check_seed
from addk_interp.models.adapter import HookedModel

PATHS = ("auto", "upper", "full")


@dataclass(frozen=True)
class EvalContext:
    model: HookedModel
    fmt: str = "arrow"
    batch_size: int = 64
    layer: int | None = None
    seed: int = 42  # the project-wide default seed (RunConfig.seed)
    path: str = "auto"
    verbose: bool = False

    def __post_init__(self) -> None:
        get_format(self.fmt)
        check_count(self.batch_size, "batch_size", hi=65_536)
        check_seed(self.seed, "seed")
        if self.path not in PATHS:
            raise AddkError(f"path must be one of {', '.join(PATHS)}, got {self.path!r}")
        if self.layer is not None and not (
            isinstance(self.layer, int) and 0 <= self.layer < self.model.n_layers
        ):
            raise AddkError(f"layer {self.layer!r} out of range 0..{self.model.n_layers - 1}")

    @classmethod
    def of(cls, value: EvalContext | HookedModel) -> EvalContext:
        """``value`` itself, or a default context around a bare model."""
        return value if isinstance(value, EvalContext) else cls(value)

    def astuple(self) -> tuple:
        """(model, fmt, batch_size, layer, seed, path, verbose): unpacked at the top of the
        functions that take a context."""
        return (
            self.model, self.fmt, self.batch_size, self.layer, self.seed, self.path, self.verbose
        )

    def with_(self, **changes) -> EvalContext:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)
