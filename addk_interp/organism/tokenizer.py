"""Number-atomic tokenizer for the add-k model organism.

What it computes: a Hugging Face *fast* tokenizer (built with the ``tokenizers`` library) whose
vocabulary holds every integer 0..999 as ONE token (like Llama-3), the arrow-format tokens "->"
and "#", a "-" sign for negative numbers, the separator strings of the other supported prompt
formats (qa, io, ab, textlabel, fx) and the special tokens ``<bos>``, ``<eos>``, ``<pad>``,
``<unk>``. A regex ``Split`` pre-tokenizer cuts the text so that every run of up to three digits
is one piece; a ``WordLevel`` model maps pieces to ids; a ``Fuse`` decoder concatenates tokens
back to the exact text. BOS is *not* added by the post-processor: callers prepend
``bos_token_id`` themselves.

Which step of the method it serves: it is the vocabulary of the model organism (the small
Llama trained in :mod:`addk_interp.organism.train`) and is saved next to the weights so that
TransformerLens can reload it from disk (it reads ``init_kwargs["name_or_path"]``).

Cost: building takes a few milliseconds; encoding is linear in the text length.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from addk_interp.core.errors import AddkError

__all__ = [
    "BOS",
    "EOS",
    "FORMAT_STRINGS",
    "MAX_NUMBER",
    "PAD",
    "SPECIAL_TOKENS",
    "UNK",
    "build_tokenizer",
    "encode_checked",
    "load_tokenizer",
    "number_token_ids",
    "save_tokenizer",
]

BOS, EOS, PAD, UNK = "<bos>", "<eos>", "<pad>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (BOS, EOS, PAD, UNK)
MAX_NUMBER = 999
"""Largest integer that is a single token (every integer 0..MAX_NUMBER is one token)."""

FORMAT_STRINGS: dict[str, tuple[str, str, str, str]] = {
    # name: (in_pre, in_sep, out_pre, out_sep); demo = in_pre x in_sep out_pre y out_sep
    "arrow": ("", "->", "", "#"),
    "qa": ("Question:", "\n", "Answer:", "\n\n"),
    "io": ("Input:", "\n", "Output:", "\n"),
    "ab": ("A:", " ", "B:", "\n"),
    "textlabel": ("text:", " ", "label:", "\n\n"),
    "fx": ("x:", " ", "f(x):", "|"),
}
"""Separator strings of the supported prompt formats; every non-empty one is a single token."""

# Non-number, non-special word tokens. Longer strings come first in the regex so that
# e.g. "f(x):" wins over "x:", "\n\n" over "\n", "->" over "-".
_WORD_TOKENS: tuple[str, ...] = (
    "->",
    "#",
    "-",
    "Question:",
    "Answer:",
    "Input:",
    "Output:",
    "text:",
    "label:",
    "f(x):",
    "x:",
    "A:",
    "B:",
    "\n\n",
    "\n",
    " ",
    "|",
)

_DIGIT_RUN = re.compile(r"\d+")


def _split_pattern() -> str:
    words = sorted(_WORD_TOKENS, key=len, reverse=True)
    # Numbers: runs of 1..3 digits; anything else falls into a one-character catch-all piece
    # (mapped to <unk>, which encode_checked turns into a ValueError).
    return "|".join([r"\d{1,3}", *(re.escape(w) for w in words), r"[\s\S]"])


def _vocab() -> dict[str, int]:
    tokens = [*SPECIAL_TOKENS, *(str(i) for i in range(MAX_NUMBER + 1)), *_WORD_TOKENS]
    return {tok: i for i, tok in enumerate(tokens)}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Build the in-memory fast tokenizer (use :func:`save_tokenizer` + :func:`load_tokenizer`
    to obtain the from-disk instance that TransformerLens needs)."""
    backend = Tokenizer(models.WordLevel(vocab=_vocab(), unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(
        Regex(_split_pattern()), behavior="isolated", invert=False
    )
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        padding_side="right",
        model_max_length=512,
    )
    return tok


@functools.cache
def _default_tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


def save_tokenizer(directory: str | Path, tok: PreTrainedTokenizerBase | None = None) -> None:
    """Write the tokenizer files (``tokenizer.json``, ``tokenizer_config.json``, ...) to
    ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (tok if tok is not None else build_tokenizer()).save_pretrained(str(directory))
    # transformers 5 records its internal "TokenizersBackend" class; the public alias loads
    # with transformers 4.x too.
    cfg_path = directory / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    tmp = cfg_path.with_name(cfg_path.name + ".tmp")
    tmp.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, cfg_path)


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer from disk with ``AutoTokenizer`` (offline, local files only)."""
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def encode_checked(text: str, tok: PreTrainedTokenizerBase | None = None) -> list[int]:
    """Encode ``text`` (no BOS added) and refuse anything the vocabulary cannot represent.

    ``tok`` defaults to the organism tokenizer (built once and cached).

    Raises:
        ValueError: if ``text`` contains an integer above :data:`MAX_NUMBER` or written with
            leading zeros, or any character sequence that would become ``<unk>``.
    """
    for m in _DIGIT_RUN.finditer(text):
        digits = m.group()
        if len(digits) > 3 or int(digits) > MAX_NUMBER:
            raise AddkError(
                f"number {digits!r} at offset {m.start()} is outside the vocabulary "
                f"(every integer 0..{MAX_NUMBER} is one token; larger numbers are not supported)"
            )
        if len(digits) > 1 and digits[0] == "0":
            raise AddkError(
                f"number {digits!r} at offset {m.start()} has leading zeros; write it as "
                f"{int(digits)}"
            )
    if tok is None:
        tok = _default_tokenizer()
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    unk = tok.unk_token_id
    bad = [text[s:e] for i, (s, e) in zip(ids, enc["offset_mapping"], strict=True) if i == unk]
    if bad:
        raise AddkError(
            f"text contains pieces the organism vocabulary cannot represent: {bad[:5]!r} "
            f"(supported: integers 0..{MAX_NUMBER}, '-', '->', '#' and the separators of the "
            f"formats {sorted(FORMAT_STRINGS)})"
        )
    return ids


def number_token_ids(tok: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of the integers 0..MAX_NUMBER, indexed by value."""
    ids = tok.convert_tokens_to_ids([str(i) for i in range(MAX_NUMBER + 1)])
    return [int(i) for i in ids]
