"""The one simulation loop shared by data generation and ground truth (docs/simulator.md §1, §5).

``simulate`` advances a chunk of patients hour by hour on a clock aligned to each stay's suspected-infection onset,
charts their events, and at every decision time ``t_k = onset + window_start_h + k·step_h`` asks the *observer*
(the cohort feature code, ``ogsrl.cohort.features``) for the states computed from the rows charted before ``t_k``;
the acting policy (the clinicians, or a policy under evaluation) picks the next 4-hour action from those states.
Generation keeps the rows and writes them; ground truth keeps the per-step states, actions and outcomes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from ogsrl import features as F
from ogsrl.policy import Policy
from ogsrl.synth import clinician as C
from ogsrl.synth import physiology as P
from ogsrl.synth import tables as T
from ogsrl.synth.charting import HOUR, EventLog, Mess, chart_hour
from ogsrl.synth.stays import KIND_NO_INFECTION, KIND_SECOND_STAY, KIND_SEPSIS, infection_rows, stay_tables

log = logging.getLogger(__name__)

Observer = Callable[[dict[str, pd.DataFrame], pd.DataFrame, float], pd.DataFrame]
"""(tables so far, grid[stay_id, step, t], step_h) → grid + one column per ``features.ALL``"""


@dataclass(frozen=True, slots=True)
class WorldConfig:
    """The simulated world: decision grid (from the cohort section), case mix, mess rates and the clinicians."""

    window_start_h: int = -24
    """first decision time relative to onset (h), cohort.window_start_h"""
    step_h: int = 4
    """decision interval (h), cohort.step_h"""
    n_steps: int = 20
    """decision times per stay, cohort.n_steps"""
    no_infection_rate: float = 0.06
    """share of stays with no suspected infection (no antibiotic; the cohort must exclude them)"""
    second_stay_rate: float = 0.04
    """share of stays that are the second ICU stay of their admission (the cohort must exclude them)"""
    readmission_rate: float = 0.10
    """share of patients with an earlier admission that had an ICU stay (readmission feature = 1)"""
    mess: Mess = field(default_factory=Mess)
    """charting mess rates"""
    clinicians: C.Practice = C.DEMO
    """how the simulated clinicians dose (the logging policy), synth.clinicians"""

    def __post_init__(self) -> None:
        if self.step_h < 1:
            raise ValueError(f"step_h must be a whole number of hours >= 1, got {self.step_h}")
        if self.window_start_h > -2:
            raise ValueError(f"window_start_h must be <= -2 (decisions start before onset), got {self.window_start_h}")
        if self.n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {self.n_steps}")
        for name in ("no_infection_rate", "second_stay_rate", "readmission_rate"):
            v = getattr(self, name)
            if not 0.0 <= v < 0.5:
                raise ValueError(f"{name} must be in [0, 0.5), got {v}")


@dataclass(slots=True)
class SimResult:
    """Output of one simulated chunk."""

    tables: dict[str, pa.Table]
    """final MIMIC-IV tables of the chunk (empty when not kept)"""
    steps: pd.DataFrame
    """one row per kept decision step: ``stay`` (chunk index), ``step``, states, ``next_<f>``, actions, flags"""
    stays: pd.DataFrame
    """one row per stay: kind, attending, outcome flags"""


def _input_rows(sim: "_State", idx: np.ndarray, start: np.ndarray, dur_h: np.ndarray, act: npt.NDArray[np.float64],
                rng: np.random.Generator) -> None:
    """Write the interval's fluid and vasopressor rows and set the hourly delivery schedule."""
    p = sim.p
    fl, ne = act[:, 0], act[:, 1]
    sim.nee[idx] = ne
    sim.fluid_rate[idx] = 0.0
    sim.bolus_amt[idx] = 0.0
    f = fl > 0
    if f.any():
        j = idx[f]
        vol = fl[f]
        albumin = (rng.random(len(j)) < 0.1) & (vol >= 500)
        item = np.where(albumin, 220862, np.where(rng.random(len(j)) < 0.4, 225828, 225158))
        raw = np.where(albumin, vol / F.FLUID_TONICITY[220862], vol)
        bolus = rng.random(len(j)) < 0.5
        offset = rng.integers(0, 50, len(j)).astype("timedelta64[m]").astype("timedelta64[s]")
        st = np.where(bolus, start[f] + offset, start[f])
        en = np.where(bolus, st + np.timedelta64(60, "s"), start[f] + dur_h[f] * HOUR)
        rate = np.where(bolus, np.nan, np.round(raw / dur_h[f], 4))
        sim.fluid_rate[j] = np.where(bolus, 0.0, vol / dur_h[f])
        sim.bolus_amt[j] = np.where(bolus, vol, 0.0)
        sim.add_input(j, st, en, item, raw, "mL", rate, np.where(bolus, None, "mL/hour").astype(object),
                      "02-Fluids (Crystalloids)")
    v = ne > 0
    if v.any():
        j = idx[v]
        dose = ne[v]
        vaso = (dose <= 0.1) & (rng.random(len(j)) < 0.15)
        en = start[v] + dur_h[v] * HOUR
        rate = np.where(vaso, dose * 60.0 / 2.5, dose)
        amount = np.where(vaso, rate * dur_h[v], dose * p.weight[j] * 60.0 * dur_h[v] / 1000.0)
        sim.add_input(j, start[v], en, np.where(vaso, 222315, 221906), np.round(amount, 6),
                      np.where(vaso, "units", "mg").astype(object), rate,
                      np.where(vaso, "units/hour", "mcg/kg/min").astype(object), "01-Drips")


