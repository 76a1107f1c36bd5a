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
