"""Errors: one exception type for every bad input the toolkit refuses.

Not a step of the method; the CLI turns an ``AddkError`` into one clear line and exit code 2.
"""


class AddkError(ValueError):
    """A clear, user-facing refusal (bad input, mismatch, missing resource)."""


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
