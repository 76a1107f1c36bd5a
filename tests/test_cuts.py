"""Tests for the selected-set cut rules (paper_spec §3.4)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from beartype import beartype
from jaxtyping import TypeCheckError, jaxtyped

from addk_interp.localize import cuts
from addk_interp.localize.cuts import cut, mean_last_k

# The 33 selected heads of the canonical Llama add matrix with their epoch-49 |coef| (§3.4).
TOP = [(h, 1.0) for h in [(9, 13), (10, 6), (13, 6), (13, 15), (13, 16), (13, 22), (13, 27)]]
TOP += [(h, 1.0) for h in [(15, 1), (15, 2), (15, 17), (15, 28), (15, 30), (16, 8), (17, 27)]]
TOP += [(h, 1.0) for h in [(25, 23), (27, 28), (28, 5), (29, 22), (30, 13), (31, 5), (31, 7)]]
TOP += [((31, 27), 1.0), ((21, 2), 0.994), ((19, 0), 0.981), ((13, 21), 0.960)]
TOP += [((31, 14), 0.897), ((11, 29), 0.829), ((16, 25), 0.669827), ((29, 21), 0.441219)]
TOP += [((14, 14), 0.383), ((14, 26), 0.321), ((22, 24), 0.286), ((14, 28), 0.241950)]
LOWER_FIVE = [(29, 21), (14, 14), (14, 26), (22, 24), (14, 28)]


def canonical_like(bump: float = 0.0) -> np.ndarray:
    """A 32x32 matrix shaped like the canonical epoch-49 matrix: the 33 heads above, then
    (22,14) at 0.0158 and a geometric tail of 105 more non-zero heads down to ~1.8e-6.
    ``bump`` raises the five lowest selected heads (earlier epochs)."""
    m = np.zeros((32, 32))
    for (layer, head), value in TOP:
        m[layer, head] = value + (bump if (layer, head) in LOWER_FIVE else 0.0)
    m[22, 14] = 0.0158
    taken = {h for h, _ in TOP} | {(22, 14)}
    free = [(i, j) for i in range(32) for j in range(32) if (i, j) not in taken]
    picks = np.random.default_rng(0).permutation(len(free))[:105]
    ratio = (1.8e-6 / 0.0158) ** (1 / 105)
    for k, idx in enumerate(picks, start=1):
        m[free[idx]] = 0.0158 * ratio**k
    return m


SELECTED_33 = {h for h, _ in TOP}


# --- largest_gap ------------------------------------------------------------------------------


def test_largest_gap_exact_tie_goes_to_highest_cut():
    c = cut(np.array([[1.0, 0.5], [0.0, 0.0]]), rule="largest_gap")
    assert c.selected == [(0, 0)]
    assert c.threshold == 0.5
    assert c.gap is not None
    assert (c.gap.index, c.gap.size, c.gap.runner_up_index, c.gap.runner_up_size) == (
        0,
        0.5,
        1,
        0.5,
    )
    assert c.gap.margin == 0.0
    lone = cut(np.array([[1.0, 0.0, 0.0]]))  # the only other "drop" is 0: no runner-up
    assert lone.gap.runner_up_index is None and lone.gap.margin is None
    # three equal drops: still the first (highest) one
    c = cut(np.array([[0.25, 0.0], [0.75, 0.5]]))
    assert c.selected == [(1, 0)]


def test_largest_gap_lower_edge_ties_stay_out_upper_edge_ties_stay_in():
    coef = np.array([[0.9, 0.3, 0.2], [0.3, 0.9, 0.0]])
    c = cut(coef, rule="largest_gap")
    assert c.threshold == 0.3
    assert c.selected == [(0, 0), (1, 1)]  # both 0.9 kept, both 0.3 out; ties by (layer, head)
    assert c.values == [0.9, 0.9]
    assert c.curve == [0.9, 0.9, 0.3, 0.3, 0.2, 0.0]
    assert not c.empty and c.reason is None


def test_largest_gap_counts_zeros_and_uses_absolute_values():
    # the biggest drop is from the smallest non-zero value to zero
    c = cut(np.array([[0.05, -0.04], [0.0, 0.0]]))
    assert c.threshold == 0.0
    assert c.selected == [(0, 0), (0, 1)]
    assert c.values == [0.05, 0.04]


def test_canonical_near_tie_epoch_49_alone_gives_28_heads():
    c = cut(canonical_like(), rule="largest_gap")
    assert c.n_selected == 28
    assert set(c.selected) == SELECTED_33 - set(LOWER_FIVE)
    assert c.gap.index == 27  # between ranks 28 and 29
    assert c.gap.upper == 0.669827 and c.gap.lower == 0.441219
    assert c.gap.size == pytest.approx(0.228608, abs=1e-9)
    assert c.gap.runner_up_index == 32  # between ranks 33 and 34
    assert c.gap.runner_up_size == pytest.approx(0.22615, abs=1e-9)
    assert c.gap.margin == pytest.approx(0.002458, abs=1e-9)
    assert c.threshold == 0.441219


def test_canonical_elbow_and_fixed_give_the_33_heads():
    m = canonical_like()
    el = cut(m, rule="elbow")
    assert el.threshold == 0.0158
    assert set(el.selected) == SELECTED_33
    fx = cut(m, rule="fixed", threshold=0.2)
    assert fx.selected == el.selected  # same set, same order
    # order: |coef| descending, ties by (layer, head)
    assert el.selected[:3] == [(9, 13), (10, 6), (13, 6)]
    assert el.selected[-1] == (14, 28)


def test_mean_of_last_three_checkpoints_restores_33_heads():
    epochs = {47: canonical_like(0.15), 48: canonical_like(0.10), 49: canonical_like()}
    mean = mean_last_k(epochs, k=3)
    np.testing.assert_allclose(mean[29, 21], 0.441219 + 0.25 / 3)
    c = cut(mean, rule="largest_gap")
    assert set(c.selected) == SELECTED_33
    assert c.gap.index == 32
    assert c.gap.margin > 0.1
    # k=1 is the last checkpoint alone: back to the near-tie cut
    assert cut(mean_last_k(epochs, k=1)).n_selected == 28
    # a sequence is taken in the given order (oldest first)
    seq = mean_last_k([canonical_like(0.15), canonical_like(0.10), canonical_like()], k=2)
    np.testing.assert_allclose(seq[29, 21], 0.441219 + 0.05)


# --- elbow / fraction / fixed -------------------------------------------------------------------


def test_elbow_hand_computed_and_differs_from_fixed():
    # floor drops the zero; x = [0, .25, .5, .75, 1], y = (v - .05)/.95;
    # |y - (1 - x)| = [0, .145, .342, .197, 0] -> knee at index 2 (0.2), keep 1.0 and 0.9
    coef = np.array([[1.0, 0.9, 0.2], [0.1, 0.05, 0.0]])
    el = cut(coef, rule="elbow")
    assert el.threshold == 0.2
    assert el.selected == [(0, 0), (0, 1)]
    assert el.params == {"floor": 1e-6}
    fx = cut(coef, rule="fixed", threshold=0.05)
    assert fx.selected == [(0, 0), (0, 1), (0, 2), (1, 0)]  # strictly above 0.05
    assert fx.params == {"threshold": 0.05}


def test_elbow_floor_drops_tiny_values():
    # v = [1, .7, .5, .1, .04]: y = (v - .04)/.96, 1 - x = [1, .75, .5, .25, 0],
    # distances ∝ [0, .0625, .0208, .1875, 0] -> knee at 0.1, keep three heads
    coef = np.array([[1.0, 0.7, 0.5], [0.1, 0.04, 0.0]])
    base = cut(coef, rule="elbow")
    assert base.threshold == 0.1 and base.selected == [(0, 0), (0, 1), (0, 2)]
    with_dust = coef.copy()
    with_dust[1, 2] = 5e-7  # below the 1e-6 floor: must not move the normalization
    assert cut(with_dust, rule="elbow").selected == base.selected
    # a floor of 0.05 drops 0.04: v = [1, .7, .5, .1], y = (v - .1)/.9, 1 - x = [1, 2/3, 1/3, 0]
    # distances ∝ [0, 0, .111, 0] -> knee at 0.5, keep two heads
    c = cut(coef, rule="elbow", floor=0.05)
    assert c.threshold == 0.5 and c.selected == [(0, 0), (0, 1)]
    assert c.params == {"floor": 0.05}


def test_fraction_rule():
    coef = np.array([[0.125, 0.5], [0.25, 0.125]])
    assert cut(coef, rule="fraction", fraction=0.5).selected == [(0, 1)]
    c = cut(coef, rule="fraction", fraction=0.75)
    assert c.threshold == 0.25 and c.selected == [(0, 1), (1, 0)] and c.inclusive
    c = cut(coef, rule="fraction")  # 0.95 needs the 4th value; its tie comes along
    assert c.threshold == 0.125 and c.n_selected == 4
    assert c.params == {"fraction": 0.95}
    # a single dominant head is kept (inclusive), zeros never are
    dominant = np.array([[0.97, 0.01], [0.02, 0.0]])
    assert cut(dominant, rule="fraction").selected == [(0, 0)]
    assert cut(dominant, rule="fraction", fraction=1.0).selected == [(0, 0), (1, 0), (0, 1)]


# --- empty selections, bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "params", "needle"),
    [
        ("largest_gap", {}, "no drop"),
        ("elbow", {}, "no |coef| above floor"),
        ("fraction", {}, "no mass"),
        ("fixed", {"threshold": 0.0}, "no head"),
    ],
)
def test_rules_that_select_nothing_return_an_explicit_empty_cut(rule, params, needle):
    c = cut(np.zeros((3, 4)), rule=rule, **params)
    assert c.empty and c.selected == [] and c.values == []
    assert needle in c.reason
    assert len(c.curve) == 12


def test_other_empty_cases():
    flat = np.full((2, 2), 0.3)
    assert cut(flat, rule="elbow").empty
    assert cut(flat, rule="largest_gap").empty
    high = cut(np.array([[0.3, 0.1]]), rule="fixed", threshold=0.3)
    assert high.empty and "threshold" in high.reason
    single = cut(np.array([[0.7]]), rule="largest_gap")
    assert single.empty and "two" in single.reason


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_coefficients_are_refused(bad):
    coef = np.ones((3, 3))
    coef[1, 2] = bad
    for rule, params in [("largest_gap", {}), ("elbow", {}), ("fixed", {"threshold": 0.1})]:
        with pytest.raises(ValueError, match=r"non-finite.*\(1, 2\)"):
            cut(coef, rule=rule, **params)


def test_unknown_rule_lists_valid_rules():
    with pytest.raises(ValueError, match="elbow, fixed, fraction, largest_gap"):
        cut(np.ones((2, 2)), rule="knee")


@pytest.mark.parametrize("frac", [-0.1, 0.0, 1.5, float("nan")])
def test_bad_fraction(frac):
    with pytest.raises(ValueError, match="fraction"):
        cut(np.ones((2, 2)), rule="fraction", fraction=frac)


def test_bad_parameters_and_shapes():
    with pytest.raises(ValueError, match="requires"):
        cut(np.ones((2, 2)), rule="fixed")
    with pytest.raises(ValueError, match="unknown parameter"):
        cut(np.ones((2, 2)), rule="elbow", fraction=0.9)
    with pytest.raises(ValueError, match="≥ 0"):
        cut(np.ones((2, 2)), rule="fixed", threshold=-0.1)
    with pytest.raises(ValueError, match="2-D"):
        cut(np.ones(4))
    with pytest.raises(ValueError, match="exceeds"):
        mean_last_k([np.ones((2, 2))], k=3)
    with pytest.raises(ValueError, match="positive"):
        mean_last_k([np.ones((2, 2))], k=0)
    with pytest.raises(ValueError, match="shapes"):
        mean_last_k([np.ones((2, 2)), np.ones((2, 3))], k=2)


# --- torch input, result type, annotations -----------------------------------------------------


def test_torch_input_matches_numpy():
    m = canonical_like()
    for dtype in (torch.float32, torch.float64):
        t = torch.tensor(m, dtype=dtype)
        for rule, params in [("largest_gap", {}), ("elbow", {}), ("fraction", {})]:
            assert cut(t, rule=rule, **params).selected == cut(m, rule=rule, **params).selected
    bf16 = torch.tensor([[1.0, 0.5], [0.0, -2.0]], dtype=torch.bfloat16)
    assert cut(bf16).selected == [(1, 1)]
    mean = mean_last_k([torch.zeros(2, 2), torch.ones(2, 2), 3 * torch.ones(2, 2)], k=2)
    assert isinstance(mean, np.ndarray) and mean.dtype == np.float64
    np.testing.assert_array_equal(mean, np.full((2, 2), 2.0))


def test_cut_is_frozen_and_json_ready():
    c = cut(canonical_like(), rule="largest_gap")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.threshold = 0.0  # type: ignore[misc]
    d = json.loads(json.dumps(c.to_dict(), allow_nan=False))
    assert d["rule"] == "largest_gap" and d["n_selected"] == 28
    assert d["selected"][0] == [9, 13]
    assert d["gap"]["n_above"] == 28 and d["gap"]["runner_up_index"] == 32
    assert d["shape"] == [32, 32]


def test_jaxtyping_annotations_hold_at_runtime():
    checked_cut = jaxtyped(typechecker=beartype)(cuts.largest_gap)
    checked_mean = jaxtyped(typechecker=beartype)(cuts.mean_last_k)
    assert checked_cut(np.ones((2, 3))).empty
    assert checked_cut(torch.rand(4, 5)).n_selected >= 1
    assert checked_mean([np.ones((2, 3)), np.zeros((2, 3))], k=2).shape == (2, 3)
    with pytest.raises(TypeCheckError):
        checked_cut(np.ones(3))  # not [layer, head]
