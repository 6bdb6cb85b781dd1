"""Sepsis-3 onset in DuckDB SQL (mimic-code ``suspicion_of_infection`` + ``sepsis3``, 4-hour SOFA blocks).

Suspected infection (mimic-iv-reference §4.2): a systemic antibiotic (``prescriptions``; drug name in
:data:`ogsrl.features.ANTIBIOTIC_NAMES`, not ``drug_type = 'BASE'``, no eye/ear/topical route) paired with a culture
(``microbiologyevents``, one time per ``micro_specimen_id``; ``charttime``, else ``chartdate`` at 00:00):

* culture first: culture_time ∈ [abx_time − 72 h, abx_time]  → suspicion time = culture_time
* antibiotic first: culture_time ∈ (abx_time, abx_time + 24 h] → suspicion time = abx_time

(the earliest qualifying culture of each antibiotic row; culture-first wins). As in mimic-code, a suspicion
belongs to the ICU stay during which the antibiotic started (``abx_time ∈ [intime, outtime)``).

Sepsis-3 (§4.3, baseline SOFA assumed 0): some 4-hour SOFA block ``[t − 4 h, t)`` of the ICU stay (t = intime + 4 h,
intime + 8 h, …; SOFA from :func:`ogsrl.cohort.features.compute_states`) with SOFA ≥ 2 overlaps
``[suspicion − 48 h, suspicion + 24 h)``. Onset = the earliest suspicion time of the stay that qualifies.
"""

from __future__ import annotations

import logging

import duckdb
import numpy as np
import pandas as pd

from ogsrl import features as F
from ogsrl.cohort import features as cf
from ogsrl.cohort import views

log = logging.getLogger(__name__)


def _hours(h: float) -> str:
    return f"to_microseconds({int(round(h * 3600e6))})"


def suspicion_sql(culture_before_abx_h: float = 72.0, abx_before_culture_h: float = 24.0) -> str:
    """SQL creating ``_si(stay_id, si_time, abx_time, culture_time)`` for the stays in ``_cand``."""
    names = "|".join(F.ANTIBIOTIC_NAMES)
    routes = ", ".join(f"'{r}'" for r in F.ANTIBIOTIC_EXCLUDED_ROUTES)
    return f"""
    CREATE OR REPLACE TEMP TABLE _si AS
    WITH abx AS (
        SELECT DISTINCT p.subject_id, p.starttime AS abx_time
        FROM prescriptions p
        WHERE p.starttime IS NOT NULL AND p.drug IS NOT NULL
          AND p.subject_id IN (SELECT subject_id FROM _cand)
          AND coalesce(upper(p.drug_type), '') <> 'BASE'
          AND regexp_matches(lower(p.drug), '{names}')
          AND upper(coalesce(p.route, '')) NOT IN ({routes})
          AND lower(coalesce(p.route, '')) NOT LIKE '%ear%' AND lower(coalesce(p.route, '')) NOT LIKE '%eye%'),
    cult AS (
        SELECT subject_id, micro_specimen_id, min(coalesce(charttime, chartdate)) AS culture_time
        FROM microbiologyevents
        WHERE subject_id IN (SELECT subject_id FROM _cand) AND coalesce(charttime, chartdate) IS NOT NULL
        GROUP BY subject_id, micro_specimen_id),
    pair AS (
        SELECT a.subject_id, a.abx_time,
               min(c.culture_time) FILTER (WHERE c.culture_time <= a.abx_time) AS c_first,
               min(c.culture_time) FILTER (WHERE c.culture_time > a.abx_time) AS a_first
        FROM abx a JOIN cult c ON c.subject_id = a.subject_id
             AND c.culture_time >= a.abx_time - {_hours(culture_before_abx_h)}
             AND c.culture_time <= a.abx_time + {_hours(abx_before_culture_h)}
        GROUP BY a.subject_id, a.abx_time)
    SELECT s.stay_id, CASE WHEN p.c_first IS NOT NULL THEN p.c_first ELSE p.abx_time END AS si_time,
           p.abx_time, coalesce(p.c_first, p.a_first) AS culture_time
    FROM pair p JOIN _cand s ON s.subject_id = p.subject_id
         AND p.abx_time >= s.intime AND p.abx_time < s.outtime
    """


