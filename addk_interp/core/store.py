"""Artifacts: atomic writes of JSON / CSV / safetensors, with fingerprints checked on load.

Not a step of the method but what makes every step reproducible: tensors go to safetensors,
tables to CSV (and parquet when pyarrow is present), metadata to JSON; never pickle. Every
write goes to a temporary file in the same folder and is renamed into place, so a killed run
never leaves a half-written artifact. ``load_tensors`` refuses a file whose stored fingerprint
differs from the expected one (a cache from another model, task set, seed or code version).
Cost: I/O only.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from addk_interp.core.errors import AddkError


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts follow the umask
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file + rename)."""

    def w(tmp):
        Path(tmp).write_text(text, encoding="utf-8", newline="")

    return _atomic(path, w)


def write_json(path, data) -> Path:
    def w(tmp):
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=False, default=_default)
            f.write("\n")

    return _atomic(path, w)


def _default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, set | tuple):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def stage_json(out, stage: str, name: str) -> dict | None:
    """``OUT/stages/STAGE/NAME`` of a run directory, or None when the stage did not write it."""
    p = Path(out) / "stages" / stage / name
    return read_json(p) if p.exists() else None


def read_json(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise AddkError(f"missing file {path}") from None
    except json.JSONDecodeError as e:
        raise AddkError(f"{path}: corrupt JSON ({e.msg})") from None


def write_table(path, df: pd.DataFrame) -> Path:
    return _atomic(path, lambda tmp: df.to_csv(tmp, index=False))


def write_tensors(path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """safetensors with string metadata; ``meta['fingerprint']`` is checked on load."""
    # one metadata entry: safetensors writes its metadata map in hash order, so several keys
    # would make same-content files differ byte for byte between runs
    flat = {"_meta_json": json.dumps(meta, default=_default, sort_keys=True)}
    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return _atomic(path, lambda tmp: save_file(data, tmp, metadata=flat))


def read_tensors(path, expect: dict | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Load tensors + metadata; refuse when any ``expect`` key differs from the stored value."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise AddkError(f"missing file {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
        meta = json.loads(raw.get("_meta_json", "{}"))
        tensors = load_file(str(path))
    except Exception as e:  # truncated / corrupt: name the file, never a traceback
        raise AddkError(f"{path}: corrupt or truncated safetensors file ({type(e).__name__})") from None
    for key, want in (expect or {}).items():
        have = meta.get(key)
        if have != want:
            raise AddkError(
                f"{path.name}: {key} mismatch (file has {have!r}, expected {want!r}); this artifact "
                "comes from another model / configuration and will not be used"
            )
    return tensors, meta


def cache_dir() -> Path:
    """Where converted weights and tokenizers are cached: ``$ADDK_INTERP_CACHE`` or
    ``~/.cache/addk_interp`` (created)."""
    import os

    root = os.environ.get("ADDK_INTERP_CACHE") or Path.home() / ".cache" / "addk_interp"
    p = Path(root)
    p.mkdir(parents=True, exist_ok=True)
    return p
