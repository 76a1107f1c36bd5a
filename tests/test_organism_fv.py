"""Tests of recipe ``fv`` (the ``organism-fv`` model organism with a planted function vector).

What it checks: the config's JSON round trip and its refusal of held-out k in the task-vector
losses; that the injection hook adds the vector to the residual stream after the attention block
(and nowhere else); that a tiny training run is deterministic and writes a loadable, hashed
checkpoint with a ``ground_truth`` block; that the shipped ``checkpoint_fv`` loads, matches its
sha256, and on a small sample solves 5-shot add-k (bar 1) with a transferable function vector
of the planted heads on the held-out k (bar 2).

Which step of the method it serves: the ground-truth organism used to validate localization.

Cost: about 20-40 s on one CPU thread.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

from addk_interp.organism import ModelConfig
from addk_interp.organism.data import token_ids
from addk_interp.organism.recipe_fv import (
    CHECKPOINT_FV_DIR,
    HELDOUT_KS,
    FVRecipeConfig,
    head_task_means,
    helix_features,
    inject_after_attention,
    load_organism_fv,
    make_fv_batch,
    measure_bars,
    train_organism_fv,
)
from addk_interp.organism.tokenizer import build_tokenizer


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _tiny(**kw) -> FVRecipeConfig:
    base = dict(
        seed=5,
        steps=3,
        batch_size=8,
        warmup_steps=1,
        pairs_range=(6, 7),
        model=ModelConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, d_head=16, d_mlp=64),
        planted_heads=(0,),
        planted_layer=1,
        fv_ramp_steps=0,
        log_every=1,
        eval_every=100,
    )
    base.update(kw)
    return FVRecipeConfig(**base)


def test_config_round_trip():
    c = FVRecipeConfig()
    assert FVRecipeConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    c2 = _tiny(planted_heads=(0, 1), helix_periods=(2, 5, 10))
    assert FVRecipeConfig.from_dict(c2.to_dict()) == c2
    with pytest.raises(ValueError, match="unknown"):
        FVRecipeConfig.from_dict({**c.to_dict(), "bogus": 1})


@pytest.mark.parametrize("k", HELDOUT_KS)
def test_heldout_k_refused_in_task_vector_losses(k):
    with pytest.raises(ValueError, match="held-out"):
        FVRecipeConfig(fv_train_ks=(1, 3, k))


def test_other_refusals():
    with pytest.raises(ValueError, match="1..4"):
        FVRecipeConfig(planted_heads=(0, 1, 2, 3, 4))
    with pytest.raises(ValueError, match="planted_layer"):
        FVRecipeConfig(planted_layer=4)


def test_batch_never_uses_heldout_for_vectors():
    tok = build_tokenizer()
    c = FVRecipeConfig()
    for step in (1, 2, 3):
        b = make_fv_batch(c, token_ids(tok), step)
        assert not set(b.q_k.tolist()) & set(HELDOUT_KS)
        assert set(b.k.tolist()) & set(HELDOUT_KS)  # the plain ICL loss sees every k
        assert (b.tokens[b.q_batch, b.q_pos] == token_ids(tok).arrow).all()


def test_helix_features_distinct():
    import numpy as np

    f = helix_features(np.arange(1000), (2, 5, 10, 100, 1000))
    assert f.shape == (1000, 9)
    d = ((f[:, None] - f[None]) ** 2).sum(-1) + np.eye(1000)
    assert d.min() > 1e-6


def test_injection_adds_to_residual_after_attention():
    tok = build_tokenizer()
    from addk_interp.organism.recipe_fv import build_model_fv

    model = build_model_fv(_tiny(), tok).eval()
    ids = token_ids(tok)
    tokens = torch.tensor([[ids.bos, ids.number_base + 7, ids.arrow]] * 2)
    seen = {}

    def grab(_m, args):
        seen["mid"] = args[0].detach().clone()

    h = model.model.layers[1].post_attention_layernorm.register_forward_pre_hook(grab)
    try:
        with torch.no_grad():
            model(input_ids=tokens)
            base = seen["mid"]
            v = torch.randn(32)
            with inject_after_attention(model, 1, v):
                model(input_ids=tokens)
    finally:
        h.remove()
    diff = seen["mid"] - base
    torch.testing.assert_close(diff[:, -1], v.expand(2, 32))
    assert diff[:, :-1].abs().max() == 0


def test_tiny_training_deterministic(tmp_path):
    sizes = dict(x_per_k=2, n_mean_prompts=2, corrupt_x_per_k=1)
    r1 = train_organism_fv(tmp_path / "a", _tiny(), verbose=False, eval_sizes=sizes)
    r2 = train_organism_fv(tmp_path / "b", _tiny(), verbose=False, eval_sizes=sizes)
    assert r1.weights_sha256 == r2.weights_sha256
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert man["ground_truth"]["fv_heads"] == [[1, 0]]
    assert man["ground_truth"]["number_embedding_helix"]["periods"] == [2, 5, 10, 100, 1000]
    assert FVRecipeConfig.from_dict(man["config"]) == _tiny()
    model, _ = load_organism_fv(tmp_path / "a")
    emb = model.model.embed_tokens.weight
    base = token_ids(build_tokenizer()).number_base
    want = torch.tensor(0.4 * helix_features([0, 1, 999], (2, 5, 10, 100, 1000)))
    torch.testing.assert_close(emb[[base, base + 1, base + 999], :9], want.float())
    with pytest.raises(ValueError, match="different config"):
        train_organism_fv(tmp_path / "a", _tiny(seed=6), verbose=False, eval_sizes=sizes)


# ----------------------------------------------------------------------------- shipped checkpoint


@pytest.fixture(scope="module")
def shipped():
    if not (CHECKPOINT_FV_DIR / "manifest.json").is_file():
        pytest.skip("no shipped checkpoint_fv")
    return load_organism_fv()


def test_shipped_hash_checked(tmp_path):
    if not (CHECKPOINT_FV_DIR / "manifest.json").is_file():
        pytest.skip("no shipped checkpoint_fv")
    dst = tmp_path / "ck"
    shutil.copytree(CHECKPOINT_FV_DIR, dst)
    man = json.loads((dst / "manifest.json").read_text())
    man["weights"]["sha256"] = "0" * 64
    (dst / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match="sha256"):
        load_organism_fv(dst)


def test_shipped_manifest_bars():
    if not (CHECKPOINT_FV_DIR / "manifest.json").is_file():
        pytest.skip("no shipped checkpoint_fv")
    man = json.loads((CHECKPOINT_FV_DIR / "manifest.json").read_text())
    assert man["wall_time_s"] <= 40 * 60
    assert set(man["ground_truth"]["heldout_ks"]) == set(HELDOUT_KS)
    assert not set(man["config"]["fv_train_ks"]) & set(HELDOUT_KS)
    assert len(man["ground_truth"]["fv_heads"]) <= 4


def test_shipped_small_sample_bars_1_and_2(shipped):
    model, tok = shipped
    man = json.loads((CHECKPOINT_FV_DIR / "manifest.json").read_text())
    gt = man["ground_truth"]
    heads = [h for _, h in gt["fv_heads"]]
    b = measure_bars(
        model, tok, layer=gt["fv_layer"], heads=heads, x_per_k=10, n_mean_prompts=20,
        corrupt_x_per_k=3, seed=4242,
    )
    assert b["bar1"]["five_shot_mean"] >= 0.93
    assert b["bar1"]["zero_shot"] <= 0.10
    assert b["bar2"]["fv_heldout"] >= 0.8 * b["bar2"]["five_shot_heldout"] - 0.05


def test_head_task_means_shape(shipped):
    model, tok = shipped
    m = head_task_means(model, tok, 1, (0, 4), ks=(1, 2), n_prompts=3)
    assert m.shape == (2, 2, model.config.hidden_size)
    assert dataclasses.is_dataclass(FVRecipeConfig())
