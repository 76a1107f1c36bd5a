"""``addk-interp sweep``: 2 models x 2 families through submitit's local executor (one subprocess
per cell), the gathered table against every cell's own run files, cached re-submission, a
failing cell reported (debug executor, in-process) and the boundary refusals."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from addk_interp.cli.main import main
from addk_interp.pipeline.sweep import (
    SweepResult,
    SweepSpec,
    cell_name,
    make_executor,
    plan_sweep,
)
from addk_interp.report.summary import summarize_run

MODELS = ("tiny-llama", "organism")
FAMILIES = ("add", "sub")
SIZES = ["--quick", "--n-eval", "2", "--n-capture", "2"]


def _argv(out, *extra):
    argv = ["sweep"]
    for m in MODELS:
        argv += ["--model", m]
    for f in FAMILIES:
        argv += ["--family", f]
    return [*argv, "--seed", "42", *SIZES, "--out", str(out), *extra]


def _versions(out):
    return {
        c: json.loads((out / "cells" / c / "manifest.json").read_text())["versions"]["addk_interp"]
        for c in (cell_name(m, f, 42) for m in MODELS for f in FAMILIES)
    }


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "s"
    rc = main(_argv(out, "--executor", "local", "--timeout-min", "20"))
    return out, rc


def _summary(run_dir) -> dict:
    return {q: v for q, v, _ in summarize_run(run_dir)}


def test_local_sweep_gathers_four_cells_matching_their_run_files(sweep, capsys):
    out, rc = sweep
    assert rc == 0
    res = SweepResult.load(out)
    assert [(r.model, r.family, r.seed) for r in res.rows] == [
        (m, f, 42) for m in MODELS for f in FAMILIES
    ]
    assert all(r.ok and r.error is None for r in res.rows)
    # the cells ran in submitit's local executor: one job (subprocess) per cell, with its log
    sub = out / "submitit"
    assert len(list(sub.glob("*_submitted.pkl"))) >= 4
    logs = [p.read_text() for p in sub.glob("*_0_log.out")]
    assert sum("Job completed successfully" in t for t in logs) >= 4
    for r in res.rows:
        d = out / "cells" / r.cell
        assert r.cell == f"{r.model}__{r.family}__seed42"
        man = json.loads((d / "manifest.json").read_text())
        assert man["config"]["model"] == r.model and man["config"]["family"] == r.family
        assert man["config"]["n_eval"] == 2 and man["config"]["preset"] == "quick"
        assert r.n_stages == len(man["stages"]) - 1 == 12  # the report is not a stage
        # clean accuracy and FV: recomputed from the cell's CSVs
        acc = pd.read_csv(d / "stages" / "clean_eval" / "accuracy.csv")
        assert r.clean_accuracy == pytest.approx(acc[acc["shots"] == 5]["accuracy"].mean())
        fv = pd.read_csv(d / "stages" / "fv_eval" / "fv_summary.csv")
        held = fv[fv["split"] == "heldout"].set_index("condition")
        assert r.fv_heldout == pytest.approx(held.loc["all_heads_unit", "fv_accuracy"])
        assert r.zero_shot_heldout == pytest.approx(held.loc["zero_shot_no_fv", "fv_accuracy"])
        # heads, verdict, subspace: the same as `addk-interp summary` of that cell
        s = _summary(d)
        sel = next(v for q, v in s.items() if q.startswith("selected heads"))
        assert sel == f"{len(r.selected)}: " + ", ".join(r.selected)
        assert all(re.fullmatch(r"L\d+H\d+", h) for h in r.selected + r.main + r.significant)
        assert s["localization verdict"] == r.verdict
        assert s["significant heads (McNemar + BH)"].split(":")[0] == str(len(r.significant))
        main_txt = s["main heads (quarter-of-best-gain) [gain]"]
        assert [h.split(" [")[0] for h in main_txt.split(", ")] == (list(r.main) or ["none"])
        pcs = s[f"{r.analysis_head}: PCs for 95% / R² per target / peak periods"].split(" / ")
        assert pcs[0] == str(r.pcs_95)
        assert pcs[-1] == ", ".join(f"{p:g}" for p in r.peak_periods)
    # the organism solves add/sub in context; the random tiny model does not
    by = {(r.model, r.family): r for r in res.rows}
    assert by["organism", "add"].clean_accuracy > 0.5 > by["tiny-llama", "add"].clean_accuracy
    # the tables: markdown, CSV (round trip), self-contained HTML
    md = (out / "sweep.md").read_text()
    assert sum(ln.startswith("| ") and " · seed 42 |" in ln for ln in md.splitlines()) == 4
    assert SweepResult.load(out / "sweep.csv").rows == res.rows
    page = (out / "sweep.html").read_text()
    assert page.count('<tr class="ok">') == 4 and "<script" not in page


def test_resubmission_reuses_every_finished_stage(sweep, capsys):
    out, rc = sweep
    assert rc == 0
    before = _versions(out)
    capsys.readouterr()
    assert main(_argv(out, "--executor", "local", "--timeout-min", "20")) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "__seed42" in ln]
    assert len(lines) == 4  # one status line per cell
    after = _versions(out)
    res = SweepResult.load(out)
    for r in res.rows:
        man = json.loads((out / "cells" / r.cell / "manifest.json").read_text())
        statuses = [s["status"] for s in man["stages"] if s["name"] != "report"]
        if before[r.cell] == after[r.cell]:
            assert r.cached_stages == r.n_stages == 12, statuses
            assert set(statuses) == {"cached"}
            assert "12/12 stages cached" in next(ln for ln in lines if r.cell in ln)
        else:  # another engineer edited the package in between: the code key changed
            assert r.cached_stages == 0 and "cached" not in statuses


def test_a_failing_cell_is_a_row_with_its_error_and_exit_1(tmp_path, capsys):
    import torch

    threads = torch.get_num_threads()
    out = tmp_path / "s"
    argv = ["sweep", "--model", "tiny-llama", "--model", "no-such-org/no-such-model"]
    argv += ["--family", "add", "--seed", "3", *SIZES, "--executor", "debug", "--out", str(out)]
    rc = main(argv)
    text = capsys.readouterr().out
    assert rc == 1 and "1 of 2 cells failed" in text, text
    assert torch.get_num_threads() == threads  # the in-process cell restored the thread count
    res = SweepResult.load(out / "sweep.json")
    ok, bad = res.rows
    assert ok.ok, ok.error
    assert ok.n_stages == 12 and (out / "cells" / ok.cell / "manifest.json").exists()
    assert bad.status == "failed" and "could not load 'no-such-org/no-such-model'" in bad.error
    assert "\n" not in bad.error and bad.selected == () and bad.clean_accuracy is None
    trace = (out / "errors" / f"{bad.cell}.txt").read_text()
    assert "Traceback" in trace
    assert "| failed |" in (out / "sweep.md").read_text()
    assert '<tr class="failed">' in (out / "sweep.html").read_text()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "no-such-model"], "unknown model spec 'no-such-model'"),
        (["--model", "tiny-llama", "--family", "div"], "unknown task family 'div'"),
        (
            ["--model", "tiny-llama", "--model", "tiny-llama"],
            "duplicate cell tiny-llama__add__seed42",
        ),
        (["--model", "tiny-llama", "--seed", "1", "--seed", "1"], "duplicate cell"),
        (["--model", "tiny-llama", "--seed", "-1"], "--seed must be an integer in 0.."),
        (["--model", "tiny-llama", "--k", "31-40"], "outside the add family"),
        (
            ["--model", "tiny-llama", "--slurm-partition", "gpu"],
            "--slurm-partition needs --executor slurm",
        ),
        (["--model", "tiny-llama", "--timeout-min", "0"], "--timeout-min must be positive"),
        (["--model", "tiny-llama", "--dtype", "int8"], "dtype must be one of"),
        (["--model", "tiny-llama", "--preset", "paper", "--quick"], "--quick and --preset"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(tmp_path, capsys, extra, message):
    out = tmp_path / "s"
    assert main(["sweep", *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_unwritable_or_foreign_out_and_missing_sbatch_are_refused(tmp_path, capsys, monkeypatch):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["sweep", "--model", "tiny-llama", "--out", str(f / "s")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["sweep", "--model", "tiny-llama", "--out", str(foreign)]) == 2
    assert "holds no addk-interp sweep" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    out = tmp_path / "s"
    assert main(["sweep", "--model", "tiny-llama", "--executor", "slurm", "--out", str(out)]) == 2
    assert "needs Slurm's sbatch and srun on PATH" in capsys.readouterr().err
    assert not out.exists()
    for tool in ("sbatch", "srun"):  # a login node (fake tools: nothing is submitted below)
        (tmp_path / tool).write_text("#!/bin/sh\nexit 1\n")
        (tmp_path / tool).chmod(0o755)
    argv = ["sweep", "--model", "tiny-llama", "--executor", "slurm", "--device", "cuda"]
    assert main([*argv, "--out", str(out)]) == 2
    assert "needs --slurm-gpus-per-node" in capsys.readouterr().err
    assert not out.exists()
    # what would be submitted: the partition, GPUs, time limit and one thread per cell job
    spec = SweepSpec(
        models=("default",),
        executor="slurm",
        slurm_partition="gpu",
        slurm_gpus_per_node=1,
        device="cuda",
        timeout_min=90,
    )
    assert len(plan_sweep(spec, out)) == 1
    params = make_executor(spec, tmp_path / "submitit").parameters
    assert params["partition"] == "gpu" and params["gpus_per_node"] == 1
    assert params["time"] == 90 and params["cpus_per_task"] == 1
    assert "export OMP_NUM_THREADS=1" in params["setup"]


def test_plan_names_cells_and_refuses_a_device_this_machine_lacks(tmp_path, monkeypatch):
    spec = SweepSpec(models=("tiny-llama", "org/name"), families=("add", "mul"), seeds=(0, 7))
    cells = plan_sweep(spec, tmp_path / "s")
    assert [c.name for c in cells][:3] == [
        "tiny-llama__add__seed0",
        "tiny-llama__add__seed7",
        "tiny-llama__mul__seed0",
    ]
    assert cells[-1].name == "org-name__mul__seed7" and len(cells) == 8
    assert all(Path(c.out).parent == (tmp_path / "s" / "cells").absolute() for c in cells)
    assert not (tmp_path / "s").exists()
    import torch

    from addk_interp.core.errors import AddkError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(AddkError, match="CUDA is not available"):
        plan_sweep(SweepSpec(models=("tiny-llama",), device="cuda"), tmp_path / "s")
