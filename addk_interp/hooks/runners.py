"""Prompt and injection runners: prepared n-shot / zero-shot prompts grouped by (prompt length,
answer length), scored with teacher-forced answer logits, optionally with vectors added to the
residual stream at a layer (``InjectionRunner``): the forward engine shared by gate training,
the recovery scan, head sets, AIE and projection tests.

Each runner prefers the partial forward (``models.partial.UpperForward``: cached lower-layer
block inputs, only the upper blocks re-run) and checks on its shortest and longest group that
it equals the full hooked forward (the final-normed residual at the scored positions, i.e. the
unembedding's input, to relative tolerance ``CHECK_RTOL``), else falls back to full forwards.
Cost per scored batch: the upper blocks (or a full forward) over prompt + answer tokens; the
unembedding of the scored rows of all batches is deferred and shared (``RowScorer``;
exact-match scans: ``_progressive``), since a product with few rows runs far below the matmul
peak (``core.scoring``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from addk_interp.core.errors import AddkError
from addk_interp.core.prompts import Encoded, encode_examples
from addk_interp.core.scoring import RowScorer, continuation_mask, row_chunk
from addk_interp.core.tasks import Example
from addk_interp.hooks.interventions import inject, resid_site
from addk_interp.models.adapter import HookedModel
from addk_interp.models.partial import UpperForward

FORWARD_PATHS = ("auto", "upper", "full")
CHECK_RTOL = 1e-4

@dataclass
class PromptGroup:
    """Prompts of one (prompt length P, answer length A); tokens = prompt + answer.

    ``indices``: positions in the caller's example list; ``cache``: the cached inputs of
    blocks (layer -> [batch, pos, d_model]; upper-layer path only).
    """

    prompt_len: int
    answer_len: int
    indices: Int[Tensor, " batch"]
    tokens: Int[Tensor, "batch pos"]
    answer_ids: Int[Tensor, "batch answer"]
    cache: dict[int, Tensor] = field(default_factory=dict)

    @property
    def query_pos(self) -> int:
        return self.prompt_len - 1

    def positions(self, n_pos: int) -> list[int]:
        """n_pos positions from the query: A predict the answer, A + 1 adds the terminator."""
        return list(range(self.prompt_len - 1, self.prompt_len - 1 + n_pos))

    def __len__(self) -> int:
        return self.tokens.shape[0]


def _group_encoded(encoded: list[Encoded]) -> list[PromptGroup]:
    buckets: dict[tuple[int, int], list[int]] = {}
    for i, e in enumerate(encoded):
        buckets.setdefault((len(e.prompt_ids), len(e.answer_ids)), []).append(i)
    groups = []
    for (p, a), idx in sorted(buckets.items()):
        rows = [list(encoded[i].prompt_ids) + list(encoded[i].answer_ids) for i in idx]
        groups.append(
            PromptGroup(
                p,
                a,
                torch.tensor(idx, dtype=torch.long),
                torch.tensor(rows, dtype=torch.long),
                torch.tensor([list(encoded[i].answer_ids) for i in idx], dtype=torch.long),
            )
        )
    return groups


@dataclass
class InjectedScores:
    """Teacher-forced scores (``scoring`` semantics) per [variant, example]."""

    correct: Bool[np.ndarray, "variant example"]
    match: Bool[np.ndarray, "variant example"]
    terminated: Bool[np.ndarray, "variant example"]
    answer_logprob: Float[np.ndarray, "variant example"]
    first_token_prob: Float[np.ndarray, "variant example"]

    def to_dict(self) -> dict[str, Any]:
        return {k: v.tolist() for k, v in asdict(self).items()}


_SCORE_FIELDS = (
    ("correct", bool),
    ("match", bool),
    ("terminated", bool),
    ("answer_logprob", np.float64),
    ("first_token_prob", np.float64),
)


class AnswerLogits:
    """The answer-predicting positions of a mini-batch, flattened, as final-normed rows.

    ``normed[i]`` predicts ``targets[i]``, the answer token of batch row ``owner[i]``. The loss
    goes through ``HookedModel.answer_logprob`` (one pass over the unembedding, with gradient);
    ``logits`` materializes the [n, vocab] logits (checks, tests).
    """

    def __init__(
        self,
        model: HookedModel,
        normed: Float[Tensor, "n d_model"],
        targets: Int[Tensor, " n"],
        owner: Int[Tensor, " n"],
        batch: int,
    ):
        self.model = model
        self.normed = normed
        self.targets = targets
        self.owner = owner
        self.batch = batch
        self._scored: tuple[Tensor, Tensor, str] | None = None

    @property
    def logits(self) -> Float[Tensor, "n vocab"]:
        return self.model.unembed(self.normed[None])[0]

    def _score(self) -> tuple[Tensor, Tensor, str]:
        if self._scored is None:
            self._scored = self.model.answer_logprob(self.normed, self.targets)
        return self._scored

    @property
    def path(self) -> str:
        """``fused`` (one pass over the unembedding) or ``unembed``."""
        return self._score()[2]

    def nll(self) -> Float[Tensor, ""]:
        """Σ over rows and answer tokens of −log p(target)."""
        return -self._score()[0].sum()

    def match(self) -> Bool[Tensor, " batch"]:
        """Per row: the argmax equals the answer at every answer position (no terminator)."""
        wrong = (self._score()[1].cpu() != self.targets.cpu()).float()
        return torch.zeros(self.batch).index_add_(0, self.owner, wrong) == 0


class PromptRunner:
    """Prompts grouped by shape, with the inputs of chosen blocks cached once.

    ``logits(group, rows, n_pos, start, hooks)`` runs blocks ``start..L−1`` from the cached
    input of block ``start`` (``UpperForward``), so every later evaluation with hooks at or
    above block ``start`` costs only those blocks. ``path``: ``auto`` (upper layers when they
    reproduce the full hooked forward on a few prompts, else the full forward), ``upper``
    (required) or ``full``. The path that runs is ``self.path``; ``self.check`` holds the
    self-check (max |Δ| of the final-normed residual at the scored positions vs the full hooked
    forward, relative tolerance ``CHECK_RTOL``).
    """

    def __init__(
        self,
        model: HookedModel,
        examples: list[Example],
        *,
        layers: Sequence[int],
        zero_shot: bool,
        fmt="arrow",
        path: str = "auto",
        batch_size: int = 64,
    ):
        if not examples:
            raise AddkError("no examples to run")
        if path not in FORWARD_PATHS:
            raise AddkError(f"path must be one of {FORWARD_PATHS}, got {path!r}")
        if batch_size <= 0:
            raise AddkError("batch_size must be positive")
        layers = sorted(set(int(x) for x in layers))
        if not layers or layers[0] < 0 or layers[-1] >= model.n_layers:
            raise AddkError(f"cached layers must lie in 0..{model.n_layers - 1}, got {layers}")
        self.model = model
        self.examples = list(examples)
        self.layers = layers
        self.batch_size = batch_size
        enc = encode_examples(model, self.examples, fmt, zero_shot=zero_shot)
        self.groups = _group_encoded(enc)
        n = len(self.examples)
        self.item_group = torch.empty(n, dtype=torch.long)
        self.item_row = torch.empty(n, dtype=torch.long)
        for gi, g in enumerate(self.groups):
            self.item_group[g.indices] = gi
            self.item_row[g.indices] = torch.arange(len(g))
        self.upper = UpperForward(model)
        self.check: dict[str, Any] = {}
        self._cands: Tensor | None = None
        self.path = "full"
        if path != "full":
            ok, info = self._enable_upper()
            self.check = info
            if ok:
                self.path = "upper"
            else:
                for g in self.groups:
                    g.cache = {}
                if path == "upper":
                    raise AddkError(f"the upper-layer forward is not available: {info}")

    def _enable_upper(self) -> tuple[bool, dict]:
        if not self.upper.supported:
            return False, {"reason": f"no block list on backend {self.model.backend}"}
        try:
            with torch.no_grad():
                bs = self.batch_size
                for g in self.groups:
                    parts = [
                        self.upper.block_inputs(g.tokens[s : s + bs], self.layers)
                        for s in range(0, len(g), bs)
                    ]
                    g.cache = {la: torch.cat([p[la] for p in parts]) for la in self.layers}
                return self._self_check()
        except Exception as e:  # any backend incompatibility -> fall back, recorded
            return False, {"reason": f"{type(e).__name__}: {e}"[:300]}

    def _test_vectors(self, n: int) -> Tensor:
        d = self.model.info.d_model
        return torch.linspace(-1.0, 1.0, d) * 3.0 * torch.arange(1, n + 1)[:, None]

    def _check_groups(self) -> list[PromptGroup]:
        """The shortest and the longest shape group (the self-check runs on both)."""
        return self.groups[:1] + self.groups[1:][-1:]

    def _self_check(self) -> tuple[bool, dict]:
        worst, scale = 0.0, 1.0
        for layer in sorted({self.layers[0], self.layers[-1]}):
            for g in self._check_groups():
                rows = torch.arange(min(2, len(g)))
                vec = self._test_vectors(len(rows))
                hooks = inject(self.model, vec, g.query_pos, layer, "resid_mid")
                full = self.normed(g, rows, g.answer_len + 1, layer, hooks, _path="full")
                up = self.normed(g, rows, g.answer_len + 1, layer, hooks, _path="upper")
                worst = max(worst, float((full.float() - up.float()).abs().max()))
                scale = max(scale, float(full.float().abs().max()))
        info = {"max_abs_diff": worst, "scale": scale, "rtol": CHECK_RTOL}
        if not worst <= CHECK_RTOL * scale:
            info["reason"] = "upper-layer final-normed residuals differ from the full forward"
            return False, info
        return True, info

    def logits(
        self,
        group: PromptGroup,
        rows: Int[Tensor, " batch"],
        n_pos: int,
        start: int,
        fwd_hooks=(),
        *,
        _path: str | None = None,
    ) -> Float[Tensor, "batch n vocab"]:
        """Logits at ``n_pos`` positions from the query for ``group`` rows, with ``fwd_hooks``
        (absolute positions; hooks must sit in blocks ≥ ``start``); keeps gradients."""
        return self.model.unembed(self.normed(group, rows, n_pos, start, fwd_hooks, _path=_path))

    def normed(
        self,
        group: PromptGroup,
        rows: Int[Tensor, " batch"],
        n_pos: int,
        start: int,
        fwd_hooks=(),
        *,
        _path: str | None = None,
    ) -> Float[Tensor, "batch n d_model"]:
        """The final norm's output at the positions of ``logits`` (its unembedding input)."""
        pos = group.positions(n_pos)
        need = group.prompt_len - 1 + n_pos
        if (_path or self.path) == "upper":
            if start not in group.cache:
                raise AddkError(f"block {start} input is not cached (cached: {self.layers})")
            return self.upper.normed_at(group.cache[start][rows, :need], start, pos, fwd_hooks)
        return self.model.normed_at(group.tokens[rows, :need], pos, fwd_hooks)

    def score(
        self,
        hooks_fn: Callable[[PromptGroup, Tensor, Tensor], Sequence],
        start: int,
        n_variants: int = 1,
        batch_size: int | None = None,
        logprob: bool = True,
    ) -> InjectedScores:
        """Teacher-forced scores of every example under ``n_variants`` interventions.

        ``hooks_fn(group, rows, variant)`` returns the hooks for the rows ``rows`` of ``group``
        under the per-row variant indices ``variant``; the variants of one group are stacked
        along the batch (chunks of ``batch_size`` rows). ``logprob=False`` skips full logits
        where they cannot change the outcome (``_progressive``): the same
        ``correct`` and ``match`` (up to float ties ≤ 1e-4 between the answer token and a rival),
        ``answer_logprob`` and ``first_token_prob`` NaN, ``terminated`` False where not reached.
        """
        return self.score_many([(hooks_fn, start, n_variants)], batch_size, logprob)[0]

    def score_many(
        self,
        jobs: Sequence[tuple[Callable[[PromptGroup, Tensor, Tensor], Sequence], int, int]],
        batch_size: int | None = None,
        logprob: bool = True,
    ) -> list[InjectedScores]:
        """``score`` for several (hooks_fn, start, n_variants) jobs, in order: each runs its
        own forwards, and the unembedding of the scored rows of all of them is shared (the
        exact-match path scores its pending rows every 4 × ``row_chunk`` prompts, so memory
        stays bounded however many jobs there are)."""
        n_ex = len(self.examples)
        bs = batch_size or self.batch_size
        outs = [
            {k: np.zeros((n_var, n_ex), dtype=dt) for k, dt in _SCORE_FIELDS}
            for _, _, n_var in jobs
        ]
        scorer = RowScorer(self.model)  # rows of every chunk unembedded together
        progressive: list[tuple[int, Tensor, Tensor]] = []
        n_prog, prog_rows = 0, 4 * row_chunk(self.model.info.d_vocab)
        where: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}

        def put(key: int, res) -> None:
            j, v, e = where[key]
            for k, _ in _SCORE_FIELDS:
                val = res[k] if isinstance(res, dict) else getattr(res, k)
                outs[j][k][v, e] = (val.double() if val.is_floating_point() else val).numpy()

        with torch.no_grad():
            for j, (hooks_fn, start, n_variants) in enumerate(jobs):
                for g in self.groups:
                    n = len(g)
                    var_all = torch.arange(n_variants).repeat_interleave(n)
                    row_all = torch.arange(n).repeat(n_variants)
                    for s in range(0, n * n_variants, bs):
                        var, rows = var_all[s : s + bs], row_all[s : s + bs]
                        hooks = hooks_fn(g, rows, var)
                        key = len(where)
                        where[key] = (j, var.numpy(), g.indices[rows].numpy())
                        x = self.normed(g, rows, g.answer_len + 1, start, hooks)
                        if logprob:
                            scorer.add(key, x, g.answer_ids[rows])
                        else:
                            progressive.append((key, x, g.answer_ids[rows]))
                            n_prog += len(rows)
                            if n_prog >= prog_rows:  # memory stays bounded across many jobs
                                for k, res in self._progressive(progressive).items():
                                    put(k, res)
                                progressive, n_prog = [], 0
            for key, sc in scorer.results().items():
                put(key, sc)
            for key, res in self._progressive(progressive).items():
                put(key, res)
        return [InjectedScores(**o) for o in outs]

    def _progressive(self, items: list[tuple[int, Tensor, Tensor]]) -> dict[int, dict]:
        """Exact-match scoring without full logits where they cannot matter.

        ``items``: (key, final-normed rows at the A+1 score positions [b, A+1, d], answers
        [b, A]) of every chunk. Answer position j is looked at only for rows whose positions
        < j matched; there, the logits of a small candidate set (every answer token of this
        runner plus the argmax tokens seen so far) are computed first, and a row whose answer
        token is beaten by a candidate (argmax order: larger logit, then lower id) is wrong
        without the full unembedding. The remaining rows of all chunks are unembedded together
        (``row_chunk`` rows per product; exact argmax), and the terminator only for complete
        matches.
        """
        if not items:
            return {}
        a_max = max(ans.shape[1] for _, _, ans in items)
        rows_x = torch.cat(
            [torch.nn.functional.pad(x, (0, 0, 0, a_max + 1 - x.shape[1])) for _, x, _ in items]
        )  # [R, a_max + 1, d]
        ans = torch.cat(
            [torch.nn.functional.pad(t, (0, a_max - t.shape[1]), value=-1) for _, _, t in items]
        )
        alen = torch.cat([torch.full((len(t),), t.shape[1]) for _, _, t in items])
        n_rows = len(alen)
        alive = torch.arange(n_rows)
        for j in range(a_max):
            here = alive[alen[alive] > j]
            if not len(here):
                continue
            keep = self._not_beaten(rows_x[here, j], ans[here, j])
            wrong = here[~keep]
            here = here[keep]
            if len(here):
                pred = self._argmax(rows_x[here, j])
                self._add_candidates(pred)
                wrong = torch.cat([wrong, here[pred != ans[here, j]]])
            alive = alive[~torch.isin(alive, wrong)]
        match = torch.zeros(n_rows, dtype=torch.bool)
        match[alive] = True
        terminated = torch.zeros(n_rows, dtype=torch.bool)
        if len(alive):
            pred = self._argmax(rows_x[alive, alen[alive]])
            self._add_candidates(pred)
            terminated[alive] = ~continuation_mask(self.model)[pred]
        out, s = {}, 0
        for key, _, t in items:
            b = len(t)
            nan = torch.full((b,), float("nan"))
            m, te = match[s : s + b], terminated[s : s + b]
            out[key] = {
                "correct": m & te,
                "match": m,
                "terminated": te,
                "answer_logprob": nan,
                "first_token_prob": nan,
            }
            s += b
        return out

    def _argmax(self, normed: Float[Tensor, "n d_model"]) -> Int[Tensor, " n"]:
        """Argmax token of final-normed rows, ``row_chunk`` rows per unembedding product."""
        step = row_chunk(self.model.info.d_vocab)
        return torch.cat(
            [
                self.model.unembed(normed[None, s : s + step])[0].argmax(-1).cpu()
                for s in range(0, len(normed), step)
            ]
        )

    # ------------------------------------------------------------------ candidate logits
    def _add_candidates(self, ids: Tensor) -> None:
        if self._cands is not None:
            self._cands = torch.unique(torch.cat([self._cands, ids.reshape(-1)]))

    def _not_beaten(self, xn: Float[Tensor, "n d_model"], answer: Int[Tensor, " n"]) -> Tensor:
        """False where a candidate token beats ``answer`` in argmax order (row surely wrong);
        ``xn``: final-normed rows. All True where the model's explicit unembedding weights do
        not reproduce its unembedding (``HookedModel.unembed_columns``)."""
        keep = torch.ones(len(answer), dtype=torch.bool)
        if self._cands is None:
            self._cands = torch.unique(torch.cat([g.answer_ids.reshape(-1) for g in self.groups]))
        cand = self._cands
        lg = self.model.unembed_columns(xn, cand)
        if lg is None:
            return keep
        lg = lg.float().cpu()
        pos = torch.searchsorted(cand, answer)
        a_logit = lg.gather(1, pos[:, None])
        beaten = (lg > a_logit) | ((lg == a_logit) & (cand[None] < answer[:, None]))
        return ~beaten.any(1)

    def first_token_probs(
        self,
        hooks_fn: Callable[[PromptGroup, Tensor, Tensor], Sequence],
        start: int,
        n_variants: int = 1,
        batch_size: int | None = None,
    ) -> Float[np.ndarray, "variant example"]:
        """float32 softmax probability of the first answer token at the query position, per
        [variant, example] (only that position is unembedded); hooks as in ``score``."""
        n_ex = len(self.examples)
        bs = batch_size or self.batch_size
        out = np.zeros((n_variants, n_ex), dtype=np.float64)
        with torch.no_grad():
            for g in self.groups:
                n = len(g)
                var_all = torch.arange(n_variants).repeat_interleave(n)
                row_all = torch.arange(n).repeat(n_variants)
                for s in range(0, n * n_variants, bs):
                    var, rows = var_all[s : s + bs], row_all[s : s + bs]
                    logits = self.logits(g, rows, 1, start, hooks_fn(g, rows, var))[:, 0]
                    p = torch.softmax(logits.float(), dim=-1)
                    p = p.gather(-1, g.answer_ids[rows, :1]).squeeze(-1)
                    out[var.numpy(), g.indices[rows].numpy()] = p.double().numpy()
        return out


