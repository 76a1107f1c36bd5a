"""Tests for the recovery-scan selectors (paper_spec §4.1–§4.4)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from beartype import beartype
from jaxtyping import TypeCheckError, jaxtyped

from addk_interp.localize import selectors
from addk_interp.localize.selectors import (
    RELEASE_WEAK_PARAMS,
    RecoveryScan,
    bh_adjust,
    by_adjust,
    load_scan_json,
    main_set,
    mcnemar_one_sided,
    save_scan_json,
    select_from_scan,
    significant_set,
    weak_rule,
)

RELEASED = (
    Path(__file__).resolve().parents[1] / "addk_interp" / "data" / "llama3_addk_recovery_scan.json"
)
TRIO = [(15, 2), (15, 1), (13, 6)]


@pytest.fixture(scope="module")
def released() -> RecoveryScan:
    if not RELEASED.is_file():
        pytest.skip(f"released scan not found at {RELEASED}")
    return load_scan_json(RELEASED)


def curves_scan(curves, *, n=300, clean=258, full=233, c_grid=None) -> RecoveryScan:
    """A counts-only scan from {head: [correct count per c]}."""
    n_c = len(next(iter(curves.values())))
    return RecoveryScan(
        c_grid=tuple(c_grid or range(n_c)),
        n_eval=n,
        clean_correct=clean,
        full_selected_correct=full,
        correct=curves,
    )


# --- the released scan reproduces the published outcome exactly ------------------------------


def test_released_scan_loads(released):
    assert released.n_eval == 300
    assert released.c_grid == tuple(range(13))
    assert len(released.heads) == 33
    assert released.clean_acc == 258 / 300 and released.full_selected_acc == 233 / 300
    assert released.outcomes is None
    assert released.meta["model"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert released.correct[(15, 2)][6] == 263


def test_released_scan_reproduces_published_outcome(released):
    out = select_from_scan(released)
    assert set(out) == {"main", "gains", "bar", "minor", "weak_rule_main", "verdict", "decisions"}
    assert out["main"] == [[15, 2], [15, 1], [13, 6]]
    assert [round(out["gains"][k], 4) for k in ("L15H2", "L15H1", "L13H6")] == [
        0.8467,
        0.8167,
        0.6867,
    ]
    assert round(out["bar"], 4) == 0.2117
    assert out["minor"] == [[15, 28], [15, 17], [13, 27]]
    assert out["weak_rule_main"] == [[15, 2], [15, 1], [13, 6], [15, 28]]
    assert out["verdict"] == "localized"
    # gains: every scanned head, full precision
    assert len(out["gains"]) == 33
    assert out["gains"]["L15H2"] == 254 / 300
    assert out["bar"] == 0.25 * 254 / 300
    decisions = out["decisions"]
    assert sorted(k for k, v in decisions.items() if v == "main") == ["L13H6", "L15H1", "L15H2"]
    assert sorted(k for k, v in decisions.items() if v == "minor") == ["L13H27", "L15H17", "L15H28"]
    assert sum(v == "none" for v in decisions.values()) == 27
    json.dumps(out, allow_nan=False)


def test_released_minor_z_and_peaks(released):
    res = main_set(released)
    z = {h: round(res.peaks[h].z, 2) for h in res.minor}
    assert z == {(15, 28): 6.29, (15, 17): 6.28, (13, 27): 3.86}
    assert list(z) == [(15, 28), (15, 17), (13, 27)]  # ordered by gain
    # z by hand for (15,28): a0 = 10/300, a1 = 57/300, c* = 11
    a0, a1 = 10 / 300, 57 / 300
    assert res.peaks[(15, 28)].c_star == 11
    assert res.peaks[(15, 28)].z == pytest.approx(
        (a1 - a0) / math.sqrt((a0 * (1 - a0) + a1 * (1 - a1)) / 300), rel=1e-12
    )
    assert [res.peaks[h].c_star for h in TRIO] == [6, 7, 5]
    assert res.leader == (15, 2) and res.leader_gain == 254 / 300


def test_released_matches_the_published_block_in_the_file(released):
    pub = released.meta["published_outcomes"]
    out = select_from_scan(released)
    assert out["main"] == pub["main_heads_quarter_of_best_gain_rule"]
    assert {k: round(out["gains"]["L" + k.replace(":", "H")], 4) for k in pub["gains"]} == pub["gains"]
    assert round(out["bar"], 4) == pub["bar"]
    res = main_set(released)
    assert {f"{h[0]}:{h[1]}": round(res.peaks[h].z, 2) for h in res.minor} == pub[
        "minor_heads_z_ge_3.5"
    ]
    assert out["weak_rule_main"] == pub["weak_rule_main_heads_release_params"]
    assert pub["weak_rule_params"] == RELEASE_WEAK_PARAMS


# --- §4.3 main set ---------------------------------------------------------------------------


def test_clean_below_quarter_is_not_applicable(released):
    low = dataclasses.replace(released, clean_correct=74)  # 0.2467 < 0.25
    res = main_set(low)
    assert res.verdict == "not_applicable" and not res.applicable
    assert res.main == [] and res.minor == [] and res.bar is None
    assert "clean_min" in res.reason
    assert select_from_scan(low)["main"] == []
    # exactly 0.25 is applicable
    assert main_set(dataclasses.replace(released, clean_correct=75)).main == TRIO


def test_not_material(released):
    res = main_set(released, floor=0.9)
    assert res.verdict == "not_material" and res.applicable and not res.material
    assert res.main == [] and res.bar is None and "floor" in res.reason
    assert res.to_dict()["params"]["floor"] == 0.9
    flat = curves_scan({(0, 0): [5, 5, 4], (0, 1): [7, 3, 2]})
    res = main_set(flat)  # G* = 0: nothing recovers, even with floor 0
    assert res.verdict == "not_material" and res.main == []


def test_localized_vs_distributed():
    five = {(0, h): [0, 200] for h in range(5)} | {(1, 0): [0, 10]}
    assert main_set(curves_scan(five)).verdict == "localized"
    six = {(0, h): [0, 200] for h in range(6)}
    res = main_set(curves_scan(six))
    assert res.verdict == "distributed" and len(res.main) == 6
    assert main_set(curves_scan(six), max_localized=6).verdict == "localized"


def test_first_argmax_leader_ties_and_order():
    scan = curves_scan(
        {
            (3, 0): [10, 110, 60, 110],  # c* = first argmax = 1, gain 100, acc* 110
            (2, 0): [5, 60, 105, 105],  # gain 100, acc* 105, c* = 2
            (1, 0): [0, 20, 30, 26],  # gain 30 > bar 25 -> main
            (0, 0): [0, 20, 25, 25],  # gain 25 == bar -> main (>=)
            (0, 1): [0, 24, 24, 0],  # gain 24 < bar
        }
    )
    res = main_set(scan)
    assert res.peaks[(3, 0)].c_star == 1 and res.peaks[(2, 0)].c_star == 2
    assert res.leader == (3, 0)  # tie on gain broken by acc*
    assert res.main == [(3, 0), (2, 0), (1, 0), (0, 0)]
    assert res.peaks[(0, 1)].decision == "minor"


def test_bar_comparison_is_exact():
    # beta = 0.1, G* = 60/300: the bar is exactly 6/300. In floats 0.1 * 0.2 > 0.02.
    assert 0.1 * (60 / 300) > 6 / 300
    scan = curves_scan({(0, 0): [0, 60], (0, 1): [0, 6], (0, 2): [0, 5]})
    res = main_set(scan, beta=0.1)
    assert res.main == [(0, 0), (0, 1)]


def test_z_uses_the_one_over_n_floor():
    res = main_set(curves_scan({(0, 0): [0, 200], (0, 1): [0, 1]}))
    assert res.peaks[(0, 1)].z == 1.0
    assert res.peaks[(0, 0)].z == pytest.approx(
        (200 / 300) / math.sqrt((2 / 3) * (1 / 3) / 300), rel=1e-12
    )


def test_bad_main_set_params(released):
    with pytest.raises(ValueError, match="beta"):
        main_set(released, beta=0.0)
    with pytest.raises(ValueError, match="clean_min"):
        main_set(released, clean_min=1.5)


# --- §4.4 weak rule --------------------------------------------------------------------------


def test_weak_rule_needs_explicit_params_and_records_them(released):
    with pytest.raises(TypeError):
        weak_rule(released)  # type: ignore[call-arg]
    res = weak_rule(released, **RELEASE_WEAK_PARAMS)
    assert res.main == [(15, 2), (15, 1), (13, 6), (15, 28)]
    assert (res.rel_floor, res.abs_floor, res.eps) == (0.2, 0.01, 0.01)
    assert res.to_dict()["params"] == RELEASE_WEAK_PARAMS
    # (15,17) dips 45 -> 38 on the way to its peak: not steady; (13,27) is steady but too small
    assert res.heads[(15, 17)].flags == ["not_steady_to_peak", "gain_below_bar"]
    assert res.heads[(13, 27)].flags == ["gain_below_bar"]
    # the shadowed legacy defaults (0.2 / 0.05 / 0.03) would add (15,17)
    loose = weak_rule(released, rel_floor=0.2, abs_floor=0.05, eps=0.03)
    assert (15, 17) not in loose.main  # 0.1467 < 0.2 * (0.7767 - 0.0233) = 0.1507


def test_weak_rule_steadiness_and_bar_are_exact():
    params = dict(RELEASE_WEAK_PARAMS)
    # a drop of exactly 3/300 = eps is steady; 60/300 - 57/300 > 0.01 in floats
    assert 60 / 300 - 57 / 300 > 0.01
    scan = curves_scan(
        {
            (0, 0): [0, 60, 57, 100],  # drop of exactly eps -> steady -> main
            (0, 1): [0, 60, 56, 100],  # drop 4/300 > eps -> not steady
            (0, 2): [90, 80, 70, 60],  # peak at c = 0
            (0, 3): [0, 25, 50, 50],  # gain == 0.2 * (250 - 0)/300 exactly -> main
            (0, 4): [0, 25, 49, 49],  # one short of the bar
        },
        full=250,
    )
    assert 0.2 * (250 / 300 - 0) > 50 / 300  # naive floats would reject (0, 3)
    res = weak_rule(scan, **params)
    assert res.heads[(0, 0)].steady and res.heads[(0, 0)].is_main
    assert res.heads[(0, 1)].flags == ["not_steady_to_peak"]
    assert res.heads[(0, 2)].flags == ["peak_at_c0", "gain_below_bar"]
    assert res.heads[(0, 3)].is_main and not res.heads[(0, 4)].is_main
    assert res.main == [(0, 0), (0, 3)]  # ordered by acc*
    # when A_selected <= acc0 the absolute floor applies
    low = curves_scan({(0, 0): [100, 102, 104]}, full=90)
    assert weak_rule(low, **params).heads[(0, 0)].bar == 0.01
    assert weak_rule(low, **params).main == [(0, 0)]


# --- §4.2 significant set --------------------------------------------------------------------


def binom_tail(b: int, d: int) -> float:
    n = b + d
    return 1.0 if n == 0 else sum(math.comb(n, k) for k in range(b, n + 1)) / 2**n


def test_mcnemar_hand_values():
    assert mcnemar_one_sided(5, 0) == pytest.approx(1 / 32, rel=1e-12)
    assert mcnemar_one_sided(3, 1) == pytest.approx(5 / 16, rel=1e-12)
    assert mcnemar_one_sided(2, 2) == pytest.approx(11 / 16, rel=1e-12)
    assert mcnemar_one_sided(0, 4) == 1.0
    assert mcnemar_one_sided(0, 0) == 1.0
    for b, d in [(10, 10), (17, 3), (40, 25), (1, 30)]:
        assert mcnemar_one_sided(b, d) == pytest.approx(binom_tail(b, d), rel=1e-10)
    with pytest.raises(ValueError):
        mcnemar_one_sided(-1, 2)


def test_bh_and_by_hand_values():
    p = np.array([0.02, 0.021, 0.3])
    # BH: 3p/rank = [0.06, 0.0315, 0.3] -> step-up min -> [0.0315, 0.0315, 0.3]
    np.testing.assert_allclose(bh_adjust(p), [0.0315, 0.0315, 0.3], rtol=1e-12)
    # BY: times H_3 = 11/6
    np.testing.assert_allclose(by_adjust(p), [0.05775, 0.05775, 0.55], rtol=1e-12)
    # order is preserved and values are clipped at 1
    np.testing.assert_allclose(bh_adjust(np.array([0.9, 0.5])), [0.9, 0.9])
    np.testing.assert_allclose(by_adjust(np.array([0.9, 0.5])), [1.0, 1.0])
    np.testing.assert_allclose(bh_adjust(np.array([0.04, 0.01])), [0.04, 0.02])


def toy_outcomes() -> dict:
    n = 20
    f, t = np.zeros(n, bool), np.ones(n, bool)
    first = lambda k: np.arange(n) < k  # noqa: E731
    return {
        (1, 0): np.stack([f, first(10), first(15)]),  # b = 10, 15; c* = 2
        (1, 1): np.stack([first(10), ~first(10), first(10)]),  # b = d = 10; then b = d = 0
        (2, 0): np.stack([t, ~first(3), t]),  # p = 1 twice: larger b - d (c = 2) wins
        (2, 1): np.stack([f, first(4), first(4)]),  # identical c: smaller c wins
        (3, 0): np.stack([t, f, f]),  # all broken
        (3, 1): np.stack([f, first(7), first(9)]),  # b = 7, then 9
    }


def test_significant_set_on_hand_built_outcomes():
    scan = RecoveryScan.from_outcomes(
        c_grid=[0, 1, 2], outcomes=toy_outcomes(), clean_correct=18, full_selected_correct=15
    )
    res = significant_set(scan)
    tests = res.tests
    assert [tests[h].c_star for h in scan.heads] == [2, 1, 2, 1, 1, 2]
    assert (tests[(1, 0)].b, tests[(1, 0)].d) == (15, 0)
    assert tests[(1, 1)].p_c_star == pytest.approx(binom_tail(10, 10), rel=1e-12)
    assert (tests[(2, 0)].b, tests[(2, 0)].d) == (0, 0)
    assert tests[(2, 1)].b_by_c == [4, 4] and tests[(2, 1)].p_by_c == [1 / 16, 1 / 16]
    # within-head Bonferroni, m = 2
    p_head = [2 * 2**-15, 1.0, 1.0, 2 / 16, 1.0, 2 * 2**-9]
    np.testing.assert_allclose([tests[h].p_head for h in scan.heads], p_head, rtol=1e-12)
    # BH over N = 6 by hand: sorted (1,0), (3,1), (2,1), then three 1.0s
    expected = {(1, 0): 6 * 2 * 2**-15, (3, 1): 6 * 2 * 2**-9 / 2, (2, 1): 6 * 0.125 / 3}
    for h, v in expected.items():
        assert tests[h].p_adjusted == pytest.approx(v, rel=1e-12)
    assert res.significant == [(1, 0), (3, 1)]
    assert res.m == 2 and res.n_heads == 6 and res.name == "paired_bh"
    # at q = 1 every head passes the p gate: only b > d at c* decides
    loose = significant_set(scan, q=1.0, method="per_head")
    assert set(loose.significant) == {(1, 0), (3, 1), (2, 1)}
    json.dumps(res.to_dict(), allow_nan=False)


def test_nesting_on_random_outcomes():
    rng = np.random.default_rng(20240611)
    n, c_grid = 150, [0, 1, 2, 3, 4]
    outcomes = {}
    for i, effect in enumerate(np.linspace(0.0, 0.2, 40)):
        base = rng.random(n) < 0.3
        rows = [base]
        for c in c_grid[1:]:
            fix = ~base & (rng.random(n) < effect * c / 4)
            brk = base & (rng.random(n) < 0.05)
            rows.append((base | fix) & ~brk)
        outcomes[(i // 8, i % 8)] = np.stack(rows)
    scan = RecoveryScan.from_outcomes(
        c_grid=c_grid, outcomes=outcomes, clean_correct=120, full_selected_correct=100
    )
    sets = {
        m: set(significant_set(scan, method=m).significant) for m in selectors.SIGNIFICANCE_METHODS
    }
    assert sets["by"] <= sets["bh"] <= sets["per_head"]
    assert sets["global_bonferroni"] <= sets["bh"]
    # the data are chosen so that the corrections actually differ
    assert sets["by"] and sets["by"] < sets["bh"] < sets["per_head"]
    adj = {m: significant_set(scan, method=m).tests for m in ("by", "bh", "per_head")}
    for h in scan.heads:
        assert adj["by"][h].p_adjusted >= adj["bh"][h].p_adjusted >= adj["per_head"][h].p_adjusted


def test_significant_set_refuses_counts_only_scan(released):
    with pytest.raises(ValueError, match="outcomes"):
        significant_set(released)
    with pytest.raises(ValueError, match="valid: bh, by, per_head, global_bonferroni"):
        significant_set(released, method="holm")


# --- scan files ------------------------------------------------------------------------------


def write(tmp_path: Path, payload: dict | str) -> Path:
    path = tmp_path / "scan.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


def released_dict() -> dict:
    if not RELEASED.is_file():
        pytest.skip(f"released scan not found at {RELEASED}")
    return json.loads(RELEASED.read_text())


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d["correct"]["15:2"].__setitem__(3, float("nan")), r"15:2\[3\]: count is NaN"),
        (lambda d: d["correct"]["15:2"].pop(), "15:2: ragged"),
        (lambda d: d["correct"]["13:6"].__setitem__(0, 301), r"count 301 outside"),
        (lambda d: d["correct"]["13:6"].__setitem__(0, 3.5), "not an integer"),
        (lambda d: d.pop("n_eval"), r"missing required key\(s\) \['n_eval'\]"),
        (lambda d: d.__setitem__("clean_correct", float("nan")), "clean_correct: count is NaN"),
        (lambda d: d["correct"].__setitem__("15-2", [0] * 13), "'15-2'"),
        (lambda d: d.__setitem__("c_grid", list(range(1, 14))), "start at 0"),
        (lambda d: d.__setitem__("full_selected_fv_correct", 400), "outside"),
    ],
)
def test_bad_scan_files_are_refused(tmp_path, mutate, needle):
    raw = released_dict()
    mutate(raw)
    with pytest.raises(ValueError, match=needle):
        load_scan_json(write(tmp_path, raw))


def test_duplicate_head_keys_are_refused(tmp_path):
    text = (
        '{"n_eval": 10, "c_grid": [0, 1], "clean_correct": 5, "full_selected_fv_correct": 5, '
        '"correct": {"1:2": [0, 3], "1:2": [0, 4]}}'
    )
    with pytest.raises(ValueError, match="duplicate key '1:2'"):
        load_scan_json(write(tmp_path, text))


def test_round_trip_with_outcomes(tmp_path):
    scan = RecoveryScan.from_outcomes(
        c_grid=[0, 1, 2],
        outcomes=toy_outcomes(),
        clean_correct=18,
        full_selected_correct=15,
        meta={"model": "toy"},
    )
    path = tmp_path / "ours.json"
    save_scan_json(scan, path)
    raw = json.loads(path.read_text())
    assert raw["outcomes"]["1:0"][1] == "1" * 10 + "0" * 10
    back = load_scan_json(path)
    assert back.heads == scan.heads and back.meta == {"model": "toy"}
    for h in scan.heads:
        np.testing.assert_array_equal(back.correct[h], scan.correct[h])
        np.testing.assert_array_equal(back.outcomes[h], scan.outcomes[h])
    assert significant_set(back).to_dict() == significant_set(scan).to_dict()
    save_scan_json(scan, path, outcomes=False)
    assert load_scan_json(path).outcomes is None


def test_outcomes_must_match_counts(tmp_path):
    scan = RecoveryScan.from_outcomes(
        c_grid=[0, 1, 2], outcomes=toy_outcomes(), clean_correct=18, full_selected_correct=15
    )
    path = tmp_path / "ours.json"
    save_scan_json(scan, path)
    raw = json.loads(path.read_text())
    raw["correct"]["1:0"][2] = 14
    with pytest.raises(ValueError, match="15 correct at c=2 but the count says 14"):
        load_scan_json(write(tmp_path, raw))
    raw["correct"]["1:0"][2] = 15
    raw["outcomes"]["1:0"][0] = "2" * 20
    with pytest.raises(ValueError, match="only '0'/'1'"):
        load_scan_json(write(tmp_path, raw))


def test_from_accuracies():
    scan = RecoveryScan.from_accuracies(
        c_grid=[0, 1],
        n_eval=300,
        clean_acc=0.86,
        full_selected_acc=233 / 300,
        acc={(15, 2): [0.03, 0.2033333333333333]},
    )
    assert scan.clean_correct == 258 and list(scan.correct[(15, 2)]) == [9, 61]
    with pytest.raises(ValueError, match="multiple of 1/300"):
        RecoveryScan.from_accuracies(
            c_grid=[0], n_eval=300, clean_acc=0.5, full_selected_acc=0.5, acc={(0, 0): [0.001]}
        )


def test_results_are_frozen_and_json_ready(released):
    res = main_set(released)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.verdict = "x"  # type: ignore[misc]
    with pytest.raises(ValueError):
        released.correct[(15, 2)][0] = 99  # stored read-only
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["params"] == {
        "beta": 0.25,
        "floor": 0.0,
        "clean_min": 0.25,
        "minor_z": 3.5,
        "max_localized": 5,
    }
    assert d["peaks"]["L15H2"]["decision"] == "main"
    json.dumps(weak_rule(released, **RELEASE_WEAK_PARAMS).to_dict(), allow_nan=False)


def test_jaxtyping_annotations_hold_at_runtime():
    checked = jaxtyped(typechecker=beartype)(bh_adjust)
    np.testing.assert_allclose(checked(np.array([0.5, 0.01])), [0.5, 0.02])
    with pytest.raises(TypeCheckError):
        checked(np.ones((2, 2)))


def test_heads_cli_released_scan(capsys):
    import json as _json

    from addk_interp.cli.main import main

    assert main(["heads", "--scan", str(RELEASED), "--json"]) == 0
    out = _json.loads(capsys.readouterr().out)
    assert out["main"] == [[15, 2], [15, 1], [13, 6]]
    assert round(out["bar"], 4) == 0.2117
    assert out["weak_rule_main"] == [[15, 2], [15, 1], [13, 6], [15, 28]]
    assert main(["heads", "--scan", "/no/such/scan.json"]) == 2
