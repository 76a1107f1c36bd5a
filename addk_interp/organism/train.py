"""Deterministic CPU training of the add-k model organism, with exact resume.

What it computes: trains a small ``LlamaForCausalLM`` (see :mod:`.config`) on the few-shot
sequences of :mod:`.data` with AdamW and a linear-warmup + cosine learning-rate schedule; the
loss is the cross-entropy of every label ``y_i`` (and of "#" if configured). It evaluates
greedy add-k accuracy periodically (5-shot and 0-shot) and at the end (5-shot over k = 1..30 and
every x = 1..100, and accuracy vs shots 0..10), and writes into ``out_dir``:
``model.safetensors`` + ``config.json`` (Hugging Face format), the tokenizer files,
``loss_curve.csv`` (per step), ``eval_curve.csv`` (periodic evaluations) and ``manifest.json``
(config, seeds, wall time, tokens/s, accuracies, sha256 of the weights). Resume checkpoints
(weights and AdamW state in safetensors, metadata in JSON; no pickle) are written every
``checkpoint_every`` steps under ``out_dir/resume/``; calling :func:`train_organism` again on
the same ``out_dir`` resumes from the last one and ends bitwise identical to an uninterrupted
run (same thread count), while a different config raises ``ValueError``.

Which step of the method it serves: it produces the model organism, the stand-in for a
pretrained LM in which the add-k mechanism is localized, because no offline pretrained model
here solves few-shot add-k.

Cost: about 6 * n_params FLOPs per trained token; the default run (0.89M parameters, 3000
steps of 64 sequences of <= 45 tokens, ~7.5M tokens, one thread) takes roughly 20 minutes on
one CPU core (~6k tokens/s). Evaluation is forward-only (a few seconds per 3000 prompts).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import safetensors.torch
import torch
import transformers
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from addk_interp.core.errors import AddkError
from addk_interp.core.store import atomic_write_text, sha256_file

from .config import TrainConfig, config_hash, llama_config
from .data import (
    EVAL_SEED,
    Batch,
    TokenIds,
    addk_eval_prompts,
    check_data_config,
    make_batch,
    token_ids,
)
from .tokenizer import build_tokenizer, save_tokenizer

__all__ = [
    "AccuracyReport",
    "TrainResult",
    "addk_accuracy",
    "build_model",
    "evaluate_organism",
    "lr_at",
    "quiet_hf_progress",
    "sha256_file",
    "train_organism",
]

MANIFEST_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
RESUME_DIR = "resume"
_CKPT_RE = re.compile(r"^step-(\d{8})$")
_LOSS_FIELDS = ("step", "lr", "loss", "label_loss", "label_accuracy", "tokens_seen")
_EVAL_FIELDS = ("step", "addk_5shot", "addk_0shot")


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class AccuracyReport:
    """Greedy add-k accuracy of an organism.

    ``by_shots[s]`` is the accuracy with ``s`` demonstrations; ``five_shot_by_k[k]`` the
    5-shot accuracy for each k; ``five_shot`` their mean (every x of the eval grid)."""

    five_shot: float
    zero_shot: float
    five_shot_by_k: Mapping[int, float]
    by_shots: Mapping[int, float]
    n_prompts_five_shot: int
    n_prompts_per_shots: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "addk_5shot": self.five_shot,
            "addk_0shot": self.zero_shot,
            "addk_5shot_by_k": {str(k): v for k, v in self.five_shot_by_k.items()},
            "addk_by_shots": {str(s): v for s, v in self.by_shots.items()},
            "n_prompts_5shot": self.n_prompts_five_shot,
            "n_prompts_per_shots": self.n_prompts_per_shots,
        }


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train_organism` (``completed`` is False when ``stop_after`` cut the
    run short; then ``accuracy`` and ``weights_sha256`` are None)."""

    out_dir: Path
    completed: bool
    step: int
    resumed_from_step: int | None
    wall_time_s: float
    train_time_s: float
    tokens_seen: int
    tokens_per_s: float
    final_loss: float
    accuracy: AccuracyReport | None
    weights_sha256: str | None


