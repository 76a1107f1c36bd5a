"""Validators: one place per kind of input, shared by the CLI and the Python API.

Every argument that enters the toolkit from outside (a CLI flag, an API call, a file) is checked
here before any work is done or any file is written: counts and ranges with short messages
(``k 31..1000 outside 1..30``), seeds, finite numbers and tensors, positions inside a prompt,
dtypes and devices that exist on this machine, writable output directories. Heads are checked by
``core.heads.check_heads``. Every refusal is an ``AddkError`` with one line. Not a step of the
method; cost negligible (``check_finite`` on a tensor: one pass).
"""

from __future__ import annotations

import math
from typing import Any

from addk_interp.core.errors import AddkError

MAX_PROMPTS_PER_TASK = 100_000  # --n / --n-eval / --n-capture: bounded before any sampling


def check_count(value, name: str, *, lo: int = 1, hi: int = MAX_PROMPTS_PER_TASK) -> int:
    """An integer in [lo, hi], else one-line ``AddkError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        if lo == 1:
            raise AddkError(f"{name} must be positive and at most {hi}, got {value!r}")
        raise AddkError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def check_seed(value, name: str = "--seed") -> int:
    return check_count(value, name, lo=0, hi=2**63 - 1)


def check_task_files(paths) -> None:
    """``--task-file`` given with no path is refused (it would silently run the add family)."""
    if paths is not None and len(paths) == 0:
        raise AddkError("--task-file needs at least one JSON file or directory")


def check_writable_dir(path) -> None:
    """``path`` (a directory to create or reuse) can be written: its nearest existing ancestor
    is a writable directory. Checked before any work, so nothing is computed for nothing."""
    import os
    from pathlib import Path

    p = Path(path).absolute()
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise AddkError(f"--out {path}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise AddkError(f"--out {path}: {probe} is not writable; nothing was written")


def compress_ints(values) -> str:
    """[1, 2, 3, 7, 9, 10] -> '1..3, 7, 9..10' (short messages for long lists)."""
    vals = sorted(set(int(v) for v in values))
    parts, i = [], 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        parts.append(str(vals[i]) if i == j else f"{vals[i]}..{vals[j]}")
        i = j + 1
    text = ", ".join(parts)
    return text if len(text) <= 120 else text[:117] + "..."


FLOAT_DTYPES = ("float32", "float64", "float16", "bfloat16")


def check_number(value: Any, name: str) -> float:
    """A finite real number (Python or NumPy int / float, not bool) as a float, else
    ``AddkError``: "must be a number" / "must be finite"."""
    import numpy as np

    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise AddkError(f"{name} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise AddkError(f"{name} must be finite, got {value!r}")
    return out


def check_finite(value: Any, name: str) -> Any:
    """A finite number (``check_number``), or a tensor / array without NaN or inf, else
    ``AddkError`` naming it ("<name> contains NaN or inf"). Returns ``value`` unchanged."""
    import numpy as np

    if isinstance(value, bool | int | float | np.integer | np.floating):
        check_number(value, name)
        return value
    import torch

    t = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise AddkError(f"{name} contains NaN or inf")
    return value


def check_position(position: int, length: int, what: str) -> int:
    """A position inside a prompt of ``length`` tokens (negative counts from the end)."""
    if not -length <= int(position) < length:
        raise AddkError(f"{what}: position {position} is outside the prompt (length {length})")
    return int(position)


def check_dtype(dtype: Any):
    """A floating torch dtype (or its name: float32, float64, float16, bfloat16)."""
    import torch

    allowed = tuple(getattr(torch, d) for d in FLOAT_DTYPES)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None) if dtype in FLOAT_DTYPES else None
        if dtype is None:
            raise AddkError(f"dtype must be one of {', '.join(FLOAT_DTYPES)}")
    if dtype not in allowed:
        raise AddkError(f"dtype must be one of {', '.join(FLOAT_DTYPES)}, got {dtype}")
    return dtype


def check_device(device: str):
    """A device that exists on this machine, else one-line ``AddkError`` (never a silent CPU
    run recorded as ``cuda``)."""
    import torch

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
