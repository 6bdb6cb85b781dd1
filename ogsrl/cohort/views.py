"""Raw MIMIC-IV-layout tables as typed DuckDB views: the columns the cohort code reads, their type categories, and
registration from in-memory pandas frames (``register_frames``) or an unpacked download read in place
(``register_directory``). Wrong or missing tables and columns raise :class:`~ogsrl.errors.DataError` naming them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

import duckdb
import pandas as pd

from ogsrl import progress
from ogsrl.errors import DataError

# ---- raw-table schema: the columns we read and their type category -------------------------------------------
# int: integer ids/codes; float: any number; ts: timestamp (DATE accepted); str: text.
SCHEMA: dict[str, dict[str, str]] = {
    "patients": {"subject_id": "int", "gender": "str", "anchor_age": "int", "anchor_year": "int", "dod": "ts"},
    "admissions": {
        "subject_id": "int", "hadm_id": "int", "admittime": "ts", "dischtime": "ts", "deathtime": "ts",
        "hospital_expire_flag": "int",
    },
    "icustays": {"subject_id": "int", "hadm_id": "int", "stay_id": "int", "intime": "ts", "outtime": "ts"},
    "chartevents": {"stay_id": "int", "charttime": "ts", "itemid": "int", "valuenum": "float"},
    "inputevents": {
        "stay_id": "int", "starttime": "ts", "endtime": "ts", "itemid": "int", "amount": "float",
        "amountuom": "str", "rate": "float", "rateuom": "str", "patientweight": "float", "statusdescription": "str",
    },
    "outputevents": {"stay_id": "int", "charttime": "ts", "itemid": "int", "value": "float"},
    "labevents": {
        "subject_id": "int", "hadm_id": "int", "specimen_id": "int", "itemid": "int", "charttime": "ts",
        "value": "str", "valuenum": "float",
    },
    "procedureevents": {"stay_id": "int", "starttime": "ts", "endtime": "ts", "itemid": "int"},
    "prescriptions": {
        "subject_id": "int", "hadm_id": "int", "starttime": "ts", "stoptime": "ts", "drug_type": "str",
        "drug": "str", "route": "str",
    },
    "microbiologyevents": {
        "subject_id": "int", "hadm_id": "int", "micro_specimen_id": "int", "chartdate": "ts", "charttime": "ts",
        "spec_type_desc": "str", "org_itemid": "int",
    },
    "d_items": {"itemid": "int", "label": "str"},
    "d_labitems": {"itemid": "int", "label": "str"},
}
OPTIONAL: dict[str, dict[str, str]] = {"admissions": {"admit_provider_id": "str"}}
"""Columns read when a table has them (the attending behind ``mb_anchored``; MIMIC-IV 2.2+ records it)."""
TABLES: tuple[str, ...] = tuple(SCHEMA)
"""Every table the pipeline reads."""
STATE_TABLES: tuple[str, ...] = (
    "patients", "icustays", "chartevents", "inputevents", "outputevents", "labevents", "procedureevents",
)
"""The tables compute_states / compute_actions read (the simulator may register only these)."""
MODULE: dict[str, str] = {
    "patients": "hosp", "admissions": "hosp", "labevents": "hosp", "prescriptions": "hosp",
    "microbiologyevents": "hosp", "d_labitems": "hosp", "icustays": "icu", "chartevents": "icu",
    "inputevents": "icu", "outputevents": "icu", "procedureevents": "icu", "d_items": "icu",
}
"""MIMIC-IV module folder of each table."""
_NULLABLE_INT = {("inputevents", "stay_id"), ("labevents", "hadm_id"), ("microbiologyevents", "hadm_id"),
                 ("microbiologyevents", "org_itemid"), ("prescriptions", "hadm_id"), ("patients", "anchor_age"),
                 ("admissions", "hospital_expire_flag")}
"""Integer columns that may be NULL: pandas stores them as float64, accepted when integral."""
_SQL_TYPE = {"int": "BIGINT", "float": "DOUBLE", "ts": "TIMESTAMP", "str": "VARCHAR"}
_INT_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}
_FLOAT_TYPES = {"FLOAT", "DOUBLE"}


def _category_ok(cat: str, dtype: str) -> bool:
    d = dtype.upper()
    if d == "NULL" or d == '"NULL"':
        return True
    if cat == "int":
        return d in _INT_TYPES
    if cat == "float":
        return d in _INT_TYPES or d in _FLOAT_TYPES or d.startswith("DECIMAL")
    if cat == "ts":
        return d.startswith("TIMESTAMP") or d == "DATE"
    return True  # any value can be read as text


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@contextlib.contextmanager
def spill_directory(prefix: str, parent: str | Path | None = None) -> Iterator[Path]:
    """A fresh folder ``<parent>/<prefix><pid>-…`` for DuckDB to spill into, removed on exit.

    A run killed with ``kill -9`` cannot remove its folder (tens of GB at full MIMIC-IV size), so each call first
    removes the folders of this ``prefix`` whose process is no longer alive. ``parent``: the system temp folder by
    default (``TMPDIR``)."""
    base = Path(parent or tempfile.gettempdir())
    for old in base.glob(f"{prefix}*-*"):
        pid = old.name.removeprefix(prefix).split("-", 1)[0]
        if old.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def connect(memory_limit: str = "4GB", threads: int = 2, temp_directory: str | Path | None = None
            ) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that spills to disk beyond ``memory_limit`` (out-of-core)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    except duckdb.Error as exc:
        raise ValueError(f"invalid DuckDB memory_limit {memory_limit!r}: {exc}") from exc
    con.execute(f"SET threads = {int(threads)}")
    con.execute("SET preserve_insertion_order = false")
    progress.enable(con)
    if temp_directory is not None:
        con.execute(f"SET temp_directory = '{Path(temp_directory).as_posix()}'")
    return con


def _q(path: Path) -> str:
    return "'" + path.as_posix().replace("'", "''") + "'"


def _check_columns(con: duckdb.DuckDBPyConnection, table: str, source: str, described: Mapping[str, str],
                   origin: str, csv: bool = False) -> None:
    """Raise DataError when ``source`` lacks a column of :data:`SCHEMA` or holds it with the wrong dtype."""
    schema = SCHEMA[table]
    missing = [c for c in schema if c not in described]
    if missing:
        raise DataError(f"missing column(s) {missing} in {origin}; present: {sorted(described)}",
                        table=table, column=missing[0])
    for col, cat in schema.items():
        dtype = described[col].upper()
        if _category_ok(cat, dtype):
            continue
        if cat == "int" and (table, col) in _NULLABLE_INT and dtype in _FLOAT_TYPES:
            bad = _offending(con, source, col, f'"{col}" <> round("{col}")')
            if not bad:
                continue
            raise DataError(f"expected integer ids, found non-integral values in {origin}",
                            table=table, column=col, rows=bad)
        if csv and dtype == "VARCHAR":
            # the CSV sniffer saw text: either an all-empty sample or real garbage; look for offending values
            bad = _offending(con, source, col, f'TRY_CAST("{col}" AS {_SQL_TYPE[cat]}) IS NULL')
            if not bad:
                continue
            raise DataError(f"wrong dtype in {origin}: expected {cat}, found values that are not",
                            table=table, column=col, rows=bad)
        raise DataError(f"wrong dtype in {origin}: expected {cat}, got {described[col]}", table=table, column=col)


def _offending(con: duckdb.DuckDBPyConnection, source: str, col: str, condition: str) -> list:
    """Up to 5 non-null values of ``col`` in ``source`` that meet the SQL ``condition``."""
    rows = con.execute(f'SELECT "{col}" FROM {source} WHERE "{col}" IS NOT NULL AND {condition} LIMIT 5').fetchall()
    return [r[0] for r in rows]


def _read_columns(table: str, described: Mapping[str, str]) -> dict[str, str]:
    """The :data:`SCHEMA` columns of ``table`` and those of :data:`OPTIONAL` that the source has."""
    return {**SCHEMA[table], **{c: t for c, t in OPTIONAL.get(table, {}).items() if c in described}}


def _create_view(con: duckdb.DuckDBPyConnection, table: str, source: str, described: Mapping[str, str]) -> None:
    read = _read_columns(table, described)
    cols = ", ".join(f'CAST("{c}" AS {_SQL_TYPE[cat]}) AS "{c}"' for c, cat in read.items())
    con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT {cols} FROM {source}")


def _describe(con: duckdb.DuckDBPyConnection, source: str) -> dict[str, str]:
    rows = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    return {r[0]: str(r[1]) for r in rows}


def register_frames(con: duckdb.DuckDBPyConnection, tables: Mapping[str, pd.DataFrame],
                    required: Collection[str] = STATE_TABLES) -> None:
    """Expose pandas frames as typed views named after their MIMIC-IV table.

    Args:
        con: connection from :func:`connect`.
        tables: table name → frame with (at least) the columns of :data:`SCHEMA`.
        required: tables that must be present.

    Raises:
        DataError: unknown/missing table, missing column or wrong dtype (naming table and column).
    """
    unknown = sorted(set(tables) - set(SCHEMA))
    if unknown:
        raise DataError(f"unknown table(s) {unknown}; known: {list(TABLES)}")
    missing = [t for t in required if t not in tables]
    if missing:
        raise DataError(f"missing table(s) {missing}", table=missing[0])
    for name, frame in tables.items():
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"expected a pandas DataFrame, got {type(frame).__name__}", table=name)
        src = f"_src_{name}"
        con.register(src, frame)
        described = _describe(con, src)
        _check_columns(con, name, src, described, "frame")
        _create_view(con, name, src, described)


def _find_file(root: Path, table: str) -> tuple[str, Path] | None:
    for folder in (root / MODULE[table], root):
        for ext, kind in ((".csv.gz", "csv"), (".csv", "csv"), (".parquet", "parquet")):
            p = folder / f"{table}{ext}"
            if p.is_file():
                return kind, p
        d = folder / table
        if d.is_dir() and any(d.glob("*.parquet")):
            return "parquet", d / "*.parquet"
    return None


def locate_tables(root: Path, required: Collection[str] = TABLES) -> dict[str, tuple[str, Path]]:
    """(kind csv | parquet, path) of each table of :data:`TABLES` found under an unpacked MIMIC-IV-layout
    directory; DataError naming the directory or every required table that is absent (and where it was expected)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"raw data directory not found: {root}")
    hits = {t: _find_file(root, t) for t in TABLES}
    missing = [t for t in required if hits[t] is None]
    if missing:
        where = ", ".join(f"{MODULE[t]}/{t}.csv.gz" for t in missing)
        raise DataError(f"missing table(s) {missing} under {root}: expected {where} (or .csv / .parquet)",
                        table=missing[0])
    return {t: hit for t, hit in hits.items() if hit is not None}


