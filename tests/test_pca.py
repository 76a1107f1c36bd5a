"""Per-head PCA (paper_spec §5.1): statistic semantics, known low-rank construction,
ascending-k row order, projection identity (§5.4.1), batched helper and bad input."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from addk_interp.analyses.pca import (
    HeadPCA,
    fit_head_pca,
    fit_heads_pca,
    pcs_from_cumvar,
)

RATIOS = np.array([0.6, 0.3, 0.08, 0.02])


def _low_rank_case(n_task: int = 12, d_model: int = 16, seed: int = 0):
    """X = mu + S V^T with orthonormal V [d_model, 4] and centered, mutually orthogonal score
    columns S whose variances are exactly in the ratio RATIOS."""
    rng = np.random.default_rng(seed)
    v, _ = np.linalg.qr(rng.standard_normal((d_model, 4)))
    raw = rng.standard_normal((n_task, 4))
    raw -= raw.mean(axis=0)
    q, _ = np.linalg.qr(raw)  # orthonormal columns, each orthogonal to the ones-vector
    scores = q * np.sqrt(RATIOS * 50.0)
    mu = 10.0 * rng.standard_normal(d_model)  # a large offset: centering must remove it
    x = mu + scores @ v.T
    ks = np.arange(1, n_task + 1, dtype=np.float64)
    return x, ks, v, mu, scores


def test_low_rank_construction_is_recovered_exactly():
    x, ks, v, mu, scores = _low_rank_case()
    pca = fit_head_pca(x, ks, head=(3, 1))
    assert pca.n_components == 12  # full rank = min(task, d_model)
    np.testing.assert_allclose(pca.explained_variance_ratio[:4], RATIOS, atol=1e-12)
    np.testing.assert_allclose(pca.explained_variance_ratio[4:], 0.0, atol=1e-12)
    np.testing.assert_allclose(pca.cumvar[:4], np.cumsum(RATIOS), atol=1e-12)
    assert pca.cumvar[-1] == pytest.approx(1.0, abs=1e-12)
    assert pca.pcs_to_threshold == 3  # cumvar 0.6, 0.9, 0.98 -> first >= 0.95 is the 3rd
    np.testing.assert_allclose(pca.mean, mu, atol=1e-10)
    # distinct variances: each axis matches its planted direction up to sign
    cos = np.abs(np.sum(pca.components[:, :4] * v, axis=0))
    np.testing.assert_allclose(cos, 1.0, atol=1e-10)
    # coordinates are the centered scores up to the same signs
    signs = np.sign(np.sum(pca.components[:, :4] * v, axis=0))
    np.testing.assert_allclose(pca.coords[:, :4], scores * signs, atol=1e-10)
    # independent check: eigenvalues of the task covariance
    cov = np.cov(x, rowvar=False)
    eig = np.sort(np.linalg.eigvalsh(cov))[::-1]
    np.testing.assert_allclose(pca.explained_variance_ratio[:4], eig[:4] / eig.sum(), atol=1e-10)
    # sign convention: largest-|.| entry of every axis is positive
    pivots = np.argmax(np.abs(pca.components), axis=0)
    assert np.all(pca.components[pivots, np.arange(pca.n_components)] > 0)


def test_threshold_semantics_ge_at_ties_and_clamp():
    assert pcs_from_cumvar([0.5, 0.95, 1.0], 0.95) == 2  # an exact tie reaches it
    assert pcs_from_cumvar([0.5, np.nextafter(0.95, 0.0), 1.0], 0.95) == 3
    assert pcs_from_cumvar([0.96, 1.0], 0.95) == 1
    assert pcs_from_cumvar([0.2, 0.4], 0.95) == 2  # never reached: clamped to the length
    assert pcs_from_cumvar(torch.tensor([0.1, 0.97]), 0.95) == 2
    x, ks, *_ = _low_rank_case()
    cumvar2 = float(fit_head_pca(x, ks).cumvar[1])
    # through the full path: threshold equal to cumvar[1] is reached at 2 PCs ...
    assert fit_head_pca(x, ks, threshold=cumvar2).pcs_to_threshold == 2
    # ... and one ulp above it needs 3
    assert fit_head_pca(x, ks, threshold=np.nextafter(cumvar2, 1.0)).pcs_to_threshold == 3
    # truncation clamps the statistic to the kept components
    assert fit_head_pca(x, ks, n_components=2).pcs_to_threshold == 2


def test_rows_sorted_by_ascending_k_and_order_recorded():
    x, ks, *_ = _low_rank_case()
    perm = np.random.default_rng(1).permutation(len(ks))
    shuffled = fit_head_pca(x[perm], ks[perm])
    reference = fit_head_pca(x, ks)
    np.testing.assert_array_equal(shuffled.ks, ks)
    np.testing.assert_array_equal(x[perm][shuffled.order], x)
    np.testing.assert_allclose(shuffled.coords, reference.coords, atol=1e-12)
    np.testing.assert_allclose(shuffled.components, reference.components, atol=1e-12)
    # numeric, not lexical, order; negative k (sub-k) sorts first
    pca = fit_head_pca(x[:3], [10, 2, -1])
    assert pca.ks.tolist() == [-1.0, 2.0, 10.0]
    assert pca.order.tolist() == [2, 1, 0]


def test_projection_identity_and_recentering():
    x, ks, v, mu, _ = _low_rank_case()
    pca = fit_head_pca(x, ks)
    k = pca.pcs_to_threshold
    p = pca.basis()
    assert p.shape == (16, k)
    inside = pca.mean + p @ np.array([1.5, -2.0, 0.25])
    np.testing.assert_allclose(pca.project(inside), inside, atol=1e-12)
    rng = np.random.default_rng(2)
    w = rng.standard_normal(16)
    w -= pca.components @ (pca.components.T @ w)  # orthogonal to every PC
    np.testing.assert_allclose(pca.project(pca.mean + w, k=12), pca.mean, atol=1e-12)
    # explicit formula, batch shape, idempotence, k=0 collapses to the mean
    batch = rng.standard_normal((5, 16))
    expected = pca.mean + (batch - pca.mean) @ p @ p.T
    np.testing.assert_allclose(pca.project(batch), expected, atol=1e-12)
    np.testing.assert_allclose(pca.project(pca.project(batch)), pca.project(batch), atol=1e-12)
    np.testing.assert_allclose(pca.project(batch, k=0), np.broadcast_to(pca.mean, (5, 16)))
    np.testing.assert_allclose(pca.project(batch, recenter=False), batch @ p @ p.T, atol=1e-12)
    assert not np.allclose(pca.project(batch, recenter=False), expected)
    # torch in, torch out (dtype kept), same numbers
    out = pca.project(torch.tensor(batch, dtype=torch.float32))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-4)
    with pytest.raises(ValueError, match="outside"):
        pca.project(batch, k=13)
    with pytest.raises(ValueError, match="d_model"):
        pca.project(np.zeros(15))


def test_bf16_torch_input_is_upcast():
    x, ks, *_ = _low_rank_case()
    pca = fit_head_pca(torch.tensor(x, dtype=torch.bfloat16), torch.tensor(ks))
    assert pca.mean.dtype == np.float64 and pca.components.dtype == np.float64
    assert pca.pcs_to_threshold == 3


def test_batched_heads_match_single_head_fits():
    x, ks, *_ = _low_rank_case()
    rng = np.random.default_rng(3)
    means = rng.standard_normal((12, 3, 4, 16))
    means[:, 1, 2, :] = x
    cache = torch.tensor(means, dtype=torch.float32)
    out = fit_heads_pca(cache, ks, [(1, 2), (0, 3)])
    assert set(out) == {(1, 2), (0, 3)}
    assert out[(1, 2)].head == (1, 2)
    assert out[(1, 2)].pcs_to_threshold == 3
    single = fit_head_pca(means[:, 0, 3, :].astype(np.float32), ks)
    np.testing.assert_allclose(out[(0, 3)].components, single.components, atol=1e-10)


def test_batched_bad_heads_are_named():
    x, ks, *_ = _low_rank_case()
    means = np.random.default_rng(4).standard_normal((12, 3, 4, 16))
    with pytest.raises(ValueError, match="L5H0 does not exist"):
        fit_heads_pca(means, ks, [(0, 0), (5, 0)])
    with pytest.raises(ValueError, match="negative index"):
        fit_heads_pca(means, ks, [(-1, 0)])  # no silent negative indexing
    means[:, 2, 1, :] = 0.0
    with pytest.raises(ValueError, match=r"L2H1.*all-zero"):
        fit_heads_pca(means, ks, [(0, 0), (2, 1)])
    means[:, 2, 1, :] = 1.0
    means[4, 2, 1, 3] = np.nan
    with pytest.raises(ValueError, match=r"L2H1.*NaN.*k=\[5\]"):
        fit_heads_pca(means, ks, [(2, 1)])
    with pytest.raises(ValueError, match=r"\[task, layer, head, d_model\]"):
        fit_heads_pca(means[0], ks, [(0, 0)])


@pytest.mark.parametrize(
    ("mutate", "kwargs", "match"),
    [
        (lambda x, k: (x[:5], k[:5]), {"n_components": 6}, "fewer tasks"),
        (lambda x, k: (x, k), {"n_components": 17}, "fewer tasks"),
        (lambda x, k: (np.where(np.eye(12, 16) > 0, np.nan, x), k), {}, "NaN"),
        (lambda x, k: (x, np.r_[k[:-1], 1.0]), {}, "duplicate"),
        (lambda x, k: (np.vstack([x[:-1], np.zeros(16)]), k), {}, "all-zero"),
        (lambda x, k: (np.tile(x[0], (12, 1)), k), {}, "zero variance"),
        (lambda x, k: (x[:1], k[:1]), {}, "at least 2 tasks"),
        (lambda x, k: (x, k[:-1]), {}, "one value per task"),
        (lambda x, k: (x, k), {"threshold": 1.5}, "threshold"),
        (lambda x, k: (x[0], k), {}, r"\[task, d_model\]"),
    ],
)
def test_bad_input_raises(mutate, kwargs, match):
    x, ks, *_ = _low_rank_case()
    bad_x, bad_k = mutate(x, ks)
    with pytest.raises(ValueError, match=match):
        fit_head_pca(bad_x, bad_k, head=(7, 7), **kwargs)


def test_result_is_frozen_and_json_ready():
    x, ks, *_ = _low_rank_case()
    pca = fit_head_pca(x, ks, head=(15, 2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        pca.pcs_to_threshold = 1  # type: ignore[misc]
    with pytest.raises(ValueError):
        pca.components[0, 0] = 0.0  # read-only arrays
    d = json.loads(json.dumps(pca.to_dict()))
    assert d["head"] == [15, 2] and d["pcs_to_threshold"] == 3
    assert d["ks"] == list(range(1, 13))
    assert len(d["components"]) == 16 and len(d["components"][0]) == 12
    assert "components" not in pca.to_dict(include_arrays=False)


def test_shape_annotations_hold_at_runtime():
    beartype = pytest.importorskip("beartype").beartype
    from jaxtyping import jaxtyped

    x, ks, *_ = _low_rank_case()
    checked = jaxtyped(typechecker=beartype)(fit_head_pca)
    pca = checked(x, ks)
    assert isinstance(pca, HeadPCA)
    project = jaxtyped(typechecker=beartype)(HeadPCA.project)
    assert project(pca, np.zeros((2, 16))).shape == (2, 16)
