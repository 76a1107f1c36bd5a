"""Periodic subspace fit (paper_spec §5.2, §5.4.2): planted-direction recovery, the exact
phase-search and R^2 semantics, onto/out-of bases, general target sets and k grids,
periodogram, principal angles, and bad input."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from addk_interp.analyses.pca import fit_head_pca
from addk_interp.analyses.periodic import (
    SubspaceFit,
    TargetSpec,
    compare_directions,
    default_targets,
    fit_subspace,
    fit_subspace_from_means,
    fit_subspaces,
    periodogram,
    principal_angle_matrix,
    principal_angles,
)

NAMES = ("mod50", "mod2", "mod5", "mod10c", "mod10s", "mod25")
KS = np.arange(1, 31, dtype=np.float64)
AMPLITUDES = np.array([3.0, 2.6, 2.2, 1.8, 1.5, 1.2])


def _zero_mean_phase(period: float, ks: np.ndarray) -> float:
    """Phase at which cos(2 pi k/period + phase) sums to zero over ks (so a centered fit can
    reach R^2 = 1 even for periods that do not tile the grid)."""
    total = np.exp(2j * np.pi * ks / period).sum()
    return float((np.pi / 2 - np.angle(total)) % (2 * np.pi))


def _planted_targets(ks: np.ndarray, phase50: float, phase5: float, phase25: float):
    return np.stack(
        [
            np.cos(2 * np.pi * ks / 50 + phase50),
            np.cos(2 * np.pi * ks / 2),
            np.cos(2 * np.pi * ks / 5 + phase5),
            np.cos(2 * np.pi * ks / 10),
            np.sin(2 * np.pi * ks / 10),
            np.cos(2 * np.pi * ks / 25 + phase25),
        ],
        axis=1,
    )


def _planted_case(noise: float = 0.01, d_model: int = 64, seed: int = 5):
    """X = mu + sum_j a_j target_j(k) u_j + noise, random orthonormal u_j in R^64, k = 1..30."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((d_model, 6)))
    phases = (_zero_mean_phase(50, KS), 0.7, _zero_mean_phase(25, KS))
    targets = _planted_targets(KS, *phases)
    mu = 3.0 * rng.standard_normal(d_model)
    x = mu + (targets * AMPLITUDES) @ u.T + noise * rng.standard_normal((len(KS), d_model))
    return x, u, phases


def _abs_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(np.sum(a * b, axis=0)) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0))


def _phase_close(got: float, want: float, tol: float) -> bool:
    """Equal modulo pi: shifting the phase by pi only flips the target's sign."""
    d = (got - want) % np.pi
    return min(d, np.pi - d) <= tol


@pytest.fixture(scope="module")
def planted():
    x, u, phases = _planted_case()
    return fit_subspace_from_means(x, KS, head=(15, 2)), x, u, phases


def test_default_targets_match_the_spec():
    specs = default_targets()
    assert tuple(s.name for s in specs) == NAMES
    assert tuple(s.period for s in specs) == (50, 2, 5, 10, 10, 25)
    assert tuple(s.kind for s in specs) == ("cos", "cos", "cos", "cos", "sin", "cos")
    assert tuple(s.phase_search for s in specs) == (True, False, True, False, False, True)
    assert tuple(s.group for s in specs) == (
        "magnitude",
        "unit",
        "unit",
        "unit",
        "unit",
        "magnitude",
    )


def test_planted_directions_are_recovered(planted):
    fit, _, u, phases = planted
    assert fit.target_names == NAMES
    assert fit.n_components == 6
    for name, r2 in fit.r2_by_name.items():
        assert r2 > 0.98, name
    # each feature direction is identifiable here (orthonormal plant): per-column |cos|
    cos = _abs_cos(fit.directions, u)
    assert np.all(cos > 0.99), dict(zip(NAMES, cos, strict=True))
    # spans: unit (cols 1-4), magnitude (0, 5), full 6-D
    assert principal_angles(fit.basis("unit"), u[:, 1:5]).max() < 2.0
    assert principal_angles(fit.basis("magnitude"), u[:, [0, 5]]).max() < 2.0
    assert principal_angles(fit.basis("full"), u).max() < 2.0
    # phase search lands on the planted phases (grid step 0.01, sign ambiguity = pi)
    for j, want in zip((0, 2, 5), phases, strict=True):
        assert _phase_close(fit.phases[j], want, 0.011), (NAMES[j], fit.phases[j], want)
    assert fit.phases[[1, 3, 4]].tolist() == [0.0, 0.0, 0.0]
    # directions = P W, fitted = C W
    np.testing.assert_allclose(fit.directions, fit.pc_basis @ fit.weights, atol=1e-12)
    np.testing.assert_allclose(fit.fitted, fit.coords @ fit.weights, atol=1e-12)
    np.testing.assert_allclose(fit.coords.mean(axis=0), 0.0, atol=1e-10)


