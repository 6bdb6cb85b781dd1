"""Full-size stand-in for a MIMIC-IV v3.1 download: a generated demo directory padded with filler rows.

The demo writes only the ~40 itemids the pipeline reads; a real download is dominated by thousands of others
(433 M ``chartevents`` rows, of which the vitals we read are a small share). :func:`add_filler` copies a
MIMIC-IV-layout directory and appends rows with *other* itemids to ``chartevents``, ``labevents``, ``inputevents``,
``outputevents`` and ``procedureevents``, and non-antibiotic drugs to ``prescriptions`` (:data:`_DRUGS`), until
each holds its target row count (default: the v3.1 counts of :data:`MIMIC_IV_ROWS`, times ``scale``), and defines
those itemids in ``d_items`` / ``d_labitems`` (as a download does). Every other table is copied unchanged, so the
extraction must give the same cohort with or without filler. ``microbiologyevents`` is not padded: every culture
of a candidate patient enters the suspicion-of-infection pairing, so filler cultures would change the cohort.

Rows are made by DuckDB alone (``COPY`` of ``range``-generated rows; no Python loop over rows):

* per-stay counts: filler rows are spread over ICU stays in proportion to their length (``los`` in seconds), labs
  over hospital admissions in proportion to (dischtime − admittime + 1 day); with cumulative weights
  :math:`W_s = \\sum_{s' \\le s} w_{s'}` stay :math:`s` gets
  :math:`\\lfloor n W_s / W \\rfloor - \\lfloor n W_{s-1} / W \\rfloor` rows, which sum to exactly :math:`n`;
* rows come in groups that share their time, storetime and caregiver (:data:`_GROUP`: a charting round of 12
  chartevents rows, a lab specimen of 8 rows with one specimen_id, priority and provider); group :math:`r` of
  :math:`R` in a unit is at ``start + (r + ½)·span / R`` (minute resolution), so rows are in time order within
  their unit; the item at position :math:`p` of group :math:`r` is ``(uh + p + G·(r mod P)) mod n`` of the
  table's filler items (``uh`` the unit's seeded hash; a unit cycles through :data:`_PANELS` item sequences);
* values follow a per-item profile drawn from the seed (:func:`item_profiles`): integers or one decimal around the
  item's center, one unit per item, the value text equal to valuenum, a quarter of the chartevents items text from
  a small set; lab reference ranges per item and ``flag`` = abnormal outside them; warning 0;
* every per-row pseudo-random value is ``hash(seed, g, k) mod m`` of the global row number ``g`` and a column tag
  ``k`` (per group: ``hash(seed, unit, r, k)``): seeded and reproducible for a given DuckDB version. The rows are
  reproducible; their order in the file is not (written in parallel, without insertion order: base and filler rows
  interleave), except outputevents, written sorted by patient, stay and time (:data:`_SORTED`).

These make filler rows compress like real ones: on a 2,000-stay sample (``benchmarks/calibrate_filler.py``) the
stand-in's csv.gz bytes per row at ``gzip -6`` are within 5 % of the real v3.1 files' (:data:`MIMIC_IV_BYTES`)
for chartevents, labevents, inputevents and procedureevents, 13 % above for outputevents and 11 % below for
prescriptions (see docs/full-size.md).

Filler itemids (:func:`filler_items`) are spread over the same numeric range as the ones we read (so parquet
min/max statistics cannot skip them) and never equal an itemid the pipeline reads (:func:`read_items`) nor one
already defined in the base dictionaries (checked, :class:`~ogsrl.errors.DataError`).
csv.gz is written by ``COPY`` into a pipe to ``gzip -1`` (DuckDB's own gzip is 2–3× slower); parquet with zstd.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import duckdb
import pyarrow as pa

from ogsrl import features as F
from ogsrl.cohort import features as cf
from ogsrl.errors import DataError
from ogsrl.io import atomic_path
from ogsrl.synth import tables as T

log = logging.getLogger(__name__)

MIMIC_IV_ROWS: dict[str, int] = {
    "chartevents": 432_997_491, "labevents": 158_374_764, "inputevents": 10_953_713, "outputevents": 5_359_395,
    "procedureevents": 808_706, "prescriptions": 20_292_611,
}
"""Rows of the padded tables in MIMIC-IV v3.1 (mimic-code ``buildmimic/postgres/validate.sql``)."""
MIMIC_IV_BYTES: dict[str, int] = {
    "chartevents": 3_300_000_000, "labevents": 2_500_000_000, "inputevents": 382_000_000, "outputevents": 47_000_000,
    "procedureevents": 22_000_000, "prescriptions": 578_000_000,
}
"""Compressed sizes of the v3.1 ``.csv.gz`` files, as listed (rounded, "3.3 GB") by a third-party scan of a
download (github.com/pr014/Master-thesis, docs/MIMIC_IV_SCAN.md); not PhysioNet's own listing, GB vs GiB not
stated."""
MIMIC_IV_STAYS = 94_458
"""ICU stays (icustays rows) in MIMIC-IV v3.1 (same source)."""
PADDED: tuple[str, ...] = tuple(MIMIC_IV_ROWS)
FORMATS: tuple[str, ...] = ("csv.gz", "parquet")

_N_FILLER = {"chartevents": 400, "inputevents": 150, "outputevents": 40, "labevents": 600, "procedureevents": 60}
"""distinct filler itemids per table (MIMIC-IV d_items: ~4,100 items; d_labitems: 1,650)"""
_ITEM_RANGE = {"chartevents": (220_001, 229_999), "inputevents": (220_001, 229_999),
               "outputevents": (220_001, 229_999), "labevents": (50_801, 53_199),
               "procedureevents": (220_001, 229_999)}
ICU_ITEM_TABLES = ("chartevents", "inputevents", "outputevents", "procedureevents")
"""padded tables whose itemids d_items defines (``linksto``); labevents' are in d_labitems, prescriptions have none"""
_DUCK_TYPE = {pa.int32(): "INTEGER", pa.int16(): "SMALLINT", pa.float64(): "DOUBLE", pa.string(): "VARCHAR",
              pa.timestamp("s"): "TIMESTAMP", pa.date32(): "DATE"}


