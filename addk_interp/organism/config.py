"""Configuration of the add-k model organism: architecture and every training setting.

What it computes: frozen dataclasses :class:`ModelConfig` (the Llama architecture: RMSNorm,
rotary, grouped-query attention, gated MLP) and :class:`TrainConfig` (seed, steps, batch size,
AdamW + warmup/cosine schedule, task mix, shots range, evaluation and checkpoint cadence), the
conversion to a Hugging Face ``LlamaConfig``, and a lossless JSON round trip used by manifests
and by the resume check (resuming with a different config is refused).

Which step of the method it serves: it pins down the model organism, the small Llama trained
by :mod:`addk_interp.organism.train` until it solves few-shot add-k in context, so that the
shipped checkpoint is reproducible from the defaults.

Cost: negligible (pure Python).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from addk_interp.core.errors import AddkError

__all__ = [
    "TASK_FAMILIES",
    "ModelConfig",
    "TrainConfig",
    "config_hash",
    "llama_config",
]

TASK_FAMILIES: tuple[str, ...] = ("add", "sub", "mul")
"""Task families the data generator knows: y = x + k, y = x - k (y >= 0), y = k * x."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the organism (a Hugging Face ``LlamaForCausalLM``)."""

    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 8
    n_kv_heads: int = 2
    d_head: int = 16
    d_mlp: int = 384
    rope_theta: float = 10000.0
    max_position_embeddings: int = 128
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.n_heads % self.n_kv_heads:
            raise AddkError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})"
            )
        if min(self.d_model, self.n_layers, self.n_heads, self.d_head, self.d_mlp) <= 0:
            raise AddkError(f"model dimensions must be positive, got {self}")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of an organism training run (the defaults reproduce the shipped
    checkpoint).

    Data: each sequence is ``<bos>x1->y1#...xn->yn#`` with ``n`` drawn uniformly from
    ``pairs_range`` (so label ``y_i`` is seen after ``i - 1`` demonstrations: shots 0..n-1),
    one task family drawn from ``task_mix`` and one ``k`` from that family's range, distinct
    ``x`` drawn from ``x_range`` (for "sub" only ``x >= k`` so that answers stay >= 0).
    """

    seed: int = 0
    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 150
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.98
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    task_mix: tuple[tuple[str, float], ...] = (("add", 0.7), ("sub", 0.15), ("mul", 0.15))
    add_k_range: tuple[int, int] = (1, 30)
    sub_k_range: tuple[int, int] = (1, 30)
    mul_k_range: tuple[int, int] = (2, 9)
    x_range: tuple[int, int] = (1, 100)
    pairs_range: tuple[int, int] = (8, 11)
    loss_on_separator: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    num_threads: int = 1
    log_every: int = 10
    eval_every: int = 250
    eval_x_per_k: int = 10
    final_eval_x_per_k: int = 100
    final_eval_shots_x_per_k: int = 20
    checkpoint_every: int = 250
    keep_resume_checkpoints: bool = False

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.batch_size <= 0:
            raise AddkError("steps and batch_size must be positive")
        if not 0 <= self.warmup_steps <= self.steps:
            raise AddkError(f"warmup_steps must be in [0, steps], got {self.warmup_steps}")
        families = [name for name, _ in self.task_mix]
        unknown = sorted(set(families) - set(TASK_FAMILIES))
        if unknown:
            raise AddkError(
                f"unknown task family {unknown} in task_mix; valid families: {list(TASK_FAMILIES)}"
            )
        if len(set(families)) != len(families):
            raise AddkError(f"task_mix lists a family twice: {families}")
        if not self.task_mix or any(w < 0 for _, w in self.task_mix):
            raise AddkError("task_mix needs at least one family and non-negative weights")
        if sum(w for _, w in self.task_mix) <= 0:
            raise AddkError("task_mix weights must not all be zero")
        for name in ("add_k_range", "sub_k_range", "mul_k_range", "x_range", "pairs_range"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise AddkError(f"{name} must satisfy lo <= hi, got {(lo, hi)}")
        if self.pairs_range[0] < 1:
            raise AddkError("pairs_range must start at >= 1 pair")
        if self.max_seq_len > self.model.max_position_embeddings:
            raise AddkError(
                f"sequences of up to {self.max_seq_len} tokens exceed "
                f"max_position_embeddings={self.model.max_position_embeddings}"
            )
        for name in ("log_every", "eval_every", "checkpoint_every", "num_threads"):
            if getattr(self, name) <= 0:
                raise AddkError(f"{name} must be positive")

    @property
    def max_seq_len(self) -> int:
        """Longest training sequence in tokens: ``<bos>`` + 4 tokens per (x, y) pair."""
        return 1 + 4 * self.pairs_range[1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``AddkError``."""
        kwargs = config_kwargs(cls, data)
        if "task_mix" in kwargs:
            kwargs["task_mix"] = tuple((str(n), float(w)) for n, w in kwargs["task_mix"])
        for name in ("add_k_range", "sub_k_range", "mul_k_range", "x_range", "pairs_range"):
            if name in kwargs:
                kwargs[name] = tuple(int(v) for v in kwargs[name])
        return cls(**kwargs)


def config_hash(config: TrainConfig) -> str:
    """sha256 of the canonical JSON of ``config`` (identifies a run for resuming)."""
    blob = json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def llama_config(model: ModelConfig, vocab_size: int, bos_id: int, eos_id: int, pad_id: int):
    """The Hugging Face ``LlamaConfig`` of the organism."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=model.d_model,
        intermediate_size=model.d_mlp,
        num_hidden_layers=model.n_layers,
        num_attention_heads=model.n_heads,
        num_key_value_heads=model.n_kv_heads,
        head_dim=model.d_head,
        hidden_act="silu",
        max_position_embeddings=model.max_position_embeddings,
        rms_norm_eps=model.rms_norm_eps,
        rope_theta=model.rope_theta,
        tie_word_embeddings=model.tie_word_embeddings,
        initializer_range=model.initializer_range,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        architectures=["LlamaForCausalLM"],
    )


def config_to_dict(config: Any) -> dict[str, Any]:
    """A recipe config as a JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_kwargs(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments of recipe config ``cls`` from its dict: unknown keys refused, the
    nested ``model`` rebuilt as a ``ModelConfig``."""
    known = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(data) - known)
    if extra:
        raise AddkError(f"unknown {cls.__name__} fields: {extra}")
    kwargs: dict[str, Any] = dict(data)
    if "model" in kwargs:
        kwargs["model"] = ModelConfig(**kwargs["model"])
    return kwargs
