"""Device placement: ``load_model(spec, device=...)`` refuses a device this machine does not have
(one-line ``AddkError``, before any tokenizer, weights or GGUF is touched), and puts parameters,
``run_with_cache`` activations and logits on the device it was asked for (cpu here; cuda where
one is available). The CLI refuses the same devices with exit code 2, one line on stderr and
nothing written."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from addk_interp import AddkError
from addk_interp.core.validate import check_device
from addk_interp.models import loading
from addk_interp.models.loading import load_model

NO_CUDA = not torch.cuda.is_available()
# a CUDA index this machine does not have (cuda:7 on a machine without CUDA)
MISSING_CUDA = f"cuda:{max(7, torch.cuda.device_count() + 7) if not NO_CUDA else 7}"

REFUSED = [
    ("bogus", "unknown device 'bogus'"),
    ("", "unknown device ''"),
    ("CUDA", "unknown device 'CUDA'"),
    ("cuda:-1", "unknown device 'cuda:-1'"),
    ("cuda:x", "unknown device 'cuda:x'"),
    ("meta", "device 'meta' is not supported"),
    ("xla", "device 'xla' is not supported"),
    (MISSING_CUDA, "CUDA is not available" if NO_CUDA else "CUDA devices"),
]
if NO_CUDA:
    REFUSED.append(("cuda", "CUDA is not available"))
if not torch.backends.mps.is_available():
    REFUSED.append(("mps", "MPS is not available"))

SPECS = ["tiny-llama", "tiny-hooked", "default", "organism", "x/model.gguf", "some/hub-model"]


@pytest.mark.parametrize("device,phrase", REFUSED)
def test_check_device_refuses_in_one_line(device, phrase):
    with pytest.raises(AddkError, match=phrase) as e:
        check_device(device)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("device", ["bogus", MISSING_CUDA] + (["cuda"] if NO_CUDA else []))
def test_load_model_refuses_device_before_any_work(monkeypatch, spec, device):
    def boom(*a, **k):
        raise AssertionError("load_model did work before refusing the device")

    for name in (
        "tiny_tokenizer",
        "tiny_hf_model",
        "tiny_hooked_transformer",
        "_hf_dir_from_gguf",
        "_load_hf_dir",
        "_load_from_hub",
        "from_hf",
        "from_hooked_transformer",
    ):
        monkeypatch.setattr(loading, name, boom)
    with pytest.raises(AddkError) as e:
        load_model(spec, device=device)
    msg = str(e.value)
    assert "\n" not in msg and repr(device) in msg


def _on(model, want: torch.device, tokens):
    """Every parameter, every cached activation and the logits are on ``want``."""
    params = {p.device for p in model.model.parameters()}
    assert params == {want}, params
    logits, cache = model.run_with_cache(
        tokens.to(want), names_filter=lambda n: "hook_z" in n or "resid" in n or "hook_out" in n
    )
    assert len(cache) > 0
    bad = {k: v.device for k, v in cache.items() if v.device != want}
    assert not bad, bad
    assert logits.device == want
    assert model.logits_at(tokens.to(want), [tokens.shape[1] - 1]).device == want
    assert model.full_logits(tokens.to(want)).device == want


def _same(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index or 0) == (b.index or 0)


@pytest.mark.parametrize("spec", ["tiny-llama", "tiny-hooked"])
def test_cpu_placement(spec):
    model = load_model(spec, device="cpu")
    tokens = model.to_tokens("12->13")
    _on(model, torch.device("cpu"), tokens)


@pytest.mark.skipif(NO_CUDA, reason="CUDA is not available on this machine")
@pytest.mark.parametrize(
    "spec",
    ["tiny-llama", "tiny-hooked"],
)
def test_cuda_placement(spec):
    model = load_model(spec, device="cuda")
    want = torch.device("cuda", torch.cuda.current_device())
    params = {p.device for p in model.model.parameters()}
    assert all(_same(d, want) for d in params), params
    tokens = model.to_tokens("12->13").to(want)
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: "hook_z" in n)
    assert len(cache) == model.n_layers
    assert all(_same(v.device, want) for v in cache.values())
    assert _same(logits.device, want)
    assert _same(model.logits_at(tokens, [tokens.shape[1] - 1]).device, want)


# ----------------------------------------------------------------------------- the CLI
CLI = str(Path(sys.executable).with_name("addk-interp"))


def _cli(tmp_path, argv):
    """Run the installed console script in an empty directory; return (rc, stdout, stderr lines,
    files written anywhere under that directory)."""
    work = tmp_path / "cwd"
    work.mkdir()
    r = subprocess.run([CLI, *argv], cwd=work, capture_output=True, text=True, timeout=120)
    written = sorted(str(p.relative_to(work)) for p in work.rglob("*"))
    return r.returncode, r.stdout, [ln for ln in r.stderr.splitlines() if ln.strip()], written


@pytest.mark.parametrize(
    "device,phrase",
    [("bogus", "unknown device 'bogus'"), (MISSING_CUDA, "CUDA")],
)
def test_cli_run_refuses_device_in_one_line_writing_nothing(tmp_path, device, phrase):
    argv = ["run", "--model", "tiny-llama", "--device", device, "--out", "out", "--quiet"]
    rc, out, err, written = _cli(tmp_path, argv)
    assert rc == 2, (out, err)
    assert len(err) == 1 and phrase in err[0], err
    assert "Traceback" not in err[0] and out == ""
    assert written == []


def test_cli_eval_has_no_device_option_and_writes_nothing(tmp_path):
    """``eval`` runs on cpu only (no ``--device``): argparse refuses the option with exit 2
    (usage text plus one error line) before anything is loaded or written."""
    argv = ["eval", "--model", "tiny-llama", "--device", "bogus", "--n", "2", "--out", "out"]
    rc, out, err, written = _cli(tmp_path, argv)
    assert rc == 2, (out, err)
    assert "unrecognized arguments: --device bogus" in err[-1], err
    assert out == "" and written == []


def test_tiny_hooked_is_moved_to_the_requested_device(monkeypatch):
    """Without CUDA here: the classic HookedTransformer is moved with ``.to(device)`` (the call
    is recorded), not left where it was built."""
    from transformer_lens import HookedTransformer

    seen = []
    orig = HookedTransformer.to

    def spy(self, *args, **kwargs):
        seen.append(args[0] if args else kwargs.get("device_or_dtype"))
        return orig(self, *args, **kwargs)

    monkeypatch.setattr(HookedTransformer, "to", spy)
    load_model("tiny-hooked", device="cpu")
    assert "cpu" in [str(d) for d in seen]
