"""README's result tables are the committed run summaries, verbatim (no hand-copied numbers)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_results_equal_committed_summaries():
    summaries = sorted((ROOT / "results" / "summaries").glob("*.md"))
    assert summaries, "no committed run summaries"
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "readme_results.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    readme = (ROOT / "README.md").read_text()
    for f in summaries:
        body = f.read_text().rstrip("\n")
        assert body.startswith("| quantity | value | from |")
        assert body in readme


def test_summary_markdown_of_a_run_matches_its_rows(tmp_path):
    """The summary file format is what ``addk-interp summary --markdown --out`` writes."""
    from addk_interp.report.summary import to_markdown

    rows = [("model", "m (abc)", "manifest.json"), ("x", "1.00", "a/b.json")]
    md = to_markdown(rows)
    assert md.splitlines()[0] == "| quantity | value | from |"
    assert "| x | 1.00 | `a/b.json` |" in md


def test_performance_block_is_generated_from_the_benchmark_json():
    """README's performance block = bench_readme.py's rendering of the committed bench JSON."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location(
        "bench_readme", ROOT / "benchmarks" / "bench_readme.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    blocks = sorted((ROOT / "benchmarks" / "results" / "readme").glob("*.md"))
    assert blocks, "no generated performance block"
    readme = (ROOT / "README.md").read_text()
    for f in blocks:
        src = Path("benchmarks/results") / f"{f.stem}.json"
        rec = json.loads((ROOT / src).read_text())
        assert f.read_text() == mod.render(rec, src.as_posix())
        assert f.read_text().rstrip("\n") in readme
        for r in rec["stages"]:  # every stage's speed-up is in the block as measured
            assert f"| {r['stage']} |" in f.read_text()
            assert f"**{r['speedup'][rec['clock']]:.1f}×**" in f.read_text()
