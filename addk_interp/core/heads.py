"""The one attention-head type: ``Head(layer, head)``, text form ``L{layer}H{head}``.

Step of the method: every step names heads (selection, scan, head sets, analyses); this module
is the only place that formats and parses them. ``Head`` is a ``NamedTuple``, so it is also a
``(layer, head)`` tuple and works wherever one is expected. Accepted text forms: ``L15H2``
(canonical, case-insensitive), ``15.2`` and ``15:2`` (the released scan's keys); anything else
is refused with a one-line ``AddkError``. Cost: negligible.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Iterable
from typing import Any, NamedTuple

from addk_interp.core.errors import AddkError

_CANON = re.compile(r"^[Ll](\d+)[Hh](\d+)$")
_PAIR = re.compile(r"^(\d+)[.:](\d+)$")


HeadLike = tuple[int, int]
"""What API functions accept: a ``Head`` or any ``(layer, head)`` tuple of ints."""


class Head(NamedTuple):
    layer: int
    head: int

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}"

    @classmethod
    def parse(cls, value: Any) -> Head:
        """``"L1H3"`` / ``"1.3"`` / ``"1:3"`` / ``(1, 3)`` / ``[1, 3]`` → ``Head(1, 3)``."""
        if isinstance(value, Head):
            return value
        if isinstance(value, str):
            text = value.strip()
            m = _CANON.match(text) or _PAIR.match(text)
            if m is None:
                raise AddkError(f"cannot parse head {value!r}; write L{{layer}}H{{head}}, e.g. L15H2")
            return cls(int(m.group(1)), int(m.group(2)))
        if isinstance(value, list | tuple) and len(value) == 2:
            a, b = value
            if all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in (a, b)):
                a, b = int(a), int(b)  # numpy integers too
                if a < 0 or b < 0:
                    raise AddkError(f"head {value!r} has a negative index")
                return cls(a, b)
        raise AddkError(f"cannot parse head {value!r}; expected L{{layer}}H{{head}} or (layer, head)")

    def check(self, n_layers: int, n_heads: int) -> Head:
        if not (0 <= self.layer < n_layers and 0 <= self.head < n_heads):
            raise AddkError(
                f"head {self} does not exist (model has {n_layers} layers × {n_heads} heads)"
            )
        return self


def head_str(value: Any) -> str:
    """Canonical text form of any accepted head value."""
    return str(Head.parse(value))


def parse_heads(text: str) -> list[Head]:
    """``"L15H2,L15H1"`` or ``"15.2 15:1"`` → heads; duplicates and empty lists refused."""
    heads = [Head.parse(p) for p in text.replace(" ", ",").split(",") if p]
    if not heads:
        raise AddkError("empty head list")
    return unique_heads(heads)


def unique_heads(heads: Iterable[Any]) -> list[Head]:
    out = [Head.parse(h) for h in heads]
    seen = set()
    for h in out:
        if h in seen:
            raise AddkError(f"head {h} is listed twice")
        seen.add(h)
    return out


def check_heads(
    heads: Iterable[Any],
    n_layers: int,
    n_heads: int,
    *,
    allow_empty: bool = True,
    allow_duplicates: bool = True,
    what: str = "",
) -> list[Head]:
    """The one head validator: parse every value (``Head.parse``), check it exists in a model of
    ``n_layers`` × ``n_heads``, optionally refuse duplicates and an empty list (``what`` names the
    operation in the message)."""
    out = [Head.parse(h).check(n_layers, n_heads) for h in heads]
    if not allow_duplicates:
        out = unique_heads(out)
    if not out and not allow_empty:
        raise AddkError(f"no heads given; nothing to {what or 'do'}")
    return out
