"""An independent reference for every write the toolkit makes: plain PyTorch hooks on the
Hugging Face modules, no TransformerLens and no addk_interp import.

``Ref(hf_model)`` knows, per architecture family, which HF module computes what:

    decoder layer l input            = resid_pre(l)
    attention contribution (l)       = self_attn output (pre-norm) or post_attention_layernorm
                                       output (Gemma 2/3): what the residual add adds
    o_proj input (l)                 = concatenated per-head z, [batch, pos, head · d_head]
    MLP contribution (l)             = mlp output (pre-norm) or post_feedforward_layernorm output

and runs forwards with edits expressed on those modules: add v to the attention contribution
(= to the residual stream after attention), edit per-head z at the o_proj input, or add a delta
to the attention contribution computed from the o_proj input (head projection).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def _replace_first(out, new):
    if isinstance(out, tuple):
        return (new, *out[1:])
    return new


class Ref:
    def __init__(self, hf_model):
        self.m = hf_model.eval()
        if hasattr(self.m, "set_attn_implementation"):
            self.m.set_attn_implementation("eager")
        self.arch = type(self.m).__name__
        self.gpt2 = self.arch.startswith("GPT2")
        base = self.m.transformer if self.gpt2 else self.m.model
        self.layers = base.h if self.gpt2 else base.layers
        self.final_norm = base.ln_f if self.gpt2 else base.norm
        cfg = self.m.config
        self.n_heads = cfg.num_attention_heads if not self.gpt2 else cfg.n_head
        d = cfg.hidden_size if not self.gpt2 else cfg.n_embd
        self.d_head = getattr(cfg, "head_dim", None) or d // self.n_heads
        self.post_norm = hasattr(self.layers[0], "post_attention_layernorm") and hasattr(
            self.layers[0], "pre_feedforward_layernorm"
        )

    # ------------------------------------------------------------------ modules
    def attn(self, layer):
        lay = self.layers[layer]
        return lay.attn if self.gpt2 else lay.self_attn

    def attn_contribution_module(self, layer):
        """The module whose output the residual add adds after attention."""
        if self.post_norm:
            return self.layers[layer].post_attention_layernorm
        return self.attn(layer)

    def o_proj(self, layer):
        return self.attn(layer).c_proj if self.gpt2 else self.attn(layer).o_proj

    def mlp_contribution_module(self, layer):
        lay = self.layers[layer]
        if self.post_norm:
            return lay.post_feedforward_layernorm
        return lay.mlp

    def o_weight(self, layer):
        """W_O as [head, d_head, d_model] (HF Linear: out = x @ W.T; GPT-2 Conv1D: x @ W)."""
        w = self.o_proj(layer).weight
        w = w if self.gpt2 else w.T  # [head · d_head, d_model]
        return w.reshape(self.n_heads, self.d_head, -1)

    def o_bias(self, layer):
        b = getattr(self.o_proj(layer), "bias", None)
        return None if b is None else b.detach()

    # ------------------------------------------------------------------ running
    @contextmanager
    def edits(self, handles_fn):
        handles = handles_fn()
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def logits(self, tokens, edits=()):
        handles = []
        try:
            for e in edits:
                handles.extend(e(self))
            with torch.no_grad():
                return self.m(tokens).logits
        finally:
            for h in handles:
                h.remove()

    def record(self, tokens, edits=()):
        """Run with ``edits`` and record decoder-layer inputs, attention contributions, MLP
        contributions and the final norm's input, every one read by plain PyTorch hooks."""
        rec: dict = {}
        handles = []

        def pre(name):
            def fn(mod, args, kwargs):
                x = args[0] if args else kwargs.get("hidden_states")
                rec[name] = x.detach().clone()

            return fn

        def post(name):
            def fn(mod, inp, out):
                rec[name] = _first(out).detach().clone()

            return fn

        for i, lay in enumerate(self.layers):
            handles.append(lay.register_forward_pre_hook(pre(("resid_pre", i)), with_kwargs=True))
        handles.append(
            self.final_norm.register_forward_pre_hook(pre(("final_in", 0)), with_kwargs=True)
        )
        try:
            for e in edits:  # edits first: recording hooks on the same module see edited values
                handles.extend(e(self))
            for i in range(len(self.layers)):
                handles.append(
                    self.attn_contribution_module(i).register_forward_hook(post(("attn", i)))
                )
                handles.append(
                    self.mlp_contribution_module(i).register_forward_hook(post(("mlp", i)))
                )
            with torch.no_grad():
                rec["logits"] = self.m(tokens).logits
        finally:
            for h in handles:
                h.remove()
        return rec