def sofa_blocks(con: duckdb.DuckDBPyConnection, step_h: float, before_h: float, after_h: float) -> pd.DataFrame:
    """4-hour SOFA at t = intime + k·Δ for the blocks of each ``_si`` stay that can touch a suspicion window.

    Returns:
        rows (stay_id, step, t, sofa) with t − Δ < outtime and the block overlapping
        [min(si) − before_h, max(si) + after_h).
    """
    d_us = int(round(step_h * 3600e6))
    rows = con.execute(f"""
        WITH w AS (SELECT s.stay_id, any_value(c.intime) AS intime, any_value(c.outtime) AS outtime,
                          min(s.si_time) - {_hours(before_h)} AS lo, max(s.si_time) + {_hours(after_h)} AS hi
                   FROM _si s JOIN _cand c USING (stay_id) GROUP BY s.stay_id),
        k AS (SELECT stay_id, intime,
                     greatest(1, CAST(floor((epoch_us(lo) - epoch_us(intime)) / {d_us}) AS BIGINT)) AS k_lo,
                     CAST(ceil((epoch_us(least(hi, outtime)) - epoch_us(intime)) / {d_us}) AS BIGINT) AS k_hi
              FROM w)
        SELECT stay_id, k_lo + i AS step, intime + to_microseconds((k_lo + i) * {d_us}) AS t
        FROM k, range(0, greatest(0, k_hi - k_lo + 1)) r(i)
        ORDER BY stay_id, step""").fetchdf()
    if rows.empty:
        return rows.assign(sofa=np.zeros(0, dtype=np.float32))
    states = cf.compute_states(con, rows, step_h)
    return states[["stay_id", "step", "t", "sofa"]]


def onsets(con: duckdb.DuckDBPyConnection, step_h: float = 4.0, culture_before_abx_h: float = 72.0,
           abx_before_culture_h: float = 24.0, sofa_before_h: float = 48.0, sofa_after_h: float = 24.0,
           sofa_threshold: float = 2.0) -> tuple[pd.DataFrame, int]:
    """Sepsis-3 onset per candidate stay (temp table ``_cand``: stay_id, subject_id, intime, outtime).

    Returns:
        (frame of stay_id, onset, abx_time, culture_time, sofa_max for the septic stays,
         number of candidate stays with a suspected infection).
    """
    views.run_query(con, suspicion_sql(culture_before_abx_h, abx_before_culture_h))
    n_si = con.execute("SELECT count(DISTINCT stay_id) FROM _si").fetchone()[0]
    blocks = sofa_blocks(con, step_h, sofa_before_h, sofa_after_h)
    con.register("_blocks_src", blocks)
    d_us = int(round(step_h * 3600e6))
    out = con.execute(f"""
        WITH q AS (
            SELECT s.stay_id, s.si_time, s.abx_time, s.culture_time, max(b.sofa) AS sofa_max
            FROM _si s JOIN _blocks_src b ON b.stay_id = s.stay_id AND b.sofa >= {sofa_threshold}
                 AND CAST(b.t AS TIMESTAMP) > s.si_time - {_hours(sofa_before_h)}
                 AND CAST(b.t AS TIMESTAMP) - to_microseconds({d_us}) < s.si_time + {_hours(sofa_after_h)}
            GROUP BY ALL)
        SELECT stay_id, arg_min(si_time, (si_time, abx_time)) AS onset,
               arg_min(abx_time, (si_time, abx_time)) AS abx_time,
               arg_min(culture_time, (si_time, abx_time)) AS culture_time,
               arg_min(sofa_max, (si_time, abx_time)) AS sofa_max
        FROM q GROUP BY stay_id ORDER BY stay_id""").fetchdf()
    con.unregister("_blocks_src")
    return out, int(n_si)
