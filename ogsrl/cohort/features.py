"""Canonical state and action computation in DuckDB SQL, shared by the cohort extraction and the demo simulator.

Raw MIMIC-IV-layout tables are exposed as DuckDB views by :mod:`ogsrl.cohort.views`. ``compute_states`` and
``compute_actions`` turn a grid of decision times into the canonical features of :mod:`ogsrl.features` with one causal rule:

    s(t)  = mean of the values charted in [t − Δ, t), else the last value charted before t within the feature's
            hold limit, else the feature's documented ``normal`` value            (Δ = step_h)
    a(t)  = (IV fluid given in [t, t + Δ), max NE-equivalent dose running in [t, t + Δ))

Only arterial gases give a PaO2 (labevents 50821 whose specimen carries 52033 = 'ART.', or chartevents 220224).
The respiratory SOFA uses mimic-code's P/F: each arterial gas divided by the FiO2 of its own specimen (50816), else
by the last chartevents FiO2 (223835) charted at most 4 h before the gas; a gas without either gives no P/F.

Sample-and-hold limits follow microsoft/mimic_sepsis ``sample_and_hold.csv``; SOFA is the 4-hour AI-Clinician
variant (Komorowski 2018; mimic-iv-reference §4.4); NE-equivalent factors are mimic-code's
``norepinephrine_equivalent_dose`` (Goradia 2021). The rules are written out in docs/cohort.md.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import duckdb
import numpy as np
import pandas as pd

from ogsrl import features as F
from ogsrl.cohort.views import run_query
from ogsrl.errors import DataError

log = logging.getLogger(__name__)

# ---- feature parameters --------------------------------------------------------------------------------------
_GCS_PARTS: dict[str, tuple[float, float]] = {"gcs_eye": (1, 4), "gcs_verbal": (1, 5), "gcs_motor": (1, 6)}
"""GCS components: plausible range (their upper bound is also the imputed normal); held like gcs (6 h)."""
_OBSERVED: tuple[str, ...] = (
    "weight", "fio2", "pao2", "spo2", "rr", "map", "sbp", "hr", "temp_c", "lactate", "bilirubin", "creatinine",
    "platelets", "gcs_eye", "gcs_verbal", "gcs_motor", "urine", "pf_gas",
)
"""Features averaged / held from charted values (urine: summed, handled via its cumulative sums; pf_gas: the
P/F of each arterial gas paired with its FiO2, held like PaO2, for the respiratory SOFA)."""
ART_SPECIMEN_ITEM = 52033
"""labevents itemid of the blood-gas specimen type; value 'ART.' marks an arterial sample (mimic-code bg)."""
ART_SPECIMEN = "ART."
PAO2_LAB_ITEM = 50821
FIO2_LAB_ITEM = 50816
FIO2_CHART_ITEM = 223835
FIO2_PAIR_H = 4.0
"""a gas without an FiO2 on its specimen takes the last chartevents FiO2 charted at most this long before it"""

_CHART_MAP = {**F.CHART_ITEMS}
_CHART_MAP[220224] = "pao2"


def _fparams(step_h: float) -> list[tuple[str, int, float, float, float]]:
    """(feature, index, low, high, hold in µs) for every observed feature."""
    rows = []
    for i, name in enumerate(_OBSERVED):
        if name in _GCS_PARTS:
            low, high = _GCS_PARTS[name]
            hold = F.BY_NAME["gcs"].hold_h
        elif name == "urine":
            low, high, hold = -1e9, 1e9, 0.0
        elif name == "pf_gas":
            low, high, hold = F.BY_NAME["pf_ratio"].low, F.BY_NAME["pf_ratio"].high, F.BY_NAME["pao2"].hold_h
        else:
            f = F.BY_NAME[name]
            low, high, hold = f.low, f.high, f.hold_h
        rows.append((name, i, float(low), float(high), float(hold) * 3600e6))
    return rows


def _us(hours: float) -> int:
    return int(round(hours * 3600e6))


def _ids(values: Collection[int]) -> str:
    return ", ".join(str(int(v)) for v in sorted(values))


def _prepare_grid(con: duckdb.DuckDBPyConnection, grid: pd.DataFrame, step_h: float) -> None:
    """Register the grid as ``_g`` (rid, stay_id, step, t, t_lo = t − Δ, t_hi = t + Δ, t_end) and ``_gstay``.

    ``t_end`` (optional grid column) is when observation of the stay ends (ICU discharge or death); NULL → the
    stay's ``icustays.outtime``."""
    if not step_h > 0:
        raise ValueError(f"step_h must be > 0, got {step_h}")
    for col in ("stay_id", "step", "t"):
        if col not in grid.columns:
            raise DataError(f"missing column {col!r}", table="grid", column=col)
    if grid["t"].isna().any():
        raise DataError("null decision times", table="grid", column="t",
                        rows=list(np.flatnonzero(grid["t"].isna().to_numpy())))
    g = pd.DataFrame({
        "rid": np.arange(len(grid), dtype=np.int64),
        "stay_id": grid["stay_id"].to_numpy(dtype=np.int64),
        "t": pd.to_datetime(grid["t"]).to_numpy(dtype="datetime64[us]"),
        "t_end": (pd.to_datetime(grid["t_end"]).to_numpy(dtype="datetime64[us]") if "t_end" in grid.columns
                  else np.full(len(grid), np.datetime64("NaT"), dtype="datetime64[us]")),
    })
    con.register("_grid_src", g)
    d = _us(step_h)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _g AS
        SELECT rid, stay_id, CAST(t AS TIMESTAMP) AS t,
               CAST(t AS TIMESTAMP) - to_microseconds({d}) AS t_lo,
               CAST(t AS TIMESTAMP) + to_microseconds({d}) AS t_hi, CAST(t_end AS TIMESTAMP) AS t_end
        FROM _grid_src""")
    con.unregister("_grid_src")
    run_query(con, """
        CREATE OR REPLACE TEMP TABLE _gstay AS
        SELECT g.stay_id, any_value(i.subject_id) AS subject_id, any_value(i.intime) AS intime,
               any_value(i.outtime) AS outtime, min(g.t) AS t_min, max(g.t) AS t_max, count(i.stay_id) AS n_found
        FROM _g g LEFT JOIN icustays i ON i.stay_id = g.stay_id
        GROUP BY g.stay_id""")
    bad = con.execute("SELECT stay_id FROM _gstay WHERE n_found = 0 ORDER BY stay_id LIMIT 6").fetchall()
    if bad:
        raise DataError("grid stays not found in icustays", table="icustays", column="stay_id",
                        rows=[b[0] for b in bad])
    dup = con.execute("SELECT stay_id FROM icustays WHERE stay_id IN (SELECT stay_id FROM _gstay) "
                      "GROUP BY stay_id HAVING count(*) > 1 LIMIT 6").fetchall()
    if dup:
        raise DataError("duplicate stay_id", table="icustays", column="stay_id", rows=[b[0] for b in dup])


def _fluid_sql(win: str) -> str:
    """Tonicity-adjusted IV fluid per window row of ``win`` (rid, stay_id, lo, hi): boluses at starttime,
    infusions pro-rated by the overlap of [starttime, endtime) with [lo, hi); rounded to 6 decimals so the
    order-free parallel sum is reproducible."""
    return f"""
        SELECT w.rid, round(sum(f.tev * CASE WHEN f.is_bolus THEN f.amount
                 ELSE f.amount * (epoch_us(least(f.endtime, w.hi)) - epoch_us(greatest(f.starttime, w.lo)))
                      / (epoch_us(f.endtime) - epoch_us(f.starttime)) END), 6) AS v
        FROM {win} w JOIN _fluid f ON f.stay_id = w.stay_id AND f.starttime < w.hi
             AND ((f.is_bolus AND f.starttime >= w.lo) OR (NOT f.is_bolus AND f.endtime > w.lo))
        GROUP BY w.rid"""


def _nee_sql(win: str) -> str:
    """Max over [lo, hi) of the summed NE-equivalent rate of all vasopressor rows running at that instant.

    Sums are rounded to 6 decimals: parallel aggregation adds in no fixed order, and an unrounded 0.1 + ε would
    flip the SOFA cut-point ``NEE > 0.1`` between runs."""
    return f"""
        WITH r AS (
            SELECT w.rid, greatest(v.starttime, w.lo) AS s, least(v.endtime, w.hi) AS e, v.nee
            FROM {win} w JOIN _vaso v ON v.stay_id = w.stay_id AND v.starttime < w.hi AND v.endtime > w.lo),
        p AS (SELECT DISTINCT rid, s AS tau FROM r),
        tot AS (SELECT p.rid, p.tau, round(sum(r.nee), 6) AS v
                FROM p JOIN r ON r.rid = p.rid AND r.s <= p.tau AND r.e > p.tau
                GROUP BY p.rid, p.tau)
        SELECT rid, max(v) AS v FROM tot GROUP BY rid"""


def _prepare_inputs(con: duckdb.DuckDBPyConnection) -> None:
    """Temp tables ``_fluid`` and ``_vaso`` restricted to the grid's stays (rows 'Rewritten' and negative
    amounts/rates dropped, exact duplicates collapsed)."""
    tev = ", ".join(f"({k}, {v!r})" for k, v in F.FLUID_TONICITY.items())
    run_query(con, f"""
        CREATE OR REPLACE TEMP TABLE _fluid AS
        SELECT DISTINCT i.stay_id, i.starttime, i.endtime, m.tev,
               i.amount * CASE WHEN lower(i.amountuom) = 'l' THEN 1000.0 ELSE 1.0 END AS amount,
               (i.rate IS NULL OR i.endtime <= i.starttime) AS is_bolus
        FROM inputevents i JOIN (VALUES {tev}) m(itemid, tev) ON i.itemid = m.itemid
        WHERE i.stay_id IN (SELECT stay_id FROM _gstay) AND i.amount >= 0 AND i.starttime IS NOT NULL
          AND lower(coalesce(i.amountuom, 'ml')) IN ('ml', 'l')
          AND coalesce(i.statusdescription, '') <> 'Rewritten'""")
    vas = ", ".join(f"({k}, {fac!r}, {int(uom.startswith('units'))})" for k, (_, uom, fac) in F.NEE_FACTORS.items())
    run_query(con, f"""
        CREATE OR REPLACE TEMP TABLE _vaso AS
        SELECT DISTINCT stay_id, starttime, endtime, nee FROM (
            SELECT i.stay_id, i.starttime, i.endtime, m.factor * CASE
                WHEN m.units = 1 AND i.rateuom = 'units/hour' THEN i.rate
                WHEN m.units = 1 AND i.rateuom = 'units/min' THEN i.rate * 60
                WHEN m.units = 0 AND i.rateuom = 'mcg/kg/min' THEN i.rate
                WHEN m.units = 0 AND i.rateuom = 'mg/kg/min' THEN i.rate * 1000
                WHEN m.units = 0 AND i.rateuom = 'mcg/min' THEN i.rate / coalesce(nullif(i.patientweight, 0), 80)
                END AS nee
            FROM inputevents i JOIN (VALUES {vas}) m(itemid, factor, units) ON i.itemid = m.itemid
            WHERE i.stay_id IN (SELECT stay_id FROM _gstay) AND i.rate >= 0 AND i.endtime > i.starttime
              AND coalesce(i.statusdescription, '') <> 'Rewritten')
        WHERE nee IS NOT NULL""")


_KEY = 32
"""(stay_id, feature) pairs are joined on one integer key stay_id · 32 + feature index."""
_CONV = {"none": 0, "fahrenheit": 1, "pound": 2, "fio2": 3}


def _item_map(step_h: float) -> str:
    """VALUES rows (itemid, source 0 = chartevents / 1 = labevents, fidx, conversion, low, high)."""
    fp = {n: (i, lo, hi) for n, i, lo, hi, _ in _fparams(step_h)}
    rows = []
    for src, items in ((0, _CHART_MAP), (1, F.LAB_ITEMS)):
        for itemid, name in items.items():
            i, lo, hi = fp[name]
            conv = ("fahrenheit" if itemid in F.FAHRENHEIT_ITEMS else "pound" if itemid in F.POUND_ITEMS
                    else "fio2" if name == "fio2" else "none")
            rows.append(f"({itemid}, {src}, {i}, {_CONV[conv]}, {lo!r}, {hi!r})")
    return ", ".join(rows)


def _states_sql(step_h: float) -> str:
    fp = _fparams(step_h)
    assert len(fp) < _KEY
    values = ", ".join(f"({i}, {h!r})" for _, i, _, _, h in fp)
    max_back = _us(max(max(h for *_, h in fp) / 3600e6, step_h))
    urine = _ids(F.URINE_ITEMS | F.URINE_SUBTRACT_ITEMS)
    sub = _ids(F.URINE_SUBTRACT_ITEMS)
    u = _OBSERVED.index("urine")
    pfi = _OBSERVED.index("pf_gas")
    pf_lo, pf_hi = F.BY_NAME["pf_ratio"].low, F.BY_NAME["pf_ratio"].high
    po_lo, po_hi = F.BY_NAME["pao2"].low, F.BY_NAME["pao2"].high
    fi_lo, fi_hi = F.BY_NAME["fio2"].low, F.BY_NAME["fio2"].high
    since = f"s.t_min - to_microseconds({max_back})"
    fio2_pct = "CASE WHEN x.valuenum <= 1 THEN x.valuenum WHEN x.valuenum > 20 THEN x.valuenum / 100 END"
    conv = f"""CASE m.conv WHEN {_CONV['fahrenheit']} THEN (x.valuenum - 32) / 1.8
                           WHEN {_CONV['pound']} THEN x.valuenum * {F.LB_TO_KG}
                           WHEN {_CONV['fio2']} THEN CASE WHEN x.valuenum <= 1 THEN x.valuenum
                                                          WHEN x.valuenum > 20 THEN x.valuenum / 100 END
                           ELSE x.valuenum END"""
    return f"""
    CREATE OR REPLACE TEMP TABLE _fp AS SELECT * FROM (VALUES {values}) t(fidx, hold_us);
    CREATE OR REPLACE TEMP TABLE _imap AS
        SELECT * FROM (VALUES {_item_map(step_h)}) t(itemid, src, fidx, conv, low, high);
    CREATE OR REPLACE TEMP TABLE _art AS
        SELECT DISTINCT x.specimen_id FROM labevents x
        WHERE x.itemid = {ART_SPECIMEN_ITEM} AND trim(x.value) = '{ART_SPECIMEN}'
          AND x.subject_id IN (SELECT subject_id FROM _gstay);
    CREATE OR REPLACE TEMP TABLE _gas AS
        SELECT s.stay_id, x.charttime, x.valuenum AS pao2, x.specimen_id
        FROM labevents x JOIN _gstay s ON x.subject_id = s.subject_id
        WHERE x.itemid = {PAO2_LAB_ITEM} AND x.specimen_id IN (SELECT specimen_id FROM _art)
          AND x.valuenum BETWEEN {po_lo!r} AND {po_hi!r} AND x.charttime < s.t_max AND x.charttime >= {since}
        UNION ALL
        SELECT s.stay_id, x.charttime, x.valuenum AS pao2, NULL AS specimen_id
        FROM chartevents x JOIN _gstay s ON x.stay_id = s.stay_id
        WHERE x.itemid = 220224 AND x.valuenum BETWEEN {po_lo!r} AND {po_hi!r}
          AND x.charttime < s.t_max AND x.charttime >= {since};
    CREATE OR REPLACE TEMP TABLE _gas_fio2 AS
        SELECT x.specimen_id, max({fio2_pct}) AS fio2 FROM labevents x
        WHERE x.itemid = {FIO2_LAB_ITEM} AND x.specimen_id IN (SELECT specimen_id FROM _gas)
          AND {fio2_pct} BETWEEN {fi_lo!r} AND {fi_hi!r}
        GROUP BY x.specimen_id;
    CREATE OR REPLACE TEMP TABLE _chart_fio2 AS
        SELECT x.stay_id, x.charttime, avg({fio2_pct}) AS fio2
        FROM chartevents x JOIN _gstay s ON x.stay_id = s.stay_id
        WHERE x.itemid = {FIO2_CHART_ITEM} AND {fio2_pct} BETWEEN {fi_lo!r} AND {fi_hi!r}
          AND x.charttime < s.t_max AND x.charttime >= {since} - to_microseconds({_us(FIO2_PAIR_H)})
        GROUP BY x.stay_id, x.charttime;
    CREATE OR REPLACE TEMP TABLE _pf AS
        SELECT g.stay_id * {_KEY} + {pfi} AS key, g.charttime,
               round(g.pao2 / coalesce(b.fio2, CASE WHEN epoch_us(g.charttime) - epoch_us(c.charttime)
                                                       <= {_us(FIO2_PAIR_H)} THEN c.fio2 END), 6) AS v
        FROM _gas g LEFT JOIN _gas_fio2 b ON b.specimen_id = g.specimen_id
        ASOF LEFT JOIN _chart_fio2 c ON c.stay_id = g.stay_id AND g.charttime >= c.charttime;
    CREATE OR REPLACE TEMP TABLE _obs AS
    WITH ce AS (
        SELECT x.stay_id * {_KEY} + m.fidx AS key, x.charttime, {conv} AS v, m.low, m.high
        FROM chartevents x JOIN _imap m ON x.itemid = m.itemid AND m.src = 0
        JOIN _gstay s ON x.stay_id = s.stay_id
        WHERE x.valuenum IS NOT NULL AND x.charttime < s.t_max
          AND x.charttime >= s.t_min - to_microseconds({max_back})),
    le AS (
        SELECT s.stay_id * {_KEY} + m.fidx AS key, x.charttime, {conv} AS v, m.low, m.high
        FROM labevents x JOIN _imap m ON x.itemid = m.itemid AND m.src = 1
        JOIN _gstay s ON x.subject_id = s.subject_id
        WHERE x.valuenum IS NOT NULL
          AND (x.itemid <> {PAO2_LAB_ITEM} OR x.specimen_id IN (SELECT specimen_id FROM _art)) AND x.charttime < s.t_max
          AND x.charttime >= s.t_min - to_microseconds({max_back})),
    ur AS (
        SELECT o.stay_id * {_KEY} + {u} AS key, o.charttime,
               CASE WHEN o.itemid IN ({sub}) THEN -o.value ELSE o.value END AS v
        FROM (SELECT DISTINCT stay_id, charttime, itemid, value FROM outputevents WHERE itemid IN ({urine})) o
        JOIN _gstay s ON o.stay_id = s.stay_id
        WHERE o.value >= 0 AND o.charttime >= s.intime AND o.charttime < s.t_max),
    agg AS (SELECT key, charttime, sum(v) AS s, count(*) AS n
            FROM (SELECT key, charttime, v FROM ce WHERE v BETWEEN low AND high
                  UNION ALL SELECT key, charttime, v FROM le WHERE v BETWEEN low AND high
                  UNION ALL SELECT key, charttime, v FROM ur
                  UNION ALL SELECT key, charttime, v FROM _pf WHERE v BETWEEN {pf_lo!r} AND {pf_hi!r})
            GROUP BY key, charttime)
    SELECT key, charttime, s / n AS last_v, sum(s) OVER w AS cs, sum(n) OVER w AS cn
    FROM agg WINDOW w AS (PARTITION BY key ORDER BY charttime ROWS UNBOUNDED PRECEDING);
    CREATE OR REPLACE TEMP TABLE _gf AS SELECT g.rid, g.stay_id * {_KEY} + p.fidx AS key, p.fidx, g.t, g.t_lo,
                                               p.hold_us
        FROM _g g CROSS JOIN _fp p;
    CREATE OR REPLACE TEMP TABLE _long AS
    SELECT g.rid, g.fidx,
           CASE WHEN coalesce(a.cn, 0) - coalesce(b.cn, 0) > 0
                     THEN (a.cs - coalesce(b.cs, 0)) / (a.cn - coalesce(b.cn, 0))
                WHEN epoch_us(g.t) - epoch_us(a.charttime) <= g.hold_us THEN a.last_v END AS v,
           coalesce(a.cs, 0) AS cs1, coalesce(a.cs, 0) - coalesce(b.cs, 0) AS sdiff,
           coalesce(a.cn, 0) - coalesce(b.cn, 0) AS ndiff
    FROM _gf g
    ASOF LEFT JOIN _obs a ON g.key = a.key AND g.t > a.charttime
    ASOF LEFT JOIN _obs b ON g.key = b.key AND g.t_lo > b.charttime;
    """


def compute_states(con: duckdb.DuckDBPyConnection, grid: pd.DataFrame, step_h: float = 4.0, *,
                   missing: bool = False) -> pd.DataFrame:
    """Causal state of each grid row from the registered raw views.

    Args:
        con: connection with the raw views (``register_frames`` / ``register_directory``).
        grid: rows (stay_id int64, step int64, t timestamp = decision time); any other columns are kept.
            Optional ``t_end``: when observation of the stay ends (ICU discharge or death; default ``outtime``);
            urine is only charted before it, so the renal urine criterion scales by the observed hours.
        step_h: Δ, the averaging window [t − Δ, t) and the SOFA / per-step urine interval, hours.
        missing: also return a bool column ``missing_<name>`` per charted feature (weight, fio2, pao2, spo2, rr,
            map, sbp, hr, temp_c, lactate, bilirubin, creatinine, platelets, gcs, urine_step, pf_gas): True where
            nothing was charted within the window or hold limit and the value is imputed (for gcs: no component
            charted; for urine_step: no urine charted in the step; for pf_gas: no arterial gas paired with an
            FiO2, so no respiratory SOFA points), and ``urine_hours``: the observed part of [t − Δ, t) in hours.

    Returns:
        ``grid`` (same row order) plus one float32 column per name in :data:`ogsrl.features.ALL`.
    """
    _prepare_grid(con, grid, step_h)
    _prepare_inputs(con)
    for stmt in _states_sql(step_h).split(";"):
        if stmt.strip():
            run_query(con, stmt)
    n = len(grid)
    fidx = {name: i for i, name in enumerate(_OBSERVED)}
    cols = ", ".join(f"max(v) FILTER (WHERE fidx = {i}) AS \"{name}\"" for name, i in fidx.items()
                     if name != "urine")
    u = fidx["urine"]
    wide = run_query(con, f"""
        SELECT rid, {cols},
               max(cs1) FILTER (WHERE fidx = {u}) AS urine_cum, max(sdiff) FILTER (WHERE fidx = {u}) AS urine_step,
               max(ndiff) FILTER (WHERE fidx = {u}) AS urine_n
        FROM _long GROUP BY rid ORDER BY rid""").fetchnumpy()
    assert len(wide["rid"]) == n, "every grid row has a long-form row per feature"

    def col(name: str) -> np.ndarray:
        # rounded to 6 decimals: window means are differences of running sums, whose last bits depend on how much
        # history the query saw; unrounded, a P/F of 300 ± 1e-13 would flip a SOFA cut-point between calls
        v = pd.array(wide[name], dtype="Float64").to_numpy(dtype=np.float64, na_value=np.nan)
        return np.round(v, 6)

    out: dict[str, np.ndarray] = {}
    for name in _OBSERVED:
        if name in _GCS_PARTS or name in ("urine", "pf_gas"):
            continue
        v = col(name)
        out[name] = np.where(np.isnan(v), F.BY_NAME[name].normal, v)
    parts = [np.where(np.isnan(col(p)), _GCS_PARTS[p][1], col(p)) for p in _GCS_PARTS]
    out["gcs"] = np.clip(parts[0] + parts[1] + parts[2], F.BY_NAME["gcs"].low, F.BY_NAME["gcs"].high)
    pf, po = F.BY_NAME["pf_ratio"], F.BY_NAME["pao2"]
    # no arterial gas within the hold limit: PaO2 is imputed as a normal lung's at the current FiO2
    # (P/F = pf.normal), never as a fixed PaO2 that a charted FiO2 would turn into a low P/F
    out["pao2"] = np.where(np.isnan(col("pao2")), np.clip(np.round(pf.normal * out["fio2"], 6), po.low, po.high),
                           out["pao2"])
    out["pf_ratio"] = np.clip(np.round(out["pao2"] / out["fio2"], 6), pf.low, pf.high)
    # sums are not clipped above: a step above the feature's high bound is an exclusion rule of the cohort
    out["urine_cum"] = np.maximum(np.nan_to_num(col("urine_cum")), 0.0)
    out["urine_step"] = np.maximum(np.nan_to_num(col("urine_step")), 0.0)
    urine_n = np.nan_to_num(col("urine_n"))

    extra = run_query(con, f"""
        WITH win AS (SELECT g.rid, g.stay_id, s.intime AS lo, g.t AS hi FROM _g g JOIN _gstay s USING (stay_id)),
        prev AS (SELECT rid, stay_id, t_lo AS lo, t AS hi FROM _g),
        fl AS ({_fluid_sql('win')}),
        ne AS ({_nee_sql('prev')}),
        mv AS (SELECT DISTINCT g.rid FROM _g g JOIN procedureevents p ON p.stay_id = g.stay_id
               AND p.itemid IN ({_ids(F.VENT_ITEMS)}) AND p.starttime < g.t AND p.endtime > g.t_lo),
        st AS (
            SELECT i.stay_id, CAST(p.gender = 'F' AS DOUBLE) AS gender,
                   CAST(p.anchor_age + year(i.intime) - p.anchor_year AS DOUBLE) AS age,
                   CAST(EXISTS (SELECT 1 FROM icustays j WHERE j.subject_id = i.subject_id AND j.intime < i.intime)
                        AS DOUBLE) AS readmission,
                   p.subject_id AS psid
            FROM icustays i LEFT JOIN patients p ON p.subject_id = i.subject_id
            WHERE i.stay_id IN (SELECT stay_id FROM _gstay))
        SELECT g.rid, coalesce(fl.v, 0) AS fluid_cum, coalesce(ne.v, 0) AS nee_prev,
               greatest(0, epoch_us(least(g.t, coalesce(g.t_end, s.outtime, g.t)))
                           - epoch_us(greatest(g.t_lo, coalesce(s.intime, g.t_lo)))) / 3600e6 AS urine_hours,
               CAST(mv.rid IS NOT NULL AS DOUBLE) AS mechvent, st.gender, st.age, st.readmission, st.psid,
               g.stay_id
        FROM _g g JOIN _gstay s ON s.stay_id = g.stay_id
        LEFT JOIN fl ON fl.rid = g.rid LEFT JOIN ne ON ne.rid = g.rid LEFT JOIN mv ON mv.rid = g.rid
        LEFT JOIN st ON st.stay_id = g.stay_id
        ORDER BY g.rid""").fetchdf()
    if extra["psid"].isna().any():
        bad = sorted(set(extra.loc[extra["psid"].isna(), "stay_id"].tolist()))
        raise DataError("stays whose subject has no patients row", table="patients", column="subject_id", rows=bad)
    out["fluid_cum"] = np.maximum(extra["fluid_cum"].to_numpy(np.float64), 0.0)
    out["mechvent"] = extra["mechvent"].to_numpy(np.float64)
    out["gender"] = extra["gender"].to_numpy(np.float64, na_value=np.nan)
    out["gender"] = np.nan_to_num(out["gender"], nan=F.BY_NAME["gender"].normal)
    age = extra["age"].to_numpy(np.float64, na_value=np.nan)
    out["age"] = np.clip(np.where(np.isnan(age), F.BY_NAME["age"].normal, age), 0.0, F.BY_NAME["age"].high)
    out["readmission"] = extra["readmission"].to_numpy(np.float64)
    nee_prev = extra["nee_prev"].to_numpy(np.float64)
    urine_h = np.round(extra["urine_hours"].to_numpy(np.float64), 6)
    # renal urine criterion on the observed part of the window only (a stay ending inside it is not oliguria)
    urine_rated = (urine_n > 0) & (urine_h >= min(F.MIN_URINE_H, step_h))
    out["sofa"] = sofa_4h(col("pf_gas"), out["platelets"], out["bilirubin"], out["map"], nee_prev, out["gcs"],
                          out["creatinine"], np.where(urine_rated, out["urine_step"], np.nan),
                          np.where(urine_rated, urine_h, step_h))

    res = grid.reset_index(drop=True).copy()
    for name in F.ALL:
        res[name] = out[name].astype(np.float32)
    if missing:
        for name in _OBSERVED:
            if name not in _GCS_PARTS and name != "urine":
                res[f"missing_{name}"] = np.isnan(col(name))
        res["missing_gcs"] = np.isnan(col("gcs_eye")) & np.isnan(col("gcs_verbal")) & np.isnan(col("gcs_motor"))
        res["missing_urine_step"] = urine_n == 0
        res["urine_hours"] = urine_h
    return res


def sofa_4h(pf: np.ndarray, platelets: np.ndarray, bilirubin: np.ndarray, map_: np.ndarray, nee: np.ndarray,
            gcs: np.ndarray, creatinine: np.ndarray, urine: np.ndarray,
            step_h: float | np.ndarray = 4.0) -> np.ndarray:
    """AI-Clinician 4-hour SOFA (mimic-iv-reference §4.4): sum of six organ scores, each 0–4.

    Respiration P/F <400/300/200/100 → 1–4 (no ventilation condition; ``pf`` NaN = no paired arterial gas,
    0 points); coagulation platelets <150/100/50/20; liver bilirubin ≥1.2/2/6/12; cardiovascular MAP <70 → 1,
    <65 → 2, NEE >0 → 3, >0.1 → 4; CNS GCS ≤14/12/9/5 → 1–4; renal creatinine ≥1.2/2/3.5/5 or urine
    <84 → 3, <34 → 4 mL per 4 h, scaled by step_h/4 (``step_h`` may be an array: the observed hours of each
    row's urine window; ``urine`` NaN = not charted, criterion skipped).
    """
    def grade(x: np.ndarray, cuts: tuple[float, ...], below: bool) -> np.ndarray:
        s = np.zeros(x.shape, dtype=np.float64)
        for c in cuts:  # cuts ordered from the score-1 to the score-4 threshold
            s += (x < c) if below else (x >= c)
        return s

    resp = grade(pf, (400, 300, 200, 100), below=True)
    coag = grade(platelets, (150, 100, 50, 20), below=True)
    liver = grade(bilirubin, (1.2, 2, 6, 12), below=False)
    cardio = np.select([nee > 0.1, nee > 0, map_ < 65, map_ < 70], [4.0, 3.0, 2.0, 1.0], 0.0)
    cns = np.select([gcs <= 5, gcs <= 9, gcs <= 12, gcs <= 14], [4.0, 3.0, 2.0, 1.0], 0.0)
    k = step_h / 4.0
    with np.errstate(invalid="ignore"):
        uo = np.select([urine < 34 * k, urine < 84 * k], [4.0, 3.0], 0.0)
    renal = np.maximum(grade(creatinine, (1.2, 2, 3.5, 5), below=False), uo)
    return resp + coag + liver + cardio + cns + renal


def compute_actions(con: duckdb.DuckDBPyConnection, grid: pd.DataFrame, step_h: float = 4.0) -> pd.DataFrame:
    """Logged action of each grid row: IV fluid in [t, t + Δ) and max NE-equivalent dose running in it.

    Returns:
        ``grid`` (same row order) plus ``fluid_ml`` (tonicity-adjusted mL) and ``nee_max`` (µg/kg/min), float32.
    """
    _prepare_grid(con, grid, step_h)
    _prepare_inputs(con)
    res = run_query(con, f"""
        WITH win AS (SELECT rid, stay_id, t AS lo, t_hi AS hi FROM _g),
        fl AS ({_fluid_sql('win')}), ne AS ({_nee_sql('win')})
        SELECT g.rid, coalesce(fl.v, 0) AS fluid_ml, coalesce(ne.v, 0) AS nee_max
        FROM _g g LEFT JOIN fl ON fl.rid = g.rid LEFT JOIN ne ON ne.rid = g.rid ORDER BY g.rid""").fetchnumpy()
    out = grid.reset_index(drop=True).copy()
    out["fluid_ml"] = np.asarray(res["fluid_ml"], dtype=np.float32)
    out["nee_max"] = np.asarray(res["nee_max"], dtype=np.float32)
    return out
