"""Robustness: every bad input is refused with an ``AddkError`` naming the problem (CLI: one line
on stderr, exit code 2, nothing written); same seed → bitwise identical gates; a run killed in
the middle of a stage and re-run ends with the same artifacts as an uninterrupted run (atomic
writes, no leftovers); no pickle anywhere; the HTML report escapes task and model names.

Tiny random models only (plus the shipped organism, < 1 s to load); about a minute of CPU.
"""

from __future__ import annotations

import ast
import dataclasses
import html
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import _CACHE, TINY, tiny

from addk_interp.cli.main import main
from addk_interp.core.errors import AddkError
from addk_interp.hooks.context import EvalContext

os.environ["HF_HUB_OFFLINE"] = "1"
ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "addk_interp"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny-model ops are dominated by thread start-up; one thread is faster and is what the
    kill-and-resume comparison needs (the child process runs with one thread too)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def cached_models(monkeypatch):
    """CLI commands load their model by spec; serve tiny models / the organism from the
    conftest cache so each CLI case does not pay a model load."""
    import addk_interp.models.loading as models

    real = models.load_model

    def load(spec="default", **kw):
        plain = kw.get("backend", "bridge") == "bridge" and kw.get("dtype") in (None, torch.float32)
        if plain and (spec in TINY or spec == "organism"):
            key = (spec, torch.float32)
            if key not in _CACHE:
                _CACHE[key] = real(spec)
            return _CACHE[key]
        return real(spec, **kw)

    monkeypatch.setattr(models, "load_model", load)


@pytest.fixture
def no_model_load(monkeypatch):
    """Inputs that can be validated without a model must be refused before one is loaded."""
    import addk_interp.models.loading as models

    def load(*a, **kw):
        raise AssertionError("a model was loaded before the inputs were validated")

    monkeypatch.setattr(models, "load_model", load)


def refused(capsys, argv, phrase, prefix="addk-interp: error:"):
    """CLI refusal: exit code 2, exactly one error line on stderr naming ``phrase``, no
    traceback, nothing on stdout."""
    rc = main(argv)
    cap = capsys.readouterr()
    err_lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert rc == 2, (rc, cap.out, cap.err)
    assert "Traceback" not in cap.err
    assert [ln for ln in err_lines if ln.startswith(prefix)] == err_lines[-1:], cap.err
    assert err_lines[-1].startswith(prefix), cap.err
    assert phrase in err_lines[-1], cap.err
    assert cap.out == ""
    return err_lines[-1]


def snapshot(d: Path) -> dict:
    """Every entry under ``d`` with its bytes and mtime (to prove nothing was touched)."""
    out = {}
    for p in sorted(d.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(d))] = (p.read_bytes() if p.is_file() else None, st.st_mtime_ns)
    return out


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ============================================================================ CLI, no model


@pytest.mark.parametrize(
    "argv, phrase",
    [
        (["eval", "--model", "tiny-llama", "--k", "0-40"], "outside the add family"),
        (["eval", "--model", "tiny-llama", "--k", "5-1"], "empty range '5-1'"),
        (["eval", "--model", "tiny-llama", "--k", "1-x"], "cannot parse '1-x'"),
        (["eval", "--model", "tiny-llama", "--k", ","], "no values in ','"),
        (["eval", "--model", "tiny-llama", "--k", "1", "--shots=-1"], "shots must be ≥ 0"),
        (
            ["eval", "--model", "tiny-llama", "--k", "1", "--shots", "150"],
            "150 shots need 151 distinct inputs",
        ),
        (["eval", "--model", "tiny-llama", "--k", "1", "--n", "0"], "--n must be positive"),
        (
            ["eval", "--model", "tiny-llama", "--k", "1", "--format", "bogus"],
            "unknown prompt format 'bogus'",
        ),
        (["eval", "--model", "tiny-llama", "--family", "div"], "unknown task family 'div'"),
        (["fv", "--model", "tiny-llama", "--heads", "zz", "--k", "1-3"], "cannot parse head 'zz'"),
        (
            ["fv", "--model", "tiny-llama", "--heads", "0.1", "--coef", "1,2", "--k", "1-3"],
            "--coef needs one value per head",
        ),
        (["run", "--model", "tiny-llama", "--out", "{tmp}/r", "--shots", "0"], "--shots must be"),
    ],
)
def test_cli_refuses_before_loading_a_model(capsys, no_model_load, tmp_path, argv, phrase):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    refused(capsys, argv, phrase)
    assert list(tmp_path.iterdir()) == []


def test_cli_unknown_model_spec(capsys):
    line = refused(capsys, ["info", "--model", "no-such-model"], "unknown model spec")
    assert "tiny-llama" in line and "organism" in line  # lists the valid specs


def test_cli_offline_hub_name(capsys):
    refused(capsys, ["info", "--model", "nobody/no-such-model-xyz"], "could not load")


@pytest.mark.parametrize(
    "content, phrase",
    [
        ('[{"input": 1, "output": 2},', "not valid JSON"),
        ("", "not valid JSON"),
        ("[]", "expected a non-empty list"),
        ('{"input": 1, "output": 2}', "expected a non-empty list"),
        ('[{"input": 1}, {"input": 2, "output": 3}]', "item 0 must be an object with exactly"),
        ('[{"x": 1, "y": 2}, {"x": 2, "y": 3}]', "item 0 must be an object with exactly"),
        ('[{"input": 1, "output": [2]}, {"input": 2, "output": 3}]', "item 0: input and output"),
        ('[{"input": " ", "output": 2}, {"input": 2, "output": 3}]', "empty input or output"),
        ('[{"input": 1, "output": 2}, {"input": 1, "output": 3}]', "two different outputs"),
        ('[{"input": 1, "output": 2}]', "need at least two distinct examples"),
    ],
)
def test_cli_malformed_task_file(capsys, no_model_load, tmp_path, content, phrase):
    f = _write(tmp_path / "task.json", content)
    line = refused(capsys, ["eval", "--model", "tiny-llama", "--task-file", str(f)], phrase)
    assert "task.json" in line  # names the file