class _AddAtRows:
    """TL hook: act[r, q[r]] += vectors[r] for every row r (differentiable, out of place)."""

    def __init__(self, q: Tensor, vectors: Tensor):
        self.q, self.vectors = q, vectors
        self.rows = torch.arange(len(q))

    def __call__(self, act: Tensor, hook=None) -> Tensor:
        v = self.vectors.to(act)
        idx = (self.rows.to(act.device), self.q.to(act.device))
        return act.index_put(idx, v, accumulate=True)


class InjectionRunner(PromptRunner):
    """Zero-shot prompts with a per-example vector added at ``blocks.ℓ.hook_<site>``.

    The input of block ℓ is cached for every prompt (one partial forward), so each later
    evaluation runs blocks ℓ..L−1 only. A mixed-shape mini-batch runs as one right-padded call
    (``answer_logits``; exact because attention is causal and each row keeps its positions),
    checked too against the full forward.
    """

    def __init__(
        self,
        model: HookedModel,
        examples: list[Example],
        *,
        layer: int,
        site: str = "resid_mid",
        fmt="arrow",
        path: str = "auto",
        batch_size: int = 64,
    ):
        self.site_name = resid_site(model, layer, site)
        self.layer = layer
        self.site = site
        super().__init__(
            model,
            examples,
            layers=[layer],
            zero_shot=True,
            fmt=fmt,
            path=path,
            batch_size=batch_size,
        )

    def _self_check(self) -> tuple[bool, dict]:
        ok, info = super()._self_check()
        if not ok:
            return ok, info
        items = torch.cat([g.indices[:2] for g in self._check_groups()])
        vec = self._test_vectors(len(items))
        ref = self._answer_logits_full(items, vec, extra=1)
        got = self._answer_logits_upper(items, vec, extra=1)
        padded = float((ref.normed - got.normed).abs().max())
        same = torch.equal(ref.targets, got.targets) and torch.equal(ref.owner, got.owner)
        info["max_abs_diff_padded"] = padded
        if not (same and padded <= CHECK_RTOL * info["scale"]):
            info["reason"] = "right-padded upper-layer residuals differ from the full forward"
            return False, info
        return True, info

    def injected_logits(
        self,
        group: PromptGroup,
        rows: Int[Tensor, " batch"],
        vectors: Float[Tensor, "batch d_model"],
        n_pos: int,
    ) -> Float[Tensor, "batch n vocab"]:
        hooks = inject(self.model, vectors, group.query_pos, self.layer, self.site)
        return self.logits(group, rows, n_pos, self.layer, hooks)

    def answer_logits(
        self, items: Int[Tensor, " batch"], vectors: Float[Tensor, "batch d_model"]
    ) -> AnswerLogits:
        """Logits at the answer positions of mixed-shape ``items`` with ``vectors`` injected:
        one right-padded upper-layer call, or one full forward per shape group."""
        if self.path == "upper":
            return self._answer_logits_upper(items, vectors)
        return self._answer_logits_full(items, vectors)

    def _layout(self, items: Tensor, extra: int):
        gi, ri = self.item_group[items], self.item_row[items]
        plen = torch.tensor([self.groups[g].prompt_len for g in gi.tolist()])
        alen = torch.tensor([self.groups[g].answer_len for g in gi.tolist()])
        return gi, ri, plen, alen, alen + extra

    def _targets(self, gi, ri, alen, npos) -> tuple[Tensor, Tensor, Tensor]:
        owner = torch.repeat_interleave(torch.arange(len(gi)), npos)
        j = torch.cat([torch.arange(int(k)) for k in npos.tolist()])
        tgt = []
        for b, (g, r) in enumerate(zip(gi.tolist(), ri.tolist())):
            t = torch.full((int(npos[b]),), -1, dtype=torch.long)
            m = min(int(alen[b]), int(npos[b]))
            t[:m] = self.groups[g].answer_ids[r, :m]
            tgt.append(t)
        return torch.cat(tgt), owner, j

    def _answer_logits_upper(self, items: Tensor, vectors: Tensor, extra: int = 0) -> AnswerLogits:
        gi, ri, plen, alen, npos = self._layout(items, extra)
        need = plen - 1 + npos
        b = len(items)
        first = self.groups[int(gi[0])].cache[self.layer]
        hidden = torch.zeros(
            b, int(need.max()), first.shape[-1], dtype=first.dtype, device=first.device
        )
        for g in torch.unique(gi).tolist():
            sel = (gi == g).nonzero().squeeze(1)
            n = int(need[sel[0]])
            hidden[sel, :n] = self.groups[g].cache[self.layer][ri[sel], :n]
        q = plen - 1
        add = _AddAtRows(q, vectors)
        out = self.upper.final_resid(hidden, self.layer, [(self.site_name, add)])
        targets, owner, j = self._targets(gi, ri, alen, npos)
        return AnswerLogits(
            self.model, self.upper.normed(out[owner, q[owner] + j]), targets, owner, b
        )

    def _answer_logits_full(self, items: Tensor, vectors: Tensor, extra: int = 0) -> AnswerLogits:
        gi, ri, plen, alen, npos = self._layout(items, extra)
        targets, owner, _ = self._targets(gi, ri, alen, npos)
        start = torch.cumsum(npos, 0) - npos
        parts, where = [], []
        for g in torch.unique(gi).tolist():
            sel = (gi == g).nonzero().squeeze(1)
            grp = self.groups[g]
            k = grp.answer_len + extra
            hooks = inject(self.model, vectors[sel], grp.query_pos, self.layer, self.site)
            x = self.model.normed_at(grp.tokens[ri[sel]], grp.positions(k), hooks)
            parts.append(x.reshape(len(sel) * k, -1))
            where.append((start[sel][:, None] + torch.arange(k)).reshape(-1))
        order = torch.argsort(torch.cat(where))
        return AnswerLogits(self.model, torch.cat(parts)[order], targets, owner, len(items))

    def score_vectors(
        self,
        vectors: Float[Tensor, "*variant example d_model"],
        batch_size: int | None = None,
        logprob: bool = True,
    ) -> InjectedScores:
        """Score every example under every variant's vectors ([variant, example, d] or
        [example, d]); the variants of one prompt group are stacked along the batch."""
        vec = vectors if vectors.ndim == 3 else vectors[None]
        n_var, n_ex, d = vec.shape
        if n_ex != len(self.examples) or d != self.model.info.d_model:
            raise AddkError(
                f"vectors must be [variant, {len(self.examples)}, {self.model.info.d_model}], "
                f"got {tuple(vectors.shape)}"
            )
        if not torch.isfinite(vec).all():
            raise AddkError("the injected vectors contain NaN or inf")

        def hooks_fn(g, rows, var):
            v = vec[var, g.indices[rows]]
            return inject(self.model, v, g.query_pos, self.layer, self.site)

        return self.score(hooks_fn, self.layer, n_var, batch_size, logprob)

    def evaluate(
        self, vectors: Float[Tensor, "example d_model"], label: str = "fv"
    ) -> pd.DataFrame:
        """One row per example (``scoring.evaluate`` columns minus ``pred``) for one variant."""
        sc = self.score_vectors(vectors)
        return pd.DataFrame(
            {
                "task": [e.task for e in self.examples],
                "k": [e.k for e in self.examples],
                "shots": 0,
                "query": [e.query for e in self.examples],
                "answer": [e.answer for e in self.examples],
                "correct": sc.correct[0],
                "match": sc.match[0],
                "terminated": sc.terminated[0],
                "answer_logprob": sc.answer_logprob[0],
                "first_token_prob": sc.first_token_prob[0],
                "condition": label,
            }
        )
