"""Errors: one exception type for every bad input the toolkit refuses.

Not a step of the method; the CLI turns an ``AddkError`` into one clear line and exit code 2.
"""


class AddkError(ValueError):
    """A clear, user-facing refusal (bad input, mismatch, missing resource)."""