def test_cli_task_file_dir_and_heldout(capsys, no_model_load, tmp_path):
    (tmp_path / "empty").mkdir()
    refused(
        capsys,
        ["eval", "--model", "tiny-llama", "--task-file", str(tmp_path / "empty")],
        "no JSON task files",
    )
    refused(
        capsys,
        ["eval", "--model", "tiny-llama", "--task-file", str(tmp_path / "missing.json")],
        "task file not found",
    )
    ok = _write(tmp_path / "t" / "ok.json", json.dumps([{"input": i, "output": i} for i in (1, 2)]))
    refused(
        capsys,
        ["eval", "--model", "tiny-llama", "--task-file", str(ok), "--heldout", "nope"],
        "held-out tasks not in the family: ['nope']",
    )


# ============================================================================ CLI, with a model


def test_cli_prompt_longer_than_context(capsys, cached_models):
    # organism: n_ctx 128; 40 demonstrations of ~4 tokens each do not fit
    refused(
        capsys,
        ["eval", "--model", "organism", "--k", "1", "--shots", "40", "--n", "1", "--quiet"],
        "exceeds the model's context of 128",
    )


def test_cli_answer_the_tokenizer_cannot_represent(capsys, cached_models, tmp_path):
    # the organism knows 0..999 only; mul-30 answers reach 3000 (its tokenizer would silently
    # split 2000 into "200" "0")
    line = refused(
        capsys,
        ["eval", "--model", "organism", "--family", "mul", "--k", "30", "--shots", "2"]
        + ["--n", "5", "--quiet"],
        "cannot represent",
    )
    assert "outside the vocabulary" in line
    words = _write(
        tmp_path / "plural.json",
        json.dumps([{"input": w, "output": w + "s"} for w in ("cat", "dog", "cow")]),
    )
    refused(
        capsys,
        ["eval", "--model", "organism", "--task-file", str(words), "--shots", "1", "--quiet"],
        "cannot represent",
    )


def test_cli_heads_and_layers(capsys, cached_models):
    base = ["fv", "--model", "tiny-llama-gqa", "--k", "1-3", "--n", "2", "--quiet"]
    refused(capsys, base + ["--heads", "0.9"], "head L0H9 does not exist")
    refused(capsys, base + ["--heads", "7.0"], "head L7H0 does not exist")
    refused(capsys, base + ["--heads", "0.1", "--layer", "7"], "--layer 7 out of range 0..2")
    refused(capsys, base + ["--heads", "0.1", "--layer", "-1"], "--layer -1 out of range")
    refused(capsys, base + ["--heads", "L1H99"], "head L1H99 does not exist")
    refused(capsys, base + ["--heads", "1.x"], "cannot parse head '1.x'")
    refused(capsys, base + ["--heads", "L0H1,0.1"], "head L0H1 is listed twice")
    refused(capsys, base + ["--heads", "L0H1", "--coef", "a"], "--coef must be comma-separated")
    refused(capsys, base + ["--heads", "L0H1", "--coef", "nan"], "--coef values must be finite")
    refused(
        capsys,
        ["fv", "--model", "tiny-neox", "--heads", "L0H1", "--k", "1-3", "--n", "2", "--quiet"],
        "parallel attention and MLP",
    )
    refused(
        capsys,
        ["info", "--model", "organism", "--backend", "hooked"],
        "backend 'hooked' is not available",
    )


def test_cli_means_from_another_model(capsys, cached_models, tmp_path):
    from addk_interp.core.tasks import arithmetic_family, sample_family
    from addk_interp.hooks.capture import capture_means

    fam = arithmetic_family("add", ks=[2])
    ex = sample_family(fam, ["add2"], 2, 2, seed=0, kind="x")
    p = capture_means(tiny("tiny-llama"), ex).save(tmp_path / "means.safetensors")
    refused(
        capsys,
        ["fv", "--model", "tiny-llama-gqa", "--heads", "0.1", "--k", "1-3", "--n", "2"]
        + ["--means", str(p), "--quiet"],
        "head means come from model fingerprint",
    )


def _nan_scan(path: Path) -> Path:
    text = json.dumps(
        {
            "n_eval": 4,
            "c_grid": [0, 1, 2],
            "clean_correct": 3,
            "full_selected_fv_correct": 2,
            "correct": {"0:1": [1, float("nan"), 2], "1:2": [0, 1, 1]},
        }
    )
    assert "NaN" in text
    return _write(path, text)


def test_cli_heads_scan_with_nan(capsys, no_model_load, tmp_path):
    refused(capsys, ["heads", "--scan", str(_nan_scan(tmp_path / "s.json"))], "count is NaN")
    refused(capsys, ["heads", "--scan", str(tmp_path / "none.json")], "scan file not found")
    refused(capsys, ["heads", "--scan", str(_write(tmp_path / "b.json", "{"))], "not valid JSON")


def test_cli_run_refuses_foreign_directory_untouched(capsys, no_model_load, tmp_path):
    out = tmp_path / "mine"
    _write(out / "notes.txt", "my notes")
    _write(out / "sub" / "data.csv", "a,b\n1,2\n")
    before = snapshot(out)
    time.sleep(0.01)
    refused(
        capsys,
        ["run", "--model", "tiny-llama", "--out", str(out), "--quick", "--quiet"],
        "holds no addk-interp run (no run.json)",
    )
    assert snapshot(out) == before


