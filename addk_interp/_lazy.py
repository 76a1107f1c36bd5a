"""Lazy public namespaces (PEP 562): a package's curated names load on first use, so importing
``addk_interp`` or one of its subpackages costs nothing until a name is touched (``--help`` never
imports torch). Not a step of the method."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_namespace(
    package: str, exports: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` / ``__dir__`` for ``package`` whose public name ``n`` lives in module
    ``exports[n]`` (relative to ``package``); submodules stay reachable as attributes."""

    def __getattr__(name: str) -> Any:
        mod = exports.get(name)
        if mod is None:
            try:
                value = importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError:
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        else:
            value = getattr(importlib.import_module(f"{package}.{mod}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
