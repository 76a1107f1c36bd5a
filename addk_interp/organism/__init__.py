"""The add-k model organism: a small Llama trained here to solve few-shot add-k in context.

What it computes: :func:`load_organism` loads the shipped checkpoint (``checkpoint/``: weights
in safetensors, Hugging Face ``config.json``, tokenizer files, ``manifest.json``,
``loss_curve.csv``) after verifying the weights' sha256 against the manifest, and returns the
``LlamaForCausalLM`` in eval mode with its number-atomic tokenizer (every integer 0..999 is
one token; callers prepend ``tokenizer.bos_token_id`` themselves). The training entry points
(:func:`train_organism`, :class:`TrainConfig`) reproduce it.

Which step of the method it serves: it provides the model in which the add-k mechanism is
localized when no offline pretrained model solves the task; it boots in TransformerLens via
``TransformerBridge.boot_transformers("organism", hf_model=model, tokenizer=tok)``.

Cost: loading takes well under a second (a few MB of weights; hashing included).
"""

from __future__ import annotations

import importlib
from typing import Any

# public names load on first use (PEP 562): importing the package (e.g. for the CLI's parser)
# does not import torch or transformers
_LAZY = {
    "ModelConfig": "config",
    "TrainConfig": "config",
    "addk_eval_prompts": "data",
    "make_batch": "data",
    "token_ids": "data",
    "build_tokenizer": "tokenizer",
    "encode_checked": "tokenizer",
    "load_tokenizer": "tokenizer",
    "AccuracyReport": "train",
    "TrainResult": "train",
    "addk_accuracy": "train",
    "evaluate_organism": "train",
    "quiet_hf_progress": "train",
    "sha256_file": "train",
    "train_organism": "train",
    "CHECKPOINT_DIR": "loading",
    "load_manifest": "loading",
    "load_organism": "loading",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'addk_interp.organism' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