def test_column_order_is_load_bearing(planted):
    """Sanity check that the recovery test can fail: swapping two planted columns is seen."""
    fit, _, u, _ = planted
    swapped = u[:, [1, 0, 2, 3, 4, 5]]
    cos = _abs_cos(fit.directions, swapped)
    assert cos[0] < 0.1 and cos[1] < 0.1
    comparison = compare_directions(fit, u)
    assert np.all(comparison.abs_cos > 0.99)
    assert comparison.max_angle_deg["unit"] < 2.0
    assert compare_directions(fit, swapped).max_angle_deg["unit"] > 80.0


def _brute_force_phase(coords: np.ndarray, ks: np.ndarray, period: float) -> float:
    """The §5.2 opt_shift written out as a plain loop over lstsq fits."""
    best, best_theta = np.inf, 0.0
    for theta in np.arange(0.0, 2 * np.pi, 0.01):
        f = np.cos(2 * np.pi * ks / period + theta)
        f = f - f.mean()
        w = np.linalg.lstsq(coords, f, rcond=None)[0]
        ratio = np.sum((f - coords @ w) ** 2) / np.sum(f**2)
        if ratio < best:
            best, best_theta = ratio, theta
    return best_theta


def test_phase_search_matches_brute_force_lstsq_loop():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((30, 20))  # no planted structure: a non-trivial minimum
    pca = fit_head_pca(x, KS)
    fit = fit_subspace(pca)
    coords = pca.coords[:, :6] - pca.coords[:, :6].mean(axis=0)
    for j, period in ((0, 50), (2, 5), (5, 25)):
        assert fit.phases[j] == pytest.approx(_brute_force_phase(coords, KS, period), abs=1e-12)
        np.testing.assert_allclose(
            fit.target_values[:, j], np.cos(2 * np.pi * KS / period + fit.phases[j])
        )


def test_r2_uses_non_centered_target_and_centered_ss_tot():
    """With phase 0 the period-50 wave has a non-zero mean over k = 1..30, which centered
    coordinates cannot fit: R^2 = 1 - n mean^2 / SS_tot exactly (noiseless, on-grid phase)."""
    rng = np.random.default_rng(7)
    u, _ = np.linalg.qr(rng.standard_normal((24, 6)))
    grid = np.arange(0.0, 2 * np.pi, 0.01)
    targets = _planted_targets(KS, grid[0], grid[70], _zero_mean_phase(25, KS))
    fit = fit_subspace_from_means(5.0 + (targets * AMPLITUDES) @ u.T, KS)
    t = fit.target_values[:, 0]
    assert abs(t.mean()) > 0.1
    expected = 1.0 - len(KS) * t.mean() ** 2 / np.sum((t - t.mean()) ** 2)
    assert fit.r2[0] == pytest.approx(expected, abs=1e-9)
    assert fit.r2[0] < 0.97
    # the zero-mean unit targets are fitted perfectly
    np.testing.assert_allclose(fit.r2[1:5], 1.0, atol=1e-9)