def register_directory(con: duckdb.DuckDBPyConnection, root: Path,
                       required: Collection[str] = TABLES) -> dict[str, Path]:
    """Expose an unpacked MIMIC-IV-layout directory (``root/hosp``, ``root/icu``) as typed views, read in place.

    Each table is ``<module>/<table>.csv.gz`` | ``.csv`` | ``.parquet`` (or a folder of parquet parts).

    Returns:
        table → file path of every registered table.

    Raises:
        DataError: missing directory/table/column, wrong dtype, or an unreadable (corrupt) file, naming it.
    """
    hits = locate_tables(root, required)
    found: dict[str, Path] = {}
    for table, (kind, path) in hits.items():
        if kind == "csv":
            sniff = f"read_csv({_q(path)}, header = true, sample_size = 20480)"
        else:
            sniff = f"read_parquet({_q(path)})"
        try:
            described = _describe(con, sniff)
            _check_columns(con, table, sniff, described, str(path), csv=kind == "csv")
            if kind == "csv":
                read = _read_columns(table, described)
                types = ", ".join(f"'{c}': '{_SQL_TYPE[cat]}'" for c, cat in read.items())
                _create_view(con, table, f"read_csv({_q(path)}, header = true, types = {{{types}}})", described)
            else:
                _create_view(con, table, sniff, described)
        except DataError:
            raise
        except duckdb.Error as exc:
            raise DataError(f"cannot read {path} (corrupt or not a {kind} file): {read_error(exc)}",
                            table=table) from None
        found[table] = path
    return found


_FILE = re.compile(r"[^\s'\"=]+\.(?:csv\.gz|csv|parquet)\b")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def read_error(exc: BaseException) -> str:
    """The reason of a DuckDB read failure in one line: its first line, without the SQL text DuckDB appends
    (``LINE 1: SELECT …``), the offending CSV line or quoted values (they may hold raw ids or timestamps)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return _QUOTED.sub("'…'", first).strip()


def run_query(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None,
              label: str | None = None) -> duckdb.DuckDBPyConnection:
    """Execute SQL, turning DuckDB read/convert failures (corrupt file, bad value) into a one-line
    :class:`DataError` naming the file when DuckDB names one (never the SQL text or raw values). With ``label``,
    progress lines (percent, ETA) are logged while it runs (:mod:`ogsrl.progress`)."""
    try:
        if label is not None:
            return progress.execute(con, sql, label, params)
        return con.execute(sql, params or [])
    except (duckdb.IOException, duckdb.ConversionException, duckdb.InvalidInputException) as exc:
        hit = _FILE.search(str(exc))
        where = f"cannot read {hit.group(0)} (corrupt or truncated)" if hit else "reading the raw tables failed"
        raise DataError(f"{where}: {read_error(exc)}") from None