def read_items() -> frozenset[int]:
    """Every itemid the extraction or the raw validation reads (chartevents, labevents incl. the blood-gas
    specimen type, urine, ventilation, IV fluids, vasopressors)."""
    return frozenset({*F.CHART_ITEMS, 220224, *F.LAB_ITEMS, cf.ART_SPECIMEN_ITEM, *F.URINE_ITEMS,
                      *F.URINE_SUBTRACT_ITEMS, *F.VENT_ITEMS, *F.FLUID_TONICITY, *F.NEE_FACTORS})


def filler_items() -> dict[str, tuple[int, ...]]:
    """Filler itemids per padded table: evenly spaced over the table's itemid range, skipping every itemid we read;
    the sets are pairwise disjoint."""
    used = set(read_items())
    out: dict[str, tuple[int, ...]] = {}
    for table in (t for t in PADDED if t in _N_FILLER):
        lo, hi = _ITEM_RANGE[table]
        n = _N_FILLER[table]
        offset = len(out)  # different tables use interleaved ids: disjoint sets
        picked = []
        for i in range(lo + offset, hi + 1, (hi - lo) // (n + 50)):
            if i not in used:
                picked.append(i)
                used.add(i)
            if len(picked) == n:
                break
        out[table] = tuple(picked)
    return out


# ---- reading and writing ---------------------------------------------------------------------------------------
def _lit(s: str | Path) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def _locate(root: Path, table: str) -> tuple[str, Path]:
    for ext, kind in ((".csv.gz", "csv"), (".csv", "csv"), (".parquet", "parquet")):
        p = root / T.MODULE[table] / f"{table}{ext}"
        if p.is_file():
            return kind, p
    raise DataError(f"missing table {T.MODULE[table]}/{table}.csv.gz (or .csv / .parquet) under {root}", table=table)


def _source(root: Path, table: str) -> str:
    """SQL source of a base table in the exact MIMIC-IV column layout and types (tables.SCHEMAS)."""
    kind, path = _locate(root, table)
    schema = T.SCHEMAS[table]
    if kind == "csv":
        cols = ", ".join(f"{_lit(f.name)}: '{_DUCK_TYPE[f.type]}'" for f in schema)
        src = f"read_csv({_lit(path)}, header = true, columns = {{{cols}}})"
    else:
        src = f"read_parquet({_lit(path)})"
    sel = ", ".join(f'CAST("{f.name}" AS {_DUCK_TYPE[f.type]}) AS "{f.name}"' for f in schema)
    return f"(SELECT {sel} FROM {src})"


def _copy(con: duckdb.DuckDBPyConnection, select: str, dest: Path, fmt: str) -> None:
    """Write the rows of ``select`` to ``dest`` as csv.gz (header, NULL empty, timestamps ``%Y-%m-%d %H:%M:%S``)
    or parquet (zstd)."""
    if fmt == "parquet":
        con.execute(f"COPY ({select}) TO {_lit(dest)} (FORMAT parquet, COMPRESSION zstd)")
        return
    opts = "HEADER, TIMESTAMPFORMAT '%Y-%m-%d %H:%M:%S', DATEFORMAT '%Y-%m-%d'"
    gzip = shutil.which("gzip")
    if gzip is None:
        con.execute(f"COPY ({select}) TO {_lit(dest)} ({opts}, COMPRESSION gzip)")
        return
    fifo = Path(tempfile.mkdtemp(prefix="ogsrl-fifo-")) / "rows.csv"
    os.mkfifo(fifo)
    try:
        with dest.open("wb") as out:
            # the shell opens the pipe for reading (it blocks until DuckDB opens it for writing)
            proc = subprocess.Popen(["sh", "-c", 'exec "$0" -1 -n -c < "$1"', gzip, str(fifo)], stdout=out)
            try:
                con.execute(f"COPY ({select}) TO {_lit(fifo)} ({opts}, USE_TMP_FILE false)")
            except BaseException:
                try:  # unblock a reader still waiting for a writer, so gzip ends
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    pass
                raise
            finally:
                proc.wait()
        if proc.returncode != 0:
            raise OSError(f"gzip failed with status {proc.returncode} writing {dest}")
    finally:
        shutil.rmtree(fifo.parent, ignore_errors=True)


# ---- filler rows -------------------------------------------------------------------------------------------------
def _pick(values: tuple, expr: str) -> str:
    """SQL: element ``expr mod len(values)`` of a literal list."""
    lit = ", ".join(_lit(v) if isinstance(v, str) else str(v) for v in values)
    return f"list_element([{lit}], CAST(1 + ({expr}) % {len(values)} AS BIGINT))"


def _alloc(con: duckdb.DuckDBPyConnection, name: str, units: str, n: int) -> None:
    """Temp table ``name``: per unit (stay or admission) its ``n_rows`` filler rows and ``first_row`` (global row
    number of its first filler row), proportional to the unit's ``span_s``; the counts sum to exactly ``n``."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {name} AS
        WITH c AS (SELECT *, sum(span_s) OVER (ORDER BY unit_key ROWS UNBOUNDED PRECEDING) AS cum,
                          sum(span_s) OVER () AS tot FROM ({units}))
        SELECT *, CAST(floor(CAST(cum AS DOUBLE) / tot * {n}) AS BIGINT)
                  - CAST(floor(CAST(cum - span_s AS DOUBLE) / tot * {n}) AS BIGINT) AS n_rows,
               CAST(floor(CAST(cum - span_s AS DOUBLE) / tot * {n}) AS BIGINT) AS first_row
        FROM c""")
    got = con.execute(f"SELECT coalesce(sum(n_rows), 0) FROM {name}").fetchone()[0]
    if int(got) != n:
        raise AssertionError(f"filler allocation gave {got} rows, wanted {n}")