def test_onto_and_out_of_bases(planted):
    fit, _, _, _ = planted
    dims = {"full": (6, 0), "parity": (1, 5), "unit": (4, 2), "magnitude": (2, 4)}
    assert fit.subspace_columns == {
        "full": (0, 1, 2, 3, 4, 5),
        "parity": (1,),
        "magnitude": (0, 5),
        "unit": (1, 2, 3, 4),
    }
    full = fit.basis("full")
    rng = np.random.default_rng(8)
    v_in = fit.mean + full @ rng.standard_normal(6)  # a vector inside the (recentered) 6-D span
    for name, (n_onto, n_out) in dims.items():
        onto, out = fit.basis(name, "onto"), fit.basis(name, "out")
        assert onto.shape == (64, n_onto) and out.shape == (64, n_out)
        np.testing.assert_allclose(onto.T @ onto, np.eye(n_onto), atol=1e-10)
        np.testing.assert_allclose(out.T @ out, np.eye(n_out), atol=1e-10)
        np.testing.assert_allclose(onto.T @ out, 0.0, atol=1e-10)
        # onto spans the chosen direction columns
        cols = list(fit.subspace_columns[name])
        assert principal_angles(onto, fit.directions[:, cols]).max() < 1e-6
        # out-of lies inside the 6-D span
        np.testing.assert_allclose(full @ (full.T @ out), out, atol=1e-10)
        # onto + out-of give back the vector (each projection keeps the center once)
        onto_part = fit.project(v_in, name, "onto") - fit.mean
        out_part = fit.project(v_in, name, "out") - fit.mean
        np.testing.assert_allclose(fit.mean + onto_part + out_part, v_in, atol=1e-10)
    # QR of the chosen columns, Gram-Schmidt signs
    onto_unit = fit.basis("unit")
    q, r = np.linalg.qr(fit.directions[:, [1, 2, 3, 4]])
    np.testing.assert_allclose(onto_unit, q * np.sign(np.diag(r)), atol=1e-12)
    # a vector outside the span loses its outside part; explicit center; torch round trip
    w = rng.standard_normal(64)
    w -= full @ (full.T @ w)
    np.testing.assert_allclose(fit.project(v_in + w), v_in, atol=1e-10)
    center = rng.standard_normal(64)
    np.testing.assert_allclose(
        fit.project(v_in, "unit", center=center),
        center + (v_in - center) @ onto_unit @ onto_unit.T,
        atol=1e-12,
    )
    out = fit.project(torch.tensor(v_in, dtype=torch.float32), "magnitude", "out")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    with pytest.raises(KeyError):
        fit.basis("tens")
    with pytest.raises(ValueError, match="variant"):
        fit.basis("unit", "into")  # type: ignore[arg-type]


def test_general_targets_on_a_sub_k_grid():
    """Any periods on any grid: sub-k with negative and zero k, unsorted input rows."""
    ks = np.arange(-14, 16, dtype=np.float64)  # 30 values, every period below tiles it
    specs = [
        TargetSpec("p3", 3, "cos", phase_search=True, group="fast"),
        TargetSpec("p6", 6, "cos", phase_search=True, group="fast"),
        TargetSpec("p10s", 10, "sin", group="slow"),
        TargetSpec("p15", 15, "cos", phase_search=True, group="slow"),
    ]
    rng = np.random.default_rng(9)
    u, _ = np.linalg.qr(rng.standard_normal((40, 4)))
    waves = np.stack(
        [
            np.cos(2 * np.pi * ks / 3 + 1.1),
            np.cos(2 * np.pi * ks / 6 + 2.0),
            np.sin(2 * np.pi * ks / 10),
            np.cos(2 * np.pi * ks / 15 + 0.3),
        ],
        axis=1,
    )
    x = (waves * [2.0, 1.7, 1.4, 1.1]) @ u.T + 0.01 * rng.standard_normal((30, 40))
    perm = rng.permutation(30)
    fit = fit_subspace_from_means(x[perm], ks[perm], specs)
    np.testing.assert_array_equal(fit.ks, ks)
    assert fit.n_components == 4
    assert np.all(fit.r2 > 0.98), fit.r2_by_name
    assert np.all(_abs_cos(fit.directions, u) > 0.99)
    for j, want in ((0, 1.1), (1, 2.0), (3, 0.3)):
        assert _phase_close(fit.phases[j], want, 0.011)
    assert set(fit.subspace_columns) == {"full", "fast", "slow"}  # no period-2 column
    assert fit.basis("fast").shape == (40, 2)
    # more components than targets is allowed when the tasks support it
    wide = fit_subspace(fit_head_pca(x, ks), specs, n_components=8)
    assert wide.weights.shape == (8, 4)


