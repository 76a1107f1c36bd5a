"""Prompts -> tokens: offsets-based part mapping and length-bucketed batches (no padding).

Step of the method: docs/method.md §1.3–1.5 (tokenization and batching of few-shot prompts).
The text ``prompt + answer + out_sep`` is tokenized once with character offsets; tokens ending
inside the prompt are the prompt, tokens inside the answer span are the answer. A token that
crosses the prompt/answer or answer/separator boundary means the format's separators merge with
the answer: refused, because no intervention position or score would be well defined.
Each token joins the part (group) that owns its first character; BOS is group ``bos``.

Batches group examples of equal (prompt length, answer length) so every row has the same query
position ``P - 1`` and answer positions ``P .. P + A - 1`` (no padding, no attention masks).
Cost: one fast-tokenizer call per prompt; batching is O(n log n).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from addk_interp.core.errors import AddkError
from addk_interp.core.tasks import GROUP_BOS, Example, Prompt, PromptFormat, get_format, render


@dataclass(frozen=True)
class Encoded:
    prompt: Prompt
    prompt_ids: tuple[int, ...]
    answer_ids: tuple[int, ...]
    groups: tuple[str, ...]  # one per prompt token


@dataclass
class PromptBatch:
    """Examples of one (prompt length P, answer length A); tokens = prompt + answer."""

    tokens: Int[Tensor, "batch pos"]
    prompt_len: int
    answer_ids: Int[Tensor, "batch answer"]
    encoded: list[Encoded]
    indices: list[int]  # positions of these rows in the caller's example list

    @property
    def query_pos(self) -> int:
        return self.prompt_len - 1

    @property
    def answer_len(self) -> int:
        return self.answer_ids.shape[1]

    @property
    def prompt_tokens(self) -> Int[Tensor, "batch pos"]:
        return self.tokens[:, : self.prompt_len]

    @property
    def score_positions(self) -> list[int]:
        """Positions whose logits predict answer token i (and, last, the terminator)."""
        return list(range(self.prompt_len - 1, self.prompt_len + self.answer_len))

    def label_positions(self, last_token: bool = True) -> list[list[int]]:
        """Per row, the (last) token position of each demonstration label."""
        out = []
        for enc in self.encoded:
            pos: dict[str, int] = {}
            for t, g in enumerate(enc.groups):
                if g.endswith("_output") and (last_token or g not in pos):
                    pos[g] = t
            out.append([pos[g] for g in sorted(pos, key=lambda s: int(s[4:].split("_")[0]))])
        return out

    def __len__(self) -> int:
        return self.tokens.shape[0]


def encode(model, prompt: Prompt, *, check_ctx: bool = True) -> Encoded:
    """Tokenize one prompt with its answer by character offsets (see module docstring)."""
    tok = model.tokenizer
    f = prompt.format
    answer = prompt.answer
    full = prompt.text + answer + f.out_sep
    check = getattr(model, "text_check", None)
    if check is not None:
        check(full)
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offs = enc["input_ids"], enc["offset_mapping"]
    p_end, a_end = len(prompt.text), len(prompt.text) + len(answer)
    prompt_ids, answer_ids, starts = [], [], []
    unk = tok.unk_token_id
    for i, (s, e) in zip(ids, offs):
        if e <= p_end and s < p_end:
            prompt_ids.append(i)
            starts.append(s)
        elif s >= p_end and e <= a_end and e > s:
            answer_ids.append(i)
        elif s < p_end < e or s < a_end < e:
            raise AddkError(
                f"format {f.name!r}: a token {tok.decode([i])!r} spans the boundary between "
                f"prompt, answer {answer!r} and separator {f.out_sep!r}; the separators merge "
                "with the answer on this tokenizer. Choose another format."
            )
        if unk is not None and i == unk and s < a_end:
            raise AddkError(f"the tokenizer cannot represent {full[s:e]!r} (unknown token)")
    if not answer_ids:
        raise AddkError(f"answer {answer!r} produced no tokens in context")
    # offsets -> groups
    groups = []
    for s in starts:
        g = next((name for name, a, b in prompt.spans if a <= s < b), None)
        if g is None:  # leading-space tokens etc.: attach to the span that starts next
            g = next((name for name, a, _ in prompt.spans if a >= s), prompt.spans[-1][0])
        groups.append(g)
    bos = model.bos_id()
    if bos is not None:
        prompt_ids.insert(0, bos)
        groups.insert(0, GROUP_BOS)
    n_ctx = model.info.n_ctx
    if check_ctx and len(prompt_ids) + len(answer_ids) > n_ctx:
        raise AddkError(
            f"prompt of {len(prompt_ids) + len(answer_ids)} tokens exceeds the model's context "
            f"of {n_ctx}"
        )
    return Encoded(prompt, tuple(prompt_ids), tuple(answer_ids), tuple(groups))


def encode_examples(
    model, examples: list[Example], fmt: str | PromptFormat = "arrow", *, zero_shot=False
) -> list[Encoded]:
    f = get_format(fmt)
    return [encode(model, render(e.zero_shot() if zero_shot else e, f)) for e in examples]


def make_batches(
    encoded: list[Encoded], batch_size: int = 32, *, prompt_only: bool = False
) -> list[PromptBatch]:
    """Bucket by (prompt length, answer length); chunk each bucket to ``batch_size``.

    ``prompt_only=True`` (capture: nothing is scored) buckets by prompt length alone and
    leaves the answers out of ``tokens`` (``answer_ids`` is then [batch, 0]).
    """
    if batch_size <= 0:
        raise AddkError("batch_size must be positive")
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, e in enumerate(encoded):
        buckets[(len(e.prompt_ids), 0 if prompt_only else len(e.answer_ids))].append(i)
    batches = []
    for (plen, _alen), idx in sorted(buckets.items()):
        for s in range(0, len(idx), batch_size):
            chunk = idx[s : s + batch_size]
            if prompt_only:
                rows = [list(encoded[i].prompt_ids) for i in chunk]
                answers: list[list[int]] = [[] for _ in chunk]
            else:
                rows = [list(encoded[i].prompt_ids) + list(encoded[i].answer_ids) for i in chunk]
                answers = [list(encoded[i].answer_ids) for i in chunk]
            batches.append(
                PromptBatch(
                    tokens=torch.tensor(rows, dtype=torch.long),
                    prompt_len=plen,
                    answer_ids=torch.tensor(answers, dtype=torch.long),
                    encoded=[encoded[i] for i in chunk],
                    indices=chunk,
                )
            )
    return batches