def test_cli_run_refuses_run_of_another_model_untouched(capsys, no_model_load, tmp_path):
    out = tmp_path / "run"
    _write(out / "run.json", json.dumps({"model": "tiny-llama", "config": {}}))
    _write(out / "stages" / "clean_eval" / "done.json", json.dumps({"key": "x"}))
    before = snapshot(out)
    refused(
        capsys,
        ["run", "--model", "tiny-llama-gqa", "--out", str(out), "--quick", "--quiet"],
        "holds a run of model 'tiny-llama', not 'tiny-llama-gqa'",
    )
    assert snapshot(out) == before
    refused(
        capsys,
        ["run", "--model", "tiny-llama", "--out", str(out / "run.json"), "--quick"],
        "is not a directory",
    )
    assert snapshot(out) == before


def test_cli_run_bad_k_writes_nothing(capsys, no_model_load, tmp_path):
    out = tmp_path / "new"
    refused(
        capsys,
        ["run", "--model", "tiny-llama", "--out", str(out), "--k", "0-3", "--quick", "--quiet"],
        "outside the add family",
    )
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, phrase",
    [
        (["--layer", "99"], "--layer 99 out of range"),
        (["--format", "bogus"], "unknown prompt format"),
        (["--shots", "200"], "200 shots need 201 distinct inputs"),
    ],
)
def test_cli_run_late_refusals_write_nothing(capsys, cached_models, tmp_path, extra, phrase):
    out = tmp_path / "new"
    argv = ["run", "--model", "tiny-llama", "--out", str(out), "--quick", "--quiet"]
    argv += ["--k", "1-3", "--n-eval", "1", "--n-capture", "1", "--batch-size", "8"] + extra
    refused(capsys, argv, phrase)
    assert not out.exists(), sorted(str(p.relative_to(out)) for p in out.rglob("*"))


def test_cli_train_organism_refusals_write_nothing(capsys, tmp_path):
    out = tmp_path / "org"
    refused(
        capsys,
        ["train-organism", "--out", str(out), "--steps", "0", "--quiet"],
        "steps and batch_size must be positive",
        prefix="train-organism: error:",
    )
    refused(
        capsys,
        ["train-organism", "--out", str(out), "--steps", "10", "--warmup-steps", "50"],
        "warmup_steps must be in [0, steps]",
        prefix="train-organism: error:",
    )
    refused(
        capsys,
        ["train-organism", "--out", str(out), "--recipe", "bogus"],
        "unknown --recipe 'bogus'",
        prefix="train-organism: error:",
    )
    assert not out.exists()


def test_cli_run_parallel_attention_model_writes_nothing(capsys, tmp_path):
    out = tmp_path / "neox"
    argv = ["run", "--model", "tiny-neox", "--out", str(out), "--quick", "--quiet", "--k", "1-3"]
    refused(capsys, argv, "no resid_mid site")
    assert not out.exists()