_GROUP = {"chartevents": 12, "labevents": 8, "outputevents": 2, "inputevents": 1, "procedureevents": 1,
          "prescriptions": 1}
"""rows per charting round (chartevents), specimen (labevents) or output round; the rows of a group share
their time, storetime and caregiver, as a nurse charts a set of items at once and a lab panel is one specimen"""
_PANELS = {"chartevents": 8, "labevents": 32, "outputevents": 3, "inputevents": 1, "procedureevents": 1,
           "prescriptions": 0}
"""distinct item sequences a unit cycles through, group after group (0: a seeded random item per row)"""


def _rows(alloc: str, seed: int, group: int = 1) -> str:
    """One row per filler row: the unit's columns, ``uh`` (the unit's seeded hash), ``j`` (row within the unit),
    ``g`` (global row number), ``r`` / ``p`` (group of ``group`` rows and position in it) and ``t`` (the group's
    time: ``start + (r + ½)·span / R`` for R groups, minute resolution, in time order within the unit)."""
    return f"""(SELECT *, first_row + j AS g, j // {group} AS r, j % {group} AS p,
                       t0 + to_seconds(CAST(floor(span_s * (j // {group} + 0.5)
                                                  / ceil(CAST(n_rows AS DOUBLE) / {group}) / 60) * 60 AS BIGINT)) AS t
                FROM (SELECT *, hash({int(seed)}, unit_key) AS uh, unnest(range(n_rows)) AS j
                      FROM {alloc} WHERE n_rows > 0))"""


def _h(seed: int, k: int) -> str:
    """SQL: a seeded pseudo-random UBIGINT of the row (global row number g) for column tag k."""
    return f"hash({int(seed)}, g, {k})"


def _hg(seed: int, k: int) -> str:
    """SQL: the same for the row's group (unit, group number r): equal for all rows of a group."""
    return f"hash({int(seed)}, unit_key, r, {k})"


_NEW_IDS = {"labevents": ("labevent_id", "specimen_id"), "inputevents": ("orderid",),
            "procedureevents": ("proc_orderid",), "prescriptions": ("pharmacy_id",)}
