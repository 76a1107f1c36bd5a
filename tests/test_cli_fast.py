"""The CLI answers --help and usage errors without importing torch, transformers or pandas
(the package root and the organism package load their names lazily)."""

import subprocess
import sys
import time

CHECK = (
    "import sys, addk_interp.cli.main as c; p = c.build_parser(); "
    "print(sorted(m for m in ('torch', 'transformers', 'pandas', 'transformer_lens') "
    "if m in sys.modules))"
)


def test_parser_imports_no_heavy_library():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_help_is_fast_and_lists_every_command():
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "addk_interp.cli.main", "--help"], capture_output=True, text=True
    )
    elapsed = time.perf_counter() - t0
    assert out.returncode == 0
    for cmd in ("info", "eval", "run", "fv", "heads", "train-organism", "summary", "validate"):
        assert cmd in out.stdout
    assert elapsed < 10, elapsed  # measured 0.4 s here; generous for a loaded CI machine


def test_run_parser_lists_the_real_presets_and_formats():
    from addk_interp.cli.run import FORMAT_NAMES, PRESET_NAMES
    from addk_interp.core.tasks import FORMATS
    from addk_interp.pipeline.run import PRESETS

    assert PRESET_NAMES == tuple(sorted(PRESETS))
    assert set(FORMAT_NAMES) == set(FORMATS)


def test_lazy_root_names_resolve():
    import addk_interp

    for name in addk_interp.__all__:
        assert getattr(addk_interp, name) is not None


def test_run_prints_each_stage_and_the_headline(tmp_path, capsys):
    from addk_interp.cli.main import main

    argv = ["run", "--model", "tiny-llama", "--out", str(tmp_path / "r"), "--quick", "--quiet"]
    argv += ["--k", "1-3", "--n-eval", "1", "--n-capture", "1", "--batch-size", "8"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    for stage in ("clean_eval", "capture", "localize", "scan", "aie"):
        assert any(ln.split()[:2] == [stage, "done"] for ln in first.splitlines()), first
    assert "headline:" in first and "localization verdict" in first and "next: addk-interp summary" in first
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert any(ln.split()[:2] == ["clean_eval", "cached"] for ln in again.splitlines()), again


def test_every_flag_of_every_command_has_help():
    """A new user reads `--help`: every option says what it does (defaults are shown by the
    commands' formatters)."""
    import argparse

    from addk_interp.cli.main import build_parser

    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    missing = {
        name: [a.option_strings or a.dest for a in sp._actions
               if not a.help and not isinstance(a, argparse._HelpAction)]
        for name, sp in sub.choices.items()
    }
    assert not {k: v for k, v in missing.items() if v}, missing
