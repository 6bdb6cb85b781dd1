"""Where the extraction reads from (``params.yaml: data.source``).

* ``demo``: the simulator's MIMIC-IV-layout tables under ``<root>/<data.raw_dir>``;
* ``mimic-iv``: an unpacked MIMIC-IV v2.2 / v3.x download at ``data.mimic_path`` (csv.gz or parquet, read in
  place);
* ``trajectories``: a bring-your-own parquet at ``data.trajectories_path`` that follows docs/data-contract.md §3
  (canonical features) or declares its own schema (§4: parquet metadata ``ogsrl.schema`` or ``data.schema_path``).

Relative paths are taken relative to the project root.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ogsrl.config import build
from ogsrl.errors import DataError


@dataclass(frozen=True, slots=True)
class Source:
    """A resolved input."""

    kind: Literal["demo", "mimic-iv", "trajectories"]
    """data.source"""
    path: Path
    """raw-table directory (demo, mimic-iv) or trajectory parquet (trajectories)"""
    schema_path: Path | None = None
    """trajectories: the sidecar schema file (data.schema_path), None when the parquet's metadata holds it"""


@dataclass(frozen=True, slots=True)
class DataConfig:
    """Where the pipeline's input comes from (params section ``data``)."""

    source: Literal["demo", "mimic-iv", "trajectories"] = "demo"
    """demo (simulated tables), mimic-iv (a MIMIC-IV download read in place) or trajectories (bring your own)."""
    mimic_path: str = ""
    """mimic-iv: unpacked MIMIC-IV v2.2/v3.x directory holding hosp/ and icu/."""
    trajectories_path: str = ""
    """trajectories: parquet file following docs/data-contract.md §3."""
    schema_path: str = ""
    """trajectories: JSON file holding the table's schema (docs/data-contract.md §4); "": the parquet's metadata."""
    raw_dir: str = "data/raw"
    """Where the demo tables (or, for the other sources, the SOURCE.json pointer) are written, under the root."""

    def __post_init__(self) -> None:
        if not self.raw_dir.strip():
            raise ValueError("raw_dir must be a non-empty path")
        if self.source == "mimic-iv" and not self.mimic_path.strip():
            raise ValueError("mimic_path must be set when source is 'mimic-iv'")
        if self.source == "trajectories" and not self.trajectories_path.strip():
            raise ValueError("trajectories_path must be set when source is 'trajectories'")


def resolve(params: Mapping[str, Any], root: Path) -> Source:
    """Resolve ``params.data`` against the project root; DataError if the input does not exist."""
    cfg = build(DataConfig, params.get("data") or {}, "data")

    def under_root(p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else Path(root) / q

    if cfg.source == "demo":
        path = under_root(cfg.raw_dir)
        if not path.is_dir():
            raise DataError(f"demo tables not found at {path}; run `ogsrl generate` first")
        return Source("demo", path)
    if cfg.source == "mimic-iv":
        path = under_root(cfg.mimic_path)
        if not path.is_dir():
            raise DataError(f"data.mimic_path {str(path)!r} is not a directory")
        return Source("mimic-iv", path)
    path = under_root(cfg.trajectories_path)
    if not path.is_file():
        raise DataError(f"data.trajectories_path {str(path)!r} is not a file")
    schema = under_root(cfg.schema_path) if cfg.schema_path.strip() else None
    if schema is not None and not schema.is_file():
        raise DataError(f"data.schema_path {str(schema)!r} is not a file")
    return Source("trajectories", path, schema)