"""ids that filler rows continue from the base's maximum (one new id per filler row at most)"""
_DRUGS: tuple[dict[str, str | None], ...] = tuple(
    dict(zip(("drug", "type", "strength", "form", "dose", "unit", "disp", "disp_unit", "per24", "route", "cd", "gsn",
              "ndc"), row))
    for row in ((None if v == "" else v for v in r) for r in (
        ("Acetaminophen", "MAIN", "325mg Tablet", "TAB", "650", "mg", "2", "TAB", "4", "PO/NG", "ACET325", "004489",
         "00904198861"),
        ("Heparin", "MAIN", "5000 Units / mL- 1mL Vial", "VIAL", "5000", "UNIT", "1", "mL", "3", "SC", "HEPA5I",
         "006549", "63323026201"),
        ("Sodium Chloride 0.9%  Flush", "MAIN", "10 mL Syringe", "SYR", "3-10", "mL", "0.3", "SYR", "3", "IV",
         "NACLFLUSH", "", "0"),
        ("Insulin", "MAIN", "100 Units / mL - 10 mL Vial", "VIAL", "0", "UNIT", "0", "VIAL", "0", "SC", "GLAR100I",
         "027138", "00088222033"),
        ("Docusate Sodium", "MAIN", "100mg Capsule", "CAP", "100", "mg", "1", "CAP", "2", "PO", "DOCU100", "003009",
         "00904224461"),
        ("Senna", "MAIN", "8.6 mg Tablet", "TAB", "8.6", "mg", "1", "TAB", "2", "PO/NG", "SENN187", "019964",
         "00904516561"),
        ("Pantoprazole", "MAIN", "40mg Vial", "VIAL", "40", "mg", "1", "VIAL", "1", "IV", "PANT40I", "027462",
         "00008092355"),
        ("Metoprolol Tartrate", "MAIN", "25mg Tablet", "TAB", "25", "mg", "1", "TAB", "2", "PO/NG", "METO25",
         "005132", "51079025520"),
        ("Furosemide", "MAIN", "10mg/mL-2mL", "VIAL", "20", "mg", "1", "mL", "2", "IV", "FURO20I", "008208",
         "00409610202"),
        ("Potassium Chloride", "MAIN", "20mEq Packet", "PKT", "40", "mEq", "2", "PKT", "0", "PO", "KCL20P", "001275",
         "66553000201"),
        ("Magnesium Sulfate", "MAIN", "2g / 50 mL Premix Bag", "BAG", "2", "gm", "1", "BAG", "0", "IV", "MAG2PM",
         "", "0"),
        ("Ondansetron", "MAIN", "2mg/mL-2mL", "VIAL", "4", "mg", "1", "VIAL", "0", "IV", "ONDA4I", "016416",
         "00781300962"),
        ("Bisacodyl", "MAIN", "10mg Suppository", "SUPP", "10", "mg", "1", "SUPP", "1", "PR", "BISA10R", "003025",
         "00536338101"),
        ("Polyethylene Glycol", "MAIN", "17g Packet", "PKT", "17", "g", "1", "PKT", "1", "PO/NG", "PEG17", "018093",
         "66553000401"),
        ("Atorvastatin", "MAIN", "40mg Tablet", "TAB", "40", "mg", "1", "TAB", "1", "PO/NG", "ATOR40", "029968",
         "00071015723"),
        ("Aspirin", "MAIN", "81mg Tablet", "TAB", "81", "mg", "1", "TAB", "1", "PO/NG", "ASA81", "004376",
         "63739052601"),
        ("Oxycodone (Immediate Release)", "MAIN", "5mg Tablet", "TAB", "5", "mg", "1", "TAB", "0", "PO/NG",
         "OXYC5", "004225", "00406055262"),
        ("Lorazepam", "MAIN", "2mg/mL Vial", "VIAL", "0.5", "mg", "0.25", "mL", "0", "IV", "LORA2I", "003757",
         "00641604410"),
        ("Propofol", "MAIN", "1000mg/100mL Vial", "VIAL", "10", "mcg/kg/min", "0.1", "VIAL", "0", "IV DRIP",
         "PROP100IG", "004682", "63323026950"),
        ("Dextrose 50%", "MAIN", "25 g / 50 mL Syringe", "SYR", "12.5", "gm", "0.5", "SYR", "0", "IV", "DEX50SY",
         "", "0"),
        ("Sodium Chloride 0.9%", "BASE", "1000 mL Bag", "BAG", "1000", "mL", "1", "BAG", "0", "IV", "NS1000",
         "", "0"),
        ("D5W", "BASE", "250 mL Bag", "BAG", "250", "mL", "1", "BAG", "0", "IV", "D5W250", "", "0"),
        ("Famotidine", "MAIN", "20 mg Tablet", "TAB", "20", "mg", "1", "TAB", "2", "PO/NG", "FAMO20", "011673",
         "00172572860"),
        ("Albuterol 0.083% Neb Soln", "MAIN", "2.5mg/3mL Neb", "NEB", "1", "NEB", "1", "NEB", "6", "IH",
         "ALBU3H", "028090", "00487950101"),
    )))
"""common non-antibiotic MIMIC-IV-style prescription rows (drug and its product fields), for prescriptions filler;
no drug name matches :data:`ogsrl.features.ANTIBIOTIC_NAMES` (checked in :func:`add_filler`)"""

_SORTED = {"outputevents": "subject_id, stay_id, charttime, itemid"}
"""padded tables written sorted (base and filler rows together, as a download lists a patient's rows together);
outputevents only: its base rows (90 %) would otherwise dominate its size, and 5 M rows sort in seconds"""


_UOMS = {"chartevents": ("bpm", "mmHg", "%", "insp/min", "cmH2O", "mL", "°C", "mg/dL", "L/min", "kg"),
         "labevents": ("mg/dL", "mEq/L", "K/uL", "%", "IU/L", "g/dL", "mmol/L", "sec", "ng/mL", "U/L")}
_TEXTS = ("Normal", "Yes", "No", "None", "Intact", "Clear", "Absent", "Regular", "Strong", "Soft")


