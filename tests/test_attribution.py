"""Attribution patching is the first-order term of the exact mean-ablation effect; the
single-head ablation scan is exact; bad inputs are refused."""

import numpy as np
import pytest
import torch
from conftest import tiny

from addk_interp.core.errors import AddkError
from addk_interp.core.prompts import encode_examples, make_batches
from addk_interp.core.tasks import arithmetic_family, sample_family
from addk_interp.hooks.capture import capture_means, z_hook_name
from addk_interp.localize.attribution import HeadScores, attribution_patching, single_head_ablation

TASKS = ["add3", "add5"]


def _setup(spec, dtype=torch.float32):
    model = tiny(spec, dtype)
    fam = arithmetic_family("add", ks=[3, 5])
    ex = sample_family(fam, TASKS, 6, 2, seed=0, kind="test")
    means = capture_means(model, sample_family(fam, TASKS, 6, 2, seed=1, kind="activation"))
    return model, fam, ex, means


def _metric(model, ex, hooks_for):
    tot = 0.0
    for b in make_batches(encode_examples(model, ex), 64):
        lg = model.logits_at(b.tokens, b.score_positions[: b.answer_len], hooks_for(b))
        lp = torch.log_softmax(lg.double(), -1).gather(-1, b.answer_ids[..., None]).sum()
        tot += float(lp)
    return tot / len(ex)


@pytest.mark.parametrize("spec", ["tiny-llama-gqa", "tiny-gemma3"])
def test_atp_is_the_derivative_of_the_exact_effect(spec):
    model, _, ex, means = _setup(spec, torch.float64)  # fp64: a clean central difference
    atp = attribution_patching(model, ex, means, train_tasks=TASKS)
    zbar = means.cross_task_mean(TASKS, z=True).double()
    for layer, head in [(0, 1), (2, 3)]:

        def hooks(b, eps, layer=layer, head=head):
            def fn(z, hook):
                z = z.clone()
                q = b.query_pos
                z[:, q, head] = z[:, q, head] + eps * (zbar[layer, head] - z[:, q, head])
                return z

            return [(z_hook_name(layer), fn)]

        eps = 1e-2  # central difference; HF attention softmax runs in float32
        fd = (
            _metric(model, ex, lambda b: hooks(b, eps)) - _metric(model, ex, lambda b: hooks(b, -eps))
        ) / (2 * eps)
        assert atp.scores[layer, head] == pytest.approx(fd, rel=1e-3, abs=1e-6)
    assert np.isfinite(atp.scores).all() and np.abs(atp.scores).max() > 1e-3


def test_single_head_ablation_is_exact_and_roundtrips(tmp_path):
    model, _, ex, means = _setup("tiny-llama")
    zbar = means.cross_task_mean(TASKS, z=True)
    res = single_head_ablation(model, ex, means, train_tasks=TASKS, heads=["L1H2", (0, 3)])
    base = _metric(model, ex, lambda b: [])

    def hooks(b):
        def fn(z, hook):
            z = z.clone()
            z[:, b.query_pos, 2] = zbar[1, 2]
            return z

        return [(z_hook_name(1), fn)]

    assert res.scores[1, 2] == pytest.approx(_metric(model, ex, hooks) - base, abs=1e-4)
    assert np.isnan(res.scores[0, 0]) and np.isfinite(res.scores[0, 3])
    p = res.save(tmp_path / "s.json")
    back = HeadScores.load(p)
    assert np.array_equal(np.isnan(back.scores), np.isnan(res.scores))
    assert back.ranking()[0] in {(1, 2), (0, 3)}


def test_bad_inputs():
    model, _, ex, means = _setup("tiny-llama")
    with pytest.raises(AddkError, match="does not exist"):
        single_head_ablation(model, ex, means, train_tasks=TASKS, heads=["L1H99"])
    with pytest.raises(AddkError, match="cannot parse"):
        single_head_ablation(model, ex, means, train_tasks=TASKS, heads=["1.x"])
    with pytest.raises(AddkError, match="training split is empty"):
        attribution_patching(model, ex, means, train_tasks=[])
    with pytest.raises(AddkError, match="fingerprint"):
        attribution_patching(tiny("tiny-gemma3"), ex, means, train_tasks=TASKS)
