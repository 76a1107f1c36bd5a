"""The model adapter ``HookedModel``: one place that absorbs backend differences.

Step of the method: everything starts here (docs/method.md §2). A thin adapter over a
TransformerLens ``TransformerBridge`` (default backend, exact HF numerics) or a classic
``HookedTransformer``: per-KV-head weight layout for grouped-query attention, the residual write
sites (``residual_hook``), post-attention norms (Gemma 2/3), final-logit soft-capping, logits at
chosen positions only (``logits_at``: stop at the final norm, unembed only the requested rows —
Gemma's 262k-row unembedding otherwise dominates), the partial forward from a layer
(``models.partial``) and TransformerLens idioms (``run_with_cache``, ``run_with_hooks``,
``hooks``, ``to_tokens``, ``to_str_tokens``, ``cfg``). Cost: the wrapped model's forwards.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from addk_interp.core.errors import AddkError
from addk_interp.models.vocab import answer_logprob


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
        self._weights_ok: bool | None = None  # weights_reproduce_unembed, checked once
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

    def answer_logprob(
        self, normed: Float[Tensor, "n d_model"], targets: Int[Tensor, " n"]
    ) -> tuple[Float[Tensor, " n"], Int[Tensor, " n"], str]:
        """(fp32 log p(target), argmax, path) per row of final-normed ``normed``, differentiable
        in ``normed``. Path ``fused``: one pass over the unembedding (``models.vocab``) from the
        explicit weights, once ``weights_reproduce_unembed``; else ``unembed`` (autograd)."""
        if self.weights_reproduce_unembed():
            w = self.model.W_U
            b = getattr(self.model, "b_U", None)
            lp, arg = answer_logprob(normed, w, b, targets, self.logit_softcap)
            return lp, arg, "fused"
        logits = self.unembed(normed[None])[0].float()
        t = targets.to(logits.device)
        lp = torch.log_softmax(logits, dim=-1).gather(-1, t[:, None]).squeeze(-1)
        return lp, logits.detach().argmax(-1), "unembed"

    def unembed_columns(
        self, normed: Float[Tensor, "n d_model"], columns: Int[Tensor, " k"]
    ) -> Float[Tensor, "n k"] | None:
        """Logits of the tokens ``columns`` only (x·W_U[:, cols] + b_U[cols], soft-capped), or
        None where the explicit weights do not reproduce ``unembed``."""
        if not self.weights_reproduce_unembed():
            return None
        return self._weight_logits(normed, columns)

    def _weight_logits(self, x: Tensor, columns: Tensor | None = None) -> Tensor:
        """x·W_U[:, cols] + b_U[cols], soft-capped, from the explicit weights (all columns when
        ``columns`` is None)."""
        w = self.model.W_U
        b = getattr(self.model, "b_U", None)
        if columns is not None:
            w, b = w[:, columns], None if b is None else b[columns]
        lg = x @ w.to(x.dtype)
        if b is not None:
            lg = lg + b.to(lg.dtype)
        return self.softcap(lg)

    def weights_reproduce_unembed(self) -> bool:
        """Whether ``x·W_U + b_U`` (soft-capped) equals ``unembed(x)`` on this model, checked
        once on 4 seeded random rows (≤ 1e-4 relative, and the one-pass log-probabilities
        likewise); the explicit-weight paths are used only then."""
        if self._weights_ok is None:
            self._weights_ok = self._check_weights()
        return self._weights_ok

    def _check_weights(self) -> bool:
        p = next(self.model.parameters())
        g = torch.Generator().manual_seed(0)
        x = torch.randn(4, self.info.d_model, generator=g).to(p.device, p.dtype)
        t = torch.arange(4, device=p.device) * (self.info.d_vocab // 4)
        try:
            with torch.no_grad():
                ref = self.unembed(x[None])[0].float()
                mine = self._weight_logits(x).float()
                w, b = self.model.W_U, getattr(self.model, "b_U", None)
                lp, _ = answer_logprob(x, w, b, t, self.logit_softcap)
        except Exception:  # weights this path cannot read: use the plain unembedding
            return False
        ref_lp = torch.log_softmax(ref, -1).gather(-1, t[:, None]).squeeze(-1)
        scale = max(1.0, float(ref.abs().max()))
        return bool(
            float((mine - ref).abs().max()) <= 1e-4 * scale
            and float((lp - ref_lp).abs().max()) <= 1e-4 * scale
        )

    def logits_at(
        self,
        tokens: Int[Tensor, "batch pos"],
        positions: Int[Tensor, "batch n"] | Sequence[int],
        fwd_hooks: Sequence[tuple[str, Callable]] = (),
    ) -> Float[Tensor, "batch n vocab"]:
        """Logits at chosen positions only: stop at the final norm, unembed selected rows."""
        return self.unembed(self.normed_at(tokens, positions, fwd_hooks))

    def normed_at(
        self,
        tokens: Int[Tensor, "batch pos"],
        positions: Int[Tensor, "batch n"] | Sequence[int],
        fwd_hooks: Sequence[tuple[str, Callable]] = (),
    ) -> Float[Tensor, "batch n d_model"]:
        """The final norm's output at chosen positions (the forward stops there); ``unembed``
        of it is ``logits_at``."""
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
        return torch.gather(x, 1, pos.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

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