def test_cli_entry_point_subprocess(tmp_path):
    """The installed ``addk-interp`` script: exit code 2, one line on stderr, no traceback."""
    exe = Path(sys.executable).parent / "addk-interp"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "addk_interp.cli.main"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    r = subprocess.run(
        cmd + ["eval", "--model", "tiny-llama", "--k", "0-40", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("addk-interp: error: k 0, 31..40 outside the add family")
    assert not (tmp_path / "o").exists()


# ============================================================================ API


def test_prompt_longer_than_context_and_unrepresentable_answer():
    from addk_interp.core.prompts import encode
    from addk_interp.core.tasks import Example, render

    m = tiny("tiny-llama")  # character-level tokenizer, n_ctx 512
    long = Example("t", None, (("1" * 300, "2"),), "1" * 300, "3")
    with pytest.raises(AddkError, match="exceeds the model's context of 512"):
        encode(m, render(long))
    with pytest.raises(AddkError, match=r"cannot represent '€'"):
        encode(m, render(Example("t", None, (("1", "2"),), "3", "€4")))
    org = tiny("organism")
    with pytest.raises(AddkError, match="cannot represent.*'1000'.*outside the vocabulary"):
        encode(org, render(Example("add1", 1, (("5", "6"),), "999", "1000")))
    encode(org, render(Example("add1", 1, (("5", "6"),), "998", "999")))  # the largest is fine


def test_sampling_refusals():
    from addk_interp.core.tasks import arithmetic_family, parse_k_range, sample_family

    fam = arithmetic_family("add", ks=[1, 2])
    with pytest.raises(AddkError, match="shots must be ≥ 0, got -1"):
        sample_family(fam, ["add1"], 2, -1, seed=0, kind="x")
    with pytest.raises(AddkError, match="100 shots need 101 distinct inputs"):
        sample_family(fam, ["add1"], 2, 100, seed=0, kind="x")
    with pytest.raises(AddkError, match="tasks not in family add"):
        sample_family(fam, ["add7"], 2, 1, seed=0, kind="x")
    with pytest.raises(AddkError, match="k 31 outside the add family"):
        arithmetic_family("add", ks=parse_k_range("30-31"))


def test_function_vector_width_and_injection_layer():
    from addk_interp.core.tasks import arithmetic_family, sample_family
    from addk_interp.hooks.fv import evaluate_fv
    from addk_interp.hooks.interventions import inject

    m = tiny("tiny-llama")  # d_model 64, 3 layers
    with pytest.raises(AddkError, match="vector width 65 does not match d_model=64"):
        inject(m, torch.zeros(65), 3, 1)
    with pytest.raises(AddkError, match="injection layer 3 out of range 0..2"):
        inject(m, torch.zeros(64), 3, 3)
    with pytest.raises(AddkError, match="injection layer -1 out of range"):
        inject(m, torch.zeros(64), 3, -1)
    fam = arithmetic_family("add", ks=[2])
    ex = sample_family(fam, ["add2"], 2, 2, seed=0, kind="x")
    with pytest.raises(AddkError, match="vector width 32 does not match d_model=64"):
        evaluate_fv(m, ex, {"add2": torch.zeros(32)}, layer=1)
    with pytest.raises(AddkError, match="no function vector for tasks \\['add2'\\]"):
        evaluate_fv(m, ex, {"add1": torch.zeros(64)}, layer=1)


def test_project_head_basis_checks():
    from addk_interp.hooks.interventions import project_head

    m = tiny("tiny-llama")
    e = torch.eye(64)
    with pytest.raises(AddkError, match="not orthonormal"):
        project_head(m, (1, 2), 3, 2 * e[:, :1])
    with pytest.raises(AddkError, match="rank-deficient"):
        project_head(m, (1, 2), 3, torch.stack([e[:, 0], e[:, 0]], 1))
    with pytest.raises(AddkError, match="basis must be \\[d_model, k\\] with k ≥ 1"):
        project_head(m, (1, 2), 3, torch.zeros(64, 0))
    with pytest.raises(AddkError, match="basis width 32 != d_model 64"):
        project_head(m, (1, 2), 3, torch.eye(32)[:, :2])
    with pytest.raises(AddkError, match="head L1H4 does not exist"):
        project_head(m, (1, 4), 3, e[:, :2])
    with pytest.raises(AddkError, match="basis contains NaN or inf"):
        project_head(m, (1, 2), 3, torch.full((64, 2), float("nan")))
    with pytest.raises(AddkError, match="mean must be a finite"):
        project_head(m, (1, 2), 3, e[:, :2], torch.full((64,), float("inf")))
    # post-norm models are supported now (the effect tests compare them with plain HF hooks)
    assert len(project_head(tiny("tiny-gemma3"), (1, 2), 3, e[:, :2])) == 2


# ----------------------------------------------------------------------------- gates


TRAIN, HELDOUT = ("add1", "add3", "add4", "add5"), ("add2", "add6")


def _gate_family():
    from addk_interp.core.tasks import arithmetic_family

    fam = arithmetic_family("add", ks=[1, 2, 3, 4, 5, 6])
    return dataclasses.replace(fam, train=TRAIN, heldout=HELDOUT)


def _capture(spec, tasks):
    from addk_interp.core.tasks import sample_family
    from addk_interp.hooks.capture import capture_means

    ex = sample_family(_gate_family(), tasks, 4, 2, seed=1, kind="activation")
    return capture_means(tiny(spec), ex)


def _gate_cfg(**kw):
    from addk_interp.localize.gates import gate_config

    base = dict(n_items=16, batch_size=8, epochs=2, n_monitor=0, lr=0.05, seed=7, layer=1)
    base.update(kw)
    return gate_config("default", **base)


def _fit(seed=7, spec="tiny-llama", **kw):
    """A gate fit computed from scratch (means captured anew each time)."""
    from addk_interp.localize.gates import fit_gates

    means = _capture(spec, TRAIN)
    return fit_gates(tiny(spec), _gate_family(), means, None, _gate_cfg(seed=seed), **kw)


def test_gate_determinism_same_seed_bitwise():
    from addk_interp.localize.headsets import select_heads

    a, b, c = _fit(7, verbose=False), _fit(7, verbose=False), _fit(8, verbose=False)
    assert torch.equal(a.coefficients, b.coefficients)
    assert torch.equal(a.param, b.param) and torch.equal(a.init, b.init)
    assert a.history == b.history and a.steps == b.steps
    sa, sb = select_heads(a), select_heads(b)
    assert sa.heads == sb.heads and sa.cut == sb.cut
    # another seed starts elsewhere (its result may or may not differ)
    assert not torch.equal(a.init, c.init)


def test_gate_refusals(tmp_path):
    from addk_interp.localize.gates import GateFit, gate_config

    with pytest.raises(AddkError, match="lam \\(the L1 weight λ\\) must be ≥ 0, got -0.1"):
        gate_config("default", lam=-0.1)
    with pytest.raises(AddkError, match="lam must be a finite number"):
        gate_config("default", lam=float("nan"))
    # resume from the checkpoints of another configuration
    ck = tmp_path / "ck"
    fit = _fit(7, checkpoint_dir=ck, verbose=False)
    assert sorted(p.name for p in ck.glob("*.json")) == ["epoch_0001.json", "epoch_0002.json"]
    from addk_interp.localize.gates import fit_gates

    means = _capture("tiny-llama", TRAIN)
    with pytest.raises(AddkError, match="holds checkpoints of another gate-training run.*lam"):
        fit_gates(
            tiny("tiny-llama"),
            _gate_family(),
            means,
            None,
            _gate_cfg(lam=0.2),
            checkpoint_dir=ck,
            verbose=False,
        )
    # NaN in the means
    bad = dataclasses.replace(means, means=means.means.clone())
    bad.means[0, 0, 0, 0] = float("nan")
    with pytest.raises(AddkError, match="NaN or inf"):
        fit_gates(tiny("tiny-llama"), _gate_family(), bad, None, _gate_cfg(), verbose=False)
    # a head set (gate fit) from a model with another fingerprint
    path = fit.save(tmp_path / "gates.safetensors")
    with pytest.raises(AddkError, match="model_fingerprint mismatch"):
        GateFit.load(path, tiny("tiny-llama-gqa"))
    _headset_evals_refuse_foreign_fit(GateFit.load(path))


def _headset_evals_refuse_foreign_fit(fit_of_llama):
    from addk_interp.core.tasks import sample_family
    from addk_interp.localize.headsets import headset_evals

    gqa = tiny("tiny-llama-gqa")  # same [3, 4] head grid as tiny-llama, other weights
    assert fit_of_llama.model_fingerprint != gqa.info.fingerprint
    ex = sample_family(_gate_family(), ["add2"], 2, 2, seed=3, kind="final_eval")
    with pytest.raises(AddkError, match="gate fit of model fingerprint"):
        headset_evals(
            EvalContext(gqa, layer=1),
            ex,
            _capture("tiny-llama-gqa", ["add2"]),
            _capture("tiny-llama-gqa", TRAIN),
            train_tasks=TRAIN,
            selected=[(0, 1), (2, 3)],
            main=[(0, 1)],
            raw_coef=fit_of_llama,
        )


def test_head_means_from_another_model(tmp_path):
    from addk_interp.core.tasks import sample_family
    from addk_interp.hooks.capture import HeadMeans
    from addk_interp.hooks.fv import check_means_model
    from addk_interp.localize.headsets import recovery_scan

    means = _capture("tiny-llama", TRAIN)
    p = means.save(tmp_path / "m.safetensors")
    gqa = tiny("tiny-llama-gqa")
    with pytest.raises(AddkError, match="model_fingerprint mismatch"):
        HeadMeans.load(p, gqa)
    with pytest.raises(AddkError, match="head means come from model fingerprint"):
        check_means_model(gqa, HeadMeans.load(p))
    ex = sample_family(_gate_family(), TRAIN, 1, 1, seed=0, kind="scan")
    with pytest.raises(AddkError, match="head means come from model fingerprint"):
        recovery_scan(gqa, ex, means, [(0, 1)], train_tasks=TRAIN, c_max=2)
    with pytest.raises(AddkError, match="head L3H0 does not exist"):
        recovery_scan(tiny("tiny-llama"), ex, means, [(3, 0)], train_tasks=TRAIN, c_max=2)


# ----------------------------------------------------------------------------- selectors


def test_scan_with_nan_is_refused(tmp_path):
    from addk_interp.localize.headsets import head_sets
    from addk_interp.localize.selectors import RecoveryScan

    with pytest.raises(AddkError, match="s.json: head 0:1\\[1\\]: count is NaN"):
        head_sets(str(_nan_scan(tmp_path / "s.json")))
    with pytest.raises(AddkError, match="count is NaN"):
        RecoveryScan(
            c_grid=(0, 1),
            n_eval=4,
            clean_correct=2,
            full_selected_correct=2,
            correct={(0, 1): [1, float("nan")]},
        )
    with pytest.raises(AddkError, match="must be finite"):
        RecoveryScan.from_accuracies(
            c_grid=(0, 1),
            n_eval=4,
            clean_acc=0.5,
            full_selected_acc=0.5,
            acc={(0, 1): [0.25, math.nan]},
        )


# ----------------------------------------------------------------------------- analyses


def test_pca_fewer_tasks_than_components_and_period_at_most_one():
    from addk_interp.analyses.pca import fit_head_pca
    from addk_interp.analyses.periodic import periodogram

    x = np.random.default_rng(0).normal(size=(3, 8))
    with pytest.raises(AddkError, match="fewer tasks \\(3\\) than requested components \\(5\\)"):
        fit_head_pca(x, [1, 2, 3], n_components=5, head=(1, 2))
    with pytest.raises(AddkError, match="needs at least 2 tasks"):
        fit_head_pca(x[:1], [1])
    y = np.random.default_rng(1).normal(size=(6, 3))
    for bad in ([1, 2, 3], [0.5, 4], [2, -3]):
        with pytest.raises(AddkError, match="every period must be a finite number > 1"):
            periodogram(y, [1, 2, 3, 4, 5, 6], periods=bad)


def test_demos_need_numeric_few_shot_prompts():
    from addk_interp.analyses import demos
    from addk_interp.core.tasks import Example

    m = tiny("tiny-llama")
    g = np.random.default_rng(0)
    ref = demos.offset_reference({k: g.normal(size=64) for k in (1, 2, 3)}, n_components=2)
    zero = [Example("add1", 1, (), "5", "6")]
    with pytest.raises(AddkError, match="example 0 has no demonstrations"):
        demos.offset_readout(m, (1, 2), zero, ref)
    words = [Example("plural", None, (("cat", "cats"),), "dog", "dogs")]
    with pytest.raises(AddkError, match="offset analysis needs numeric labels \\(got 'cat'\\)"):
        demos.offset_readout(m, (1, 2), words, ref)
    with pytest.raises(AddkError, match="numeric labels"):
        demos.corrupt_example(words[0], 0, 3)
    with pytest.raises(AddkError, match="no examples"):
        demos.offset_readout(m, (1, 2), [], ref)
    with pytest.raises(AddkError, match="shots ≥ 1"):
        demos.mixed_offset_examples([1, 2], 3, 0)


def test_train_organism_refusals_write_nothing(tmp_path):
    from addk_interp.organism import TrainConfig, train_organism

    with pytest.raises(AddkError, match="unknown task family \\['div'\\] in task_mix"):
        TrainConfig(task_mix=(("div", 1.0),))
    out = tmp_path / "org"
    with pytest.raises(AddkError, match="produces 3000, outside the vocabulary range 0..999"):
        train_organism(
            out, TrainConfig(mul_k_range=(2, 30), steps=1, warmup_steps=0), verbose=False
        )
    with pytest.raises(AddkError, match="outside the vocabulary range 0..999"):
        train_organism(out, TrainConfig(x_range=(1, 1200), steps=1, warmup_steps=0), verbose=False)
    assert not out.exists()


# ============================================================================ no pickle


def test_no_pickle_and_torch_load_weights_only():
    bad = []
    pickle_modules = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve"}
    files = sorted(PKG.rglob("*.py"))
    assert len(files) > 20
    for f in files:
        tree = ast.parse(f.read_text(), filename=str(f))
        for node in ast.walk(tree):
            where = f"{f.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                bad += [f"{where} import {a.name}" for a in node.names if a.name in pickle_modules]
            elif isinstance(node, ast.ImportFrom) and (node.module or "") in pickle_modules:
                bad.append(f"{where} from {node.module} import")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                name = node.func.attr
                kw = {k.arg: k.value for k in node.keywords}
                is_torch = isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                if is_torch and name == "load":
                    v = kw.get("weights_only")
                    if not (isinstance(v, ast.Constant) and v.value is True):
                        bad.append(f"{where} torch.load without weights_only=True")
                if name in ("read_pickle", "to_pickle"):
                    bad.append(f"{where} .{name}(")
                v = kw.get("allow_pickle")
                if isinstance(v, ast.Constant) and v.value is True:
                    bad.append(f"{where} allow_pickle=True")
        # textual fallback: every literal torch.load( call was seen by the AST check above
        text = f.read_text()
        n_text = text.count("torch.load(")
        n_ok = text.count("weights_only=True")
        if n_text > n_ok:
            bad.append(f"{f.relative_to(ROOT)}: {n_text} torch.load( but {n_ok} weights_only=True")
    assert not bad, "\n".join(bad)


# ============================================================================ kill and resume

_CHILD = r"""
import json, sys, time
from pathlib import Path

import torch

torch.set_num_threads(1)
from addk_interp.localize.gates import training as gates
from addk_interp.pipeline.run import Run, RunConfig

out, marker, cfg = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
orig = gates._write_checkpoint


def paused(directory, epoch, state, meta):
    orig(directory, epoch, state, meta)
    if epoch == 1:  # mid-stage: one gate checkpoint written, the localize stage not done
        marker.write_text("paused")
        time.sleep(600)


gates._write_checkpoint = paused
Run(RunConfig(**cfg), out, verbose=False).execute()
"""
_RUN_CFG = dict(
    model="tiny-llama", k="1-4", shots=2, n_eval=2, n_capture=2, preset="quick", batch_size=8
)
_VOLATILE = {"wall_s", "peak_rss_mb", "timing", "status", "notes"}  # notes: timings, resume point


def _norm(o):
    if isinstance(o, dict):
        return {k: _norm(v) for k, v in o.items() if k not in _VOLATILE}
    if isinstance(o, list):
        return [_norm(v) for v in o]
    if isinstance(o, float) and math.isnan(o):
        return "NaN"
    return o


def _content(p: Path):
    """A file's content for comparison: JSON without timing fields, safetensors tensors
    (dtype, shape, bytes) + metadata, anything else its bytes."""
    if p.suffix == ".json":
        return _norm(json.loads(p.read_text()))
    if p.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
        meta_json = _norm(json.loads(meta.pop("_meta_json", "{}")))
        tensors = {
            k: (str(t.dtype), tuple(t.shape), t.contiguous().numpy().tobytes())
            for k, t in load_file(str(p)).items()
        }
        return tensors, meta_json, sorted(meta)
    if p.suffix == ".csv":
        import pandas as pd

        pd.read_csv(p)  # parses
    return p.read_bytes()


def _files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


def _leftovers(d: Path) -> list[str]:
    return [
        os.path.join(r, n)
        for r, _, names in os.walk(d)
        for n in names
        if n.endswith(".tmp") or ".tmp" in n
    ]


def test_kill_mid_stage_then_rerun_gives_the_same_artifacts(tmp_path):
    from addk_interp.pipeline import run as pipeline
    from addk_interp.pipeline.run import Run, RunConfig

    # stage keys hash the package source (once per process): take it now, as the child will
    if hasattr(getattr(pipeline, "code_version", None), "cache_clear"):
        pipeline.code_version.cache_clear()
    script = _write(tmp_path / "child.py", _CHILD)
    killed, ref, marker = tmp_path / "killed", tmp_path / "ref", tmp_path / "paused"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    log = open(tmp_path / "child.log", "w")
    child = subprocess.Popen(
        [sys.executable, str(script), str(killed), str(marker), json.dumps(_RUN_CFG)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        # the uninterrupted reference, in this process, while the child starts up
        Run(RunConfig(**_RUN_CFG), ref, verbose=False).execute()
        deadline = time.time() + 400
        while not marker.exists():
            assert child.poll() is None, (tmp_path / "child.log").read_text()
            assert time.time() < deadline, "the child never reached the localize stage"
            time.sleep(0.1)
        assert (killed / "stages" / "capture" / "done.json").exists()
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        log.close()

    # killed mid-stage: earlier stages done, localize has a checkpoint but is not done
    assert not (killed / "stages" / "localize" / "done.json").exists()
    assert list((killed / "stages" / "localize").glob("checkpoints-*/epoch_0001.json"))
    assert not (killed / "manifest.json").exists() and not (killed / "report.html").exists()
    assert _leftovers(killed) == []
    for rel in _files(killed):  # nothing half-written: every artifact parses
        _content(killed / rel)

    # re-run to completion in the killed directory
    Run(RunConfig(**_RUN_CFG), killed, verbose=False).execute()
    man = json.loads((killed / "manifest.json").read_text())
    status = {s["name"]: s["status"] for s in man["stages"]}
    assert status["clean_eval"] == status["capture"] == status["fv_eval"] == "cached"
    assert status["localize"] == "done"
    done = json.loads((killed / "stages" / "localize" / "done.json").read_text())
    assert done["notes"]["gates"]["resumed_from_epoch"] == 1

    assert _leftovers(killed) == [] and _leftovers(ref) == []
    assert _files(killed) == _files(ref)
    diff = [
        rel
        for rel in _files(ref)
        if rel != "report.html" and _content(ref / rel) != _content(killed / rel)
    ]
    assert diff == [], f"artifacts differ after kill + re-run: {diff}"


# ============================================================================ HTML escaping

EVIL_MODEL = "<img src=x onerror=alert(1)>"
EVIL_TASKS = ["<script>alert(1)<\\script>", "<b onmouseover=alert(2)>x"]


def test_report_escapes_task_and_model_names(tmp_path):
    """Task names are JSON file stems ('/' cannot occur, so '</script>' cannot either); the model
    name is a local model directory's name. Neither may reach report.html unescaped."""
    from addk_interp.models.tiny import tiny_hf_model, tiny_tokenizer
    from addk_interp.pipeline.run import Run, RunConfig

    mdir = tmp_path / EVIL_MODEL
    tok = tiny_tokenizer()
    tiny_hf_model("tiny-llama", len(tok), seed=0).save_pretrained(mdir)
    tok.save_pretrained(mdir)
    tdir = tmp_path / "tasks"
    names = [*EVIL_TASKS, "held"]
    for i, name in enumerate(names):
        pairs = [{"input": x, "output": x + i + 1} for x in range(1, 16)]
        _write(tdir / f"{name}.json", json.dumps(pairs))
    cfg = RunConfig(
        model=str(mdir),
        family="json",
        k=None,
        task_file=(str(tdir),),
        heldout=("held",),
        shots=2,
        n_eval=2,
        n_capture=2,
        preset="quick",
        batch_size=8,
    )
    report = Run(cfg, tmp_path / "run", verbose=False).execute()
    text = report.read_text()
    for raw in [EVIL_MODEL, *EVIL_TASKS]:
        assert raw not in text, f"unescaped {raw!r} in report.html"
    assert html.escape(EVIL_MODEL) in text  # the model name is shown, escaped
    assert any(html.escape(t) in text for t in EVIL_TASKS)  # and the task names
    for tag in ("<img", "<b ", "<script>alert"):
        assert tag not in text
    shutil.rmtree(tmp_path / "run")


# ----------------------------------------------------------------------------- boundary checks
@pytest.mark.parametrize(
    "argv,phrase",
    [
        (["eval", "--model", "tiny-llama", "--seed", "-1", "--k", "1-3", "--n", "2"], "--seed must be an integer in 0.."),
        (["eval", "--model", "tiny-llama", "--k", "1-100000000", "--n", "2"], "has 100000000 values (at most 10000)"),
        (["eval", "--model", "tiny-llama", "--k", "1-3", "--n", "1000000000"], "--n must be positive and at most 100000"),
        (["eval", "--model", "tiny-llama", "--task-file", "--n", "2"], "--task-file needs at least one"),
        (["fv", "--model", "tiny-llama", "--heads", "L0H1", "--seed", "-3", "--k", "1-3"], "--seed must be an integer"),
    ],
)
def test_cli_bounds_refused(capsys, argv, phrase):
    refused(capsys, argv, phrase)


@pytest.mark.parametrize(
    "extra,phrase",
    [
        (["--seed", "-5"], "--seed must be an integer in 0.."),
        (["--dtype", "nn"], "dtype must be one of float32"),
        (["--dtype", "int8"], "dtype must be one of float32"),
        (["--device", "bogus"], "unknown device 'bogus'"),
        (["--n-eval", "1000000000"], "--n-eval must be positive and at most 100000"),
    ]
    + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "CUDA is not available")]),
)
def test_cli_run_boundary_refusals_write_nothing(capsys, tmp_path, extra, phrase):
    out = tmp_path / "fresh"
    refused(capsys, ["run", "--model", "tiny-llama", "--out", str(out), "--quiet"] + extra, phrase)
    assert not out.exists()


def test_task_files_untrusted(capsys, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    pairs = '[{"input": "1", "output": "2"}, {"input": "2", "output": "3"}]'
    (tmp_path / "a" / "t.json").write_text(pairs)
    (tmp_path / "b" / "t.json").write_text(pairs)
    (tmp_path / "bool.json").write_text('[{"input": true, "output": "1"}, {"input": "2", "output": "3"}]')
    (tmp_path / "latin.json").write_bytes(b"\xe9\xe9")
    base = ["eval", "--model", "tiny-llama", "--n", "2", "--task-file"]
    refused(capsys, base + [str(tmp_path / "a" / "t.json"), str(tmp_path / "b" / "t.json")], "same task name ['t']")
    refused(capsys, base + [str(tmp_path / "bool.json")], "not booleans")
    refused(capsys, base + [str(tmp_path / "latin.json")], "not UTF-8 text")


def test_load_model_device_and_dtype_refused_in_the_api():
    from addk_interp.models.loading import load_model

    with pytest.raises(AddkError, match="unknown device"):
        load_model("tiny-llama", device="bogus")
    with pytest.raises(AddkError, match="dtype must be one of"):
        load_model("tiny-llama", dtype=torch.int8)
    if not torch.cuda.is_available():
        with pytest.raises(AddkError, match="CUDA is not available"):
            load_model("tiny-llama", device="cuda")


def test_run_directory_heals_missing_or_changed_outputs(tmp_path):
    """done.json records each output's sha256: a truncated, deleted or hand-edited output makes
    its stage recompute (and say why) instead of a traceback or a silently wrong report."""
    import json as _json

    out = tmp_path / "heal"
    argv = ["run", "--model", "tiny-llama", "--out", str(out), "--quick", "--quiet"]
    argv += ["--k", "1-3", "--n-eval", "1", "--n-capture", "1", "--batch-size", "8"]
    assert main(argv) == 0
    st = out / "stages"
    means = st / "capture" / "means_train.safetensors"
    good = means.read_bytes()
    sel = st / "localize" / "selected.json"
    sel_good = sel.read_text()
    means.write_bytes(good[: len(good) // 2])  # truncated
    sel.write_text(sel_good.replace('"heads": [', '"heads": [[99, 99], ', 1))  # hand-edited
    assert main(argv) == 0
    man = _json.loads((out / "manifest.json").read_text())
    status = {s["name"]: s["status"] for s in man["stages"]}
    assert status["capture"].startswith("recomputed (stages/capture/means_train.safetensors changed")
    assert status["localize"].startswith("recomputed (stages/localize/selected.json changed")
    assert status["clean_eval"] == "cached"
    assert means.read_bytes() == good and sel.read_text() == sel_good
    sel.unlink()
    assert main(argv) == 0
    man = _json.loads((out / "manifest.json").read_text())
    assert {s["name"]: s["status"] for s in man["stages"]}["localize"] == (
        "recomputed (stages/localize/selected.json is missing)"
    )
    assert sel.read_text() == sel_good
    assert "L99H99" not in (out / "report.html").read_text()
    # a cached re-run rewrites a byte-identical report (fixed plotly div ids)
    before = (out / "report.html").read_bytes()
    assert main(argv) == 0
    assert (out / "report.html").read_bytes() == before


def test_untrusted_files_give_one_line_errors(capsys, tmp_path):
    from addk_interp.hooks.capture import HeadMeans
    from addk_interp.models.loading import load_model

    bad_cfg = tmp_path / "badcfg"
    bad_cfg.mkdir()
    (bad_cfg / "config.json").write_text("{not json")
    refused(capsys, ["info", "--model", str(bad_cfg)], "not a readable JSON model config")
    no_tok = tmp_path / "notok"
    no_tok.mkdir()
    (no_tok / "config.json").write_text('{"model_type": "llama"}')
    refused(capsys, ["info", "--model", str(no_tok)], "no usable tokenizer")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf file at all")
    refused(capsys, ["info", "--model", str(fake)], "is not a GGUF file")
    # a truncated safetensors artifact names the file
    m = load_model("tiny-llama")
    fam_means = tmp_path / "means.safetensors"
    from addk_interp.core.tasks import arithmetic_family, sample_family
    from addk_interp.hooks.capture import capture_means

    fam = arithmetic_family("add", ks=[1, 2])
    capture_means(m, sample_family(fam, ["add1"], 2, 1, seed=0, kind="activation")).save(fam_means)
    fam_means.write_bytes(fam_means.read_bytes()[:100])
    with pytest.raises(AddkError, match="corrupt or truncated safetensors"):
        HeadMeans.load(fam_means)
    refused(
        capsys,
        ["fv", "--model", "tiny-llama", "--heads", "L0H1", "--k", "1-3", "--n", "2",
         "--means", str(fam_means), "--quiet"],
        "corrupt or truncated safetensors",
    )


def test_summary_of_a_run_with_an_empty_table(capsys, tmp_path):
    out = tmp_path / "r"
    argv = ["run", "--model", "tiny-llama", "--out", str(out), "--quick", "--quiet"]
    argv += ["--k", "1-3", "--n-eval", "1", "--n-capture", "1", "--batch-size", "8"]
    assert main(argv) == 0
    capsys.readouterr()
    (out / "stages" / "clean_eval" / "accuracy.csv").write_text("")
    refused(capsys, ["summary", str(out)], "accuracy.csv: unreadable table")


def test_short_messages_and_unwritable_out(capsys, tmp_path, monkeypatch):
    line = refused(capsys, ["eval", "--model", "tiny-llama", "--k", "1-1000", "--n", "2"], "k 31..1000 outside")
    assert len(line) < 200
    # --out below a file: refused before any work (real, whatever the user's rights)
    f = tmp_path / "afile"
    f.write_text("x")
    refused(capsys, ["run", "--model", "tiny-llama", "--out", str(f / "r"), "--quick"], "is not a directory")
    # --out in a directory this user cannot write (simulated: the suite may run as root)
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(ro) else real(p, mode))
    refused(capsys, ["eval", "--model", "tiny-llama", "--k", "1-3", "--n", "2", "--out", str(ro / "o")], "is not writable")
    refused(capsys, ["run", "--model", "tiny-llama", "--out", str(ro / "r"), "--quick"], "is not writable")
    assert list(ro.iterdir()) == []


def test_gate_heads_boundary():
    """gate_heads: positions outside the prompt, mis-shaped or non-finite mean values → one-line
    AddkError (before: a shape-mismatch RuntimeError / raw IndexError)."""
    from addk_interp.hooks.interventions import gate_heads

    m = tiny("tiny-llama")
    L, H, D = m.n_layers, m.n_heads, m.info.d_head
    toks = m.to_tokens("12->13")
    g = torch.full((L, H), 0.5)
    src = torch.zeros(1, L, H, D)
    for pos in (toks.shape[1], -toks.shape[1] - 1):
        with pytest.raises(AddkError, match="outside the prompt"):
            m.logits_at(toks, [toks.shape[1] - 1], fwd_hooks=gate_heads(m, g, pos, src))
    with pytest.raises(AddkError, match=r"z_source must end in"):
        gate_heads(m, g, 0, torch.zeros(1, L, H, D + 1))
    with pytest.raises(AddkError, match="NaN or inf"):
        gate_heads(m, g, 0, torch.full((1, L, H, D), float("nan")))
    # a negative position inside the prompt is the same as its positive index
    a = m.logits_at(toks, [toks.shape[1] - 1], fwd_hooks=gate_heads(m, g, -1, src))
    b = m.logits_at(toks, [toks.shape[1] - 1], fwd_hooks=gate_heads(m, g, toks.shape[1] - 1, src))
    assert torch.equal(a, b)
