"""Tiny hand-written MIMIC-IV-layout tables and trajectory files for the validation gate tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ogsrl import features as F
from ogsrl.validate.raw import KNOWN_ICU_ITEMS, KNOWN_LAB_ITEMS, TABLES

STAYS = [(10000001, 20000001, 30000001), (10000002, 20000002, 30000002), (10000003, 20000003, 30000003)]
"""(subject_id, hadm_id, stay_id); distinctive so tests can assert they never reach a report"""
T0 = pd.Timestamp("2150-01-01 08:00:00")


def _chart_rows() -> list[dict]:
    """Per stay: one in-range value for each known chart itemid (raw units), incl. °F temp and FiO2 as fraction."""
    raw = {220045: 88, 220050: 121, 220179: 118, 220052: 75, 220181: 80, 220210: 18, 223762: 37.2, 223761: 99.1,
           220277: 96, 223835: 0.5, 220224: 92, 220739: 4, 223900: 5, 223901: 6, 226512: 81.0, 226531: 170.0}
    rows = []
    for s, h, st in STAYS:
        for k, (item, val) in enumerate(raw.items()):
            rows.append({"subject_id": s, "hadm_id": h, "stay_id": st, "caregiver_id": None,
                         "charttime": T0 + pd.Timedelta(hours=k), "storetime": T0 + pd.Timedelta(hours=k),
                         "itemid": item, "value": str(val), "valuenum": float(val), "valueuom": "", "warning": 0})
    return rows


def make_tables() -> dict[str, pd.DataFrame]:
    """A complete, valid MIMIC-IV-layout data set of three ICU stays (columns in create.sql order)."""
    subj = [s for s, _, _ in STAYS]
    hadm = [h for _, h, _ in STAYS]
    stay = [st for _, _, st in STAYS]
    t = {}
    t["patients"] = pd.DataFrame({"subject_id": subj, "gender": ["M", "F", "M"], "anchor_age": [54, 71, 38],
                                  "anchor_year": [2150] * 3, "anchor_year_group": ["2014 - 2016"] * 3,
                                  "dod": [None, "2150-01-20", None]})
    t["admissions"] = pd.DataFrame({
        "subject_id": subj, "hadm_id": hadm, "admittime": [T0 - pd.Timedelta(days=1)] * 3,
        "dischtime": [T0 + pd.Timedelta(days=9)] * 3, "deathtime": [None, T0 + pd.Timedelta(days=9), None],
        "admission_type": ["EW EMER."] * 3, "hospital_expire_flag": [0, 1, 0]})
    t["icustays"] = pd.DataFrame({
        "subject_id": subj, "hadm_id": hadm, "stay_id": stay, "first_careunit": ["MICU"] * 3,
        "last_careunit": ["MICU"] * 3, "intime": [T0] * 3, "outtime": [T0 + pd.Timedelta(days=3)] * 3,
        "los": [3.0] * 3})
    t["chartevents"] = pd.DataFrame(_chart_rows())
    lab_vals = {50821: 85.0, 50816: 50.0, 50885: 0.8, 50912: 1.1, 51265: 210.0, 50813: 1.9}
    t["labevents"] = pd.DataFrame([
        {"labevent_id": i, "subject_id": s, "hadm_id": h, "specimen_id": 1000 + i, "itemid": item,
         "charttime": T0 + pd.Timedelta(hours=2), "valuenum": v, "valueuom": "", "flag": None}
        for i, ((s, h, _), (item, v)) in enumerate((st, iv) for st in STAYS for iv in lab_vals.items())])
    t["d_labitems"] = pd.DataFrame({"itemid": list(KNOWN_LAB_ITEMS) + [50820],
                                    "label": [f"lab {i}" for i in KNOWN_LAB_ITEMS] + ["pH"],
                                    "fluid": "Blood", "category": "Blood Gas"})
    t["prescriptions"] = pd.DataFrame({
        "subject_id": subj, "hadm_id": hadm, "pharmacy_id": [1, 2, 3], "starttime": [T0] * 3,
        "stoptime": [T0 + pd.Timedelta(days=2)] * 3, "drug_type": ["MAIN"] * 3,
        "drug": ["Vancomycin", "Cefepime", "Meropenem"], "route": ["IV"] * 3})
    t["microbiologyevents"] = pd.DataFrame({
        "microevent_id": [1, 2, 3], "subject_id": subj, "hadm_id": hadm, "micro_specimen_id": [7, 8, 9],
        "chartdate": [T0.normalize()] * 3, "charttime": [T0 - pd.Timedelta(hours=3), None, T0],
        "spec_item_id": [70012] * 3, "spec_type_desc": ["BLOOD CULTURE"] * 3, "org_itemid": [None, 80002, None]})
    t["inputevents"] = pd.DataFrame({
        "subject_id": subj * 2, "hadm_id": hadm * 2, "stay_id": stay * 2,
        "starttime": [T0 + pd.Timedelta(hours=1)] * 6, "endtime": [T0 + pd.Timedelta(hours=2)] * 6,
        "itemid": [225158, 225828, 220862, 221906, 222315, 221289],
        "amount": [500.0, 1000.0, 100.0, 0.4, 2.4, 0.1], "amountuom": ["ml", "ml", "ml", "mg", "units", "mg"],
        "rate": [None, None, None, 0.1, 2.4, 0.05],
        "rateuom": [None, None, None, "mcg/kg/min", "units/hour", "mcg/kg/min"],
        "patientweight": [80.0] * 6, "statusdescription": ["FinishedRunning"] * 6})
    t["outputevents"] = pd.DataFrame({
        "subject_id": subj * 2, "hadm_id": hadm * 2, "stay_id": stay * 2, "caregiver_id": None,
        "charttime": [T0 + pd.Timedelta(hours=h) for h in (1, 1, 1, 5, 5, 5)], "storetime": T0,
        "itemid": [226559, 226559, 226560, 226559, 227488, 226559], "value": [120.0, 40.0, 300.0, 0.0, 50.0, 90.0],
        "valueuom": "ml"})
    t["procedureevents"] = pd.DataFrame({
        "subject_id": subj[:1], "hadm_id": hadm[:1], "stay_id": stay[:1], "starttime": [T0],
        "endtime": [T0 + pd.Timedelta(hours=30)], "itemid": [225792], "value": [1800.0], "valueuom": ["min"]})
    extra = [220046, 225792, 224385]
    items = sorted(set(KNOWN_ICU_ITEMS) | set(extra))
    link = {i: "chartevents" for i in F.CHART_ITEMS} | {i: "inputevents" for i in F.FLUID_TONICITY}
    link |= {i: "inputevents" for i in F.NEE_FACTORS} | {i: "procedureevents" for i in F.VENT_ITEMS}
    t["d_items"] = pd.DataFrame({"itemid": items, "label": [f"item {i}" for i in items],
                                 "abbreviation": "x", "linksto": [link.get(i, "outputevents") for i in items],
                                 "category": "c", "unitname": None, "param_type": "Numeric"})
    assert set(t) == set(TABLES)
    return t


def write_tables(root: Path, tables: dict[str, pd.DataFrame], fmt: str = "csv.gz") -> Path:
    """Write tables in the MIMIC-IV layout under ``root`` (hosp/, icu/) and return ``root``."""
    for name, df in tables.items():
        module = TABLES[name][0]
        (root / module).mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            df.to_parquet(root / module / f"{name}.parquet", index=False)
        else:
            df.to_csv(root / module / f"{name}.{fmt}", index=False)
    return root


@pytest.fixture
def tables() -> dict[str, pd.DataFrame]:
    """A fresh copy of the valid tiny data set, to break in one place per test."""
    return make_tables()


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """write(tables, fmt="csv.gz") → a MIMIC-IV-layout directory in a fresh tmp folder."""
    counter = iter(range(1000))

    def _write(tabs: dict[str, pd.DataFrame], fmt: str = "csv.gz") -> Path:
        return write_tables(tmp_path / f"mimic{next(counter)}", tabs, fmt)

    return _write


# ---- trajectories ----------------------------------------------------------------------------------------------
COST_RULES = ("spo2_low", "urine_low")


def make_trajectories(n_stays: int = 9, n_steps: int = 4, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Valid train/val/test trajectory frames following docs/data-contract.md §3."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_stays):
        n = n_steps - (i % 2)  # ragged horizons
        d: dict[str, object] = {"stay_key": [f"{i:016x}"] * n, "step": np.arange(n, dtype=np.int16),
                                "hours_since_onset": (-24 + 4 * np.arange(n)).astype(np.float32)}
        for f in F.FEATURES:
            val = rng.uniform(max(f.low, f.normal - 1) if f.kind == "continuous" else f.low,
                              min(f.high, f.normal + 1) if f.kind == "continuous" else f.high, size=n)
            if f.kind in ("binary",):
                val = np.round(val)
            d[f.name] = val.astype(np.float32)
            d[f"next_{f.name}"] = val[::-1].astype(np.float32)
        d["fluid_ml"] = rng.uniform(0, 1000, n).astype(np.float32)
        d["nee_max"] = rng.uniform(0, 0.3, n).astype(np.float32)
        d["action_bin"] = rng.integers(0, 25, n).astype(np.int16)
        d["reward"] = (-rng.uniform(2.5, 12.5, n)).astype(np.float32)
        for c in COST_RULES:
            d[f"cost_{c}"] = rng.integers(0, 2, n).astype(np.float32)
        d["cost_total"] = sum(d[f"cost_{c}"] for c in COST_RULES).astype(np.float32)  # type: ignore[union-attr]
        d["done"] = np.arange(n) == n - 1
        d["death_in_step"] = np.zeros(n, dtype=bool)
        d["died_in_hosp"] = np.full(n, i % 3 == 0)
        d["died_90d"] = np.full(n, i % 3 == 0)
        d["split"] = ["train", "val", "test"][i % 3]
        frames.append(pd.DataFrame(d))
    df = pd.concat(frames, ignore_index=True)
    df["split"] = df["split"].astype("string")
    df["stay_key"] = df["stay_key"].astype("string")
    return {s: df[df["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}


def write_trajectories(root: Path, frames: dict[str, pd.DataFrame]) -> Path:
    """Write frames to root/data/trajectories/{split}.parquet; returns root."""
    out = root / "data" / "trajectories"
    out.mkdir(parents=True, exist_ok=True)
    for s, df in frames.items():
        df.to_parquet(out / f"{s}.parquet", index=False)
    return root
