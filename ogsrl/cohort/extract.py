"""Sepsis-3 cohort → trajectory tables (docs/data-contract.md §2–3; rules in docs/cohort.md).

Pipeline (all heavy lifting in DuckDB, out-of-core under its memory limit):

1. checks on the raw views (outtime ≤ intime, duplicate stays, stays without patients/admissions rows → DataError);
2. candidate stays: the first ICU stay of each hospital admission, adult at ICU admission;
3. Sepsis-3 onset (:mod:`ogsrl.cohort.sepsis`);
4. decision grid t_k = onset + window_start_h + k·Δ, kept while intime < t_k < min(outtime, deathtime);
5. states at t_k and t_k + Δ and logged actions in [t_k, t_k + Δ) (:mod:`ogsrl.cohort.features`);
6. exclusions (reference §5), reward, safety costs (:mod:`ogsrl.costs`), mortality flags, optional 5×5 action
   bins fitted on the training split, a seeded 60/20/20 split by patient (salted subject keys: all stays of a
   patient share a split) and salted stay keys.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd

from ogsrl import features as F
from ogsrl.cohort import features as cf
from ogsrl.cohort import views
from ogsrl.cohort import sepsis
from ogsrl.costs import CostsConfig, apply_cost_rules
from ogsrl.data.contract import CONTRACT_VERSION, contract_columns
from ogsrl.data.schema import METADATA_KEY, canonical
from ogsrl.errors import DataError
from ogsrl.io import salted_hash

log = logging.getLogger(__name__)

EXCLUSIONS: tuple[str, ...] = (
    "extreme_fluid", "extreme_urine", "extreme_vasopressor", "withdrawal", "icu_death_in_window",
)
"""Optional exclusion rules applied after the decision grid (reference §5), in this order."""
DEFAULT_EXCLUSIONS: tuple[str, ...] = EXCLUSIONS[:3]
"""withdrawal and icu_death_in_window are off by default: both drop genuine deaths (the demo has no withdrawal of
care), biasing the cohort's mortality; enable them for AI-Clinician-style cohorts on real MIMIC-IV."""