def test_periodogram_peaks_at_planted_periods():
    rng = np.random.default_rng(10)
    u, _ = np.linalg.qr(rng.standard_normal((32, 3)))
    waves = np.stack(
        [np.cos(np.pi * KS), np.cos(2 * np.pi * KS / 5 + 0.4), np.sin(2 * np.pi * KS / 10)],
        axis=1,
    )
    x = (waves * [1.0, 2.0, 1.5]) @ u.T
    pg = periodogram(x, KS)
    assert set(pg.top_periods[:3]) == {2.0, 5.0, 10.0}
    shares = np.sum((waves * [1.0, 2.0, 1.5]) ** 2, axis=0)
    shares = shares / shares.sum()  # orthogonal waves over 30 ks: power = variance share
    for period, share in zip((2, 5, 10), shares, strict=True):
        assert pg.power_at(period) == pytest.approx(share, abs=1e-9)
    assert pg.power_at(7) < 0.05
    # rotation invariance: the full-rank PC coordinates give the same periodogram
    np.testing.assert_allclose(
        periodogram(fit_head_pca(x, KS).coords, KS).power, pg.power, atol=1e-12
    )
    # on the six-target plant the unit periods are local maxima of the periodogram
    x6, _, _ = _planted_case()
    pg6 = periodogram(fit_head_pca(x6, KS).coords[:, :6], KS, n_top=6)
    assert {2.0, 5.0, 10.0} <= set(pg6.peak_periods)
    assert json.loads(json.dumps(pg6.to_dict()))["periods"][:2] == [2, 3]


def test_periodogram_flags_unidentifiable_periods_and_bad_input():
    even = np.arange(2, 62, 2, dtype=np.float64)
    x = np.random.default_rng(12).standard_normal((30, 5))
    pg = periodogram(x, even, periods=[2, 3, 4, 6])
    # k even: period 2 is flat; period 4 survives as a parity wave, periods 3 and 6 alias
    assert pg.identifiable.tolist() == [False, True, True, True]
    assert pg.power[0] == 0.0
    assert 2.0 not in pg.top_periods and len(pg.top_periods) == 3
    with pytest.raises(ValueError, match="> 1"):
        periodogram(x, even, periods=[1, 2])
    with pytest.raises(ValueError, match="zero variance"):
        periodogram(np.ones((30, 5)), even)
    with pytest.raises(ValueError, match="NaN"):
        periodogram(np.full((30, 5), np.nan), even)
    with pytest.raises(ValueError, match="30 values"):
        periodogram(x, even[:-1])


def test_principal_angles():
    rng = np.random.default_rng(13)
    a = rng.standard_normal((20, 4))
    same = a @ rng.standard_normal((4, 4))  # another (non-orthonormal) basis of the same span
    np.testing.assert_allclose(principal_angles(a, same), 0.0, atol=1e-6)
    e = np.eye(20)
    np.testing.assert_allclose(principal_angles(e[:, :3], e[:, 3:7]), 90.0)
    tilted = np.cos(np.radians(30)) * e[:, 0] + np.sin(np.radians(30)) * e[:, 1]
    np.testing.assert_allclose(principal_angles(e[:, 0], tilted), [30.0])
    np.testing.assert_allclose(principal_angles(e[:, :2], e[:, [0, 2]]), [0.0, 90.0], atol=1e-12)
    assert principal_angles(torch.tensor(a), e[:, :1]).shape == (1,)
    m = principal_angle_matrix({"a": a, "same": same, "orth": e[:, 10:12] * 3.0})
    assert m.names == ("a", "same", "orth")
    np.testing.assert_allclose(m.max_deg, m.max_deg.T)
    assert m.max_deg[0, 1] < 1e-6 and np.all(np.diag(m.max_deg) < 1e-6)
    assert json.loads(json.dumps(m.to_dict()))["names"] == ["a", "same", "orth"]
    with pytest.raises(ValueError, match="different spaces"):
        principal_angles(a, e[:10, :2])
    with pytest.raises(ValueError, match="spans nothing"):
        principal_angles(np.zeros((20, 2)), a)


@pytest.mark.parametrize("period", [1, 0.5, 0, -3, float("nan"), float("inf")])
def test_target_period_must_exceed_one(period):
    with pytest.raises(ValueError, match="period"):
        TargetSpec("bad", period)


