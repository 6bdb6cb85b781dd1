"""ogsrl.cohort.views: raw tables registered as typed DuckDB views, and the errors bad tables give."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from ogsrl.cohort import views
from ogsrl.errors import DataError

from .test_features import _write_dir, tiny_tables


def test_register_frames_errors(con) -> None:
    tabs = tiny_tables()
    with pytest.raises(DataError, match="missing table.*procedureevents"):
        views.register_frames(con, {k: v for k, v in tabs.items() if k != "procedureevents"})
    with pytest.raises(DataError, match="'chartevents'.*'valuenum'"):
        views.register_frames(con, {**tabs, "chartevents": tabs["chartevents"].drop(columns="valuenum")})
    bad = tabs["chartevents"].assign(valuenum=tabs["chartevents"]["value"])  # text in a numeric column
    with pytest.raises(DataError, match="wrong dtype.*expected float"):
        views.register_frames(con, {**tabs, "chartevents": bad})
    bad = tabs["labevents"].assign(hadm_id=1.5)
    with pytest.raises(DataError, match="'hadm_id'.*non-integral"):
        views.register_frames(con, {**tabs, "labevents": bad})


def test_directory_errors(tmp_path: Path, con) -> None:
    tabs = tiny_tables()
    _write_dir(tmp_path, tabs, "csv.gz")
    missing = r"missing table\(s\) \[.prescriptions., .microbiologyevents., .d_items., .d_labitems.\]"
    with pytest.raises(DataError, match=missing):
        views.register_directory(con, tmp_path)
    # garbage in a numeric CSV column → wrong dtype naming table, column and the bad value
    bad = tabs["outputevents"].astype({"value": object})
    bad.loc[2, "value"] = "lots"
    bad.to_csv(tmp_path / "icu" / "outputevents.csv.gz", index=False, compression="gzip")
    with pytest.raises(DataError, match=r"'outputevents'.*'value'.*lots"):
        views.register_directory(con, tmp_path, required=views.STATE_TABLES)
    tabs["outputevents"].to_csv(tmp_path / "icu" / "outputevents.csv.gz", index=False, compression="gzip")
    # a corrupt csv.gz: truncated gzip stream
    path = tmp_path / "icu" / "chartevents.csv.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match="chartevents.csv.gz"):
        views.register_directory(con, tmp_path, required=views.STATE_TABLES)
    path.write_bytes(b"this is not gzip at all")
    with pytest.raises(DataError, match="chartevents.csv.gz"):
        views.register_directory(con, tmp_path, required=views.STATE_TABLES)
    with gzip.open(path, "wt") as fh:
        fh.write("stay_id,charttime,itemid\n1,2180-01-01 05:00:00,220045\n")
    with pytest.raises(DataError, match="'chartevents'.*missing column.*valuenum"):
        views.register_directory(con, tmp_path, required=views.STATE_TABLES)


def test_connect_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="memory_limit"):
        views.connect("lots")
    with pytest.raises(ValueError, match="threads"):
        views.connect("1GB", 0)


def test_read_failure_after_registration_is_one_line_naming_the_file(tmp_path: Path, con) -> None:
    # a malformed row far beyond the sniffed sample: registration passes, the first full read fails
    tabs = tiny_tables()
    _write_dir(tmp_path, tabs, "csv.gz")
    ce = tabs["chartevents"]
    lines = ce.to_csv(index=False, date_format="%Y-%m-%d %H:%M:%S").splitlines()
    body = lines[1:] * 3000
    body[-5] += ",2180-01-01 07:07:07,99999"     # one extra field, with a timestamp and an id-like value
    path = tmp_path / "icu" / "chartevents.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join([lines[0], *body]) + "\n")
    views.register_directory(con, tmp_path, required=views.STATE_TABLES)
    with pytest.raises(DataError) as err:
        views.run_query(con, "SELECT count(*) FROM chartevents").fetchall()
    msg = str(err.value)
    assert msg.startswith(f"cannot read {path}") and "\n" not in msg
    assert "99999" not in msg and "07:07:07" not in msg and "SELECT" not in msg and "LINE 1" not in msg


def test_spill_directory_removes_folders_of_dead_runs_only(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    left = tmp_path / f"ogsrl-duckdb-{dead_pid}-abc"  # what a kill -9 leaves behind
    (left / "spill").mkdir(parents=True)
    (left / "spill" / "block.tmp").write_bytes(b"x" * 10)
    alive = tmp_path / "ogsrl-duckdb-1-xyz"  # pid 1 is always running
    alive.mkdir()
    other = tmp_path / "ogsrl-validate-duckdb-999999999-q"  # another prefix is not touched
    other.mkdir()
    with views.spill_directory("ogsrl-duckdb-", tmp_path) as path:
        assert path.is_dir() and path.name.startswith(f"ogsrl-duckdb-{os.getpid()}-")
        assert not left.exists() and alive.exists() and other.exists()
    assert not path.exists()