def item_profiles(table: str, seed: int) -> dict[str, tuple]:
    """Per filler itemid of ``table`` (in :func:`filler_items` order) how its values look, drawn once from
    ``seed``: ``text`` (chartevents only, 1 in 4: a string from a small set, mostly the item's usual one; no
    valuenum), ``scale`` (1: integers, 10: one decimal, 1 in 5), ``center`` and ``width`` (values are uniform
    integers in center ± width, in units of 1/scale, floored at 0: log-uniform centers 1–200, widths 2–15 % of
    the center), ``usual`` (index of the usual text) and ``uom`` (one unit per item)."""
    import numpy as np

    n = len(filler_items()[table])
    rng = np.random.default_rng([int(seed), PADDED.index(table)])
    scale = np.where(rng.random(n) < 0.2, 10, 1)
    center = np.exp(rng.uniform(0.0, np.log(200.0), n))
    width = np.maximum(1, np.round(center * rng.uniform(0.02, 0.15, n) * scale)).astype(int)
    uoms = _UOMS.get(table, ("mL",))
    return {"text": tuple(bool(x) for x in (rng.random(n) < 0.25) & (table == "chartevents")),
            "scale": tuple(int(x) for x in scale),
            "center": tuple(int(x) for x in np.round(center * scale)),
            "width": tuple(int(x) for x in width),
            "usual": tuple(int(x) for x in rng.integers(0, len(_TEXTS), n)),
            "uom": tuple(uoms[int(i)] for i in rng.integers(0, len(uoms), n))}


def _at(values: tuple, index: str) -> str:
    """SQL: element ``index`` (0-based SQL expression, already in range) of a literal list."""
    lit = ", ".join("NULL" if v is None else _lit(v) if isinstance(v, str) else str(int(v)) for v in values)
    return f"list_element([{lit}], CAST(({index}) + 1 AS BIGINT))"


def _numeric(prof: Mapping[str, tuple], seed: int) -> tuple[str, str]:
    """SQL (value text, valuenum) of a numeric row of item index ``ii``: an integer ``vi`` in center ± width
    (floored at 0) shown as ``vi`` or ``vi/10`` with one decimal — the text equals the number, as in MIMIC-IV."""
    c, w, sc = _at(prof["center"], "ii"), _at(prof["width"], "ii"), _at(prof["scale"], "ii")
    vi = f"greatest(0, CAST({c} AS BIGINT) + CAST({_h(seed, 2)} % CAST(2 * {w} + 1 AS UBIGINT) AS BIGINT) - {w})"
    text = (f"CASE WHEN {sc} = 1 THEN CAST({vi} AS VARCHAR) "
            f"ELSE CAST({vi} // 10 AS VARCHAR) || '.' || CAST({vi} % 10 AS VARCHAR) END")
    return text, f"CAST({vi} AS DOUBLE) / {sc}"


