"""Causal projection tests (paper_spec §5.4.2) on a tiny random model: the identity projection
reproduces the unprojected arm, projecting out a subspace that holds v − μ injects μ, the
controls equal explicit FV evaluations, the digit-error decomposition, and bad input."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import tiny

from addk_interp.analyses import projection as P
from addk_interp.core.errors import AddkError
from addk_interp.core.prompts import encode_examples, make_batches
from addk_interp.core.scoring import evaluate, greedy_decode
from addk_interp.core.tasks import Example, arithmetic_family, sample_family
from addk_interp.hooks.capture import capture_means
from addk_interp.hooks.context import EvalContext
from addk_interp.hooks.fv import evaluate_fv
from addk_interp.hooks.interventions import inject
from addk_interp.localize import headsets as HS
from addk_interp.localize.selectors import RecoveryScan

KS = list(range(1, 11))
TRAIN = tuple(f"add{k}" for k in range(1, 9))
HELDOUT = ("add9", "add10")
SELECTED = [(0, 1), (1, 2), (2, 0), (2, 3)]
MAIN = [(1, 2), (2, 0)]
C_STAR = {(1, 2): 3, (2, 0): 2.5}
SPEC = "tiny-llama"
LAYER = 1
_CACHE: dict = {}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _family():
    fam = arithmetic_family("add", ks=KS)
    return dataclasses.replace(fam, train=TRAIN, heldout=HELDOUT)


def _means(split):
    key = ("means", split)
    if key not in _CACHE:
        fam = _family()
        tasks = fam.train if split == "train" else fam.heldout
        ex = sample_family(fam, tasks, 4, 3, seed=1, kind=f"activation-{split}")
        _CACHE[key] = capture_means(tiny(SPEC), ex)
    return _CACHE[key]


def _examples():
    if "examples" not in _CACHE:
        _CACHE["examples"] = sample_family(_family(), HELDOUT, 5, 3, seed=42, kind="final_eval")
    return _CACHE["examples"]


def _fits():
    if "fits" not in _CACHE:
        ks = {f"add{k}": k for k in KS}
        _CACHE["fits"] = {
            h: P.fit_for_head([_means("train"), _means("heldout")], ks, h) for h in MAIN
        }
    return _CACHE["fits"]


def _spanning_basis(head, center):
    """Orthonormal basis of span{mean_t[head] − μ : t held out} (so it holds every v − μ)."""
    rows = torch.stack([_means("heldout").of(t)[head].double() for t in HELDOUT])
    q, _ = torch.linalg.qr((rows - center.double()).T)
    return q.numpy()


def _bar():
    return _means("train").cross_task_mean(TRAIN).float()


def _run(**kw):
    args = dict(
        heads=MAIN,
        c_star=C_STAR,
        selected=SELECTED,
        train_tasks=TRAIN,
        fits=_fits(),
        layer=LAYER,
        batch_size=16,
    )
    args.update(kw)
    return P.projection_tests(_ctx(args), _examples(), _means("heldout"), _means("train"), **args)


def _ctx(args: dict) -> EvalContext:
    """Split the evaluation-context fields out of ``args`` (in place) into an EvalContext."""
    fields = ("fmt", "batch_size", "layer", "seed", "path", "verbose")
    return EvalContext(tiny(SPEC), **{f: args.pop(f) for f in fields if f in args})


def _result():
    if "result" not in _CACHE:
        arms = {}
        for h in MAIN:
            mu = _bar()[h]
            arms[h] = [
                "onto_full",
                "onto_unit",
                "out_unit",
                "out_full",
                "remove_magnitude",
                P.ProjectionArm("identity", np.eye(64)),
                P.ProjectionArm("span_keep", _spanning_basis(h, mu), "keep"),
                P.ProjectionArm("span_remove", _spanning_basis(h, mu), "remove"),
            ]
        _CACHE["result"] = _run(arms=arms)
    return _CACHE["result"]


def _logprob(res, head, arm):
    df = res.per_example
    rows = df[(df["head"] == f"L{head[0]}H{head[1]}") & (df["arm"] == arm)]
    return rows.sort_values("example")["answer_logprob"].to_numpy()


# ----------------------------------------------------------------------------- identities


def test_identity_projection_reproduces_the_unprojected_arm():
    res = _result()
    for h in MAIN:
        ref_ok, ref_lp = res.outcomes(h, "unprojected"), _logprob(res, h, "unprojected")
        for arm in ("identity", "span_keep"):
            assert np.array_equal(res.outcomes(h, arm), ref_ok)
            assert np.allclose(_logprob(res, h, arm), ref_lp, atol=1e-5, rtol=0)
            s = res.get(h, arm)
            assert (s.b, s.d) == (0, 0) and s.accuracy == res.get(h, "unprojected").accuracy
        assert res.get(h, "identity").rank == 64


def test_projecting_out_a_subspace_holding_v_minus_mu_injects_mu():
    res = _result()
    model, ex, bar = tiny(SPEC), _examples(), _bar()
    for h in MAIN:
        others = sum(bar[o] for o in SELECTED if o != h)
        vec = C_STAR[h] * bar[h] + others  # c*·μ + Σ others h̄: the head at its mean
        df = evaluate_fv(model, ex, {t: vec for t in HELDOUT}, layer=LAYER)
        for arm in ("span_remove", "out_full"):
            assert np.array_equal(res.outcomes(h, arm), df["correct"].to_numpy())
            assert np.allclose(_logprob(res, h, arm), df["answer_logprob"], atol=1e-4, rtol=0)
        assert res.get(h, "out_full").rank == 0
        assert np.allclose(
            _logprob(res, h, "span_remove"), _logprob(res, h, "out_full"), atol=1e-5, rtol=0
        )


def test_controls_equal_explicit_fv_evaluations():
    res = _result()
    model, ex, bar, held = tiny(SPEC), _examples(), _bar(), _means("heldout")
    zs = evaluate(model, ex, zero_shot=True)
    for h in MAIN:
        others = sum(bar[o] for o in SELECTED if o != h)
        cases = {
            "unprojected": {t: C_STAR[h] * held.of(t)[h] + others for t in HELDOUT},
            "c0": {t: others for t in HELDOUT},
        }
        for arm, vecs in cases.items():
            df = evaluate_fv(model, ex, vecs, layer=LAYER)
            assert np.array_equal(res.outcomes(h, arm), df["correct"].to_numpy())
            assert np.allclose(_logprob(res, h, arm), df["answer_logprob"], atol=1e-4, rtol=0)
        assert np.array_equal(res.outcomes(h, "zero_shot"), zs["correct"].to_numpy())
        assert np.allclose(_logprob(res, h, "zero_shot"), zs["answer_logprob"], atol=1e-4)
        assert res.get(h, "unprojected").coef == C_STAR[h]


def test_named_arms_use_the_fit_bases_and_the_train_mean_center():
    fit = _fits()[MAIN[0]]
    mu = _bar()[MAIN[0]]
    v = torch.stack([_means("heldout").of(t)[MAIN[0]] for t in HELDOUT])
    for name, sub, var in (("onto_unit", "unit", "onto"), ("out_parity", "parity", "out")):
        arm = P.fit_arm(fit, name)
        got = arm.apply(v, mu)
        want = fit.project(v.double(), sub, var, center=mu.double()).float()
        assert torch.allclose(got, want, atol=1e-6)
        assert arm.rank == fit.basis(sub, var).shape[1]
    rem = P.fit_arm(fit, "remove_unit")
    b = torch.from_numpy(np.array(fit.basis("unit", "onto")))
    want = v.double() - ((v.double() - mu.double()) @ b) @ b.T
    assert torch.allclose(rem.apply(v, mu), want.float(), atol=1e-6)
    assert rem.mode == "remove" and rem.subspace == "unit"
    # the fit lives in the head-output space the FV uses
    assert fit.mean.shape == (tiny(SPEC).info.d_model,) and fit.head == MAIN[0]


def test_result_schema_and_error_counts():
    res = _result()
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert set(d["heads"]) == {"L1H2", "L2H0"}
    arms = d["heads"]["L1H2"]["arms"]
    assert list(arms)[:3] == ["zero_shot", "c0", "unprojected"]
    a = arms["onto_unit"]
    assert set(a) == {"n", "accuracy", "ci_low", "ci_high", "paired_with_unprojected", "errors"} | {
        "definition", "mean_answer_logprob"
    }
    # the graded metric: a mean log-probability (finite, ≤ 0) per arm, and it equals the mean of
    # the per-example answer log-probabilities
    assert a["mean_answer_logprob"] <= 0
    pe = res.per_example
    sel = pe[(pe["head"] == "L1H2") & (pe["arm"] == "onto_unit")]["answer_logprob"]
    assert abs(sel.mean() - a["mean_answer_logprob"]) < 1e-9
    assert set(a["paired_with_unprojected"]) == {"b", "d"}
    assert set(a["errors"]) == {*P.ERROR_KINDS, "n_wrong"}
    assert d["error_decomposition"]["computed"] and d["heads"]["L2H0"]["c_star"] == 2.5
    table = res.table()
    assert len(table) == len(MAIN) * (3 + 8)
    n = len(_examples())
    for s in res.summaries:
        assert s.n == n and s.ci_low <= s.accuracy <= s.ci_high
        assert s.errors["n_wrong"] == n - round(s.accuracy * n)
        assert sum(s.errors[k] for k in P.ERROR_KINDS) == s.errors["n_wrong"]
    df = res.per_example
    assert len(df) == len(MAIN) * 11 * n
    assert df.loc[df["correct"], "pred"].isna().all()
    wrong = df[~df["correct"]]
    assert wrong["pred"].notna().all()
    for ans, pred, kind in zip(wrong["answer"], wrong["pred"], wrong["error"]):
        assert kind == P.classify_error(ans, pred)


def test_wrong_answers_are_decoded_greedily_with_the_injection_in_place():
    res, model, ex, bar, held = _result(), tiny(SPEC), _examples(), _bar(), _means("heldout")
    h = MAIN[0]
    others = sum(bar[o] for o in SELECTED if o != h)
    vecs = torch.stack([C_STAR[h] * held.of(e.task)[h] + others for e in ex])
    df = res.per_example
    rows = df[(df["head"] == "L1H2") & (df["arm"] == "unprojected")].sort_values("example")
    enc = encode_examples(model, ex, zero_shot=True)
    for batch in make_batches(enc, 3):
        hooks = inject(model, vecs[batch.indices], batch.query_pos, LAYER)
        gen = greedy_decode(model, batch, batch.answer_len + 2, hooks)
        for j, i in enumerate(batch.indices):
            if not rows["correct"].iloc[i]:
                assert rows["pred"].iloc[i] == model.tokenizer.decode(gen[j].tolist())


# ----------------------------------------------------------------------------- decomposition


@pytest.mark.parametrize(
    "answer,pred,kind",
    [
        ("47", "48", "units_only"),
        ("47", "57", "tens_only"),
        ("47", "58", "both"),
        ("47", "x", "non_numeric"),
        ("47", "", "non_numeric"),
        ("47", "147", "tens_only"),
        ("47", "7", "tens_only"),
        ("47", "148", "both"),
        ("47", "47x", "other"),
        ("47", " 48\n", "units_only"),
        ("47", "-47", "tens_only"),
        ("5", "15", "tens_only"),
        ("105", "205", "tens_only"),
        ("105", "106", "units_only"),
    ],
)
def test_classify_error(answer, pred, kind):
    assert P.classify_error(answer, pred) == kind


def test_decompose_errors_counts():
    c = P.decompose_errors(["47", "47", "47", "47", "47"], ["48", "57", "58", "x", "147"])
    assert c == {
        "units_only": 1,
        "tens_only": 2,
        "both": 1,
        "non_numeric": 1,
        "other": 0,
        "n_wrong": 5,
    }
    assert P.leading_number("  -12ab") == "-12" and P.leading_number("ab12") is None
    with pytest.raises(AddkError, match="not an integer"):
        P.classify_error("forty", "41")
    with pytest.raises(AddkError):
        P.decompose_errors(["1"], [])


def test_non_numeric_labels_skip_the_decomposition():
    ex = [dataclasses.replace(e, answer="ab") for e in _examples()[:3]]
    res = P.projection_tests(
        EvalContext(tiny(SPEC), layer=LAYER),
        ex,
        _means("heldout"),
        _means("train"),
        heads=MAIN[:1],
        c_star=C_STAR,
        selected=SELECTED,
        train_tasks=TRAIN,
        fits=_fits(),
        arms=["onto_unit"],
    )
    assert "non-numeric labels" in res.errors_reason
    assert all(s.errors is None for s in res.summaries)
    d = res.to_dict()
    assert not d["error_decomposition"]["computed"]
    assert d["heads"]["L1H2"]["arms"]["onto_unit"]["errors"] is None
    assert res.per_example["error"].isna().all()


def test_c_stars_from_scan_decisions():
    rng = np.random.default_rng(0)
    outcomes = {}
    for h, best in ((MAIN[0], 2), (MAIN[1], 3)):
        m = np.zeros((4, 40), dtype=bool)
        m[0] = rng.random(40) < 0.05
        for c in (1, 2, 3):
            m[c] = rng.random(40) < (0.9 if c == best else 0.3)
        outcomes[h] = m
    scan = RecoveryScan.from_outcomes(
        c_grid=[0, 1, 2, 3], outcomes=outcomes, clean_correct=36, full_selected_correct=30
    )
    sets = HS.head_sets(scan)
    got = P.c_stars(sets.significant)
    assert got == {h: sets.significant.tests[h].c_star for h in MAIN}
    assert P.c_stars(sets, rule="main") == {h: sets.main.peaks[h].c_star for h in sets.main.main}
    with pytest.raises(AddkError, match="no c"):
        P.c_stars(sets.significant, [(0, 0)])
    with pytest.raises(AddkError, match="rule"):
        P.c_stars(sets, rule="best")


# ----------------------------------------------------------------------------- bad input


def test_fit_for_head_refuses_bad_input():
    ks = {f"add{k}": k for k in KS}
    with pytest.raises(AddkError, match="no k"):
        P.fit_for_head(_means("train"), {"add1": 1}, MAIN[0])
    with pytest.raises(AddkError, match="not in the means"):
        P.fit_for_head([_means("train"), _means("heldout")], ks, (7, 0))
    with pytest.raises(AddkError, match="k values"):
        P.fit_for_head(_means("train").means, [1, 2], MAIN[0])
    with pytest.raises(AddkError, match="fit of"):  # 2 tasks cannot carry 6 components
        P.fit_for_head(_means("heldout"), ks, MAIN[0])


def test_bad_arms_refused():
    fit = _fits()[MAIN[0]]
    with pytest.raises(AddkError, match="unknown subspace"):
        P.fit_arm(fit, "onto_tens")
    with pytest.raises(AddkError, match="prefix"):
        P.fit_arm(fit, "sideways_unit")
    with pytest.raises(AddkError, match="unknown arm"):
        P.fit_arm(fit, "unit")
    with pytest.raises(AddkError, match="not orthonormal"):
        P.ProjectionArm("bad", 2.0 * np.eye(64)[:, :3])
    with pytest.raises(AddkError, match="rank-deficient"):
        P.ProjectionArm("bad", np.ones((64, 2)) / 8.0)
    with pytest.raises(AddkError, match="mode"):
        P.ProjectionArm("bad", np.eye(64)[:, :2], mode="flip")
    with pytest.raises(AddkError, match="reserved"):
        P.ProjectionArm("c0", np.eye(64)[:, :2])
    with pytest.raises(AddkError, match="NaN"):
        P.ProjectionArm("bad", np.full((64, 1), np.nan))


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"arms": ["onto_tens"]}, "unknown subspace"),
        ({"arms": [P.ProjectionArm("narrow", np.eye(8)[:, :2])]}, "rows"),
        ({"arms": ["onto_unit", "onto_unit"]}, "duplicate arm"),
        ({"heads": [(9, 9)]}, "does not exist"),
        ({"heads": [(0, 0)]}, "not in the selected set"),
        ({"heads": []}, "no heads"),
        ({"c_star": {(1, 2): 3}}, "no c\\*"),
        ({"c_star": {(1, 2): -1, (2, 0): 2}}, "≥ 0"),
        ({"c_star": {(1, 2): float("nan"), (2, 0): 2}}, "finite"),
        ({"c_star": {(1, 2): True, (2, 0): 2}}, "number"),
        ({"examples": []}, "no evaluation examples"),
        ({"fits": {}}, "needs the head's SubspaceFit"),
        ({"center": "pca"}, "center"),
        ({"decode_extra": 0}, "decode_extra"),
        ({"train_tasks": []}, "training split"),
        ({"train_tasks": ["add99"]}, "no training means"),
        ({"arms": {MAIN[0]: ["onto_unit"]}}, "no arms given"),
    ],
)
def test_projection_tests_refuses_bad_input(kw, match):
    kw = dict(kw)
    ex = kw.pop("examples", _examples()[:2])
    args = dict(
        heads=MAIN,
        c_star=C_STAR,
        selected=SELECTED,
        train_tasks=TRAIN,
        fits=_fits(),
        arms=["onto_unit"],
        layer=LAYER,
    )
    args.update(kw)
    with pytest.raises(AddkError, match=match):
        P.projection_tests(_ctx(args), ex, _means("heldout"), _means("train"), **args)


def test_refuses_fit_of_another_head_and_missing_eval_means():
    fits = {MAIN[0]: _fits()[MAIN[1]], MAIN[1]: _fits()[MAIN[1]]}
    with pytest.raises(AddkError, match="was fit on"):
        _run(fits=fits, arms=["onto_unit"])
    ex = [Example("add3", 3, (("1", "4"),), "2", "5")]
    with pytest.raises(AddkError, match="no evaluation means"):
        P.projection_tests(
            EvalContext(tiny(SPEC), layer=LAYER),
            ex,
            _means("heldout"),
            _means("train"),
            heads=MAIN,
            c_star=C_STAR,
            selected=SELECTED,
            train_tasks=TRAIN,
            arms=["onto_unit"],
        )


def test_paired_counts_and_default_arms():
    ok = np.array([1, 1, 0, 0, 1], dtype=bool)
    ref = np.array([1, 0, 1, 0, 0], dtype=bool)
    assert P.paired_counts(ok, ref) == (2, 1)
    assert P.paired_counts(ref, ok) == (1, 2)
    res = P.projection_tests(
        EvalContext(tiny(SPEC), layer=LAYER),
        _examples()[:2],
        _means("heldout"),
        _means("train"),
        heads=MAIN[:1],
        c_star=C_STAR,
        selected=SELECTED,
        train_tasks=TRAIN,
        fits=_fits(),
        decompose=False,
        center="fit",
    )
    assert res.arms(MAIN[0]) == (*P.CONTROL_ARMS, *P.DEFAULT_ARMS)
    assert res.errors_reason.startswith("disabled")
    assert res.meta["center"] == "fit"
    assert np.isclose(res.meta["center_norm"]["L1H2"], np.linalg.norm(_fits()[MAIN[0]].mean))
    for s in res.summaries:
        assert (s.b, s.d) == P.paired_counts(
            res.outcomes(MAIN[0], s.arm), res.outcomes(MAIN[0], "unprojected")
        )