class _State:
    """Mutable per-chunk simulation state (hidden patients, schedules, event log, bookkeeping)."""

    def __init__(self, p: P.Patients, ids: dict[str, np.ndarray], order_base: int) -> None:
        n = len(p.age)
        self.p, self.ids = p, ids
        self.log = EventLog()
        self.nee = np.zeros(n)
        self.fluid_rate = np.zeros(n)
        self.bolus_amt = np.zeros(n)
        self.order = order_base

    def add_input(self, j: np.ndarray, st: np.ndarray, en: np.ndarray, item: np.ndarray, amount: np.ndarray,
                  amountuom: np.ndarray | str, rate: np.ndarray, rateuom: np.ndarray, category: str) -> None:
        k = len(j)
        orders = self.order + np.arange(k)
        self.order += k
        self.log.add("inputevents", np.inf, subject_id=self.ids["subject_id"][j], hadm_id=self.ids["hadm_id"][j],
                     stay_id=self.ids["stay_id"][j], starttime=st, endtime=en, storetime=en,
                     itemid=item.astype(np.int64), amount=np.round(amount.astype(float), 6),
                     amountuom=np.broadcast_to(np.asarray(amountuom, dtype=object), (k,)).copy(),
                     rate=rate.astype(float), rateuom=rateuom, orderid=orders, linkorderid=orders,
                     ordercategoryname=np.full(k, category, dtype=object),
                     patientweight=self.p.weight[j], statusdescription=np.full(k, "FinishedRunning", dtype=object))


OBSERVED_COLUMNS: dict[str, tuple[str, ...]] = {
    "patients": ("subject_id", "gender", "anchor_age", "anchor_year", "dod"),
    "icustays": ("subject_id", "hadm_id", "stay_id", "intime", "outtime"),
    "chartevents": ("stay_id", "charttime", "itemid", "valuenum"),
    "labevents": ("subject_id", "hadm_id", "specimen_id", "itemid", "charttime", "value", "valuenum"),
    "outputevents": ("stay_id", "charttime", "itemid", "value"),
    "inputevents": ("stay_id", "starttime", "endtime", "itemid", "amount", "amountuom", "rate", "rateuom",
                    "patientweight", "statusdescription"),
    "procedureevents": ("stay_id", "starttime", "endtime", "itemid"),
}
"""the columns handed to the observer (the rest of each row does not enter a state)"""


