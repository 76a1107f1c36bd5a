"""Load the shipped natural organism: weights verified against the manifest's sha256.

Which step of the method it serves: the model organism (``load_model("organism")``). Cost: well
under a second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from addk_interp.core.errors import AddkError
from addk_interp.core.store import sha256_file

from .tokenizer import load_tokenizer
from .train import quiet_hf_progress

CHECKPOINT_DIR = Path(__file__).parent / "checkpoint"
"""Folder of the shipped organism checkpoint."""


def verify_weights(checkpoint_dir: Path, manifest: dict[str, Any], what: str) -> Path:
    """The checkpoint's weights file, after checking it exists and matches the manifest's
    sha256 (``AddkError`` on a mismatch: corrupted or replaced)."""
    weights = Path(checkpoint_dir) / manifest["weights"]["file"]
    if not weights.is_file():
        raise FileNotFoundError(f"{what} weights {weights} are missing")
    digest = sha256_file(weights)
    if digest != manifest["weights"]["sha256"]:
        raise AddkError(
            f"{what} weights {weights} have sha256 {digest}, but manifest.json records "
            f"{manifest['weights']['sha256']}: the checkpoint is corrupted or was replaced"
        )
    return weights


def load_manifest(
    checkpoint_dir: str | Path = CHECKPOINT_DIR,
    what: str = "organism",
    how_to_train: str = "`addk-interp train-organism --out DIR`",
) -> dict[str, Any]:
    """The checkpoint's ``manifest.json`` (config, seeds, accuracies, weights sha256).

    Raises:
        FileNotFoundError: if the folder or its manifest is missing.
    """
    checkpoint_dir = Path(checkpoint_dir)
    path = checkpoint_dir / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no {what} checkpoint at {checkpoint_dir} (manifest.json missing); train one "
            f"with {how_to_train}"
        )
    return json.loads(path.read_text())


def load_checkpoint(
    checkpoint_dir: str | Path,
    dtype: torch.dtype,
    attn_implementation: str,
    what: str,
    how_to_train: str,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """A shipped organism checkpoint (eval mode) and its tokenizer, weights verified against
    the manifest's sha256 (both organisms load through here)."""
    checkpoint_dir = Path(checkpoint_dir)
    manifest = load_manifest(checkpoint_dir, what, how_to_train)
    verify_weights(checkpoint_dir, manifest, what)
    with quiet_hf_progress():
        model = LlamaForCausalLM.from_pretrained(
            str(checkpoint_dir),
            dtype=dtype,
            local_files_only=True,
            attn_implementation=attn_implementation,
        )
    model.eval()
    return model, load_tokenizer(checkpoint_dir)


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
    return load_checkpoint(
        checkpoint_dir,
        dtype,
        attn_implementation,
        "organism",
        "`addk-interp train-organism --out DIR`",
    )
