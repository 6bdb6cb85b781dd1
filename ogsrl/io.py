"""Atomic file output, content hashing and identifier pseudonymisation.

Every artefact is written to a temporary sibling first and renamed into place, so a failing stage never leaves a
half-written or truncated output behind and the previous version stays intact until the new one is complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

HOLD_BEFORE_RENAME_ENV = "OGSRL_FAULT_HOLD_BEFORE_RENAME_S"
"""fault injection for the crash-safety test: seconds each atomic write waits, complete but not yet renamed"""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``, on error delete it.

    Works for files and directories (the yielded path does not exist yet; the caller creates it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)) / path.name
    try:
        yield tmp
        time.sleep(float(os.environ.get(HOLD_BEFORE_RENAME_ENV) or 0))
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def remove_temporaries(directory: str | Path, only: str = "") -> list[str]:
    """Delete what a killed :func:`atomic_path` writer left directly in ``directory`` (``.<name>.*.tmp`` and
    ``.<name>.old.<pid>``; only those of ``<name>`` = ``only`` when given); for outputs DVC keeps between runs
    (``persist: true``), which nothing else cleans. Returns the removed names."""
    directory = Path(directory)
    removed: list[str] = []
    if not directory.is_dir():
        return removed
    prefix = f".{only}." if only else "."
    for p in sorted(directory.iterdir()):
        if p.name.startswith(prefix) and (p.name.endswith(".tmp") or ".old." in p.name):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            removed.append(p.name)
    return removed


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as sorted, indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n", encoding="utf-8")


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_parquet(path: str | Path, table: Any) -> None:
    """Write a pandas DataFrame or pyarrow Table to parquet atomically (deterministic bytes for equal input)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def dir_sha256(path: str | Path) -> str:
    """Hex SHA-256 over a directory's files: each file's relative POSIX path, then its bytes, in sorted order."""
    path = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def salted_hash(values: Any, salt: str, length: int = 16) -> list[str]:
    """Pseudonymise identifiers: hex prefix of SHA-256(salt ‖ ':' ‖ value) for each value."""
    if not salt:
        raise ValueError("salted_hash: salt must be a non-empty string")
    out = []
    for v in values:
        out.append(hashlib.sha256(f"{salt}:{v}".encode()).hexdigest()[:length])
    return out
