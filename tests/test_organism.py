"""Tests of the add-k model organism: tokenizer, data, training/resume, shipped checkpoint.

What it checks: number-atomic tokenization (0..999 one token each, "->-7", offsets, clear
errors), deterministic few-shot batches with correct label masks, that a tiny organism's loss
falls, that resuming is bitwise identical to an uninterrupted run and refuses another config,
and that the shipped checkpoint loads, matches its manifest's sha256, solves 5-shot add-k and
boots in TransformerLens with identical logits.

Which step of the method it serves: the model organism used when no offline pretrained model
solves few-shot add-k.

Cost: about 10-20 s on one CPU thread.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch

from addk_interp.cli.organism import add_parser
from addk_interp.organism import (
    CHECKPOINT_DIR,
    ModelConfig,
    TrainConfig,
    addk_accuracy,
    addk_eval_prompts,
    build_tokenizer,
    encode_checked,
    load_manifest,
    load_organism,
    load_tokenizer,
    make_batch,
    token_ids,
    train_organism,
)
from addk_interp.organism.tokenizer import FORMAT_STRINGS, save_tokenizer
from addk_interp.organism.train import lr_at, sha256_file


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _tiny(**kw) -> TrainConfig:
    base = dict(
        seed=3,
        steps=24,
        batch_size=16,
        lr=3e-3,
        warmup_steps=4,
        pairs_range=(3, 6),
        model=ModelConfig(d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, d_head=16, d_mlp=64),
        num_threads=1,
        log_every=4,
        eval_every=12,
        eval_x_per_k=1,
        final_eval_x_per_k=1,
        final_eval_shots_x_per_k=1,
        checkpoint_every=5,
    )
    base.update(kw)
    return TrainConfig(**base)


# ----------------------------------------------------------------------------- tokenizer


def test_numbers_are_single_tokens(tok):
    ids = [tok.encode(str(i), add_special_tokens=False) for i in range(1000)]
    assert all(len(i) == 1 for i in ids)
    assert len({i[0] for i in ids}) == 1000
    assert tok.decode([i[0] for i in ids[:12]]) == "01234567891011"


def test_round_trip_arrow_and_formats(tok):
    text = "12->15#7->10#999->0#"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.convert_ids_to_tokens(ids)[:4] == ["12", "->", "15", "#"]
    assert tok.decode(ids) == text
    for name, (in_pre, in_sep, out_pre, out_sep) in FORMAT_STRINGS.items():
        demo = f"{in_pre}5{in_sep}{out_pre}8{out_sep}{in_pre}42{in_sep}{out_pre}"
        ids = encode_checked(demo, tok)
        assert tok.decode(ids) == demo, name
        for piece in (in_pre, in_sep, out_pre, out_sep):
            if piece:
                assert len(tok.encode(piece, add_special_tokens=False)) == 1, (name, piece)


def test_negative_and_arrow(tok):
    ids = tok.encode("->-7", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(ids) == ["->", "-", "7"]


def test_offsets_and_no_auto_bos(tok):
    enc = tok("3->40#", return_offsets_mapping=True)
    assert enc["input_ids"][0] != tok.bos_token_id
    assert enc["offset_mapping"] == [(0, 1), (1, 3), (3, 5), (5, 6)]
    assert tok.bos_token == "<bos>"


def test_encode_checked_errors(tok):
    assert encode_checked("7->9#", tok) == tok.encode("7->9#", add_special_tokens=False)
    assert encode_checked("7->9#") == encode_checked("7->9#", tok)
    with pytest.raises(ValueError, match="1000"):
        encode_checked("1000->1001#", tok)
    with pytest.raises(ValueError, match="leading zeros"):
        encode_checked("007", tok)
    with pytest.raises(ValueError, match="cannot represent"):
        encode_checked("3 + 4 = 7", tok)


def test_tokenizer_loads_from_disk(tok, tmp_path):
    save_tokenizer(tmp_path, tok)
    loaded = load_tokenizer(tmp_path)
    assert loaded.init_kwargs["name_or_path"] == str(tmp_path)
    assert loaded.encode("5->6#", add_special_tokens=False) == tok.encode(
        "5->6#", add_special_tokens=False
    )
    assert loaded.bos_token_id == tok.bos_token_id


# ----------------------------------------------------------------------------- data


def test_batches_deterministic_and_masks(tok):
    cfg = _tiny(task_mix=(("add", 0.5), ("sub", 0.25), ("mul", 0.25)), batch_size=32)
    ids = token_ids(tok)
    a, b, c = make_batch(cfg, ids, 7), make_batch(cfg, ids, 7), make_batch(cfg, ids, 8)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.loss_mask, b.loss_mask)
    assert not torch.equal(a.tokens, c.tokens)
    assert torch.equal(a.tokens[:, 0], torch.full((32,), ids.bos))
    for row in range(32):
        t = a.tokens[row]
        lab = a.label_mask[row].nonzero().flatten()
        n = len(lab)
        assert cfg.pairs_range[0] <= n <= cfg.pairs_range[1]
        assert (a.shots[row, lab] == torch.arange(n)).all()
        assert (t[lab - 1] == ids.arrow).all() and (t[lab + 1] == ids.sep).all()
        x = t[lab - 2] - ids.number_base
        y = t[lab] - ids.number_base
        fam, k = ("add", "sub", "mul")[int(a.family[row])], int(a.k[row])
        expected = {"add": x + k, "sub": x - k, "mul": x * k}[fam]
        assert torch.equal(y, expected)
        assert len(set(x.tolist())) == n  # distinct x per sequence
        # loss on labels and on the "#" after them, nowhere else
        assert a.loss_mask[row].sum() == 2 * n
        assert (t[len(t) - (t == ids.pad).sum() :] == ids.pad).all()


def test_data_config_errors(tok):
    with pytest.raises(ValueError, match="valid families"):
        _tiny(task_mix=(("add", 1.0), ("div", 1.0)))
    cfg = _tiny(task_mix=(("mul", 1.0),), mul_k_range=(2, 20))
    with pytest.raises(ValueError, match="vocabulary"):
        make_batch(cfg, token_ids(tok), 1)


def test_eval_prompts(tok):
    ids = token_ids(tok)
    p = addk_eval_prompts(ids, shots=5, ks=(3, 30), x_per_k=4)
    assert p.tokens.shape == (8, 1 + 5 * 4 + 2)
    assert torch.equal(p.answers, ids.number_base + p.x + p.k)
    for row in p.tokens:
        nums = row[1::4] - ids.number_base
        assert len(set(nums.tolist())) == 6
    q = addk_eval_prompts(ids, shots=5, ks=(3, 30), x_per_k=4)
    assert torch.equal(p.tokens, q.tokens)


def test_lr_schedule():
    cfg = _tiny(steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(cfg, 5) == pytest.approx(5e-4)
    assert lr_at(cfg, 10) == pytest.approx(1e-3)
    assert lr_at(cfg, 100) == pytest.approx(1e-4)
    assert np.all(np.diff([lr_at(cfg, s) for s in range(10, 101)]) <= 0)


# ----------------------------------------------------------------------------- training


def test_tiny_training_loss_decreases(tmp_path):
    cfg = _tiny()
    res = train_organism(tmp_path / "run", cfg, verbose=False)
    assert res.completed and res.accuracy is not None
    rows = (tmp_path / "run" / "loss_curve.csv").read_text().splitlines()
    losses = [float(r.split(",")[2]) for r in rows[1:]]
    assert len(losses) == cfg.steps
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.5
    manifest = load_manifest(tmp_path / "run")
    assert manifest["weights"]["sha256"] == sha256_file(tmp_path / "run" / "model.safetensors")
    assert set(manifest["accuracy"]["addk_by_shots"]) == {str(s) for s in range(11)}
    assert not (tmp_path / "run" / "resume").exists()
    model, tk = load_organism(tmp_path / "run")
    assert not model.training and tk.bos_token == "<bos>"


def test_resume_is_bitwise_identical(tmp_path):
    cfg = _tiny(steps=16)
    full = train_organism(tmp_path / "full", cfg, verbose=False)
    part = train_organism(tmp_path / "split", cfg, verbose=False, stop_after=7)
    assert not part.completed and part.step == 7
    assert (tmp_path / "split" / "resume" / "step-00000007" / "optimizer.safetensors").is_file()
    done = train_organism(tmp_path / "split", cfg, verbose=False)
    assert done.completed and done.resumed_from_step == 7
    assert done.weights_sha256 == full.weights_sha256
    a = (tmp_path / "full" / "loss_curve.csv").read_text()
    b = (tmp_path / "split" / "loss_curve.csv").read_text()
    assert a == b

    train_organism(tmp_path / "other", cfg, verbose=False, stop_after=5)
    with pytest.raises(ValueError, match="different config"):
        train_organism(tmp_path / "other", dataclasses.replace(cfg, lr=1e-3), verbose=False)


def test_cli_parser():
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    args = parser.parse_args(["train-organism", "--out", "x", "--steps", "5", "--quiet"])
    assert args.steps == 5 and args.quiet and args.seed == TrainConfig().seed
    assert callable(args.func)


# ----------------------------------------------------------------------------- shipped


@pytest.fixture(scope="module")
def shipped():
    return load_organism()


def test_shipped_checkpoint_manifest_and_accuracy(shipped):
    model, tk = shipped
    manifest = load_manifest()
    assert sha256_file(CHECKPOINT_DIR / "model.safetensors") == manifest["weights"]["sha256"]
    assert TrainConfig.from_dict(manifest["config"]) == TrainConfig()
    assert manifest["accuracy"]["addk_5shot"] >= 0.95
    acc, per_k = addk_accuracy(model, tk, shots=5, x_per_k=2, seed=7)
    assert len(per_k) == 30
    assert acc >= 0.9
    zero, _ = addk_accuracy(model, tk, shots=0, x_per_k=2, seed=7)
    assert zero < 0.3


def test_shipped_checkpoint_sha_mismatch(tmp_path):
    import shutil

    shutil.copytree(CHECKPOINT_DIR, tmp_path / "ck")
    with open(tmp_path / "ck" / "model.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(ValueError, match="sha256"):
        load_organism(tmp_path / "ck")
    with pytest.raises(FileNotFoundError):
        load_organism(tmp_path / "missing")


def test_shipped_checkpoint_boots_in_transformer_lens(shipped):
    from transformer_lens.model_bridge import TransformerBridge

    model, tk = shipped
    bridge = TransformerBridge.boot_transformers(
        "organism", hf_model=model, tokenizer=tk, device="cpu"
    )
    ids = torch.tensor([[tk.bos_token_id, *encode_checked("3->8#10->15#40->", tk)]])
    with torch.no_grad():
        hf = model(ids).logits
        tl = bridge(ids)
    torch.testing.assert_close(tl, hf, rtol=0, atol=1e-5)
    assert int(tl[0, -1].argmax()) == tk.convert_tokens_to_ids("45")


def test_checkpoint_files_present():
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "manifest.json",
        "loss_curve.csv",
    ):
        assert (Path(CHECKPOINT_DIR) / name).is_file(), name