def _filler_select(table: str, alloc: str, seed: int, items: tuple[int, ...], ids: Mapping[str, int]) -> str:
    """SELECT of the filler rows of ``table`` in its exact MIMIC-IV column order.

    chartevents, labevents and outputevents rows come in groups (:data:`_GROUP`) sharing time, storetime and
    caregiver; the item at position ``p`` of group ``r`` of a unit is ``(uh + p + G·(r mod P)) mod n`` of the
    table's filler items (P = :data:`_PANELS`: a unit repeats a few item sequences, as charting repeats);
    values follow the item's profile (:func:`item_profiles`)."""
    h = lambda k: _h(seed, k)  # noqa: E731 - short local alias keeps the SQL readable
    hg = lambda k: _hg(seed, k)  # noqa: E731
    group, panels, n = _GROUP[table], _PANELS[table], len(items)
    ii = (f"CAST((uh + p + {group} * (r % {panels})) % {n} AS BIGINT)" if panels
          else f"CAST({h(1)} % {n} AS BIGINT)")
    rows = f"(SELECT *, {ii} AS ii FROM {_rows(alloc, seed, group)})"
    item = _at(items, "ii")
    if table == "chartevents":
        prof = item_profiles(table, seed)
        is_text = _at(tuple(int(x) for x in prof["text"]), "ii") + " = 1"
        text_value = _at(_TEXTS, f"({_at(prof['usual'], 'ii')} + CASE WHEN {h(5)} % 8 = 0 THEN {h(5)} // 8 "
                                 f"ELSE 0 END) % {len(_TEXTS)}")
        value, valuenum = _numeric(prof, seed)
        return f"""SELECT subject_id, hadm_id, stay_id, CAST(10000 + hash({seed}, stay_id, r // 4) % 5000 AS INTEGER),
                      t, t + to_minutes(CAST(1 + {hg(4)} % 30 AS BIGINT)), {item},
                      CASE WHEN {is_text} THEN {text_value} ELSE {value} END,
                      CASE WHEN {is_text} THEN NULL ELSE {valuenum} END,
                      CASE WHEN {is_text} THEN NULL ELSE {_at(prof['uom'], 'ii')} END, CAST(0 AS SMALLINT)
               FROM {rows}"""
    if table == "outputevents":
        return f"""SELECT subject_id, hadm_id, stay_id, CAST(10000 + hash({seed}, stay_id, r // 6) % 5000 AS INTEGER),
                      t, t + to_minutes(CAST(1 + {hg(4)} % 30 AS BIGINT)), {item},
                      CAST(5 * ({h(2)} % 80) AS DOUBLE), 'mL'
               FROM {rows}"""
    if table == "inputevents":
        bolus = f"({h(3)} % 2 = 0)"
        amount = f"CAST({h(2)} % 1000 AS DOUBLE) / 10"
        rate = f"CASE WHEN {bolus} THEN NULL ELSE CAST({h(7)} % 500 AS DOUBLE) / 100 END"
        order = f"CAST({ids['orderid']} + g AS INTEGER)"
        return f"""SELECT subject_id, hadm_id, stay_id, CAST(10000 + hash({seed}, stay_id, j // 12) % 5000 AS INTEGER),
                      t, t + to_minutes(CAST(1 + {h(4)} % 240 AS BIGINT)), t + to_minutes(CAST({h(5)} % 30 AS BIGINT)),
                      {_pick(items, h(1))}, {amount}, {_pick(('mg', 'mL', 'mEq', 'units', 'grams'), h(6))}, {rate},
                      CASE WHEN {bolus} THEN NULL ELSE 'mL/hour' END, {order}, {order},
                      {_pick(('01-Drips', '02-Fluids (Crystalloids)', '05-Med Bolus', '11-Prophylaxis (IV)'), h(8))},
                      NULL, 'Main order parameter',
                      CASE WHEN {bolus} THEN 'Drug Push' ELSE 'Continuous Med' END,
                      CAST(40 + {h(9)} % 80 AS DOUBLE), {amount}, 'mL', CAST(0 AS SMALLINT), CAST(0 AS SMALLINT),
                      'FinishedRunning', {amount}, coalesce({rate}, 0)
               FROM {rows}"""
    if table == "labevents":
        prof = item_profiles(table, seed)
        value, valuenum = _numeric(prof, seed)
        c, w, sc = (_at(prof[k], "ii") for k in ("center", "width", "scale"))
        lower = f"CAST(greatest(0, {c} - 2 * {w} // 3) AS DOUBLE) / {sc}"  # about 1 in 3 values outside
        upper = f"CAST({c} + 2 * {w} // 3 AS DOUBLE) / {sc}"
        return f"""SELECT CAST({ids['labevent_id']} + g AS INTEGER), subject_id,
                      CASE WHEN {hg(3)} % 8 = 0 THEN NULL ELSE hadm_id END,
                      CAST({ids['specimen_id']} + g - p AS INTEGER), {item},
                      CASE WHEN {hg(11)} % 3 = 0 THEN 'P' || lpad(CAST(hash({seed}, unit_key, r // 4) % 999 AS VARCHAR),
                                                               5, '0') END,
                      t, t + to_minutes(CAST(30 + {hg(4)} % 90 AS BIGINT)), value, valuenum, {_at(prof['uom'], 'ii')},
                      lower, upper, CASE WHEN valuenum < lower OR valuenum > upper THEN 'abnormal' END,
                      CASE WHEN {hg(9)} % 4 = 0 THEN 'STAT' ELSE 'ROUTINE' END, NULL
               FROM (SELECT *, {value} AS value, {valuenum} AS valuenum, {lower} AS lower, {upper} AS upper
                     FROM {rows})"""
    if table == "procedureevents":
        order = f"CAST({ids['proc_orderid']} + g AS INTEGER)"
        return f"""SELECT subject_id, hadm_id, stay_id, CAST(10000 + hash({seed}, stay_id, j // 4) % 5000 AS INTEGER),
                      t, t + to_minutes(minutes), t + to_minutes(minutes + CAST({h(5)} % 30 AS BIGINT)),
                      {item}, CAST(minutes AS DOUBLE), 'min', NULL, NULL, {order}, {order},
                      {_pick(('Procedures', 'Imaging', 'Communication', 'Peripheral Lines'), h(8))},
                      {_pick(('ContinuousProcess', 'Task', 'Electrolytes'), h(9))},
                      CAST(40 + {h(6)} % 80 AS DOUBLE), CAST(0 AS SMALLINT), CAST(0 AS SMALLINT),
                      'FinishedRunning', CAST(1 AS DOUBLE), CAST(0 AS DOUBLE)
               FROM (SELECT *, CAST(1 + {h(4)} % 720 AS BIGINT) AS minutes FROM {rows})"""
    if table == "prescriptions":
        col = lambda k: _at(tuple(d[k] for d in _DRUGS), "ii")  # noqa: E731
        return f"""SELECT subject_id, hadm_id, CAST({ids['pharmacy_id']} + g AS INTEGER),
                      CAST(subject_id AS VARCHAR) || '-' || CAST(1 + j AS VARCHAR), CAST(1 + j AS INTEGER),
                      'P' || lpad(CAST({h(11)} % 99999 AS VARCHAR), 5, '0'),
                      ts, ts + to_minutes(CAST(60 + {h(4)} % 10080 AS BIGINT)), {col('type')}, {col('drug')},
                      {col('cd')}, {col('gsn')},
                      CASE WHEN {col('ndc')} = '0' THEN '0' ELSE left({col('ndc')}, 9)
                           || lpad(CAST({h(12)} % 100 AS VARCHAR), 2, '0') END,
                      {col('strength')}, {col('form')}, {col('dose')},
                      {col('unit')}, {col('disp')}, {col('disp_unit')},
                      CASE WHEN {col('per24')} = '0' THEN NULL ELSE CAST(1 + {h(13)} % 6 AS DOUBLE) END,
                      {col('route')}
               FROM (SELECT *, t0 + to_seconds(CAST(floor(span_s * (j + CAST({h(14)} % 1000 AS DOUBLE) / 1000)
                                                           / n_rows / 60) * 60 AS BIGINT)) AS ts  -- any minute of slot j
                     FROM {rows})"""
    raise ValueError(f"no filler for table {table!r}; padded tables: {list(PADDED)}")