KEEP_H: dict[str, float] = {
    "chartevents": 1.0 + max(max(F.BY_NAME[f].hold_h for f in set(F.CHART_ITEMS.values()) - {"weight"}
                                 if f in F.BY_NAME), F.BY_NAME["gcs"].hold_h),
    "labevents": 1.0 + max(F.BY_NAME[f].hold_h for f in F.LAB_ITEMS.values()),
}
"""hours of chart/lab history handed to the observer: the longest hold limit (weights, held 72 h, are always
handed over) or the averaging window, plus one hour; older rows cannot enter a state. Urine, fluids and
ventilation are handed over in full (cumulative sums)."""


def cohort_observer(threads: int = 1) -> Observer:
    """The production observer: ``ogsrl.cohort.features.compute_states`` on the frames charted so far.

    One in-memory DuckDB connection is opened on the first call and reused (views and temp tables are replaced on
    every call), which saves the per-call connection set-up.
    """
    state: dict[str, Any] = {}

    def observe(tables: dict[str, pd.DataFrame], grid: pd.DataFrame, step_h: float) -> pd.DataFrame:
        from ogsrl.cohort import features as cf
        from ogsrl.cohort import views

        if "con" not in state:
            state["con"] = views.connect(threads=threads)
        con = state["con"]
        views.register_frames(con, tables)
        return cf.compute_states(con, grid, step_h=step_h)

    return observe


def _pandas_tables(tables: dict[str, pa.Table]) -> dict[str, pd.DataFrame]:
    return {k: T.to_pandas(v.select(list(OBSERVED_COLUMNS[k]))) for k, v in tables.items()}


