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

import json
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from addk_interp.errors import AddkError

from .config import ModelConfig, TrainConfig
from .data import addk_eval_prompts, make_batch, token_ids
from .tokenizer import build_tokenizer, encode_checked, load_tokenizer
from .train import (
    AccuracyReport,
    TrainResult,
    addk_accuracy,
    evaluate_organism,
    quiet_hf_progress,
    sha256_file,
    train_organism,
)

__all__ = [
    "CHECKPOINT_DIR",
    "AccuracyReport",
    "ModelConfig",
    "TrainConfig",
    "TrainResult",
    "addk_accuracy",
    "addk_eval_prompts",
    "build_tokenizer",
    "encode_checked",
    "evaluate_organism",
    "load_manifest",
    "load_organism",
    "load_tokenizer",
    "make_batch",
    "token_ids",
    "train_organism",
]

CHECKPOINT_DIR = Path(__file__).parent / "checkpoint"
"""Folder of the shipped organism checkpoint."""


def load_manifest(checkpoint_dir: str | Path = CHECKPOINT_DIR) -> dict[str, Any]:
    """The checkpoint's ``manifest.json`` (config, seeds, accuracies, weights sha256).

    Raises:
        FileNotFoundError: if the folder or its manifest is missing.
    """
    checkpoint_dir = Path(checkpoint_dir)
    path = checkpoint_dir / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no organism checkpoint at {checkpoint_dir} (manifest.json missing); train one "
            "with `addk-interp train-organism --out DIR`"
        )
    return json.loads(path.read_text())


def load_organism(
    checkpoint_dir: str | Path = CHECKPOINT_DIR,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "eager",
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """Load the organism (eval mode) and its tokenizer, verifying the weights' sha256.

    ``attn_implementation`` defaults to "eager" (what TransformerLens uses, so logits match the
    bridge's exactly); "sdpa" is a little faster.

    Raises:
        FileNotFoundError: if the checkpoint (manifest or weights) is missing.
        ValueError: if the weights do not match the manifest's sha256.
    """
    checkpoint_dir = Path(checkpoint_dir)
    manifest = load_manifest(checkpoint_dir)
    weights = checkpoint_dir / manifest["weights"]["file"]
    if not weights.is_file():
        raise FileNotFoundError(f"organism weights {weights} are missing")
    digest = sha256_file(weights)
    if digest != manifest["weights"]["sha256"]:
        raise AddkError(
            f"organism weights {weights} have sha256 {digest}, but manifest.json records "
            f"{manifest['weights']['sha256']}: the checkpoint is corrupted or was replaced"
        )
    with quiet_hf_progress():
        model = LlamaForCausalLM.from_pretrained(
            str(checkpoint_dir),
            dtype=dtype,
            local_files_only=True,
            attn_implementation=attn_implementation,
        )
    model.eval()
    return model, load_tokenizer(checkpoint_dir)