@dataclass(frozen=True, slots=True)
class CohortConfig:
    """The ``cohort:`` section of params.yaml."""

    salt: str = "ogsrl-demo-salt"
    """salt of the pseudonymised stay keys (SHA-256 prefix); set a secret one for real data"""
    window_start_h: float = -24.0
    """first decision time relative to sepsis onset, hours"""
    step_h: float = 4.0
    """Δ: decision interval, hours"""
    n_steps: int = 20
    """horizon: decision times per stay before truncation"""
    state_features: tuple[str, ...] = F.PAPER_STATE
    """the state subset recorded in the parquet metadata (every canonical feature is written regardless)"""
    action_bins: bool = True
    """also write the 5×5 AI-Clinician action bin (quartiles of non-zero train-split doses); −1 when off"""
    reward: Literal["sofa", "terminal"] = "sofa"
    """sofa: r = −clip(SOFA(s'), lo, hi), a death as ``death_reward`` says; terminal: ±terminal_reward on the last
    step"""
    reward_clip: tuple[float, ...] = (2.5, 12.5)
    """(lo, hi) of the SOFA reward clip"""
    death_reward: Literal["window", "step"] = "window"
    """sofa scheme, a death at decision time k of the window (0 … n_steps − 1): window: −hi for every decision time
    left in the window, k's included (r = −hi·(n_steps − k): the stay pays as if it stayed at the worst SOFA, so dying
    early never earns more than surviving); step: −hi once (before 2026-11-29; early death then pays)"""
    terminal_reward: float = 15.0
    """R of the terminal scheme: +R survival, −R death"""
    terminal_outcome: Literal["died_in_hosp", "died_90d"] = "died_in_hosp"
    """outcome of the terminal scheme"""
    split: tuple[float, ...] = (0.6, 0.2, 0.2)
    """train / val / test fractions, by patient (subject_id): no patient in two splits"""
    seed: int = 42
    """seed of the split"""
    duckdb_memory_limit: str = "4GB"
    """DuckDB memory_limit (it spills to disk beyond it)"""
    duckdb_threads: int = 2
    """DuckDB worker threads"""
    min_age: float = 18.0
    """youngest age at ICU admission, years"""
    culture_before_abx_h: float = 72.0
    """suspicion: a culture up to this many hours before the antibiotic (suspicion time = culture time)"""
    abx_before_culture_h: float = 24.0
    """suspicion: a culture up to this many hours after the antibiotic (suspicion time = antibiotic time)"""
    sofa_before_h: float = 48.0
    """Sepsis-3: SOFA ≥ threshold from this many hours before the suspicion time…"""
    sofa_after_h: float = 24.0
    """…to this many hours after it"""
    sofa_threshold: float = 2.0
    """Sepsis-3 SOFA threshold (baseline assumed 0)"""
    exclusions: tuple[str, ...] = DEFAULT_EXCLUSIONS
    """exclusion rules to apply (subset of extreme_fluid, extreme_urine, extreme_vasopressor, withdrawal,
    icu_death_in_window)"""
    max_fluid_ml: float = 10000.0
    """extreme_fluid: a step with more IV fluid than this, mL"""
    max_urine_ml: float = 12000.0
    """extreme_urine: a step with more urine output than this, mL"""
    max_nee: float = 5.0
    """extreme_vasopressor: a step with a higher NE-equivalent dose, µg/kg/min"""

    def __post_init__(self) -> None:
        F.state_features(self.state_features)
        if not self.salt:
            raise ValueError("salt must be a non-empty string")
        if not self.step_h > 0:
            raise ValueError(f"step_h must be > 0, got {self.step_h}")
        if self.n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {self.n_steps}")
        if len(self.reward_clip) != 2 or not 0 <= self.reward_clip[0] <= self.reward_clip[1]:
            raise ValueError(f"reward_clip must satisfy 0 <= lo <= hi, got {self.reward_clip}")
        if self.death_reward not in ("window", "step"):
            raise ValueError(f"death_reward must be window or step, got {self.death_reward!r}")
        bad_split = len(self.split) != 3 or any(f < 0 for f in self.split) or self.split[0] <= 0
        if bad_split or abs(sum(self.split) - 1.0) > 1e-9:
            raise ValueError(f"split must be three non-negative fractions summing to 1 (train > 0), got {self.split}")
        if self.duckdb_threads < 1:
            raise ValueError(f"duckdb_threads must be >= 1, got {self.duckdb_threads}")
        unknown = [e for e in self.exclusions if e not in EXCLUSIONS]
        if unknown:
            raise ValueError(f"unknown exclusion rule(s) {unknown}; known: {list(EXCLUSIONS)}")
        for name in ("culture_before_abx_h", "abx_before_culture_h", "sofa_before_h", "sofa_after_h",
                     "max_fluid_ml", "max_urine_ml", "max_nee", "terminal_reward"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class Extraction:
    """Result of :func:`extract`: one table per split plus flat metrics and the parquet metadata."""

    tables: dict[str, pd.DataFrame]
    """split name → trajectory rows (docs/data-contract.md §3)"""
    metrics: dict[str, Any]
    """flat JSON-serialisable metrics (data/reports/cohort.json)"""
    metadata: dict[str, str]
    """parquet key-value metadata"""
    providers: pd.DataFrame | None = None
    """stay → pseudonymous attending (:func:`provider_keys`; None: not recorded)"""


def _hours(h: float) -> str:
    return f"to_microseconds({int(round(h * 3600e6))})"


def _raw_checks(con: duckdb.DuckDBPyConnection) -> None:
    """Errors for impossible stays (outtime <= intime, duplicate stay ids)."""
    bad = views.run_query(con, "SELECT stay_id FROM icustays WHERE outtime IS NULL OR intime IS NULL "
                            "OR outtime <= intime ORDER BY stay_id LIMIT 6").fetchall()
    if bad:
        n = con.execute("SELECT count(*) FROM icustays WHERE outtime IS NULL OR intime IS NULL "
                        "OR outtime <= intime").fetchone()[0]
        raise DataError(f"{n} stay(s) with outtime <= intime (or missing)", table="icustays", column="outtime",
                        rows=[b[0] for b in bad])
    dup = con.execute("SELECT stay_id FROM icustays GROUP BY stay_id HAVING count(*) > 1 LIMIT 6").fetchall()
    if dup:
        raise DataError("duplicate stay_id rows", table="icustays", column="stay_id", rows=[d[0] for d in dup])


def _cleaning_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows the feature code drops among the candidate stays' relevant rows (negative volumes, exact duplicates)."""
    counts = views.run_query(con, f"""
        SELECT (SELECT count(*) FROM inputevents WHERE amount < 0 OR rate < 0),
               (SELECT count(*) FROM outputevents WHERE value < 0
                    AND itemid IN ({', '.join(map(str, sorted(F.URINE_ITEMS | F.URINE_SUBTRACT_ITEMS)))})),
               (SELECT count(*) - (SELECT count(*) FROM (SELECT DISTINCT * FROM inputevents)) FROM inputevents),
               (SELECT count(*) - (SELECT count(*) FROM (SELECT DISTINCT * FROM outputevents)) FROM outputevents)
    """).fetchone()
    return {"cleaned_negative_inputevents": int(counts[0]), "cleaned_negative_outputevents": int(counts[1]),
            "cleaned_duplicate_inputevents": int(counts[2]), "cleaned_duplicate_outputevents": int(counts[3])}


def _candidates(con: duckdb.DuckDBPyConnection, cfg: CohortConfig) -> dict[str, int]:
    """Temp table ``_cand`` of adult first ICU stays of each hospital admission (with outcome columns).

    Returns the exclusion counts. A later admission's first ICU stay is a candidate too (``readmission`` = 1).
    """
    adm_cols = {d[0] for d in con.execute("SELECT * FROM admissions LIMIT 0").description}
    provider = "a.admit_provider_id" if "admit_provider_id" in adm_cols else "NULL"
    views.run_query(con, f"""
        CREATE OR REPLACE TEMP TABLE _allstays AS
        SELECT i.stay_id, i.subject_id, i.hadm_id, i.intime, i.outtime,
               CAST({provider} AS VARCHAR) AS admit_provider_id,
               p.subject_id IS NOT NULL AS has_patient, a.hadm_id IS NOT NULL AS has_admission,
               least(p.anchor_age + year(i.intime) - p.anchor_year, 91) AS age,
               row_number() OVER (PARTITION BY i.hadm_id ORDER BY i.intime, i.stay_id) AS seq,
               a.deathtime, a.dischtime, coalesce(a.hospital_expire_flag, 0) AS expire_flag, p.dod
        FROM icustays i LEFT JOIN patients p ON p.subject_id = i.subject_id
        LEFT JOIN admissions a ON a.hadm_id = i.hadm_id""")
    for col, table in (("has_patient", "patients"), ("has_admission", "admissions")):
        bad = con.execute(f"SELECT stay_id FROM _allstays WHERE NOT {col} ORDER BY stay_id LIMIT 6").fetchall()
        if bad:
            key = "subject_id" if table == "patients" else "hadm_id"
            raise DataError(f"ICU stays without a {table} row", table=table, column=key, rows=[b[0] for b in bad])
    n_all, n_first, n_adult = con.execute(f"""
        SELECT count(*), count(*) FILTER (WHERE seq = 1),
               count(*) FILTER (WHERE seq = 1 AND age >= {cfg.min_age}) FROM _allstays""").fetchone()
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _cand AS
                    SELECT * FROM _allstays WHERE seq = 1 AND age >= {cfg.min_age}""")
    return {"icu_stays": int(n_all), "excluded_not_first_stay": int(n_all - n_first),
            "excluded_under_min_age": int(n_first - n_adult)}


def _materialize(con: duckdb.DuckDBPyConnection) -> None:
    """Replace the file-backed event views by DuckDB tables holding only the candidate stays' relevant rows.

    Every later query (Sepsis-3 SOFA blocks, states, actions) then scans these instead of re-parsing the raw files;
    DuckDB keeps them within its memory limit and spills the rest to its temporary folder.
    """
    chart = sorted({*F.CHART_ITEMS, 220224})
    filters = {
        "chartevents": f"itemid IN ({', '.join(map(str, chart))}) AND stay_id IN (SELECT stay_id FROM _cand)",
        "labevents": f"itemid IN ({', '.join(map(str, sorted({*F.LAB_ITEMS, cf.ART_SPECIMEN_ITEM})))}) "
                     "AND subject_id IN (SELECT subject_id FROM _cand)",
        "outputevents": f"itemid IN ({', '.join(map(str, sorted(F.URINE_ITEMS | F.URINE_SUBTRACT_ITEMS)))}) "
                        "AND stay_id IN (SELECT stay_id FROM _cand)",
        "inputevents": f"itemid IN ({', '.join(map(str, sorted({*F.FLUID_TONICITY, *F.NEE_FACTORS})))}) "
                       "AND stay_id IN (SELECT stay_id FROM _cand)",
        "procedureevents": f"itemid IN ({', '.join(map(str, sorted(F.VENT_ITEMS)))}) "
                           "AND stay_id IN (SELECT stay_id FROM _cand)",
        "prescriptions": "subject_id IN (SELECT subject_id FROM _cand)",
        "microbiologyevents": "subject_id IN (SELECT subject_id FROM _cand)",
    }
    for table, where in filters.items():
        t0 = time.perf_counter()
        con.execute(f"ALTER VIEW {table} RENAME TO _file_{table}")
        views.run_query(con, f"CREATE TABLE {table} AS SELECT * FROM _file_{table} WHERE {where}",
                        label=f"extract {table}")
        n = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        log.info("extract: %s %d relevant rows kept in %.1f s", table, n, time.perf_counter() - t0)


def _decision_grid(con: duckdb.DuckDBPyConnection, cfg: CohortConfig) -> pd.DataFrame:
    """Kept decision times (stay_id, step, k, t, hours_since_onset) from the temp table ``_sepsis``."""
    d_us = int(round(cfg.step_h * 3600e6))
    return con.execute(f"""
        WITH g AS (
            SELECT s.stay_id, k, s.onset + {_hours(cfg.window_start_h)} + to_microseconds(k * {d_us}) AS t,
                   c.intime, least(c.outtime, coalesce(c.deathtime, c.outtime)) AS t_end
            FROM _sepsis s JOIN _cand c USING (stay_id), range(0, {cfg.n_steps}) r(k))
        SELECT stay_id, k, t
        FROM g WHERE t > intime AND t < t_end ORDER BY stay_id, k""").fetchdf()


def _bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """0 for no dose, else 1 + number of quartile edges ≤ value (1–4)."""
    out = np.zeros(len(values), dtype=np.int16)
    nz = values > 0
    out[nz] = 1 + np.searchsorted(edges, values[nz], side="right").clip(0, 3)
    return out


def fit_action_bins(fluid: np.ndarray, nee: np.ndarray) -> dict[str, list[float]]:
    """Quartile edges (25/50/75 %) of the non-zero doses of each action (AI Clinician ``fit_action_bins``)."""
    edges = {}
    for name, v in (("fluid_ml", fluid), ("nee_max", nee)):
        nz = v[v > 0]
        edges[name] = [float(x) for x in np.quantile(nz, [0.25, 0.5, 0.75])] if len(nz) else [0.0, 0.0, 0.0]
    return edges


def assign_action_bins(fluid: np.ndarray, nee: np.ndarray, edges: dict[str, list[float]]) -> np.ndarray:
    """action_bin = 5·fluid_bin + nee_bin ∈ [0, 24]."""
    return (5 * _bins(fluid, np.asarray(edges["fluid_ml"])) + _bins(nee, np.asarray(edges["nee_max"]))).astype(
        np.int16)


def split_stays(keys: np.ndarray, fractions: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Seeded split of group keys (salted subject keys in the extraction; stay keys for a bring-your-own table
    without patients): permute the sorted distinct keys, cut at the cumulative fractions."""
    order = np.sort(np.unique(keys))
    perm = np.random.default_rng(seed).permutation(len(order))
    n = len(order)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    if n >= 1:
        n_train = max(n_train, 1)
    names = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * (n - n_train - n_val))[:n]
    return {str(order[i]): str(names[j]) for j, i in enumerate(perm)}


