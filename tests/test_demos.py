"""Tests for §6.4 offset read-out and §6.5 self-correction (analyses.demos)."""

import numpy as np
import pytest
import torch
from conftest import tiny

from addk_interp.analyses import demos
from addk_interp.core.errors import AddkError
from addk_interp.core.tasks import Example, arithmetic_family, sample_family
from addk_interp.hooks.capture import capture_means

torch.set_num_threads(1)

HEAD = (1, 2)


def _planted_reference(grid, d_model=32, seed=0):
    g = np.random.default_rng(seed)
    means = {k: g.normal(size=d_model) for k in grid}
    return demos.offset_reference(means, n_components=6), means


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_planted_readout_recovers_own_offset(metric):
    grid = list(range(1, 11))
    ref, means = _planted_reference(grid)
    ex = demos.mixed_offset_examples(grid, 20, 5, seed=1)
    g = np.random.default_rng(2)
    coords, own, qk, ys = [], [], [], []
    for e in ex:
        for x, y in e.demos:
            off = int(y) - int(x)
            s = means[off] + 0.05 * g.normal(size=32)  # planted head: s_i = h_{y_i - x_i} + noise
            coords.append(s @ ref.basis)
            own.append(off)
            qk.append(e.k)
            ys.append(int(y))
    r = demos.readout_stats(np.stack(coords), ref, own, qk, ys, metric=metric)
    assert r.accuracy >= 0.95
    assert r.corr_own > 0.95
    assert abs(r.corr_query_k) < 0.2  # offsets are drawn independently of the query k
    assert r.query_match_rate < 0.3
    assert r.accuracy_ci[0] <= r.accuracy <= r.accuracy_ci[1]
    d = r.to_dict(include_arrays=True)
    assert d["n_labels"] == len(ex) * 5 and len(d["decoded"]) == d["n_labels"]


def test_planted_query_k_signal_is_not_read_as_own_offset():
    grid = list(range(1, 11))
    ref, means = _planted_reference(grid)
    ex = demos.mixed_offset_examples(grid, 20, 5, seed=3)
    coords = [means[e.k] @ ref.basis for e in ex for _ in e.demos]
    own = [int(y) - int(x) for e in ex for x, y in e.demos]
    qk = [e.k for e in ex for _ in e.demos]
    r = demos.readout_stats(np.stack(coords), ref, own, qk, own, metric="euclidean")
    assert r.corr_query_k > 0.99
    assert r.accuracy < 0.3


def test_mixed_examples_and_decode_errors():
    ex = demos.mixed_offset_examples([1, 2, 3], 4, 3, query_ks=[2], seed=0)
    assert len(ex) == 4 and all(e.k == 2 and int(e.answer) == int(e.query) + 2 for e in ex)
    assert all(int(y) - int(x) in (1, 2, 3) for e in ex for x, y in e.demos)
    ref, _ = _planted_reference([1, 2, 3])
    with pytest.raises(AddkError):
        demos.decode_offsets(np.zeros((2, 99)), ref)
    with pytest.raises(AddkError):
        demos.decode_offsets(np.zeros((2, ref.coords.shape[1])), ref, metric="nope")


# ----------------------------------------------------------------------------- tiny model


@pytest.fixture(scope="module")
def setup():
    model = tiny("tiny-llama-gqa")
    fam = arithmetic_family("add", ks=[1, 2, 3, 4])
    cap = sample_family(fam, list(fam.tasks), 6, 3, seed=0, kind="activation")
    means = capture_means(model, cap)
    layer, h = HEAD
    ref = demos.offset_reference({k: means.of(f"add{k}")[layer, h] for k in [1, 2, 3, 4]})
    clean = sample_family(fam, ["add2", "add3"], 4, 3, seed=1, kind="test")
    return model, means, ref, clean


def test_offset_readout_on_tiny_model(setup):
    model, _, ref, _ = setup
    ex = demos.mixed_offset_examples([1, 2, 3, 4], 3, 3, query_ks=[2, 3], seed=0)
    r = demos.offset_readout(model, HEAD, ex, ref)
    assert r.n_labels == len(ex) * 3
    assert set(r.decoded.tolist()) <= {1, 2, 3, 4}
    assert 0.0 <= r.accuracy <= 1.0 and r.chance == 0.25
    assert r.to_dict()["grid"] == [1, 2, 3, 4]


def test_self_correction_shapes_identity_and_placement(setup):
    model, means, ref, clean = setup
    res = demos.self_correction(model, HEAD, clean, means, ref.basis, shift=7, batch_size=8)
    n, s = len(clean), 3
    assert res.shots == s and res.n_prompts == n
    assert set(res.contributions) == {"clean", "j0", "j1", "j2", "shuffled_clean", "shuffled"}
    for c in res.contributions:
        assert res.contributions[c].shape == (n, s)
        assert res.share[c].shape == (n, s) and res.correct[c].shape == (n,)
        # identity: Σ_i c_i + c_other = ⟨Bᵀh(p), Bᵀh_k⟩ / ‖Bᵀh_k‖²
        total = res.contributions[c].sum(1) + res.other[c]
        np.testing.assert_allclose(total, res.aggregate[c], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(np.nansum(res.share[c], 1), 1.0, atol=1e-9)
    assert res.identity_max_error < 1e-3
    assert len(res.by_position) == s and [r["n_after"] for r in res.by_position] == [2, 1, 0]
    assert res.verdict in {"neither", "down-weighted", "countered", "down-weighted and countered"}
    d = res.to_dict(include_arrays=True)
    assert d["control"]["d_share_wrong"]["n"] == n and "accuracy" in d
    # the wrong label sits at j and only there; clean at j is k
    e = clean[0]
    for j in range(s):
        w = demos.corrupt_example(e, j, 7)
        for i, ((x, y), (x0, _y0)) in enumerate(zip(w.demos, e.demos, strict=True)):
            assert x == x0
            assert int(y) - int(x) == (e.k + 7 if i == j else e.k)
    # causal model: signals of labels before j are unchanged (their weights α may move)
    np.testing.assert_allclose(
        res.signal_align["j2"][:, :2], res.signal_align["clean"][:, :2], atol=1e-6
    )
    assert not np.allclose(res.signal_align["j0"][:, 0], res.signal_align["clean"][:, 0])


def test_bad_inputs(setup):
    model, means, ref, clean = setup
    no_demo = [clean[0].zero_shot()]
    with pytest.raises(AddkError, match="demonstrations"):
        demos.self_correction(model, HEAD, no_demo, means, ref.basis)
    with pytest.raises(AddkError, match="demonstrations"):
        demos.offset_readout(model, HEAD, no_demo, ref)
    words = [Example("add2", 2, (("a", "b"), ("c", "d")), "e", "f")]
    with pytest.raises(AddkError, match="offset analysis needs numeric labels"):
        demos.self_correction(model, HEAD, words, means, ref.basis)
    with pytest.raises(AddkError, match="offset analysis needs numeric labels"):
        demos.offset_readout(model, HEAD, words, ref)
    with pytest.raises(AddkError):
        demos.corrupt_example(clean[0], 0, 0)
    with pytest.raises(AddkError):
        demos.corrupt_example(clean[0], 9, 1)
