"""The run pipeline, fv CLI, means persistence and refusals on tiny models."""

import json

import pytest
import torch
from conftest import tiny

from addk_interp.cli.main import main
from addk_interp.core.errors import AddkError
from addk_interp.core.tasks import arithmetic_family, sample_family
from addk_interp.hooks.capture import HeadMeans, capture_means
from addk_interp.hooks.fv import check_means_model, function_vector
from addk_interp.pipeline.stages import STAGE_NAMES


def test_run_quick_caches_and_refuses(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "run",
        "--model",
        "tiny-llama-gqa",
        "--out",
        str(out),
        "--quick",
        "--quiet",
        "--n-eval",
        "3",
        "--n-capture",
        "3",
    ]
    assert main(argv) == 0
    man = json.loads((out / "manifest.json").read_text())
    names = [s["name"] for s in man["stages"]]
    # the order is the registry's (pipeline.stages.STAGES), then the report
    assert names == [*STAGE_NAMES, "report"]
    assert all(
        s["status"] == "done" and "wall_s" in s and "peak_rss_mb" in s for s in man["stages"]
    )
    html = (out / "report.html").read_text()
    assert "plotly" in html and "tiny-llama-gqa" in html
    # re-run: cached; a changed config recomputes the dependent stages only
    assert main(argv) == 0
    man = json.loads((out / "manifest.json").read_text())
    n = len(names) - 1
    assert [s["status"] for s in man["stages"][:n]] == ["cached"] * n
    assert main(argv + ["--layer", "0"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert [s["status"] for s in man["stages"][:n]] == ["cached", "cached"] + ["done"] * (n - 2)
    # another model into the same directory is refused, nothing overwritten
    before = (out / "manifest.json").read_text()
    assert main(["run", "--model", "tiny-llama", "--out", str(out), "--quick", "--quiet"]) == 2
    assert (out / "manifest.json").read_text() == before
    assert "holds a run of model" in capsys.readouterr().err


def test_run_refuses_foreign_dir(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("mine")
    assert main(["run", "--model", "tiny-llama", "--out", str(tmp_path), "--quick"]) == 2
    assert "no run.json" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_means_roundtrip_and_fingerprint(tmp_path):
    m = tiny("tiny-llama-gqa")
    fam = arithmetic_family("add", ks=[1, 3])
    ex = sample_family(fam, fam.tasks, 4, 2, seed=0, kind="activation")
    means = capture_means(m, ex)
    p = means.save(tmp_path / "m.safetensors")
    back = HeadMeans.load(p, m)
    assert torch.equal(back.means, means.means) and back.tasks == means.tasks
    other = tiny("tiny-llama")
    with pytest.raises(AddkError, match="mismatch"):
        HeadMeans.load(p, other)
    with pytest.raises(AddkError, match="fingerprint"):
        check_means_model(other, back)
    # FV is the coefficient-weighted sum of per-head means
    src = means.of("add1")
    v = function_vector(src, [(0, 1), (2, 3)], [2.0, -1.0])
    assert torch.allclose(v, 2 * src[0, 1] - src[2, 3])
    assert torch.allclose(function_vector(src), src.sum((0, 1)), atol=1e-5)


def test_fv_cli(tmp_path, capsys):
    rc = main(
        [
            "fv",
            "--model",
            "tiny-llama-gqa",
            "--heads",
            "0.1,2.3",
            "--k",
            "1-3",
            "--n",
            "3",
            "--n-capture",
            "3",
            "--quiet",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0 and "FV accuracy" in capsys.readouterr().out
    assert (tmp_path / "fv_examples.csv").exists()
    assert main(["fv", "--model", "tiny-llama-gqa", "--heads", "9.9", "--k", "1-3"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert (
        main(["fv", "--model", "tiny-llama-gqa", "--heads", "0.1", "--layer", "7", "--k", "1-3"])
        == 2
    )
    assert "out of range" in capsys.readouterr().err
