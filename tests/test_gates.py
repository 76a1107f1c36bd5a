"""Gate learning (paper_spec §3): upper-layer forward identity, optimizer semantics,
determinism, resume, held-out isolation, the mask-logit mode and bad inputs (tiny models)."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import TINY, tiny

from addk_interp.core.errors import AddkError
from addk_interp.core.tasks import TaskFamily, arithmetic_family, sample_family
from addk_interp.hooks.capture import capture_means
from addk_interp.hooks.interventions import gate_heads, inject
from addk_interp.hooks.runners import InjectionRunner
from addk_interp.localize import gates as G

TRAIN = ("add1", "add3", "add4", "add5")
HELDOUT = ("add2", "add6")
_MEANS = {}
_FITS = {}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Ops on tiny models are so small that thread start-up dominates: one thread is ~3× faster
    on a shared CPU. Restored afterwards for the other test modules."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _family() -> TaskFamily:
    fam = arithmetic_family("add", ks=[1, 2, 3, 4, 5, 6])
    return dataclasses.replace(fam, train=TRAIN, heldout=HELDOUT)


def _means(spec: str, split: str = "train", seed: int = 1):
    key = (spec, split, seed)
    if key not in _MEANS:
        fam = _family()
        tasks = fam.train if split == "train" else fam.heldout
        ex = sample_family(fam, tasks, 6, 3, seed=seed, kind=f"activation-{split}")
        _MEANS[key] = capture_means(tiny(spec), ex)
    return _MEANS[key]


def _cfg(**kw) -> G.GateConfig:
    base = dict(n_items=24, batch_size=8, epochs=2, n_monitor=3, lr=0.05, seed=7)
    base.update(kw)
    return G.gate_config("default", **base)


def _fit(spec="tiny-llama", cfg=None, monitor=True, **kw):
    model = tiny(spec)
    held = _means(spec, "heldout") if monitor else None
    return G.fit_gates(model, _family(), _means(spec), held, cfg or _cfg(), verbose=False, **kw)


def _cached_fit(monitor=True, cfg=None):
    key = (monitor, cfg)
    if key not in _FITS:
        _FITS[key] = _fit(cfg=cfg, monitor=monitor)
    return _FITS[key]


# ----------------------------------------------------------------------------- upper layers


@pytest.mark.parametrize("spec", TINY)
def test_upper_layer_forward_equals_full_hooked_forward(spec):
    model = tiny(spec)
    fam = _family()
    ex = G.gate_training_examples(fam, _cfg(n_items=24))
    layer = 1
    runner = InjectionRunner(model, ex, layer=layer, path="upper")
    assert runner.path == "upper" and runner.check["max_abs_diff"] <= 1e-5
    torch.manual_seed(0)
    vec = torch.randn(len(ex), model.info.d_model) * 2
    for g in runner.groups:
        rows = torch.arange(len(g))
        v = vec[g.indices]
        pos = g.positions(g.answer_len + 1)
        full = model.logits_at(g.tokens, pos, inject(model, v, g.query_pos, layer))
        up = runner.injected_logits(g, rows, v, g.answer_len + 1)
        assert (full - up).abs().max().item() <= 1e-5
    # one right-padded call over mixed shapes == per-shape full forwards
    items = torch.arange(len(ex))
    assert len({(g.prompt_len, g.answer_len) for g in runner.groups}) > 1
    padded = runner._answer_logits_upper(items, vec[items], extra=1)
    ref = runner._answer_logits_full(items, vec[items], extra=1)
    assert torch.equal(padded.targets, ref.targets) and torch.equal(padded.owner, ref.owner)
    assert (padded.logits - ref.logits).abs().max().item() <= 1e-5


def test_progressive_scoring_equals_full_scoring(monkeypatch):
    model = tiny("tiny-llama-gqa")
    ex = G.gate_training_examples(_family(), _cfg(n_items=24))
    runner = InjectionRunner(model, ex, layer=1)
    n_vocab = model.info.d_vocab
    with torch.no_grad():
        for g in runner.groups:  # answers := the model's own greedy tokens, half then broken
            toks = g.tokens.clone()
            for j in range(g.answer_len):
                toks[:, g.prompt_len + j] = model.logits_at(toks, [g.query_pos + j])[:, 0].argmax(
                    -1
                )
            toks[::2, -1] = (toks[::2, -1] + 1) % n_vocab
            g.tokens, g.answer_ids = toks, toks[:, g.prompt_len :].clone()
            g.cache = {1: runner.upper.block_inputs(toks, [1])[1]}
    vec = torch.randn(2, len(ex), model.info.d_model, generator=torch.Generator().manual_seed(3))
    full = runner.score_vectors(vec * 0.1, logprob=True)
    fast = runner.score_vectors(vec * 0.1, logprob=False)
    assert full.match.any() and not full.match.all() and full.correct.any()
    assert np.array_equal(full.correct, fast.correct) and np.array_equal(full.match, fast.match)
    assert np.array_equal(full.terminated & full.match, fast.terminated)
    assert np.isnan(fast.answer_logprob).all() and np.isfinite(full.answer_logprob).all()
    # many small chunks: rows of every chunk and group share the deferred unembedding
    small = runner.score_vectors(vec * 0.1, logprob=False, batch_size=3)
    import addk_interp.hooks.runners as runners

    with monkeypatch.context() as mp:  # pending rows scored in slices of 4 (bounded memory)
        mp.setattr(runners, "row_chunk", lambda _v: 1)
        sliced = runner.score_vectors(vec * 0.1, logprob=False, batch_size=3)
    assert np.array_equal(sliced.correct, fast.correct) and np.array_equal(sliced.match, fast.match)
    assert np.array_equal(sliced.terminated, fast.terminated)
    full3 = runner.score_vectors(vec * 0.1, logprob=True, batch_size=3)
    assert np.array_equal(small.correct, fast.correct) and np.array_equal(small.match, fast.match)
    assert np.array_equal(full3.correct, full.correct)
    np.testing.assert_allclose(full3.answer_logprob, full.answer_logprob, rtol=1e-5, atol=1e-5)
    assert model.weights_reproduce_unembed()  # the candidate logits are exact here


def test_full_path_matches_upper_path_training():
    a = _cached_fit(monitor=False)
    b = _fit(cfg=_cfg(forward="full"), monitor=False)
    assert a.forward_path == "upper" and b.forward_path == "full"
    assert torch.allclose(a.coefficients, b.coefficients, atol=1e-4)


# ----------------------------------------------------------------------------- optimizer


def test_proximal_clip_hand_example():
    m = torch.tensor([[-0.3, 0.0003, 0.5], [1.2, 0.0005, 0.9996]])
    out = G.proximal_clip(m, lam=0.05, lr=0.01)  # shrink 0.0005, then clip to [0, 1]
    want = torch.tensor([[0.0, 0.0, 0.4995], [1.0, 0.0, 0.9991]])
    assert torch.allclose(out, want, atol=1e-7)
    no_clip = G.proximal_clip(m, lam=0.05, lr=0.01, clip=False)
    assert torch.allclose(no_clip[0, 0], torch.tensor(-0.2995)) and no_clip[1, 0] > 1


def test_loss_decreases_over_a_few_steps():
    model = tiny("tiny-llama")
    cfg = dataclasses.replace(_cfg(lam=0.0, lr=0.05), layer=1)
    ex = G.gate_training_examples(_family(), cfg)
    prob = G.GateProblem(model, ex, _means("tiny-llama"), cfg)
    param = torch.full((model.n_layers, model.n_heads), 0.5, requires_grad=True)
    opt = torch.optim.AdamW([param], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=0)
    items = torch.arange(16)
    losses = [G.train_step(prob, param, opt, items)["loss"] for _ in range(6)]
    assert losses[-1] < losses[0]
    assert ((param >= 0) & (param <= 1)).all()


def test_determinism_same_seed_bitwise():
    a, b = _cached_fit(), _fit()
    assert torch.equal(a.coefficients, b.coefficients) and torch.equal(a.init, b.init)
    assert a.history == b.history and a.steps == b.steps
    other = G.init_param(_cfg(seed=8), (3, 4))
    assert not torch.equal(a.init, other)
    assert torch.equal(a.init, torch.rand(3, 4, generator=torch.Generator().manual_seed(7)))


def test_resume_is_bitwise_identical(tmp_path):
    cfg = _cfg(epochs=3)
    full = _fit(cfg=cfg)

    class Interrupt(Exception):
        pass

    def stop(epoch, rec):
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        _fit(cfg=cfg, checkpoint_dir=tmp_path, callback=stop)
    assert [p.name for p in tmp_path.glob("epoch_*.json")] == ["epoch_0001.json"]
    resumed = _fit(cfg=cfg, checkpoint_dir=tmp_path)
    assert resumed.timing["resumed_from_epoch"] == 1
    assert torch.equal(resumed.coefficients, full.coefficients)
    assert torch.equal(resumed.param, full.param) and torch.equal(resumed.init, full.init)
    assert resumed.history == full.history and resumed.steps == full.steps
    # a finished run is read back from its last checkpoint without training
    again = _fit(cfg=cfg, checkpoint_dir=tmp_path)
    assert again.timing["resumed_from_epoch"] == 3
    assert torch.equal(again.coefficients, full.coefficients)
    assert again.forward_path == full.forward_path and again.history == full.history
    with pytest.raises(AddkError, match="lam"):
        _fit(cfg=_cfg(epochs=3, lam=0.1), checkpoint_dir=tmp_path)
    with pytest.raises(AddkError, match="heldout"):
        _fit(cfg=cfg, checkpoint_dir=tmp_path, monitor=False)
    with pytest.raises(AddkError, match="resume=True"):
        _fit(cfg=cfg, checkpoint_dir=tmp_path, resume=False)


def test_heldout_data_cannot_change_the_result():
    model = tiny("tiny-llama")
    fam, cfg = _family(), _cfg()
    train = G.gate_training_examples(fam, cfg)
    means = _means("tiny-llama")
    none = _cached_fit(monitor=False)
    a = _cached_fit(monitor=True)
    held_b = sample_family(fam, ["add2"], 4, 0, seed=2, kind="gate_monitor")
    b = G.train_gates(
        model,
        train,
        means,
        cfg,
        heldout_examples=held_b,
        heldout_means=_means("tiny-llama", "heldout", 5),
        verbose=False,
    )
    for fit in (a, b):
        assert torch.equal(fit.coefficients, none.coefficients)
        assert [h["loss"] for h in fit.history] == [h["loss"] for h in none.history]
        assert all(h["heldout_acc"] is not None for h in fit.history)
    assert all(h["heldout_acc"] is None for h in none.history)
    with pytest.raises(AddkError, match="both training and held-out"):
        G.train_gates(
            model,
            train,
            means,
            cfg,
            heldout_examples=train[:3],
            heldout_means=means,
            verbose=False,
        )


# ----------------------------------------------------------------------------- mask logits


@pytest.mark.parametrize("spec", ["tiny-llama-gqa", "tiny-gemma3"])
def test_mask_mode_zero_gates_is_zero_shot_and_matches_gate_heads(spec):
    model = tiny(spec)
    cfg = dataclasses.replace(_cfg(mode="mask"), layer=1)
    ex = G.gate_training_examples(_family(), cfg)
    means = _means(spec)
    prob = G.GateProblem(model, ex, means, cfg)
    items = torch.arange(len(ex))
    off = torch.full((model.n_layers, model.n_heads), -200.0)  # σ(θ) == 0 exactly
    got = prob.answer_logits(off, items)
    torch.manual_seed(1)
    theta = torch.randn(model.n_layers, model.n_heads)
    gated = prob.answer_logits(theta, items)
    zbar = means.z_means
    for g in prob.groups:
        pos = g.positions(g.answer_len)
        plain = model.logits_at(g.tokens, pos)
        z_src = zbar[torch.tensor([means.task_index(ex[i].task) for i in g.indices.tolist()])]
        hooks = gate_heads(model, torch.sigmoid(theta), g.query_pos, z_src)
        ref = model.logits_at(g.tokens, pos, hooks)
        for b, item in enumerate(g.indices.tolist()):
            sel = got.owner == item
            assert (got.logits[sel] - plain[b]).abs().max().item() <= 1e-5
            assert (gated.logits[sel] - ref[b]).abs().max().item() <= 1e-5
    fit = G.train_gates(model, ex, means, cfg, verbose=False)
    assert fit.mode == "mask"
    assert fit.coefficients.shape == (cfg.epochs, model.n_layers, model.n_heads)
    assert ((fit.coefficients > 0) & (fit.coefficients < 1)).all()


# ----------------------------------------------------------------------------- result


def test_gatefit_save_load_and_selection(tmp_path):
    fit = _cached_fit()
    path = fit.save(tmp_path / "gates")
    back = G.GateFit.load(path, tiny("tiny-llama"))
    assert torch.equal(back.coefficients, fit.coefficients)
    assert back.config == fit.config and back.history == fit.history
    assert back.forward_path == fit.forward_path == "upper"
    cut = fit.select()
    assert cut.rule == fit.config.select_rule
    assert fit.stability()["final"] == [list(h) for h in cut.selected]
    gap = fit.select("largest_gap")
    assert fit.stability("largest_gap")["final"] == [list(h) for h in gap.selected]
    rec = fit.to_dict()
    assert rec["config"]["lam"] == 0.05 and rec["config"]["layer"] == 1
    with pytest.raises(AddkError, match="fingerprint"):
        G.GateFit.load(path, tiny("tiny-llama-gqa"))


def test_presets_record_every_setting():
    paper = G.gate_config("paper")
    assert (paper.lam, paper.lr, paper.batch_size, paper.epochs, paper.n_items) == (
        0.05,
        0.01,
        128,
        50,
        2048,
    )
    assert paper.betas == (0.9, 0.98) and paper.eps == 1e-8 and paper.weight_decay == 0.0
    assert paper.select_rule == "largest_gap" and paper.lr_schedule == "constant"
    default = G.gate_config("default")
    assert default.preset == "default" and default.lr_schedule == "linear"
    assert G.lr_at(default, 0, 100) == default.lr
    assert abs(G.lr_at(default, 99, 100) - default.lr * default.lr_end_frac) < 1e-12
    assert G.GateConfig.from_dict(paper.to_dict()) == paper


# ----------------------------------------------------------------------------- bad inputs


def test_bad_inputs():
    model = tiny("tiny-llama")
    means = _means("tiny-llama")
    with pytest.raises(AddkError, match="≥ 0"):
        G.gate_config("paper", lam=-0.1)
    with pytest.raises(AddkError, match="unknown gate mode"):
        G.gate_config("paper", mode="sigmoid")
    with pytest.raises(AddkError, match="unknown gate preset"):
        G.gate_config("fast")
    with pytest.raises(AddkError, match="training split is empty"):
        G.train_gates(model, [], means, _cfg())
    with pytest.raises(AddkError, match="training split is empty"):
        G.gate_training_examples(dataclasses.replace(_family(), train=()), _cfg())
    bad = dataclasses.replace(means, means=means.means.clone())
    bad.means[0, 0, 0, 0] = float("nan")
    ex = G.gate_training_examples(_family(), _cfg())
    with pytest.raises(AddkError, match="NaN"):
        G.train_gates(model, ex, bad, _cfg(), verbose=False)
    with pytest.raises(AddkError, match="fingerprint"):
        G.train_gates(tiny("tiny-llama-gqa"), ex, means, _cfg(), verbose=False)
    with pytest.raises(AddkError, match="out of range"):
        G.train_gates(model, ex, means, _cfg(layer=7), verbose=False)
