"""Head sets (paper_spec §4.1, §4.5, §4.6) and the AIE baseline (§4.7) on tiny models:
each fast path is checked against an explicit evaluation with plain hooks."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import tiny

from addk_interp.core.errors import AddkError
from addk_interp.core.scoring import evaluate
from addk_interp.core.tasks import arithmetic_family, sample_family
from addk_interp.hooks.capture import capture_means
from addk_interp.hooks.context import EvalContext
from addk_interp.hooks.fv import evaluate_fv
from addk_interp.hooks.interventions import mean_ablate, replace_heads
from addk_interp.localize import aie as A
from addk_interp.localize import gates as G
from addk_interp.localize import headsets as HS

TRAIN = ("add1", "add3", "add4", "add5")
HELDOUT = ("add2", "add6")
HEADS = [(0, 1), (1, 2), (2, 0), (2, 3)]
SPEC = "tiny-llama"
LAYER = 1
_CACHE = {}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Ops on tiny models are so small that thread start-up dominates: one thread is ~3× faster
    on a shared CPU. Restored afterwards for the other test modules."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _family():
    fam = arithmetic_family("add", ks=[1, 2, 3, 4, 5, 6])
    return dataclasses.replace(fam, train=TRAIN, heldout=HELDOUT)


def _means(spec=SPEC, split="train"):
    key = ("means", spec, split)
    if key not in _CACHE:
        fam = _family()
        tasks = fam.train if split == "train" else fam.heldout
        ex = sample_family(fam, tasks, 6, 3, seed=1, kind=f"activation-{split}")
        _CACHE[key] = capture_means(tiny(spec), ex)
    return _CACHE[key]


def _examples(tasks, n=3, kind="scan"):
    return sample_family(_family(), tasks, n, 3, seed=42, kind=kind)


def _scan(stack_c=True, heads=HEADS, logprob=True):
    key = ("scan", stack_c, tuple(heads), logprob)
    if key not in _CACHE:
        _CACHE[key] = HS.recovery_scan(
            EvalContext(tiny(SPEC), layer=LAYER),
            _examples(TRAIN),
            _means(),
            heads,
            train_tasks=TRAIN,
            c_max=3,
            stack_c=stack_c,
            logprob=logprob,
        )
    return _CACHE[key]


# ----------------------------------------------------------------------------- scan


def test_scan_c0_equals_all_others_at_mean_evaluation():
    model, ex, means = tiny(SPEC), _examples(TRAIN), _means()
    scan = _scan()
    assert scan.c_grid == (0, 1, 2, 3) and scan.n_eval == len(ex)
    assert scan.meta["forward_path"] == "upper"
    bar = means.cross_task_mean(TRAIN)
    for head in HEADS:
        v = sum(bar[o] for o in HEADS if o != head)
        df = evaluate_fv(model, ex, {t: v for t in TRAIN}, layer=LAYER)
        assert np.array_equal(scan.outcomes[head][0], df["correct"].to_numpy())
        lp = scan.meta["mean_answer_logprob"][f"L{head[0]}H{head[1]}"][0]
        assert abs(lp - df["answer_logprob"].mean()) < 1e-4
    full = evaluate_fv(
        model, ex, {t: sum(means.of(t)[h] for h in HEADS) for t in TRAIN}, layer=LAYER
    )
    assert scan.full_selected_correct == int(full["correct"].sum())
    assert scan.meta["full_selected_outcomes"] == "".join(
        "1" if c else "0" for c in full["correct"]
    )
    assert scan.clean_correct == int(evaluate(model, ex)["correct"].sum())
    # c = 2 for one head: 2·mean_t[h] + the others at their cross-task mean
    h = HEADS[1]
    vecs = {t: 2 * means.of(t)[h] + sum(bar[o] for o in HEADS if o != h) for t in TRAIN}
    df2 = evaluate_fv(model, ex, vecs, layer=LAYER)
    lp2 = scan.meta["mean_answer_logprob"][f"L{h[0]}H{h[1]}"][2]
    assert abs(lp2 - df2["answer_logprob"].mean()) < 1e-4


def test_scan_batched_over_c_equals_one_c_at_a_time():
    a, b = _scan(stack_c=True), _scan(stack_c=False)
    for head in HEADS:
        assert np.array_equal(a.outcomes[head], b.outcomes[head])
        key = f"L{head[0]}H{head[1]}"
        assert np.allclose(
            a.meta["mean_answer_logprob"][key], b.meta["mean_answer_logprob"][key], atol=1e-5
        )
    assert a.meta["stacked_over_c"] and not b.meta["stacked_over_c"]
    fast = _scan(logprob=False)  # positions unembedded only while the answer still matches
    assert fast.meta["mean_answer_logprob"] is None
    for head in HEADS:
        assert np.array_equal(fast.outcomes[head], a.outcomes[head])


def test_scan_refusals():
    model, ex, means = tiny(SPEC), _examples(TRAIN, 1), _means()
    empty = HS.SelectedSet((), {}, "largest_gap", 3, 5, "empty", "all |coef| are 0")
    with pytest.raises(AddkError, match="all .coef. are 0"):
        HS.recovery_scan(model, ex, means, empty, train_tasks=TRAIN)
    with pytest.raises(AddkError, match="training tasks only"):
        HS.recovery_scan(model, _examples(HELDOUT, 1), means, HEADS, train_tasks=TRAIN)
    with pytest.raises(AddkError, match="c_max"):
        HS.recovery_scan(model, ex, means, HEADS, train_tasks=TRAIN, c_max=0)
    with pytest.raises(AddkError, match="training split is empty"):
        HS.recovery_scan(model, ex, means, HEADS, train_tasks=[])
    bad = dataclasses.replace(means, means=means.means.clone())
    bad.means[0, 1, 2, 3] = float("nan")
    with pytest.raises(AddkError, match="NaN"):
        HS.recovery_scan(model, ex, bad, HEADS, train_tasks=TRAIN)
    with pytest.raises(AddkError, match="does not exist"):
        HS.recovery_scan(model, ex, means, [(9, 9)], train_tasks=TRAIN)


def test_select_heads_verdicts():
    cfg = G.gate_config("default", layer=LAYER, select_rule="largest_gap")
    zeros = torch.zeros(4, 3, 4)

    def fit(coefs):
        return G.GateFit("coef", cfg, LAYER, coefs, coefs[0], coefs[-1], (), (), "fp", "upper")

    none = HS.select_heads(fit(zeros))
    assert none.empty and none.verdict == "empty" and none.reason
    c = zeros.clone()
    c[:, 1, 2], c[:, 2, 0], c[:, 0, 0] = 0.9, 0.8, 0.05
    c[-1, 2, 0] = 0.0  # the last epoch alone would differ; the mean of the last 3 decides
    sel = HS.select_heads(fit(c))
    assert sel.verdict == "selected" and sel.heads == ((1, 2), (2, 0)) and sel.k == 3
    assert sel.to_dict()["n_selected"] == 2
    nan = c.clone()
    nan[-1, 0, 0] = float("nan")
    with pytest.raises(AddkError, match="NaN"):
        HS.select_heads(fit(nan))


# ----------------------------------------------------------------------------- head-set evals


def test_headset_evals_match_explicit_fv_evaluations():
    model = tiny(SPEC)
    ex = _examples(HELDOUT, 3, kind="final_eval")
    held, train = _means(split="heldout"), _means()
    raw = torch.zeros(model.n_layers, model.n_heads)
    for h in HEADS:
        raw[h] = 1.0
    res = HS.headset_evals(
        EvalContext(model, layer=LAYER),
        ex,
        held,
        train,
        train_tasks=TRAIN,
        selected=HEADS,
        main=HEADS[:2],
        raw_coef=raw,
    )
    names = [s.condition for s in res.summary]
    assert names == ["clean", "full_selected", "raw_coef", "main_meanab", "mean_fv", "zero_shot"]
    full = evaluate_fv(
        model, ex, {t: sum(held.of(t)[h] for h in HEADS) for t in HELDOUT}, layer=LAYER
    )
    assert np.array_equal(res.per_example["full_selected"], full["correct"])
    assert np.array_equal(res.per_example["raw_coef"], res.per_example["full_selected"])
    bar = train.cross_task_mean(TRAIN)
    mm = {t: sum(held.of(t)[h] for h in HEADS[:2]) + bar[HEADS[2]] + bar[HEADS[3]] for t in HELDOUT}
    assert np.array_equal(
        res.per_example["main_meanab"], evaluate_fv(model, ex, mm, layer=LAYER)["correct"]
    )
    s = res.get("full_selected")
    assert s.n == len(ex) and s.both_correct + s.only_condition + s.only_clean + s.neither == s.n
    assert s.ci_low <= s.accuracy <= s.ci_high
    assert res.get("clean").accuracy == evaluate(model, ex)["correct"].mean()
    with pytest.raises(AddkError, match="not in the selected set"):
        HS.headset_evals(
            model, ex, held, train, train_tasks=TRAIN, selected=HEADS[:1], main=HEADS[1:2]
        )


# ----------------------------------------------------------------------------- necessity


def test_necessity_empty_ablation_equals_clean_and_main_matches_explicit():
    model, train = tiny(SPEC), _means()
    ex = _examples(HELDOUT, 3, kind="final_eval")
    clean = evaluate(model, ex)
    none = HS.necessity(model, ex, train, train_tasks=TRAIN, main=[], selected=HEADS)
    assert none.main_acc == none.clean_acc == clean["correct"].mean()
    assert none.meta["main_outcomes"] == none.meta["clean_outcomes"]
    assert none.random_subsets == () and "nothing ablated" in none.verdict
    main = HEADS[:1]
    res = HS.necessity(model, ex, train, train_tasks=TRAIN, main=main, selected=HEADS, n_random=5)
    zbar = train.cross_task_mean(TRAIN, z=True)
    ref = evaluate(model, ex, hooks_fn=lambda b: mean_ablate(model, main, b.query_pos, zbar))
    assert res.meta["main_outcomes"] == "".join("1" if c else "0" for c in ref["correct"])
    assert len(res.random_subsets) == len(res.random_accs) == 5
    assert all(len(s) == 1 and s[0] in HEADS[1:] for s in res.random_subsets)
    again = HS.necessity(model, ex, train, train_tasks=TRAIN, main=main, selected=HEADS, n_random=5)
    assert again.random_subsets == res.random_subsets and again.random_accs == res.random_accs
    few = HS.necessity(model, ex, train, train_tasks=TRAIN, main=HEADS[:3], selected=HEADS)
    assert few.random_subsets == () and "not enough" in few.verdict


# ----------------------------------------------------------------------------- AIE


def test_corrupt_labels_are_derangements():
    ex = _examples(TRAIN, 4, kind="aie_corrupted")
    out, fixed = A.corrupt_labels(ex, seed=42)
    assert fixed == [0] * len(ex)
    for a, b in zip(ex, out):
        assert [x for x, _ in a.demos] == [x for x, _ in b.demos] and a.query == b.query
        assert sorted(y for _, y in a.demos) == sorted(y for _, y in b.demos)
        assert all(ya != yb for (_, ya), (_, yb) in zip(a.demos, b.demos))
    assert A.corrupt_labels(ex, seed=42)[0] == out
    one = [e.with_demos(e.demos[:1]) for e in ex[:2]]
    assert A.corrupt_labels(one)[1] == [1, 1]


@pytest.mark.parametrize("spec", ["tiny-llama", "tiny-gemma3"])
def test_aie_cie_equals_explicit_replacement(spec):
    model, means = tiny(spec), _means(spec)
    ex = _examples(TRAIN, 2, kind="aie_corrupted")
    res = A.aie_scan(model, ex, means, train_tasks=TRAIN, chunk_size=5)
    assert res.cie.shape == (len(TRAIN), model.n_layers, model.n_heads)
    assert res.meta["fixed_points"]["max"] == 0
    corrupted, _ = A.corrupt_labels(ex, seed=42)
    base = evaluate(model, corrupted)["first_token_prob"].to_numpy()
    tix = torch.tensor([means.task_index(e.task) for e in corrupted])
    for layer, head in [(0, 1), (2, 3)]:

        def hooks_fn(b, layer=layer, head=head):
            z = means.z_means[tix[b.indices]]
            return replace_heads(model, [(layer, head)], b.query_pos, z)

        p = evaluate(model, corrupted, hooks_fn=hooks_fn)["first_token_prob"].to_numpy()
        for ti, t in enumerate(res.tasks):
            m = np.array([e.task == t for e in corrupted])
            assert abs(res.cie[ti, layer, head].item() - (p[m] - base[m]).mean()) < 1e-5
    assert torch.allclose(res.aie, res.cie.mean(0))
    rank = res.ranking()
    assert rank[0] == tuple(int(i) for i in np.unravel_index(int(res.aie.argmax()), res.aie.shape))
    assert all(res.aie[a] >= res.aie[b] for a, b in zip(rank, rank[1:]))


def test_aie_topk_eval_and_refusals(tmp_path):
    model, means, held = tiny(SPEC), _means(), _means(split="heldout")
    res = A.aie_scan(model, _examples(TRAIN, 1, kind="aie_corrupted"), means, train_tasks=TRAIN)
    back = A.AIEResult.load(res.save(tmp_path / "aie"), model)
    assert torch.equal(back.aie, res.aie) and back.ranking() == res.ranking()
    ex = _examples(HELDOUT, 2, kind="final_eval")
    out = A.aie_topk_eval(EvalContext(model, layer=LAYER), res, ex, held, ks=(3, 1))
    top3 = res.top(3)
    ref = evaluate_fv(
        model, ex, {t: sum(held.of(t)[h] for h in top3) for t in HELDOUT}, layer=LAYER
    )
    assert out[3].accuracy == ref["correct"].mean() and list(out[3].heads) == top3
    with pytest.raises(AddkError, match="used to rank"):
        A.aie_topk_eval(model, res, _examples(TRAIN, 1), means, ks=(3,))
    with pytest.raises(AddkError, match="k must lie"):
        A.aie_topk_eval(model, res, ex, held, ks=(99,))
    with pytest.raises(AddkError, match="training tasks only"):
        A.aie_scan(model, ex, means, train_tasks=TRAIN)


def test_head_sets_from_scan_and_bad_scans(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    lo = rng.random(n) < 0.05
    up = np.stack([lo, rng.random(n) < 0.6, rng.random(n) < 0.9])
    flat = np.stack([lo, lo, lo])
    scan = HS.RecoveryScan.from_outcomes(
        c_grid=[0, 1, 2],
        outcomes={(1, 2): up, (2, 0): flat},
        clean_correct=36,
        full_selected_correct=30,
    )
    sets = HS.head_sets(scan)
    assert sets.main.main == [(1, 2)] and sets.selected == ((1, 2), (2, 0))
    assert sets.significant.significant == [(1, 2)]
    assert sets.to_dict()["main"]["verdict"] == "localized"
    counts_only = HS.RecoveryScan.from_accuracies(
        c_grid=[0, 1], n_eval=4, clean_acc=1.0, full_selected_acc=1.0, acc={(0, 0): [0.0, 0.5]}
    )
    with pytest.raises(AddkError, match="per-example outcomes"):
        HS.head_sets(counts_only)
    bad = tmp_path / "scan.json"
    bad.write_text(
        '{"n_eval": 4, "c_grid": [0, 1], "clean_correct": 4, "full_selected_fv_correct": 3,'
        ' "correct": {"1:2": [0, NaN]}}'
    )
    with pytest.raises(AddkError, match="NaN"):
        HS.head_sets(str(bad))