def test_target_spec_validation():
    with pytest.raises(ValueError, match="kind"):
        TargetSpec("t", 5, "tan")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reserved"):
        TargetSpec("t", 5, group="full")
    x, _, _ = _planted_case()
    pca = fit_head_pca(x, KS)
    with pytest.raises(ValueError, match="unique"):
        fit_subspace(pca, [TargetSpec("a", 5), TargetSpec("a", 10)])
    with pytest.raises(ValueError, match="theta_step"):
        fit_subspace(pca, theta_step=0.0)


def test_k_grid_that_cannot_identify_a_period_is_refused():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((30, 16))
    evens = np.arange(2, 62, 2, dtype=np.float64)
    with pytest.raises(ValueError, match=r"'mod2'.*constant on the k grid"):
        fit_subspace_from_means(x, evens)  # cos(pi k) = 1 for every even k
    fives = 5.0 * KS
    with pytest.raises(ValueError, match=r"'mod5'.*same modulo 5"):
        fit_subspace_from_means(x, fives)  # every k = 0 mod 5: no phase helps
    with pytest.raises(ValueError, match=r"'s2'.*same value at every k"):
        fit_subspace_from_means(x, KS, [TargetSpec("s2", 2, "sin")])  # sin(pi k) = 0


def test_too_few_tasks_for_the_components():
    rng = np.random.default_rng(15)
    x = rng.standard_normal((6, 16))
    with pytest.raises(ValueError, match="fewer tasks"):
        fit_subspace_from_means(x, np.arange(1, 7))  # 6 tasks, 6 components
    pca = fit_head_pca(rng.standard_normal((30, 16)), KS, n_components=4)
    with pytest.raises(ValueError, match="kept 4 components"):
        fit_subspace(pca)


def test_batched_fit_and_missing_head():
    x, u, _ = _planted_case()
    rng = np.random.default_rng(16)
    means = torch.tensor(rng.standard_normal((30, 2, 3, 64)), dtype=torch.float32)
    means[:, 1, 0, :] = torch.tensor(x, dtype=torch.float32)
    fits = fit_subspaces(means, KS, [(1, 0), (0, 2)])
    assert set(fits) == {(1, 0), (0, 2)}
    assert fits[(1, 0)].head == (1, 0)
    assert np.all(fits[(1, 0)].r2 > 0.98)
    assert np.all(_abs_cos(fits[(1, 0)].directions, u) > 0.99)
    with pytest.raises(ValueError, match="L2H0 does not exist"):
        fit_subspaces(means, KS, [(2, 0)])
    means[:, 0, 1, :] = 0.0
    with pytest.raises(ValueError, match="L0H1"):
        fit_subspaces(means, KS, [(0, 1)])


def test_fit_is_frozen_and_json_ready(planted):
    fit = planted[0]
    assert isinstance(fit, SubspaceFit)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.r2 = None  # type: ignore[misc]
    with pytest.raises(ValueError):
        fit.directions[0, 0] = 1.0
    with pytest.raises(TypeError):
        fit.bases["onto_unit"] = fit.bases["onto_full"]  # type: ignore[index]
    d = json.loads(json.dumps(fit.to_dict()))
    assert d["head"] == [15, 2]
    assert d["target_names"] == list(NAMES)
    assert list(d["r2"]) == list(NAMES)
    assert d["subspace_dims"]["onto_unit"] == 4 and d["subspace_dims"]["out_full"] == 0
    assert np.asarray(d["directions"]).shape == (64, 6)
    assert d["targets"][0] == {
        "name": "mod50",
        "period": 50,
        "kind": "cos",
        "phase_search": True,
        "group": "magnitude",
    }
    assert "directions" not in fit.to_dict(include_arrays=False)


def test_shape_annotations_hold_at_runtime():
    beartype = pytest.importorskip("beartype").beartype
    from jaxtyping import jaxtyped

    x, _, _ = _planted_case()
    checked = jaxtyped(typechecker=beartype)
    fit = checked(fit_subspace_from_means)(x, KS)
    assert checked(principal_angles)(fit.basis("unit"), fit.basis("full")).shape == (4,)
    assert checked(periodogram)(fit.coords, KS).power.shape == (49,)
    assert checked(SubspaceFit.project)(fit, np.zeros((3, 64)), "unit").shape == (3, 64)
