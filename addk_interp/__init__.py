"""addk-interp: localize and explain in-context add-k in language models."""

__version__ = "0.1.0"
