"""Gate learning, result: ``GateFit`` (coefficient history per epoch, losses, monitor accuracy,
the forward path that ran), its cut → selected heads, stability across checkpoints, and
fingerprinted safetensors save / load. Cost: negligible.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float
from torch import Tensor

from addk_interp.core.errors import AddkError
from addk_interp.core.store import read_json, read_tensors, write_json, write_tensors
from addk_interp.localize.cuts import Cut, cut, mean_last_k
from addk_interp.localize.gates.config import GATE_FIT_VERSION, GateConfig
from addk_interp.models.adapter import HookedModel


def tensor_hash(t: Tensor) -> str:
    return hashlib.sha256(t.detach().float().contiguous().numpy().tobytes()).hexdigest()[:16]


# ============================================================================ the result


@dataclass(frozen=True)
class GateFit:
    """A trained gate matrix with everything needed to audit and reuse it.

    ``coefficients[e]`` is M (coef mode) or σ(θ) (mask mode) after epoch e + 1; ``init`` the
    same quantity before training; ``param`` the final raw parameter (M or θ). ``history`` has
    one dict per epoch (loss, nll, reg, train_match, sparsity, n_nonzero, n_selected,
    heldout_acc); ``steps`` one dict per optimizer step. ``identity`` holds the model
    fingerprint, task lists and data/means hashes; ``timing`` is not part of the result (kept in
    memory only: a run records it in its ``done.json``, so same-seed artifacts are byte-identical).
    """

    mode: str
    config: GateConfig
    layer: int
    coefficients: Float[Tensor, "epoch layer head"]
    init: Float[Tensor, "layer head"]
    param: Float[Tensor, "layer head"]
    history: tuple[dict, ...]
    steps: tuple[dict, ...]
    model_fingerprint: str
    forward_path: str
    identity: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)

    @property
    def final(self) -> Float[Tensor, "layer head"]:
        return self.coefficients[-1]

    @property
    def n_epochs(self) -> int:
        return self.coefficients.shape[0]

    def selection_matrix(self, k: int | None = None) -> Float[np.ndarray, "layer head"]:
        """Mean of the last k epoch checkpoints (k = ``config.select_k``, at most n_epochs)."""
        k = min(self.config.select_k if k is None else k, self.n_epochs)
        return mean_last_k(list(self.coefficients), k)

    def select(self, rule: str | None = None, k: int | None = None, **params: float) -> Cut:
        """The selected set: ``rule`` (default ``config.select_rule``) on ``selection_matrix``."""
        try:
            return cut(self.selection_matrix(k), rule or self.config.select_rule, **params)
        except AddkError:
            raise
        except ValueError as e:
            raise AddkError(str(e)) from None

    def stability(
        self, rule: str | None = None, k: int | None = None, **params: float
    ) -> dict[str, Any]:
        """Selected set after every epoch (cut on the mean of the last ≤ k checkpoints) and the
        first epoch from which it equals the final set (convergence diagnostic)."""
        k = self.config.select_k if k is None else k
        rule = rule or self.config.select_rule
        sets = []
        for e in range(1, self.n_epochs + 1):
            m = mean_last_k(list(self.coefficients[:e]), min(k, e))
            try:
                sets.append(tuple(cut(m, rule, **params).selected))
            except ValueError as err:
                raise AddkError(str(err)) from None
        final = sets[-1]
        since = self.n_epochs
        while since > 1 and sets[since - 2] == final:
            since -= 1
        return {
            "rule": rule,
            "k": k,
            "n_selected": [len(s) for s in sets],
            "stable_since_epoch": since,
            "final": [list(h) for h in final],
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": GATE_FIT_VERSION,
            "mode": self.mode,
            "config": self.config.to_dict(),
            "layer": self.layer,
            "coefficients": self.coefficients.tolist(),
            "init": self.init.tolist(),
            "param": self.param.tolist(),
            "history": list(self.history),
            "steps": list(self.steps),
            "model_fingerprint": self.model_fingerprint,
            "forward_path": self.forward_path,
            "identity": dict(self.identity),
        }

    def save(self, path) -> Path:
        """``path`` (.safetensors: coefficients, init, param) + the same stem ``.json``."""
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        meta = {
            k: v for k, v in self.to_dict().items() if k not in ("coefficients", "init", "param")
        }
        write_tensors(
            path,
            {"coefficients": self.coefficients, "init": self.init, "param": self.param},
            {"model_fingerprint": self.model_fingerprint, "kind": "gate_fit"},
        )
        write_json(path.with_suffix(".json"), meta)
        return path

    @classmethod
    def load(cls, path, model: HookedModel | None = None) -> GateFit:
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        expect = {"kind": "gate_fit"}
        if model is not None:
            expect["model_fingerprint"] = model.info.fingerprint
        t, _ = read_tensors(path, expect)
        meta = read_json(path.with_suffix(".json"))
        if meta.get("version") != GATE_FIT_VERSION:
            raise AddkError(f"{path}: gate-fit version {meta.get('version')} is not supported")
        return cls(
            mode=meta["mode"],
            config=GateConfig.from_dict(meta["config"]),
            layer=meta["layer"],
            coefficients=t["coefficients"],
            init=t["init"],
            param=t["param"],
            history=tuple(meta["history"]),
            steps=tuple(meta["steps"]),
            model_fingerprint=meta["model_fingerprint"],
            forward_path=meta["forward_path"],
            identity=meta["identity"],
            timing=meta.get("timing", {}),
        )


