"""Resolving params.data to an input."""

from __future__ import annotations

from pathlib import Path

import pytest

from ogsrl.config import ConfigError
from ogsrl.data.sources import resolve
from ogsrl.errors import DataError


def test_each_source_resolves(tmp_path: Path) -> None:
    (tmp_path / "data" / "raw").mkdir(parents=True)
    assert resolve({"data": {"source": "demo"}}, tmp_path).path == tmp_path / "data" / "raw"
    mimic = tmp_path / "mimiciv" / "3.1"
    mimic.mkdir(parents=True)
    src = resolve({"data": {"source": "mimic-iv", "mimic_path": "mimiciv/3.1"}}, tmp_path)
    assert (src.kind, src.path) == ("mimic-iv", mimic)
    pq = tmp_path / "mine.parquet"
    pq.write_bytes(b"x")
    src = resolve({"data": {"source": "trajectories", "trajectories_path": str(pq)}}, tmp_path)
    assert (src.kind, src.path) == ("trajectories", pq)


def test_missing_inputs_and_bad_values(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="ogsrl generate"):
        resolve({"data": {"source": "demo"}}, tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        resolve({"data": {"source": "mimic-iv", "mimic_path": "nowhere"}}, tmp_path)
    with pytest.raises(DataError, match="not a file"):
        resolve({"data": {"source": "trajectories", "trajectories_path": "none.parquet"}}, tmp_path)
    with pytest.raises(ConfigError, match="data.source"):
        resolve({"data": {"source": "eicu"}}, tmp_path)


def test_trajectories_schema_sidecar(tmp_path: Path) -> None:
    pq = tmp_path / "mine.parquet"
    pq.write_bytes(b"x")
    (tmp_path / "schema.json").write_text("{}")
    data = {"source": "trajectories", "trajectories_path": str(pq)}
    assert resolve({"data": data}, tmp_path).schema_path is None
    src = resolve({"data": {**data, "schema_path": "schema.json"}}, tmp_path)
    assert src.schema_path == tmp_path / "schema.json"
    with pytest.raises(DataError, match="data.schema_path .*nope.json.* is not a file"):
        resolve({"data": {**data, "schema_path": "nope.json"}}, tmp_path)
