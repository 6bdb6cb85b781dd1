"""Raw-table gate: a MIMIC-IV-layout directory (hosp/, icu/; csv.gz, csv or parquet) checked before extraction.

Files are read in place by DuckDB (CSV as text, so a wrong type shows up as uncastable values instead of a sniffer
error half-way through a 433 M-row file). Three levels, all evaluated by Great Expectations on DuckDB-built frames:

1. ``tables``: every required table exists and can be read (a corrupt csv.gz fails here).
2. ``<table>_schema``: required columns present; every value castable to the column's type (int, float, timestamp).
3. ``<table>``: value rules — keys not null/unique, itemids defined in d_items/d_labitems, d_items covering the
   itemids ``ogsrl.features`` reads, raw-unit ranges per known itemid with a ``mostly`` tolerance (the documented
   charting errors, °F temperatures and FiO2-as-fraction are cleaned by the extraction, not failed here),
   non-negative amounts/volumes/durations, intime < outtime, and each event table holding the core MIMIC-IV
   itemids (a foreign itemid set fails instead of extracting nothing).
   Dimension tables and event tables up to ``full_max_rows`` rows are validated in full by GE. Larger event tables
   get exact violation counts from one DuckDB aggregate per table (the gate; GE checks the resulting summary frame)
   and, for the Data Docs, a GE run on a seeded sample that does not gate: the ``sample_rows`` rows of smallest
   ``hash(seed, row)`` (``arg_min(row, hash, n)``; the same rows whatever the thread count).

Each event table is read once: the row count, the uncastable-value counts, the exact rule counts and the sample
come from a single DuckDB aggregate (dimension tables are read first, as the itemid rules need them), with progress
lines (percent, ETA) while it runs; a full-size download (433 M chartevents rows) is read once per table.

Identifiers are loaded as salted hashes and timestamps only as durations, so reports never quote raw ids or dates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ogsrl import features as F
from ogsrl import progress
from ogsrl.cohort import views
from ogsrl.validate.config import ValidationConfig
from ogsrl.validate.gx import Outcome, Rule, _q, new_context, outcomes, run_suite

log = logging.getLogger(__name__)

ID_COLUMNS = frozenset({"subject_id", "hadm_id", "stay_id"})
"""pseudonymised (salted hash) before any value reaches GE or a report"""

TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "patients": ("hosp", {"subject_id": "int", "gender": "str", "anchor_age": "int", "anchor_year": "int",
                          "dod": "ts"}),
    "admissions": ("hosp", {"subject_id": "int", "hadm_id": "int", "admittime": "ts", "dischtime": "ts",
                            "deathtime": "ts", "hospital_expire_flag": "int"}),
    "labevents": ("hosp", {"subject_id": "int", "hadm_id": "int", "itemid": "int", "charttime": "ts",
                           "valuenum": "float", "valueuom": "str"}),
    "d_labitems": ("hosp", {"itemid": "int", "label": "str"}),
    "prescriptions": ("hosp", {"subject_id": "int", "hadm_id": "int", "starttime": "ts", "stoptime": "ts",
                               "drug_type": "str", "drug": "str", "route": "str"}),
    "microbiologyevents": ("hosp", {"subject_id": "int", "hadm_id": "int", "micro_specimen_id": "int",
                                    "chartdate": "ts", "charttime": "ts", "spec_type_desc": "str",
                                    "org_itemid": "int"}),
    "icustays": ("icu", {"subject_id": "int", "hadm_id": "int", "stay_id": "int", "intime": "ts", "outtime": "ts"}),
    "chartevents": ("icu", {"subject_id": "int", "hadm_id": "int", "stay_id": "int", "charttime": "ts",
                            "itemid": "int", "value": "str", "valuenum": "float", "valueuom": "str"}),
    "inputevents": ("icu", {"subject_id": "int", "hadm_id": "int", "stay_id": "int", "starttime": "ts",
                            "endtime": "ts", "itemid": "int", "amount": "float", "amountuom": "str", "rate": "float",
                            "rateuom": "str", "patientweight": "float", "statusdescription": "str"}),
    "outputevents": ("icu", {"subject_id": "int", "hadm_id": "int", "stay_id": "int", "charttime": "ts",
                             "itemid": "int", "value": "float", "valueuom": "str"}),
    "procedureevents": ("icu", {"subject_id": "int", "hadm_id": "int", "stay_id": "int", "starttime": "ts",
                                "endtime": "ts", "itemid": "int", "value": "float"}),
    "d_items": ("icu", {"itemid": "int", "label": "str", "linksto": "str"}),
}
"""table → (module folder, {required column: type family}); the columns the extraction reads (mimic-code create.sql
types; other columns of the download are allowed and ignored)."""

DIMENSION_TABLES = frozenset({"patients", "admissions", "icustays", "d_items", "d_labitems"})
"""always validated in full (uniqueness and set containment need every row)"""

DERIVED: dict[str, dict[str, str]] = {
    "icustays": {"los_h": "date_diff('second', TRY_CAST(intime AS TIMESTAMP), "
                          "TRY_CAST(outtime AS TIMESTAMP)) / 3600.0"},
    "inputevents": {"duration_h": "date_diff('second', TRY_CAST(starttime AS TIMESTAMP), "
                                  "TRY_CAST(endtime AS TIMESTAMP)) / 3600.0"},
    "procedureevents": {"duration_h": "date_diff('second', TRY_CAST(starttime AS TIMESTAMP), "
                                      "TRY_CAST(endtime AS TIMESTAMP)) / 3600.0"},
}
"""durations computed from timestamp pairs (timestamps themselves never leave DuckDB)"""

KNOWN_ICU_ITEMS: tuple[int, ...] = tuple(sorted(
    set(F.CHART_ITEMS) | F.URINE_ITEMS | F.URINE_SUBTRACT_ITEMS | F.VENT_ITEMS | set(F.FLUID_TONICITY)
    | set(F.NEE_FACTORS)
))
KNOWN_LAB_ITEMS: tuple[int, ...] = tuple(sorted(F.LAB_ITEMS))

CORE_ITEMS: dict[str, tuple[int, ...]] = {
    "chartevents": (220045, 220210, 220277),  # heart rate, respiratory rate, SpO2: charted in every ICU stay
    "labevents": (50912, 51265),  # creatinine, platelets
    "inputevents": (225158,),  # NaCl 0.9 %
    "outputevents": (226559,),  # Foley urine
}
"""itemids (from ogsrl.features) every MIMIC-IV-layout download must contain: catches an unknown itemid set, e.g.
MIMIC-III CareVue/MetaVision ids, for which the extraction would silently find nothing"""

_GCS_RANGES = {"gcs_eye": (1.0, 4.0), "gcs_verbal": (1.0, 5.0), "gcs_motor": (1.0, 6.0)}


def raw_ranges() -> dict[str, list[tuple[tuple[int, ...], float, float, str]]]:
    """Plausible ranges in the *raw* charting unit per known itemid: table → [(itemids, low, high, label)].

    Derived from ``ogsrl.features`` low/high: °F items are converted from the °C range, lb items from the kg range,
    FiO2 accepts both fraction and percent (0.21–100) because the extraction normalises it.
    """
    chart: dict[tuple[float, float, str], list[int]] = {}
    for item, name in F.CHART_ITEMS.items():
        if name in _GCS_RANGES:
            lo, hi = _GCS_RANGES[name]
        elif name == "fio2":
            lo, hi = F.BY_NAME["fio2"].low, 100.0
        else:
            feat = F.BY_NAME[name]
            lo, hi = feat.low, feat.high
            if item in F.FAHRENHEIT_ITEMS:
                lo, hi, name = lo * 1.8 + 32, hi * 1.8 + 32, "temp_f"
            elif item in F.POUND_ITEMS:
                lo, hi, name = lo / F.LB_TO_KG, hi / F.LB_TO_KG, "weight_lb"
        chart.setdefault((round(lo, 4), round(hi, 4), name), []).append(item)
    lab: dict[tuple[float, float, str], list[int]] = {}
    for item, name in F.LAB_ITEMS.items():
        feat = F.BY_NAME[name]
        lo, hi = (feat.low, 100.0) if name == "fio2" else (feat.low, feat.high)
        lab.setdefault((lo, hi, name), []).append(item)
    return {
        "chartevents": [(tuple(sorted(v)), lo, hi, n) for (lo, hi, n), v in chart.items()],
        "labevents": [(tuple(sorted(v)), lo, hi, n) for (lo, hi, n), v in lab.items()],
    }


def value_rules(table: str, cfg: ValidationConfig, d_items: Sequence[int] | None,
                d_labitems: Sequence[int] | None) -> list[Rule]:
    """The value rules of one table. ``d_items``/``d_labitems`` are the defined itemids (None: table unusable)."""
    R = Rule
    nn = [R(table, c, "not_null", f"{c} is not null")
          for c in TABLES[table][1] if c in ID_COLUMNS | {"itemid"} and (table, c) not in _NULLABLE]
    rules: list[Rule] = list(nn)
    if table == "patients":
        rules += [R(table, "subject_id", "unique", "one row per subject_id"),
                  R(table, "gender", "in_set", "gender is M or F", values=("M", "F")),
                  R(table, "anchor_age", "between", "anchor_age in 0–91", min_value=0, max_value=91)]
    elif table == "admissions":
        rules += [R(table, "hadm_id", "unique", "one row per hadm_id"),
                  R(table, "hospital_expire_flag", "in_set", "flag is 0 or 1", values=(0, 1))]
    elif table == "icustays":
        rules += [R(table, "stay_id", "unique", "one row per stay_id"),
                  R(table, "los_h", "between", "intime < outtime (stay length in hours > 0)", min_value=0,
                    strict_min=True)]
    elif table in ("d_items", "d_labitems"):
        rules.append(R(table, "itemid", "unique", "one row per itemid"))
    if table in CORE_ITEMS:
        core = CORE_ITEMS[table]
        listed = ", ".join(map(str, core))
        rules.append(R(table, "itemid", "contains_set",
                       f"MIMIC-IV itemids present (at least {listed}; a MIMIC-III or foreign itemid set has none)",
                       values=core))
    if table in ("chartevents", "inputevents", "outputevents", "procedureevents") and d_items is not None:
        rules.append(R(table, "itemid", "in_set", "itemid defined in d_items", values=tuple(d_items)))
    if table == "labevents" and d_labitems is not None:
        rules.append(R(table, "itemid", "in_set", "itemid defined in d_labitems", values=tuple(d_labitems)))
    for items, lo, hi, name in raw_ranges().get(table, []):
        rules.append(R(table, "valuenum", "between", f"{name} (itemid {', '.join(map(str, items))}) in {lo:g}–{hi:g}"
                       f" for >= {cfg.range_mostly:.1%} of rows",
                       min_value=lo, max_value=hi, where_itemids=items, mostly=cfg.range_mostly))
    nonneg = {"inputevents": ("amount", "rate", "duration_h"), "outputevents": ("value",),
              "procedureevents": ("duration_h",)}.get(table, ())
    for c in nonneg:
        rules.append(R(table, c, "between", f"{c} >= 0 for >= {cfg.nonneg_mostly:.1%} of rows", min_value=0,
                       mostly=cfg.nonneg_mostly))
    if table == "inputevents":
        hi = F.ACTION_BOUNDS["fluid_ml"][1]
        rules.append(R(table, "amount", "between", f"IV fluid amount per row in 0–{hi:g} mL for >= "
                       f"{cfg.range_mostly:.1%} of rows", min_value=0,
                       max_value=hi, where_itemids=tuple(sorted(F.FLUID_TONICITY)), mostly=cfg.range_mostly))
    if table == "outputevents":
        hi = F.BY_NAME["urine_step"].high
        rules.append(R(table, "value", "between", f"urine volume per row in 0–{hi:g} mL for >= "
                       f"{cfg.range_mostly:.1%} of rows", min_value=0, max_value=hi,
                       where_itemids=tuple(sorted(F.URINE_ITEMS | F.URINE_SUBTRACT_ITEMS)),
                       mostly=cfg.range_mostly))
    return rules


_NULLABLE = {("labevents", "hadm_id"), ("microbiologyevents", "hadm_id"), ("inputevents", "stay_id"),
             ("prescriptions", "hadm_id")}
"""id columns that are legitimately NULL in MIMIC-IV (outpatient labs, cultures; inputevents.stay_id)"""


@dataclass(frozen=True, slots=True)
class RawResult:
    """Everything the raw gate found."""

    outcomes: list[Outcome]
    """every evaluated expectation (gating and informational)"""
    runs: list[tuple[str, Any]]
    """(suite name, GE validation result) for the Data Docs"""
    rows: dict[str, int]
    """rows per readable table"""

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes if o.gating)


def locate(raw_dir: Path, table: str) -> Path | None:
    """The file holding ``table`` (csv.gz, csv or parquet), or None."""
    module = TABLES[table][0]
    for ext in (".csv.gz", ".csv", ".parquet"):
        p = raw_dir / module / f"{table}{ext}"
        if p.is_file():
            return p
    return None


_HISTOGRAM_MIN = 16
"""in_set rules with at least this many values (itemid in d_items) are counted from a histogram in the pass"""
_RAW = "raw:"
"""prefix of the uncast file columns inside the single pass"""


def _cast_expr(col: str, family: str, salted: bool = True) -> str:
    """SQL of a required column cast to its family; id columns as salted hashes unless ``salted`` is False (the
    exact counts only test them for NULL, which the hash preserves: hashing 433 M rows costs minutes)."""
    c = _q(col)
    if family == "int":
        val = f"TRY_CAST(TRY_CAST({c} AS DOUBLE) AS BIGINT)"
        if col in ID_COLUMNS and salted:  # the salt is a bound variable, never SQL text (DuckDB errors quote the SQL)
            return f"substr(sha256(getvariable('ogsrl_salt') || CAST({val} AS VARCHAR)), 1, 16)"
        return val
    if family == "float":
        return f"TRY_CAST({c} AS DOUBLE)"
    return f"CAST({c} AS VARCHAR)"


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _uncastable(col: str, family: str) -> str:
    c = _q(col)
    if family == "int":
        d = f"TRY_CAST({c} AS DOUBLE)"
        return f"({c} IS NOT NULL AND ({d} IS NULL OR isnan({d}) OR {d} <> floor({d})))"
    if family == "float":
        return f"({c} IS NOT NULL AND TRY_CAST({c} AS DOUBLE) IS NULL)"
    if family == "ts":
        return f"({c} IS NOT NULL AND TRY_CAST({c} AS TIMESTAMP) IS NULL)"
    return "FALSE"


class _Checker:
    """Runs the three levels for one directory; collects outcomes and GE results."""

    def __init__(self, raw_dir: Path, cfg: ValidationConfig, salt: str, temp_directory: str) -> None:
        import duckdb

        self.raw_dir, self.cfg, self.salt = raw_dir, cfg, salt
        self.con = duckdb.connect(config={"memory_limit": cfg.duckdb_memory_limit, "threads": cfg.duckdb_threads,
                                          "temp_directory": temp_directory})
        progress.enable(self.con)
        self.con.execute("SET VARIABLE ogsrl_salt = ?", [salt + ":"])
        self.ctx = new_context()
        self.outcomes: list[Outcome] = []
        self.runs: list[tuple[str, Any]] = []
        self.rows: dict[str, int] = {}
        self._pass: dict[str, tuple[list[Any], list[dict[str, Any]]]] = {}

    def _suite(self, name: str, frame: Any, rules: list[Rule], index: Sequence[str], gating: bool) -> None:
        result = run_suite(self.ctx, name, frame, rules, index)
        self.runs.append((name, result))
        self.outcomes += outcomes(result, rules, name, gating=gating, max_examples=self.cfg.max_examples)

    def run(self) -> RawResult:
        import pandas as pd

        scans: dict[str, tuple[dict[str, str], dict[str, int]]] = {}
        status: dict[str, tuple[str, str]] = {}
        d_ids: dict[str, list[int] | None] = {"d_items": None, "d_labitems": None}
        # dimension tables first: the event tables' single pass needs the itemids d_items / d_labitems define
        for table in sorted(TABLES, key=lambda t: t not in DIMENSION_TABLES):
            path = locate(self.raw_dir, table)
            status[table] = ("missing", f"no {TABLES[table][0]}/{table}.csv.gz|.csv|.parquet")
            if path is None:
                continue
            try:
                self._view(table, path)
                actual = self._describe(table)
                rules = None
                if table not in DIMENSION_TABLES and all(c in actual for c in TABLES[table][1]):
                    rules = value_rules(table, self.cfg, d_ids["d_items"], d_ids["d_labitems"])
                scans[table] = self._scan(table, actual, rules)
                status[table] = ("ok", path.name)
                if table in d_ids and all(c in actual for c in TABLES[table][1]):
                    d_ids[table] = self._ids(table)
            except Exception as exc:  # noqa: BLE001 - duckdb raises several error types for unreadable files
                status[table] = ("unreadable", f"{path.name}: {str(exc).splitlines()[0][:200]}")
        table_rows = [{"table": t, "status": status[t][0], "detail": status[t][1]} for t in TABLES]
        self._suite("tables", pd.DataFrame(table_rows),
                    [Rule("tables", "status", "in_set", "every required table exists and is readable",
                          values=("ok",), unit="tables")],
                    ["table", "detail"], gating=True)
        complete = [t for t in TABLES if t in scans and self._schema(t, *scans[t])]
        for table in complete:
            self._values(table, value_rules(table, self.cfg, d_ids["d_items"], d_ids["d_labitems"]))
        return RawResult(self.outcomes, self.runs, self.rows)

    def _view(self, table: str, path: Path) -> None:
        if path.suffix == ".parquet":
            src = f"read_parquet({_lit(str(path))})"
        else:
            src = f"read_csv({_lit(str(path))}, header=true, all_varchar=true)"
        self.con.execute(f"CREATE OR REPLACE VIEW v_{table} AS SELECT * FROM {src}")

    def _describe(self, table: str) -> dict[str, str]:
        return {r[0]: r[1] for r in self.con.execute(f"DESCRIBE SELECT * FROM v_{table}").fetchall()}

    def _scan(self, table: str, actual: dict[str, str], rules: list[Rule] | None
              ) -> tuple[dict[str, str], dict[str, int]]:
        """One pass over the file (raises if it cannot be read to the end, e.g. a truncated csv.gz): row count and
        uncastable values per typed required column; for an event table with every required column also the
        exact counts of its value rules and its Data Docs sample (kept for :meth:`_values`), so that a
        433 M-row file is read once."""
        cols = TABLES[table][1]
        typed = [c for c in cols if c in actual and cols[c] != "str"]
        aggs = ["count(*)"] + [f"count_if({_uncastable(_RAW + c, cols[c])})" for c in typed]
        inner = [f"{_q(c)} AS {_q(_RAW + c)}" for c in typed]
        pass_aggs: list[str] = []
        hist: list[tuple[int, frozenset]] = []
        if rules is not None:
            used = self._used(table, rules)
            inner += [f"{_cast_expr(c, cols[c], salted=False)} AS {_q(c)}" for c in cols if c in used]
            inner += [f"{e} AS {_q(c)}" for c, e in DERIVED.get(table, {}).items() if c in used]
            for r in rules:
                if r.kind == "contains_set":
                    pass_aggs += [f"bool_or({_q(r.column)} = {int(v)})" for v in r.values]
                elif r.kind == "in_set" and len(r.values) >= _HISTOGRAM_MIN and not r.where_itemids:
                    # a long IN list is tested value by value on every row (half the pass on 433 M rows);
                    # the per-value counts of a histogram give the violations at hash-aggregate cost
                    hist.append((len(aggs) + len(pass_aggs) + 2, frozenset(r.values)))
                    pass_aggs += ["count(*)", f"count({_q(r.column)})", f"histogram({_q(r.column)})"]
                else:
                    pass_aggs += [f"count_if({e})" for e in r.sql_counts()]
            names = [c for c in cols if c in used] + [c for c in DERIVED.get(table, {}) if c in used]
            fields = ", ".join(f"{_q(c)} := {_q(c)}" for c in names)
            key = ", ".join(_q(c) for c in names)
            pass_aggs.append(f"arg_min(struct_pack({fields}), hash({int(self.cfg.seed)}, {key}), "
                             f"{int(self.cfg.sample_rows)})")
        sql = f"SELECT {', '.join(aggs + pass_aggs)} FROM (SELECT {', '.join(inner) or '1'} FROM v_{table}) f"
        t0 = time.perf_counter()
        flat = list(progress.execute(self.con, sql, f"validate-raw {table}").fetchone())
        for i, allowed in hist:  # histogram → rows whose value is not in the set
            flat[i] = sum(int(n) for v, n in (flat[i] or {}).items() if v is not None and v not in allowed)
        self.rows[table] = int(flat[0])
        log.info("validate-raw: %s %d rows read in %.1f s", table, flat[0], time.perf_counter() - t0)
        if rules is not None:
            self._pass[table] = (list(flat[len(aggs):-1]), flat[-1] or [])
        return actual, dict(zip(typed, map(int, flat[1:len(aggs)]), strict=True))

    def _schema(self, table: str, actual: dict[str, str], counts: dict[str, int]) -> bool:
        """GE on the schema frame (columns present, values castable); True when the value rules can run."""
        import pandas as pd

        cols = TABLES[table][1]
        rows = []
        for c, fam in cols.items():
            n_bad = counts.get(c, 0)
            examples = ""
            if n_bad:
                vals = self.con.execute(
                    f"SELECT DISTINCT CAST({_q(c)} AS VARCHAR) FROM v_{table} WHERE {_uncastable(c, fam)} "
                    f"LIMIT {self.cfg.max_examples}").fetchall()
                examples = ", ".join(repr(v[0]) for v in vals) if c not in ID_COLUMNS else "(ids not shown)"
            rows.append({"column": c, "expected": fam, "source_type": actual.get(c, "absent"),
                         "present": c in actual, "n_uncastable": n_bad, "uncastable_examples": examples})
        self._suite(f"{table}_schema", pd.DataFrame(rows), [
            Rule(table, "present", "in_set", "required column present", values=(True,), label_column="column",
                 unit="columns"),
            Rule(table, "n_uncastable", "between", "every value castable to the column type (dtype)", max_value=0,
                 label_column="column", unit="columns"),
        ], ["column", "expected", "source_type", "uncastable_examples"], gating=True)
        return all(c in actual for c in cols)

    def _ids(self, table: str) -> list[int]:
        sql = f"SELECT DISTINCT {_cast_expr('itemid', 'int')} AS i FROM v_{table} WHERE i IS NOT NULL"
        return sorted(int(r[0]) for r in self.con.execute(sql).fetchall())

    @staticmethod
    def _used(table: str, rules: Sequence[Rule]) -> set[str]:
        used = {r.column for r in rules} | {c for r in rules for c in r.columns}
        if any(r.where_itemids for r in rules):
            used.add("itemid")
        return used

    def _frame_sql(self, table: str, rules: Sequence[Rule]) -> str:
        cols = TABLES[table][1]
        used = self._used(table, rules)
        exprs = [f"{_cast_expr(c, cols[c])} AS {_q(c)}" for c in cols if c in used]
        exprs += [f"{e} AS {_q(c)}" for c, e in DERIVED.get(table, {}).items() if c in used]
        return f"SELECT {', '.join(exprs)} FROM v_{table}"

    def _values(self, table: str, rules: list[Rule]) -> None:
        n = self.rows[table]
        body = self._frame_sql(table, rules)
        if table in DIMENSION_TABLES or n <= self.cfg.full_max_rows:
            self._pass.pop(table, None)
            frame = self.con.execute(f"SELECT row_number() OVER () - 1 AS _row, * FROM ({body})").df()
            self._suite(table, frame, rules, ["_row"], gating=True)
            return
        counts, sample_rows = self._pass.pop(table)
        self._exact(table, rules, body, counts)
        self._suite(f"{table}_sample", self._pseudonymise(table, sample_rows), rules, [], gating=False)

    def _pseudonymise(self, table: str, rows: list[dict[str, Any]]) -> Any:
        """The sample of the single pass as a frame, id columns replaced by their salted hashes (as in
        :func:`_cast_expr`)."""
        import pandas as pd

        frame = pd.DataFrame(rows)
        ids = [c for c in frame.columns if c in ID_COLUMNS]
        if ids and len(frame):
            self.con.register("_sample_ids", frame[ids])
            hashed = self.con.execute("SELECT " + ", ".join(
                f"substr(sha256(getvariable('ogsrl_salt') || CAST({_q(c)} AS VARCHAR)), 1, 16) AS {_q(c)}"
                for c in ids) + " FROM _sample_ids").df()
            self.con.unregister("_sample_ids")
            for c in ids:
                frame[c] = hashed[c].to_numpy()
        return frame

    def _exact(self, table: str, rules: Sequence[Rule], body: str, counts: list[Any]) -> None:
        """Exact violation counts over the whole table (``counts``: the rule aggregates of the single pass, in rule
        order); GE checks the summary frame."""
        import pandas as pd

        rowwise = [r for r in rules if r.kind in _TYPE]
        if len(rowwise) + sum(r.kind == "contains_set" for r in rules) != len(rules):
            raise ValueError(f"{table}: uniqueness rules need the full-table GE path")
        triples = {id(r): r.sql_counts() for r in rowwise}
        flat = iter(counts)
        rows = []
        for rule in rules:
            examples: tuple[str, ...] = ()
            observed = ""
            if rule.kind == "contains_set":
                missing = [v for v in rule.values if not next(flat)]
                n_rows = denom = len(rule.values)
                bad = len(missing)
                observed = f"{bad} missing: {[str(m) for m in missing[:self.cfg.max_examples]]}" if bad else ""
            else:
                n_rows, denom, bad = int(next(flat)), int(next(flat)), int(next(flat))
                if bad and rule.column not in ID_COLUMNS:
                    vals = self.con.execute(f"SELECT {_q(rule.column)} FROM ({body}) f WHERE {triples[id(rule)][2]} "
                                            f"LIMIT {self.cfg.max_examples}").fetchall()
                    examples = tuple(f"{v[0]:.6g}" if isinstance(v[0], float) else str(v[0]) for v in vals)
            share = 1.0 if denom == 0 else (denom - bad) / denom
            ok = share >= rule.mostly
            self.outcomes.append(Outcome(
                suite=f"{table}_exact", table=table, column=rule.column,
                expectation=_TYPE.get(rule.kind, "expect_column_distinct_values_to_contain_set"), what=rule.what,
                success=ok, gating=True, element_count=n_rows, unexpected_count=bad, observed=observed,
                unit="required values" if rule.kind == "contains_set" else "rows",
                unexpected_percent=0.0 if denom == 0 else 100.0 * bad / denom, examples=examples,
                extra={"exact": True, "mostly": rule.mostly}))
            rows.append({"column": rule.column, "rule": rule.what, "checked": denom, "unexpected": bad,
                         "pass_share": share, "mostly": rule.mostly, "shortfall": rule.mostly - share})
        frame = pd.DataFrame(rows)
        summary_rule = Rule(table, "shortfall", "between", "exact DuckDB pass share >= mostly for every rule",
                            max_value=1e-12)
        result = run_suite(self.ctx, f"{table}_exact", frame, [summary_rule],
                           ["column", "rule", "checked", "unexpected"])
        self.runs.append((f"{table}_exact", result))


_TYPE = {"between": "expect_column_values_to_be_between", "not_null": "expect_column_values_to_not_be_null",
         "in_set": "expect_column_values_to_be_in_set"}


def validate_raw(raw_dir: Path, cfg: ValidationConfig, salt: str) -> RawResult:
    """Validate a MIMIC-IV-layout directory; never raises on bad data (the caller decides), only on bad arguments."""
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"raw data directory not found: {raw_dir}")
    with views.spill_directory("ogsrl-validate-duckdb-") as tmp:  # DuckDB spills here beyond memory_limit
        checker = _Checker(raw_dir, cfg, salt, str(tmp))
        try:
            return checker.run()
        finally:
            checker.con.close()