# ----------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def quiet_hf_progress() -> Iterator[None]:
    """Temporarily silence transformers' own progress bars ("Loading weights", "Writing model
    shards"); the previous setting is restored."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    if was_enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _publish(tmp: str | Path, path: Path) -> None:
    """Atomically move a finished temporary file into place, world-readable (mkstemp makes
    0600 files)."""
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _csv_text(fields: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


@runtime_checkable
class CosineSchedule(Protocol):
    """What ``lr_at`` reads: both organism recipes' configs have it."""

    lr: float
    min_lr_ratio: float
    warmup_steps: int
    steps: int


def lr_at(config: CosineSchedule, step: int) -> float:
    """Learning rate of (1-based) ``step``: linear warmup over ``warmup_steps`` to ``lr``, then
    cosine decay to ``lr * min_lr_ratio`` at ``steps``."""
    if config.warmup_steps and step <= config.warmup_steps:
        return config.lr * step / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_model(config: TrainConfig, tok: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """Freshly initialized organism (deterministic in ``config.seed``; the global RNG state is
    left untouched)."""
    hf_config = llama_config(
        config.model,
        vocab_size=len(tok),
        bos_id=tok.bos_token_id,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(hf_config)
    return model.float()


def _make_optimizer(model: LlamaForCausalLM, config: TrainConfig) -> torch.optim.AdamW:
    decay = [p for _, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for _, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr_at(config, 1),
        betas=(config.beta1, config.beta2),
        eps=config.adam_eps,
        foreach=False,
    )


def _loss_and_stats(
    model: LlamaForCausalLM, batch: Batch
) -> tuple[Float[Tensor, ""], dict[str, float]]:
    """Masked next-token cross-entropy; logits are computed only at target positions."""
    lengths = (batch.loss_mask | batch.label_mask).nonzero()[:, 1].max() + 1
    tokens: Int[Tensor, "batch pos"] = batch.tokens[:, : int(lengths)]
    hidden: Float[Tensor, "batch pos d_model"] = model.model(input_ids=tokens).last_hidden_state
    loss_mask = batch.loss_mask[:, 1 : int(lengths)]
    label_mask = batch.label_mask[:, 1 : int(lengths)]
    h: Float[Tensor, "n d_model"] = hidden[:, :-1][loss_mask]
    targets: Int[Tensor, " n"] = tokens[:, 1:][loss_mask]
    logits: Float[Tensor, "n vocab"] = model.lm_head(h).float()
    losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    loss = losses.mean()
    is_label = label_mask[loss_mask]
    with torch.no_grad():
        correct = (logits.argmax(-1) == targets)[is_label]
        stats = {
            "label_loss": float(losses[is_label].mean()),
            "label_accuracy": float(correct.float().mean()),
        }
    return loss, stats


@torch.inference_mode()
def _answer_accuracy(
    model: LlamaForCausalLM,
    tokens: Int[Tensor, "batch pos"],
    answers: Int[Tensor, " batch"],
    chunk: int = 512,
) -> Bool[Tensor, " batch"]:
    """Per-prompt correctness of the greedy next token after the final "->"."""
    out = []
    for i in range(0, tokens.shape[0], chunk):
        t = tokens[i : i + chunk]
        hidden = model.model(input_ids=t).last_hidden_state[:, -1]
        out.append(model.lm_head(hidden).argmax(-1) == answers[i : i + chunk])
    return torch.cat(out)


def addk_accuracy(
    model: LlamaForCausalLM,
    tok_or_ids: PreTrainedTokenizerBase | TokenIds,
    shots: int = 5,
    ks: tuple[int, ...] = tuple(range(1, 31)),
    x_per_k: int = 100,
    seed: int = EVAL_SEED,
) -> tuple[float, dict[int, float]]:
    """Greedy add-k accuracy with ``shots`` demonstrations over ``ks`` x ``x_per_k`` queries
    (x in 1..100, ``shots + 1`` distinct numbers per prompt): (mean, per-k accuracy)."""
    ids = tok_or_ids if isinstance(tok_or_ids, TokenIds) else token_ids(tok_or_ids)
    prompts = addk_eval_prompts(ids, shots=shots, ks=ks, x_per_k=x_per_k, seed=seed)
    was_training = model.training
    model.eval()
    try:
        correct = _answer_accuracy(model, prompts.tokens, prompts.answers).float()
    finally:
        model.train(was_training)
    per_k = {int(k): float(correct[prompts.k == k].mean()) for k in ks}
    return float(correct.mean()), per_k


def evaluate_organism(
    model: LlamaForCausalLM,
    tok_or_ids: PreTrainedTokenizerBase | TokenIds,
    x_per_k: int = 100,
    shots_x_per_k: int = 20,
    max_shots: int = 10,
) -> AccuracyReport:
    """Full evaluation: 5-shot add-k over k = 1..30 and ``x_per_k`` queries per k (100 = every
    x in 1..100), and accuracy vs shots 0..``max_shots`` on ``shots_x_per_k`` queries per k
    (with the 5-shot entry taken from the full grid)."""
    ids = tok_or_ids if isinstance(tok_or_ids, TokenIds) else token_ids(tok_or_ids)
    five, five_by_k = addk_accuracy(model, ids, shots=5, x_per_k=x_per_k)
    by_shots = {}
    for s in range(max_shots + 1):
        by_shots[s] = five if s == 5 else addk_accuracy(model, ids, s, x_per_k=shots_x_per_k)[0]
    return AccuracyReport(
        five_shot=five,
        zero_shot=by_shots[0],
        five_shot_by_k=five_by_k,
        by_shots=by_shots,
        n_prompts_five_shot=30 * x_per_k,
        n_prompts_per_shots=30 * shots_x_per_k,
    )


# ----------------------------------------------------------------------------- checkpoints


def _optimizer_tensors(model: LlamaForCausalLM, opt: torch.optim.AdamW) -> dict[str, Tensor]:
    tensors: dict[str, Tensor] = {}
    for name, p in model.named_parameters():
        state = opt.state.get(p, {})
        for key in ("step", "exp_avg", "exp_avg_sq"):
            if key in state:
                value = state[key]
                value = value if torch.is_tensor(value) else torch.tensor(float(value))
                tensors[f"{name}::{key}"] = value.detach().clone().contiguous()
    return tensors


def _load_optimizer_tensors(
    model: LlamaForCausalLM, opt: torch.optim.AdamW, tensors: dict[str, Tensor]
) -> None:
    for name, p in model.named_parameters():
        keys = {k: tensors.get(f"{name}::{k}") for k in ("step", "exp_avg", "exp_avg_sq")}
        if all(v is None for v in keys.values()):
            continue
        if any(v is None for v in keys.values()):
            raise AddkError(f"incomplete optimizer state for parameter {name}")
        opt.state[p] = {k: v.clone() for k, v in keys.items()}


def _model_tensors(model: LlamaForCausalLM) -> dict[str, Tensor]:
    # named_parameters() drops the tied lm_head duplicate; buffers (rotary) are recomputed.
    return {n: p.detach().clone().contiguous() for n, p in model.named_parameters()}


def _save_resume(
    out_dir: Path,
    step: int,
    model: LlamaForCausalLM,
    opt: torch.optim.AdamW,
    meta: dict[str, Any],
) -> Path:
    root = out_dir / RESUME_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        safetensors.torch.save_file(_model_tensors(model), tmp / "model.safetensors")
        safetensors.torch.save_file(_optimizer_tensors(model, opt), tmp / "optimizer.safetensors")
        meta = dict(meta, step=step)
        meta["files_sha256"] = {
            f: sha256_file(tmp / f) for f in ("model.safetensors", "optimizer.safetensors")
        }
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        os.chmod(tmp, 0o755)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in root.iterdir():  # keep only the newest checkpoint
        m = _CKPT_RE.match(old.name)
        if old != final and (m is None or int(m.group(1)) < step):
            shutil.rmtree(old, ignore_errors=True)
    return final


def _latest_resume(out_dir: Path) -> Path | None:
    root = out_dir / RESUME_DIR
    if not root.is_dir():
        return None
    found = sorted(
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _CKPT_RE.match(p.name)) and (p / "state.json").is_file()
    )
    return found[-1][1] if found else None


# ----------------------------------------------------------------------------- training


def save_final(out_dir: Path, model: LlamaForCausalLM, tok: PreTrainedTokenizerBase) -> str:
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".tmp-final-"))
    try:
        with quiet_hf_progress():
            model.save_pretrained(str(tmp))
        save_tokenizer(tmp, tok)
        for f in sorted(tmp.iterdir()):
            _publish(f, out_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sha256_file(out_dir / WEIGHTS_FILE)


def train_organism(
    out_dir: str | Path,
    config: TrainConfig | None = None,
    verbose: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Train (or resume training) the organism into ``out_dir``.

    Args:
        out_dir: output folder; resume checkpoints live in ``out_dir/resume/``.
        config: training settings (defaults reproduce the shipped checkpoint).
        verbose: show a tqdm progress bar with loss and accuracy.
        stop_after: stop after this global step (saving a resume checkpoint) without the final
            evaluation, e.g. to test or schedule resumption; ``None`` trains to
            ``config.steps``.

    Raises:
        ValueError: if ``out_dir`` holds a resume checkpoint or a finished run made with a
            different config.
    """
    config = config if config is not None else TrainConfig()
    check_data_config(config)  # refuse bad task settings before anything is written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chash = config_hash(config)
    manifest_path = out_dir / "manifest.json"
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("config_sha256") != chash:
            raise AddkError(
                f"{out_dir} already holds an organism trained with a different config; "
                "use another --out folder"
            )

    tok = build_tokenizer()
    ids = token_ids(tok)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(config.num_threads)
    try:
        return _train(out_dir, config, chash, tok, ids, verbose, stop_after)
    finally:
        torch.set_num_threads(prev_threads)


def _train(
    out_dir: Path,
    config: TrainConfig,
    chash: str,
    tok: PreTrainedTokenizerBase,
    ids: TokenIds,
    verbose: bool,
    stop_after: int | None,
) -> TrainResult:
    model = build_model(config, tok)
    model.train()
    opt = _make_optimizer(model, config)

    start_step = 0
    history: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    tokens_seen = 0
    train_time = 0.0
    wall_before = 0.0
    resumed_from: int | None = None
    resume_steps: list[int] = []

    ckpt = _latest_resume(out_dir)
    if ckpt is not None:
        state = json.loads((ckpt / "state.json").read_text())
        if state.get("config_sha256") != chash:
            diff = _config_diff(state.get("config", {}), config.to_dict())
            raise AddkError(
                f"cannot resume {ckpt}: it was trained with a different config "
                f"(differences: {diff}); use the same config or another out_dir"
            )
        for f, digest in state["files_sha256"].items():
            if sha256_file(ckpt / f) != digest:
                raise AddkError(f"resume checkpoint file {ckpt / f} is corrupted (sha256)")
        weights = safetensors.torch.load_file(ckpt / "model.safetensors")
        missing, unexpected = model.load_state_dict(weights, strict=False)
        missing = [
            m for m in missing if m != "lm_head.weight" or not model.config.tie_word_embeddings
        ]
        if missing or unexpected:
            raise AddkError(f"resume weights mismatch: missing {missing}, extra {unexpected}")
        _load_optimizer_tensors(
            model, opt, safetensors.torch.load_file(ckpt / "optimizer.safetensors")
        )
        start_step = int(state["step"])
        history = state["history"]
        evals = state["evals"]
        tokens_seen = int(state["tokens_seen"])
        train_time = float(state["train_time_s"])
        wall_before = float(state["wall_time_s"])
        resume_steps = [*state.get("resumed_from_steps", []), start_step]
        resumed_from = start_step

    end_step = config.steps if stop_after is None else min(config.steps, stop_after)
    t_wall = time.perf_counter()
    bar = tqdm(
        total=config.steps,
        initial=start_step,
        disable=not verbose,
        desc="train-organism",
        dynamic_ncols=True,
    )
    last_eval = evals[-1] if evals else None
    loss_val = float("nan")
    try:
        for step in range(start_step + 1, end_step + 1):
            t0 = time.perf_counter()
            batch = make_batch(config, ids, step)
            lr = lr_at(config, step)
            for group in opt.param_groups:
                group["lr"] = lr
            loss, stats = _loss_and_stats(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            train_time += time.perf_counter() - t0
            tokens_seen += batch.n_tokens
            loss_val = float(loss.detach())
            history.append(
                {
                    "step": step,
                    "lr": lr,
                    "loss": loss_val,
                    "label_loss": stats["label_loss"],
                    "label_accuracy": stats["label_accuracy"],
                    "tokens_seen": tokens_seen,
                }
            )
            if step % config.eval_every == 0 or step == config.steps:
                five, _ = addk_accuracy(model, ids, 5, x_per_k=config.eval_x_per_k)
                zero, _ = addk_accuracy(model, ids, 0, x_per_k=config.eval_x_per_k)
                last_eval = {"step": step, "addk_5shot": five, "addk_0shot": zero}
                evals.append(last_eval)
            if step % config.log_every == 0 or step == end_step:
                recent = history[-config.log_every :]
                postfix = {
                    "loss": f"{np.mean([r['loss'] for r in recent]):.3f}",
                    "acc": f"{np.mean([r['label_accuracy'] for r in recent]):.3f}",
                }
                if last_eval is not None:
                    postfix["5shot"] = f"{last_eval['addk_5shot']:.3f}"
                bar.set_postfix(postfix, refresh=False)
            bar.update(1)
            if step == end_step or step % config.checkpoint_every == 0:
                meta = {
                    "config": config.to_dict(),
                    "config_sha256": chash,
                    "history": history,
                    "evals": evals,
                    "tokens_seen": tokens_seen,
                    "train_time_s": train_time,
                    "wall_time_s": wall_before + time.perf_counter() - t_wall,
                    "resumed_from_steps": resume_steps,
                }
                if step < config.steps or config.keep_resume_checkpoints:
                    _save_resume(out_dir, step, model, opt, meta)
    finally:
        bar.close()

    wall = wall_before + time.perf_counter() - t_wall
    atomic_write_text(out_dir / "loss_curve.csv", _csv_text(_LOSS_FIELDS, history))
    atomic_write_text(out_dir / "eval_curve.csv", _csv_text(_EVAL_FIELDS, evals))
    tokens_per_s = tokens_seen / train_time if train_time > 0 else 0.0
    if end_step < config.steps:
        return TrainResult(
            out_dir=out_dir,
            completed=False,
            step=end_step,
            resumed_from_step=resumed_from,
            wall_time_s=wall,
            train_time_s=train_time,
            tokens_seen=tokens_seen,
            tokens_per_s=tokens_per_s,
            final_loss=loss_val,
            accuracy=None,
            weights_sha256=None,
        )

    model.eval()
    report = evaluate_organism(
        model,
        ids,
        x_per_k=config.final_eval_x_per_k,
        shots_x_per_k=config.final_eval_shots_x_per_k,
    )
    digest = save_final(out_dir, model, tok)
    wall = wall_before + time.perf_counter() - t_wall
    final_loss = float(np.mean([r["loss"] for r in history[-config.log_every :]]))
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "kind": "addk-interp model organism",
        "architecture": "LlamaForCausalLM",
        "config": config.to_dict(),
        "config_sha256": chash,
        "data_seed": config.seed,
        "eval_seed": EVAL_SEED,
        "steps": config.steps,
        "resumed_from_steps": resume_steps,
        "wall_time_s": round(wall, 2),
        "train_time_s": round(train_time, 2),
        "tokens_seen": tokens_seen,
        "tokens_per_s": round(tokens_per_s, 1),
        "num_threads": config.num_threads,
        "final_loss": final_loss,
        "accuracy": report.to_dict(),
        "n_params": sum(p.numel() for p in model.parameters()),
        "weights": {"file": WEIGHTS_FILE, "sha256": digest, "dtype": "float32"},
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }
    atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    if not config.keep_resume_checkpoints:
        shutil.rmtree(out_dir / RESUME_DIR, ignore_errors=True)
    return TrainResult(
        out_dir=out_dir,
        completed=True,
        step=config.steps,
        resumed_from_step=resumed_from,
        wall_time_s=wall,
        train_time_s=train_time,
        tokens_seen=tokens_seen,
        tokens_per_s=tokens_per_s,
        final_loss=final_loss,
        accuracy=report,
        weights_sha256=digest,
    )


def _config_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    keys = sorted(set(old) | set(new))
    return {k: (old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)}
