"""The same pipeline on other task families: mul-k on the organism, JSON task files."""

import json

from addk_interp.cli.main import main


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def test_run_mul_family_on_organism(tmp_path):
    out = tmp_path / "mul"
    argv = ["run", "--model", "organism", "--family", "mul", "--k", "1-6", "--quick"]
    argv += ["--n-eval", "3", "--n-capture", "3", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    man = _manifest(out)
    assert man["family"]["name"] == "mul"
    assert all(s["status"] == "done" for s in man["stages"])
    assert "mul" in (out / "report.html").read_text()
    demos = json.loads((out / "stages" / "demos" / "demos.json").read_text())
    assert "add-k" in demos["reason"]  # offsets are an add-k notion: refused with a reason


def test_run_json_task_files(tmp_path):
    files = []
    for name, f in (
        ("double", lambda x: 2 * x),
        ("plus3", lambda x: x + 3),
        ("sq", lambda x: x * x),
    ):
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps([{"input": str(x), "output": str(f(x))} for x in range(1, 30)]))
        files.append(str(p))
    out = tmp_path / "json"
    argv = ["run", "--model", "tiny-llama-gqa", "--task-file", *files, "--heldout", "sq"]
    argv += ["--quick", "--n-eval", "2", "--n-capture", "2", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    man = _manifest(out)
    assert man["family"]["train"] == ["double", "plus3"] and man["family"]["heldout"] == ["sq"]
    assert (out / "report.html").exists()