def _units(table: str, src: Mapping[str, str]) -> str:
    """The units filler rows are spread over, with their time span (seconds) and start ``t0``."""
    if table == "prescriptions":  # hospital admissions, admission to discharge
        return f"""SELECT hadm_id AS unit_key, subject_id, hadm_id, admittime AS t0,
                          greatest(date_diff('second', admittime, dischtime), 3600) AS span_s
                   FROM {src['admissions']} WHERE admittime IS NOT NULL AND dischtime IS NOT NULL"""
    if table == "labevents":  # hospital admissions, from a day before admission to discharge
        return f"""SELECT hadm_id AS unit_key, subject_id, hadm_id, admittime - INTERVAL 1 DAY AS t0,
                          greatest(date_diff('second', admittime, dischtime), 0) + 86400 AS span_s
                   FROM {src['admissions']} WHERE admittime IS NOT NULL AND dischtime IS NOT NULL"""
    return f"""SELECT stay_id AS unit_key, subject_id, hadm_id, stay_id, intime AS t0,
                      greatest(date_diff('second', intime, outtime), 3600) AS span_s
               FROM {src['icustays']} WHERE intime IS NOT NULL AND outtime IS NOT NULL"""


def _dictionary_rows(table: str, items: Mapping[str, tuple[int, ...]]) -> str:
    """VALUES of the filler itemids' dictionary rows (d_items or d_labitems layout)."""
    rows = []
    if table == "d_items":
        for linksto in ICU_ITEM_TABLES:
            for i in items[linksto]:
                rows.append(f"({i}, 'Filler item {i}', 'F{i}', '{linksto}', 'Filler', NULL, 'Numeric', NULL, NULL)")
    else:
        rows = [f"({i}, 'Filler lab {i}', 'Blood', 'Filler')" for i in items["labevents"]]
    return "SELECT * FROM (VALUES " + ", ".join(rows) + ")"