def simulate(n: int, rng: np.random.Generator, *, first_index: int, world: WorldConfig, observer: Observer,
             policy: Policy | None = None, cohort_only: bool = False, keep_tables: bool = True) -> SimResult:
    """Simulate ``n`` ICU stays (one chunk).

    Args:
        n: stays in the chunk.
        rng: the chunk's generator.
        first_index: global index of the chunk's first stay (ids are derived from it, so chunks never collide).
        world: decision grid, case mix and mess.
        observer: computes states from the rows charted so far (``ogsrl.cohort.features`` in production).
        policy: acting policy at kept decision times; None = the clinicians (behaviour policy).
        cohort_only: simulate only septic stays (ground truth draws from the cohort's initial-state distribution).
        keep_tables: build the final MIMIC-IV tables (generation) or not (ground truth).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    w = world
    gi = first_index + np.arange(n)
    ids = {"subject_id": 10_000_000 + gi, "hadm_id": 20_000_000 + gi, "stay_id": 30_000_000 + gi,
           "prior_hadm_id": 28_000_000 + gi, "prior_stay_id": 38_000_000 + gi,
           "second_stay_id": 34_000_000 + gi}
    # ---- case mix, timing and static traits -----------------------------------------------------------------
    u = rng.random(n)
    kind = np.where(u < w.no_infection_rate, KIND_NO_INFECTION,
                    np.where(u < w.no_infection_rate + w.second_stay_rate, KIND_SECOND_STAY, KIND_SEPSIS))
    if cohort_only:
        kind[:] = KIND_SEPSIS
    p = P.sample_patients(n, rng)
    mild = kind == KIND_NO_INFECTION
    p.infection = np.where(mild, p.infection * 0.15, p.infection)
    p.volume = np.where(mild, p.volume * 0.3, p.volume)
    h0, step = w.window_start_h, w.step_h
    h_end = h0 + w.n_steps * step
    d_lo, d_hi = max(1, 1 - h_end), min(22, -h0 - 1)
    if d_lo > d_hi:
        raise ValueError(f"decision window [{h0}, {h_end}) h leaves no admission time before onset")
    d = rng.integers(d_lo, d_hi + 1, n)  # intime = onset − d hours, inside the window
    year = rng.integers(2110, 2190, n)
    day = rng.integers(0, 360, n)
    minute = rng.integers(0, 60 * 24, n)
    onset = (year - 1970).astype("datetime64[Y]").astype("datetime64[s]") + day * np.timedelta64(86400, "s") \
        + minute * np.timedelta64(60, "s")
    intime = onset - d * HOUR
    culture_first = rng.random(n) < 0.6
    nat = np.datetime64("NaT", "s")
    lag = (rng.uniform(0.5, 6.0, n) * 3600).astype("timedelta64[s]")
    lag2 = (rng.uniform(0.5, 20.0, n) * 3600).astype("timedelta64[s]")
    infected = ~mild
    abx_time = np.where(infected, np.where(culture_first, onset + lag, onset), nat)
    culture_time = np.where(infected, np.where(culture_first, onset, onset + lag2),
                            np.where(rng.random(n) < 0.3, onset, nat))
    abx_h = np.where(infected, (abx_time - onset) / HOUR, np.inf)
    group = np.array(["2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022"], dtype=object)
    st: dict[str, Any] = {
        "kind": kind, "onset": onset, "intime": intime, "h_end": h_end, "female": p.female, "age": p.age,
        "anchor_year": year, "year_group": group[rng.integers(0, 5, n)],
        "attending": rng.integers(0, C.N_ATTENDINGS, n),
        "admittime": intime - np.where(kind == KIND_SECOND_STAY, rng.uniform(48, 96, n),
                                       rng.uniform(2, 24, n)).astype(int) * HOUR,
        "readmit": rng.random(n) < w.readmission_rate, "readmit_days": rng.integers(30, 365, n),
        "culture_time": culture_time, "abx_time": abx_time,
    }
    sim = _State(p, ids, order_base=first_index * 100)
    art_line = rng.random(n) < 0.6
    urine_item = np.where(rng.random(n) < 0.9, 226559, 226560)
    urine_pending = np.zeros(n)
    lab_seq = [first_index * 400, first_index * 200]
    static = infection_rows(ids, st, rng, first_index)
    provisional = stay_tables(ids, st, final=False)
    in_icu = np.zeros(n, bool)
    gone = np.zeros(n, bool)          # left the ICU (death or discharge)
    death_h = np.full(n, np.inf)       # hours since onset
    out_h = np.full(n, np.inf)
    vent_start = np.full(n, nat)
    kept_prev = np.zeros(n, bool)
    step_rows: list[dict[str, Any]] = []
    pending_next: dict[str, Any] | None = None
    last_obs: dict[str, npt.NDArray[np.float64]] = P.observables(p)
    normal = pd.DataFrame({f.name: np.full(n, f.normal) for f in F.FEATURES})
    normal["weight"] = p.weight

    def observe(k: int, who: np.ndarray) -> pd.DataFrame:
        t = onset[who] + (h0 + k * step) * HOUR
        open_vent = np.flatnonzero(~np.isnat(vent_start))
        extra = [] if not len(open_vent) else [_vent_block(ids, open_vent, vent_start[open_vent],
                                                            onset[open_vent] + (h0 + k * step) * HOUR, p)]
        tabs = {name: sim.log.table(name, extra if name == "procedureevents" else None,
                                    since_hour=h0 + k * step - max(KEEP_H.get(name, np.inf), step + 1.0),
                                    columns=OBSERVED_COLUMNS[name])
                for name in ("chartevents", "labevents", "outputevents", "inputevents", "procedureevents")}
        tabs["patients"] = provisional["patients"]
        tabs["icustays"] = provisional["icustays"]
        grid = pd.DataFrame({"stay_id": ids["stay_id"][who].astype(np.int64), "step": np.full(len(who), k, np.int64),
                             "t": t.astype("datetime64[s]")})
        out = observer(_pandas_tables(tabs), grid, float(step))
        if len(out) != len(grid) or not np.array_equal(out["stay_id"].to_numpy(np.int64), grid["stay_id"].to_numpy()):
            raise RuntimeError("observer must return one row per grid row, in grid order")
        return out

    for h in range(h0, h_end + 1):
        if (h - h0) % step == 0:
            k = (h - h0) // step
            kept = (h > -d) & in_icu & ~gone if k < w.n_steps else np.zeros(n, bool)
            who = np.flatnonzero(kept | kept_prev)
            if len(who):
                states = observe(k, who)
                if pending_next is not None:
                    prev = pending_next
                    pos = np.searchsorted(who, prev["stay"])
                    for f_name in F.ALL:
                        prev[f"next_{f_name}"] = states[f_name].to_numpy(np.float64)[pos]
                    step_rows.append(prev)
                    pending_next = None
                kk = np.flatnonzero(kept[who])
                if len(kk):
                    idx = who[kk]
                    s_k = states.iloc[kk].reset_index(drop=True)
                    if policy is None:
                        act = C.sample(s_k, st["attending"][idx], rng, world.clinicians)
                    else:
                        raw = np.asarray(policy.act(s_k[list(policy.feature_names)].to_numpy(np.float64), rng),
                                         dtype=np.float64)
                        if raw.shape != (len(idx), 2) or not np.isfinite(raw).all():
                            raise ValueError(f"policy returned actions of shape {raw.shape} (need ({len(idx)}, 2),"
                                             " finite)")
                        act = C.round_actions(raw[:, 0], raw[:, 1])
                    _input_rows(sim, idx, onset[idx] + h * HOUR, np.full(len(idx), step), act, rng)
                    row = {"stay": idx, "step": np.full(len(idx), k), "hours_since_onset": np.full(len(idx), float(h)),
                           "fluid_ml": act[:, 0], "nee_max": act[:, 1], "attending": st["attending"][idx]}
                    for f_name in F.ALL:
                        row[f_name] = s_k[f_name].to_numpy(np.float64)
                    pending_next = row
            kept_prev = kept
        if h == h_end:
            break
        # ---- admissions this hour: the attending's admission orders until the first kept decision time ----------
        adm = np.flatnonzero(h == -d)
        if len(adm):
            in_icu[adm] = True
            nxt = h0 + ((h - h0) // step + 1) * step
            act = C.sample(normal.iloc[adm].reset_index(drop=True), st["attending"][adm], rng, world.clinicians)
            _input_rows(sim, adm, intime[adm], np.full(len(adm), nxt - h), act, rng)
        act_now = in_icu & ~gone
        on_abx = (h >= abx_h).astype(float)
        hour_of_interval = (h - h0) % step
        fluid = sim.fluid_rate + np.where(hour_of_interval == 0, sim.bolus_amt, 0.0)
        fluid = np.where(np.isin(np.arange(n), adm), sim.fluid_rate + sim.bolus_amt, fluid)
        sim.bolus_amt = np.where(np.isin(np.arange(n), adm) | (hour_of_interval == 0), 0.0, sim.bolus_amt)
        vent_before = p.vent.copy()
        o = P.step_hour(p, np.where(act_now, fluid, 0.0), np.where(act_now, sim.nee, 0.0), on_abx, rng,
                        act_now.astype(float))
        # ---- deaths and early discharges -------------------------------------------------------------------
        dies = act_now & (rng.random(n) < 1.0 - np.exp(-o["hazard"]))
        death_h = np.where(dies, h + rng.uniform(0.05, 0.95, n), death_h)
        score = P.organ_score(p, o)
        well = (score <= 3) & (o["map"] >= 65) & (sim.nee == 0) & (p.vent == 0) & (h >= 12)
        leaves = act_now & ~dies & well & (rng.random(n) < 0.04)
        out_h = np.where(dies, death_h, np.where(leaves, h + 1.0, out_h))
        # ventilation intervals (procedureevents)
        started = act_now & (vent_before == 0) & (p.vent > 0)
        vent_start = np.where(started, onset + h * HOUR + np.timedelta64(1800, "s"), vent_start)
        stopped = act_now & (vent_before > 0) & (p.vent == 0)
        ending = np.flatnonzero((stopped | dies | leaves) & ~np.isnat(vent_start))
        if len(ending):
            end_t = onset[ending] + (np.minimum(out_h[ending], h + 0.5) * 3600).astype("timedelta64[s]")
            sim.log.add("procedureevents", np.inf, **_vent_block(ids, ending, vent_start[ending], end_t.astype(
                "datetime64[s]"), p))
            vent_start[ending] = nat
        alive_chart = act_now & ~dies
        chart_hour(sim.log, p, o, h, ids, onset, h + d, alive_chart, art_line, urine_item, urine_pending,
                   w.mess, rng, lab_seq)
        last_obs = {k2: np.where(act_now, v, last_obs.get(k2, v)) for k2, v in o.items()}
        last_obs["score"] = np.where(act_now, score, last_obs.get("score", score))
        gone |= dies | leaves
    # ---- end of the window: close ventilation, outcomes after the ICU -------------------------------------------
    still = in_icu & ~gone
    open_v = np.flatnonzero(~np.isnat(vent_start))
    if len(open_v):
        sim.log.add("procedureevents", np.inf, **_vent_block(ids, open_v, vent_start[open_v],
                                                    onset[open_v] + h_end * HOUR, p))
    out_h = np.where(still, float(h_end), out_h)
    died_icu = np.isfinite(death_h)
    p_post = P.post_window_death_prob(p, last_obs)
    died_post = ~died_icu & (rng.random(n) < p_post)
    post_days = rng.exponential(5.0, n) + 0.5
    died_hosp = died_icu | died_post
    outtime = onset + (out_h * 3600).astype("timedelta64[s]")
    deathtime = np.where(died_icu, outtime, np.where(died_post, outtime + (post_days * 86400).astype(
        "timedelta64[s]"), nat))
    dischtime = np.where(died_hosp, deathtime, outtime + (rng.uniform(1, 10, n) * 86400).astype("timedelta64[s]"))
    p_90 = P.post_discharge_death_prob(p, last_obs)
    died_after = ~died_hosp & (rng.random(n) < p_90)
    span = ((intime + 90 * 24 * HOUR) - dischtime) / np.timedelta64(1, "s")
    dod_after = dischtime + (rng.uniform(0, 1, n) * np.maximum(span, 0)).astype("timedelta64[s]")
    dod = np.where(died_hosp, deathtime, np.where(died_after, dod_after, nat))
    st.update(outtime=outtime, deathtime=deathtime, dischtime=dischtime, died_hosp=died_hosp, dod=dod)
    died_90 = died_hosp | died_after
    steps = _steps_frame(step_rows, death_h, world)
    stays = pd.DataFrame({"stay": np.arange(n), "stay_id": ids["stay_id"], "kind": kind,
                          "attending": st["attending"], "died_in_hosp": died_hosp, "died_90d": died_90,
                          "death_h": death_h, "out_h": out_h, "readmission": st["readmit"],
                          "onset": onset})
    tables: dict[str, pa.Table] = {}
    if keep_tables:
        tables = {name: sim.log.table(name) for name in T.EVENT_TABLES if name not in static}
        tables.update(static)
        tables.update(stay_tables(ids, st, final=True))
    return SimResult(tables=tables, steps=steps, stays=stays)


def _vent_block(ids: dict[str, np.ndarray], j: np.ndarray, start: np.ndarray, end: np.ndarray,
                p: P.Patients) -> dict[str, np.ndarray]:
    k = len(j)
    end = np.maximum(end, start + np.timedelta64(60, "s"))
    return {"subject_id": ids["subject_id"][j], "hadm_id": ids["hadm_id"][j], "stay_id": ids["stay_id"][j],
            "starttime": start, "endtime": end, "storetime": end, "itemid": np.full(k, 225792),
            "value": np.round((end - start) / np.timedelta64(60, "s"), 0).astype(float),
            "valueuom": np.full(k, "min", dtype=object), "location": np.full(k, None, dtype=object),
            "ordercategoryname": np.full(k, "Ventilation", dtype=object), "patientweight": p.weight[j],
            "statusdescription": np.full(k, "FinishedRunning", dtype=object)}


def _steps_frame(rows: list[dict[str, Any]], death_h: npt.NDArray[np.float64], world: WorldConfig) -> pd.DataFrame:
    if not rows:
        cols = ["stay", "step", "hours_since_onset", "fluid_ml", "nee_max", "attending", *F.ALL,
                *[f"next_{f}" for f in F.ALL], "death_in_step", "done"]
        return pd.DataFrame({c: [] for c in cols})
    df = pd.concat([pd.DataFrame(r) for r in rows], ignore_index=True).sort_values(["stay", "step"],
                                                                                     kind="stable")
    df = df.reset_index(drop=True)
    t = df["hours_since_onset"].to_numpy()
    dh = death_h[df["stay"].to_numpy()]
    df["death_in_step"] = (dh >= t) & (dh < t + world.step_h)
    df["done"] = ~df["stay"].duplicated(keep="last").to_numpy()
    return df