def death_steps(hours_since_onset: np.ndarray, cfg: CohortConfig) -> np.ndarray:
    """Decision times a death at these times is charged for: n_steps − k under ``death_reward: window`` (k the
    window index, from ``hours_since_onset = window_start_h + k·step_h``), 1 under ``step``."""
    if cfg.death_reward == "step":
        return np.ones(len(hours_since_onset))
    k = np.rint((np.asarray(hours_since_onset, np.float64) - cfg.window_start_h) / cfg.step_h)
    return np.maximum(cfg.n_steps - k, 1.0)


def death_charge(cfg: CohortConfig) -> float:
    """What a death costs per decision time left after it (the world model's environment charges it on a simulated
    death; 0 when a death is charged once or the reward is terminal)."""
    return float(cfg.reward_clip[1]) if cfg.reward == "sofa" and cfg.death_reward == "window" else 0.0


def extract(con: duckdb.DuckDBPyConnection, cfg: CohortConfig, costs: CostsConfig) -> Extraction:
    """Run the whole extraction on the raw views registered in ``con`` (which it replaces by filtered tables)."""
    t0 = time.perf_counter()
    _raw_checks(con)
    metrics: dict[str, Any] = _candidates(con, cfg)
    n_cand = con.execute("SELECT count(*) FROM _cand").fetchone()[0]
    _materialize(con)
    metrics.update(_cleaning_counts(con))
    onset, n_si = sepsis.onsets(con, cfg.step_h, cfg.culture_before_abx_h, cfg.abx_before_culture_h,
                                cfg.sofa_before_h, cfg.sofa_after_h, cfg.sofa_threshold)
    metrics["excluded_no_suspected_infection"] = int(n_cand - n_si)
    metrics["excluded_no_sepsis3"] = int(n_si - len(onset))
    con.register("_sepsis_src", onset)
    con.execute("CREATE OR REPLACE TEMP TABLE _sepsis AS SELECT stay_id, CAST(onset AS TIMESTAMP) AS onset "
                "FROM _sepsis_src")
    con.unregister("_sepsis_src")

    grid = _decision_grid(con, cfg)
    metrics["excluded_no_steps"] = int(len(onset) - grid["stay_id"].nunique())
    grid["step"] = (grid["k"] - grid.groupby("stay_id")["k"].transform("min")).astype(np.int64)
    grid["hours_since_onset"] = cfg.window_start_h + grid["k"].to_numpy(np.float64) * cfg.step_h
    step = pd.Timedelta(hours=cfg.step_h)
    # states at t_k and at t_k + Δ (= t_{k+1} except after the last kept step): one call on the distinct times
    times = pd.concat([grid[["stay_id", "t"]], grid[["stay_id", "t"]].assign(t=grid["t"] + step)],
                      ignore_index=True).drop_duplicates(ignore_index=True)
    ends = con.execute("SELECT stay_id, least(outtime, coalesce(deathtime, outtime)) AS t_end FROM _cand "
                       "WHERE stay_id IN (SELECT stay_id FROM _sepsis)").fetchdf().set_index("stay_id")["t_end"]
    times["t_end"] = ends.loc[times["stay_id"].to_numpy()].to_numpy()  # urine is observed until ICU exit or death
    states = cf.compute_states(con, times.assign(step=0), cfg.step_h, missing=True).set_index(["stay_id", "t"])
    cur = states.loc[pd.MultiIndex.from_frame(grid[["stay_id", "t"]])].reset_index(drop=True)
    nxt = states.loc[pd.MultiIndex.from_arrays([grid["stay_id"], grid["t"] + step])].reset_index(drop=True)
    acts = cf.compute_actions(con, grid[["stay_id", "step", "t"]], cfg.step_h)
    outcomes = con.execute("""
        SELECT c.stay_id, c.subject_id, c.intime, c.outtime, c.deathtime, c.dischtime, c.dod, c.admit_provider_id,
               (c.expire_flag = 1 OR c.deathtime IS NOT NULL) AS died_in_hosp,
               coalesce(CAST(c.deathtime AS DATE), CAST(c.dod AS DATE)) <= CAST(c.intime AS DATE) + 90 AS died_90d
        FROM _cand c WHERE c.stay_id IN (SELECT stay_id FROM _sepsis)""").fetchdf().set_index("stay_id")

    df = grid[["stay_id", "step", "t", "hours_since_onset"]].copy()
    for name in F.ALL:
        df[name] = cur[name].to_numpy()
        df[f"next_{name}"] = nxt[name].to_numpy()
    df["fluid_ml"] = acts["fluid_ml"].to_numpy()
    df["nee_max"] = acts["nee_max"].to_numpy()
    o = outcomes.loc[df["stay_id"].to_numpy()]
    df["died_in_hosp"] = o["died_in_hosp"].fillna(False).to_numpy(dtype=bool)
    df["died_90d"] = o["died_90d"].fillna(False).to_numpy(dtype=bool)
    death = pd.to_datetime(o["deathtime"]).to_numpy()
    t = df["t"].to_numpy()
    # kept steps have t < deathtime, so a death exactly on the next decision time t + Δ belongs to this step
    with np.errstate(invalid="ignore"):
        df["death_in_step"] = ~pd.isna(death) & (death > t) & (death <= t + step.to_numpy())
    df["subject_id"] = o["subject_id"].to_numpy()
    df["admit_provider_id"] = o["admit_provider_id"].to_numpy()
    # observed hours of the step [t, t + Δ): shorter when the stay ends (ICU discharge or death) inside it
    df["step_hours"] = nxt["urine_hours"].to_numpy(np.float64)
    last = df.groupby("stay_id")["step"].transform("max").to_numpy() == df["step"].to_numpy()
    df["done"] = last

    # ---- exclusions on the stay's kept steps --------------------------------------------------------------
    by = df.groupby("stay_id")
    stay = pd.DataFrame({
        "fluid_max": by["fluid_ml"].max(), "nee_max": by["nee_max"].max(),
        "urine_max": np.maximum(by["urine_step"].max(), by["next_urine_step"].max()),
        "n": by.size(), "last_nee": by["nee_max"].last(), "last_sofa": by["next_sofa"].last(),
        "sofa_max": by["next_sofa"].max(), "t_last": by["t"].max()})
    stay = stay.join(outcomes)
    rules = {
        "extreme_fluid": stay["fluid_max"] > cfg.max_fluid_ml,
        "extreme_urine": stay["urine_max"] > cfg.max_urine_ml,
        "extreme_vasopressor": stay["nee_max"] > cfg.max_nee,
        # presumed withdrawal of care (AI Clinician): died ≤ 90 d, vasopressors stopped at the end after a
        # high dose, SOFA still ≥ half its maximum, record shorter than the horizon
        "withdrawal": stay["died_90d"].fillna(False).astype(bool) & (stay["last_nee"] < 0.01)
                      & (stay["nee_max"] > 0.3) & (stay["last_sofa"] >= 0.5 * stay["sofa_max"])
                      & (stay["n"] < cfg.n_steps),
        # died in the ICU during data collection: death ≤ 48 h after ICU outtime and the record ends < 24 h
        # before death
        "icu_death_in_window": _icu_death_in_window(stay, step),
    }
    keep = pd.Series(True, index=stay.index)
    for name in EXCLUSIONS:
        hit = rules[name] & keep if name in cfg.exclusions else pd.Series(False, index=stay.index)
        metrics[f"excluded_{name}"] = int(hit.sum())
        keep &= ~hit
    kept_ids = keep[keep].index
    in_cohort = df["stay_id"].isin(kept_ids).to_numpy()
    df = df[in_cohort].reset_index(drop=True)
    # share of cohort rows whose state value was imputed (nothing charted within the window / hold limit)
    for c in (c for c in cur.columns if c.startswith("missing_")):
        metrics[c] = round(float(cur.loc[in_cohort, c].mean()), 6) if in_cohort.any() else 0.0
    excl = {k: v for k, v in metrics.items() if k.startswith("excluded_")}
    if df.empty and not metrics["icu_stays"]:
        raise DataError("no ICU stays to extract (0 rows)", table="icustays")
    if df.empty:
        raise DataError(f"empty cohort after exclusions: {metrics['icu_stays']} ICU stays; excluded {excl}")

    # ---- reward, costs, keys, split, bins -----------------------------------------------------------------
    lo, hi = cfg.reward_clip
    if cfg.reward == "sofa":
        r = -np.clip(df["next_sofa"].to_numpy(np.float64), lo, hi)
        died = df["death_in_step"].to_numpy()
        r[died] = -hi * death_steps(df["hours_since_onset"].to_numpy(np.float64)[died], cfg)
    else:
        died = df[cfg.terminal_outcome].to_numpy()
        r = np.where(df["done"].to_numpy(), np.where(died, -cfg.terminal_reward, cfg.terminal_reward), 0.0)
    df["reward"] = r.astype(np.float32)
    cost = apply_cost_rules(df, costs.rules, cfg.step_h, prefix="next_", hours=df["step_hours"].to_numpy())
    df = pd.concat([df, cost], axis=1)
    keys = np.asarray(salted_hash(df["stay_id"].tolist(), cfg.salt))
    df.insert(0, "stay_key", keys)
    # split by patient: a salted subject key (distinct from stay keys by its prefix), never written out
    subject_keys = np.asarray(salted_hash([f"subject:{s}" for s in df["subject_id"].tolist()], cfg.salt))
    assign = split_stays(subject_keys, cfg.split, cfg.seed)
    df["split"] = [assign[k] for k in subject_keys]
    train = df["split"].to_numpy() == "train"
    edges: dict[str, list[float]] = {}
    if cfg.action_bins:
        edges = fit_action_bins(df.loc[train, "fluid_ml"].to_numpy(), df.loc[train, "nee_max"].to_numpy())
        df["action_bin"] = assign_action_bins(df["fluid_ml"].to_numpy(), df["nee_max"].to_numpy(), edges)
    else:
        df["action_bin"] = np.int16(-1)

    table = _contract_frame(df, costs)
    per_stay = table.groupby("stay_key").agg(n=("step", "size"), hosp=("died_in_hosp", "first"),
                                             d90=("died_90d", "first"))
    metrics.update({
        "cohort_stays": int(len(per_stay)), "rows": int(len(table)),
        "mortality_in_hosp": round(float(per_stay["hosp"].mean()), 6),
        "mortality_90d": round(float(per_stay["d90"].mean()), 6),
        "steps_per_stay_mean": round(float(per_stay["n"].mean()), 4),
        "steps_per_stay_min": int(per_stay["n"].min()), "steps_per_stay_max": int(per_stay["n"].max()),
        "full_horizon_stays": int((per_stay["n"] == cfg.n_steps).sum()),
        "sepsis_sofa_at_onset_mean": round(float(onset.loc[onset["stay_id"].isin(kept_ids), "sofa_max"].mean()), 4),
    })
    log.info("extraction: %d stays, %d rows in %.1f s", len(per_stay), len(table), time.perf_counter() - t0)
    for s in ("train", "val", "test"):
        metrics[f"stays_{s}"] = int((table.groupby("stay_key")["split"].first() == s).sum())
    metrics["cohort_patients"] = int(df["subject_id"].nunique())
    for c in cost.columns:
        metrics[f"{c}_rate"] = round(float(table[c].mean()), 6)
    metadata = {
        "ogsrl.contract_version": CONTRACT_VERSION,
        "ogsrl.state_features": json.dumps(list(cfg.state_features)),
        "ogsrl.action_columns": json.dumps(list(F.ACTIONS)),
        "ogsrl.cost_columns": json.dumps([*costs.columns, "cost_total"]),
        "ogsrl.step_h": json.dumps(cfg.step_h),
        "ogsrl.n_steps": json.dumps(cfg.n_steps),
        "ogsrl.reward": json.dumps(cfg.reward),
        "ogsrl.death_charge": json.dumps(death_charge(cfg)),
        "ogsrl.action_bin_edges": json.dumps(edges),
        METADATA_KEY: canonical(costs.columns).to_json(),
    }
    tables = {s: table[table["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    providers = provider_keys(df, cfg.salt)
    metrics["stays_with_attending"] = int(len(providers))
    metrics["attendings"] = int(providers["provider_key"].nunique())
    return Extraction(tables=tables, metrics=metrics, metadata=metadata, providers=providers)


def provider_keys(df: pd.DataFrame, salt: str) -> pd.DataFrame:
    """One row per stay with a recorded admitting provider: ``stay_key`` and ``provider_key``, the salted hash of
    ``admissions.admit_provider_id`` (prefixed, so it never equals a stay or subject key); stays without one are
    left out."""
    first = df.drop_duplicates("stay_key")[["stay_key", "admit_provider_id"]]
    first = first[first["admit_provider_id"].notna()]
    keys = salted_hash([f"provider:{p}" for p in first["admit_provider_id"].tolist()], salt)
    return pd.DataFrame({"stay_key": first["stay_key"].astype(str).to_numpy(),
                         "provider_key": np.asarray(keys, dtype=object)}).sort_values("stay_key", ignore_index=True)


def _icu_death_in_window(stay: pd.DataFrame, step: pd.Timedelta) -> pd.Series:
    death = pd.to_datetime(stay["deathtime"])
    out = pd.to_datetime(stay["outtime"])
    end = pd.to_datetime(stay["t_last"]) + step
    hit = death.notna() & (death <= out + pd.Timedelta(hours=48)) & (death - end < pd.Timedelta(hours=24))
    return hit.fillna(False).astype(bool)


def _contract_frame(df: pd.DataFrame, costs: CostsConfig) -> pd.DataFrame:
    out = pd.DataFrame(index=df.index)
    for col, dtype in contract_columns(costs.columns):
        if dtype == "string":
            out[col] = df[col].astype(str).to_numpy(dtype=object)
        else:
            out[col] = df[col].to_numpy().astype(dtype)
    return out.sort_values(["stay_key", "step"], kind="stable").reset_index(drop=True)