# ---------------------------------------------------------------------- edits
def add_after_attention(layer, position, vector):
    """Add ``vector`` ([d] or [batch, d]) to the residual stream after block ``layer``'s
    attention: to the output of the module whose output the residual add adds."""

    def install(ref: Ref):
        def fn(mod, inp, out):
            x = _first(out).clone()
            x[:, position] = x[:, position] + vector.to(x.dtype)
            return _replace_first(out, x)

        return [ref.attn_contribution_module(layer).register_forward_hook(fn)]

    return install


def add_to_block_input(layer, position, vector):
    def install(ref: Ref):
        def fn(mod, args, kwargs):
            if args:
                x = args[0].clone()
                x[:, position] = x[:, position] + vector.to(x.dtype)
                return (x, *args[1:]), kwargs
            x = kwargs["hidden_states"].clone()
            x[:, position] = x[:, position] + vector.to(x.dtype)
            kwargs = dict(kwargs, hidden_states=x)
            return args, kwargs

        return [ref.layers[layer].register_forward_pre_hook(fn, with_kwargs=True)]

    return install


def edit_heads(layer, position, fn_rows):
    """``fn_rows(z)`` gets z at ``position`` as [batch, head, d_head] and returns new z."""

    def install(ref: Ref):
        def pre(mod, args):
            x = args[0].clone()
            b, p, _ = x.shape
            z = x.view(b, p, ref.n_heads, ref.d_head)
            z[:, position] = fn_rows(z[:, position].clone()).to(z.dtype)
            return (z.view(b, p, -1), *args[1:])

        return [ref.o_proj(layer).register_forward_pre_hook(pre)]

    return install


def project_head_output(layer, head, position, basis, mean, mode, scale_fn=None):
    """Replace head ``head``'s residual contribution o_h by μ + BBᵀ(o_h − μ) (onto) or
    o_h − BBᵀ(o_h − μ) (out), as a delta on the attention contribution. ``scale_fn(ref, layer,
    z_rows, o_raw)`` gives o_h from the raw z W_O (post-norm models); default: raw."""
    store = {}

    def install(ref: Ref):
        def pre(mod, args):
            x = args[0]
            b, p, _ = x.shape
            z = x.view(b, p, ref.n_heads, ref.d_head)[:, position]
            w = ref.o_weight(layer).to(z.dtype)
            raw = torch.einsum("bhd,hdm->bhm", z, w)
            o = raw if scale_fn is None else scale_fn(ref, layer, raw)
            store["o"] = o[:, head]
            return None

        def post(mod, inp, out):
            x = _first(out).clone()
            o = store["o"].to(x.dtype)
            mu = mean.to(x.dtype)
            inside = (o - mu) @ basis.to(x.dtype) @ basis.T.to(x.dtype)
            new = mu + inside if mode == "onto" else o - inside
            x[:, position] = x[:, position] + (new - o)
            return _replace_first(out, x)

        return [
            ref.o_proj(layer).register_forward_pre_hook(pre),
            ref.attn_contribution_module(layer).register_forward_hook(post),
        ]

    return install


def gemma_post_norm_scale(ref: Ref, layer, raw):
    """o_h = g ⊙ raw_h / rms(Σ raw + bias): a head's share of the post-normed increment."""
    norm = ref.layers[layer].post_attention_layernorm
    total = raw.sum(1)
    b = ref.o_bias(layer)
    if b is not None:
        total = total + b
    eps = getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-6))
    rms = torch.sqrt(total.float().pow(2).mean(-1, keepdim=True) + eps)
    g = 1.0 + norm.weight.float()
    return (raw.float() * (g / rms)[:, None, :]).to(raw.dtype)


def greedy(ref: Ref, tokens, steps, edits=()):
    """Greedy decoding with ``edits`` re-applied on every step at their absolute positions."""
    out = tokens
    for _ in range(steps):
        nxt = ref.logits(out, edits)[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, nxt], dim=1)
    return out[:, tokens.shape[1] :]