def targets_for(scale: float = 1.0, rows: Mapping[str, int] | None = None) -> dict[str, int]:
    """Target rows per padded table: ``rows`` where given, else round(scale × MIMIC-IV v3.1 rows)."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    unknown = sorted(set(rows or {}) - set(PADDED))
    if unknown:
        raise ValueError(f"unknown padded table(s) {unknown}; padded tables: {list(PADDED)}")
    out = {t: int(round(scale * n)) for t, n in MIMIC_IV_ROWS.items()}
    for t, n in (rows or {}).items():
        if int(n) < 0:
            raise ValueError(f"target rows of {t} must be >= 0, got {n}")
        out[t] = int(n)
    return out


def add_filler(base: Path, out: Path, targets: Mapping[str, int], seed: int, fmt: str = "csv.gz",
               memory_limit: str = "4GB", threads: int = 2, overwrite: bool = False) -> dict[str, object]:
    """Write ``out`` = the MIMIC-IV-layout directory ``base`` with every padded table filled up to ``targets``
    rows (see the module docstring) and the filler itemids defined in d_items / d_labitems.

    Returns per table the base rows, filler rows and output bytes, plus the base rows' share of each padded
    table. Raises DataError when a base table is missing, already holds more rows than its target, or defines or
    uses a filler itemid; ValueError for a bad format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    base, out = Path(base), Path(out)
    if not base.is_dir():
        raise DataError(f"base directory not found: {base}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DataError(f"output directory {out} is not empty (pass overwrite)")
    items = filler_items()
    abx = [d["drug"] for d in _DRUGS if re.search("|".join(F.ANTIBIOTIC_NAMES), d["drug"].lower())]
    if abx:  # an antibiotic among the filler drugs would add suspected infections
        raise AssertionError(f"filler drugs include antibiotics: {abx}")
    all_filler = {i for v in items.values() for i in v}
    if all_filler & read_items():  # by construction; a changed feature list must not make filler readable
        raise AssertionError(f"filler itemids overlap the read ones: {sorted(all_filler & read_items())[:5]}")
    t_start = time.perf_counter()
    tmp_dir = tempfile.mkdtemp(prefix="ogsrl-filler-duckdb-")
    con = duckdb.connect(config={"memory_limit": memory_limit, "threads": int(threads)})
    con.execute(f"SET temp_directory = {_lit(tmp_dir)}")
    con.execute("SET enable_progress_bar = false")
    # no ordered output: all filler rows of a COPY come from one source batch (the allocation table), which an
    # order-preserving writer would buffer (and spill) whole before writing
    con.execute("SET preserve_insertion_order = false")
    report: dict[str, object] = {"format": fmt, "seed": int(seed)}
    try:
        src = {t: _source(base, t) for t in T.SCHEMAS}
        for d, tables in (("d_items", ICU_ITEM_TABLES), ("d_labitems", ("labevents",))):
            clash = con.execute(f"SELECT itemid FROM {src[d]} WHERE itemid IN "
                                f"({', '.join(str(i) for t in tables for i in items[t])}) LIMIT 5").fetchall()
            if clash:
                raise DataError(f"base {d} already defines filler itemid(s) {[c[0] for c in clash]}", table=d,
                                column="itemid", rows=[c[0] for c in clash])
        ids = {"orderid": 1 + con.execute(f"SELECT coalesce(max(greatest(orderid, linkorderid)), 0) "
                                          f"FROM {src['inputevents']}").fetchone()[0],
               "labevent_id": 1 + con.execute(f"SELECT coalesce(max(labevent_id), 0) FROM {src['labevents']}"
                                              ).fetchone()[0],
               "specimen_id": 1 + con.execute(f"SELECT coalesce(max(specimen_id), 0) FROM {src['labevents']}"
                                              ).fetchone()[0],
               "proc_orderid": 1 + con.execute(f"SELECT coalesce(max(greatest(orderid, linkorderid)), 0) "
                                               f"FROM {src['procedureevents']}").fetchone()[0],
               "pharmacy_id": 1 + con.execute(f"SELECT coalesce(max(pharmacy_id), 0) FROM {src['prescriptions']}"
                                              ).fetchone()[0]}
        n_base = {t: int(con.execute(f"SELECT count(*) FROM {src[t]}").fetchone()[0]) for t in T.SCHEMAS}
        for table in PADDED:  # every check before the first byte is written
            if n_base[table] > int(targets[table]):
                raise DataError(f"base {table} already has {n_base[table]} rows, more than the target "
                                f"{targets[table]}", table=table)
            if table not in _N_FILLER:
                continue
            bad = con.execute(f"SELECT DISTINCT itemid FROM {src[table]} WHERE itemid IN "
                              f"({', '.join(map(str, sorted(all_filler)))}) LIMIT 5").fetchall()
            if bad:
                raise DataError(f"base {table} already uses filler itemid(s) {[b[0] for b in bad]}",
                                table=table, column="itemid", rows=[b[0] for b in bad])
        with atomic_path(out) as tmp:
            for table in T.SCHEMAS:
                (tmp / T.MODULE[table]).mkdir(parents=True, exist_ok=True)
                dest = tmp / T.MODULE[table] / f"{table}.{fmt}"
                t0 = time.perf_counter()
                n_fill = 0
                select = f"SELECT * FROM {src[table]}"
                if table in PADDED:
                    n_fill = int(targets[table]) - n_base[table]
                    _alloc(con, "_alloc", _units(table, src), n_fill)
                    keys = items.get(table, tuple(range(len(_DRUGS))))  # prescriptions: index of the drug
                    select += f" UNION ALL {_filler_select(table, '_alloc', seed, keys, ids)}"
                    for col in _NEW_IDS.get(table, ()):
                        if ids[col] + n_fill > 2**31 - 1:
                            raise DataError(f"filler {col} would exceed the INTEGER range", table=table, column=col)
                elif table in ("d_items", "d_labitems"):
                    n_fill = sum(len(items[t]) for t in (("labevents",) if table == "d_labitems"
                                                         else ICU_ITEM_TABLES))
                    select += f" UNION ALL {_dictionary_rows(table, items)}"
                typed = ", ".join(f'CAST("{f.name}" AS {_DUCK_TYPE[f.type]}) AS "{f.name}"' for f in T.SCHEMAS[table])
                order = f" ORDER BY {_SORTED[table]}" if table in _SORTED else ""
                _copy(con, f"SELECT {typed} FROM ({select}){order}", dest, fmt)
                report[f"rows_base.{table}"] = n_base[table]
                report[f"rows_filler.{table}"] = n_fill
                report[f"bytes.{table}"] = dest.stat().st_size
                if table in PADDED and n_base[table] + n_fill:
                    report[f"share_base.{table}"] = round(n_base[table] / (n_base[table] + n_fill), 6)
                log.info("filler: %s %d + %d filler rows, %.1f MB in %.1f s", table, n_base[table], n_fill,
                         dest.stat().st_size / 1e6, time.perf_counter() - t0)
    finally:
        con.close()
        shutil.rmtree(tmp_dir, ignore_errors=True)
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    return report
