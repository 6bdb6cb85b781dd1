"""A tiny MIMIC-IV-layout directory written by hand; test_extract.py derives every expected value on paper.

All times are hours after D = 2180-01-01 00:00. Stays:

* 101 (subject 1, F, 50 y): culture 08:00, vancomycin 10:00 → suspicion 08:00 (culture first); platelets 40 at
  05:00 → SOFA block [4, 8) = 3 → Sepsis-3, onset 08:00. Charted: weight 100 kg; temperature 102.2 °F at 07:00;
  FiO2 40 % at 07:00; arterial PaO2 200 at 07:00 and 14:00 (specimen type 'ART.'); platelets 120 at 13:00; SpO2 90 at 11:00; urine 300 at 06:00
  (row duplicated; plus a −100 row) and 100 at 10:00; NaCl 0.9 % 1000 mL bolus 09:00; LR 400 mL 12:00–16:00;
  norepinephrine 0.2 µg/kg/min 10:00–14:00.
* 102 (subject 1's second ICU stay of the same admission, 80–96 h) → not the admission's first stay.
* 201 (subject 2, 16 y) → under 18.
* 401 (subject 4): cefazolin, no culture → no suspected infection.
* 501 (subject 5): culture 10:00 + meropenem 11:00 but nothing abnormal → SOFA 0, no Sepsis-3.
* 600 (subject 6's ICU stay 100 days earlier, another admission) → no suspected infection; makes 601 a
  readmission.
* 601 (subject 6, M, 82 y): ceftriaxone 02:00, culture 06:00 → suspicion 02:00 (antibiotic first);
  creatinine 3.6 at 01:00 → renal 3; dies D+3 00:00 (in hospital).
* 701 (subject 7): as 601 but dies at 09:00 in the ICU → death in the step [06, 10), icu_death_in_window.
* 801 (subject 8): as 601, survives, but an 11 L NaCl bolus at 03:00 → extreme_fluid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ogsrl.cohort import views

D = pd.Timestamp("2180-01-01")


def h(hours: float) -> pd.Timestamp:
    return D + pd.Timedelta(hours=hours)


def tiny_mimic_tables() -> dict[str, pd.DataFrame]:
    subj = {1: ("F", 50, 2180), 2: ("F", 16, 2180), 4: ("M", 60, 2180), 5: ("M", 60, 2180), 6: ("M", 80, 2178),
            7: ("M", 70, 2180), 8: ("F", 40, 2180)}
    dod = {6: h(72), 7: h(9)}
    patients = pd.DataFrame({
        "subject_id": list(subj), "gender": [v[0] for v in subj.values()],
        "anchor_age": [v[1] for v in subj.values()], "anchor_year": [v[2] for v in subj.values()],
        "anchor_year_group": "2014 - 2016", "dod": [dod.get(s, pd.NaT) for s in subj]})
    patients["dod"] = patients["dod"].dt.date
    # stay_id: subject, hadm, intime h, outtime h, deathtime h
    stays = {101: (1, 11, 0, 72, None), 102: (1, 11, 80, 96, None), 201: (2, 21, 0, 48, None),
             401: (4, 41, 0, 48, None), 501: (5, 51, 0, 48, None), 600: (6, 60, -2400, -2376, None),
             601: (6, 61, 0, 72, 72), 701: (7, 71, 0, 9, 9), 801: (8, 81, 0, 72, None)}
    icustays = pd.DataFrame({
        "subject_id": [v[0] for v in stays.values()], "hadm_id": [v[1] for v in stays.values()],
        "stay_id": list(stays), "first_careunit": "MICU", "last_careunit": "MICU",
        "intime": [h(v[2]) for v in stays.values()], "outtime": [h(v[3]) for v in stays.values()]})
    icustays["los"] = (icustays["outtime"] - icustays["intime"]).dt.total_seconds() / 86400
    adm = icustays.groupby(["subject_id", "hadm_id"], as_index=False).agg(admittime=("intime", "min"),
                                                                           dischtime=("outtime", "max"))
    death = {v[1]: h(v[4]) for v in stays.values() if v[4] is not None}
    admissions = adm.assign(admittime=adm["admittime"] - pd.Timedelta(hours=4),
                            dischtime=adm["dischtime"] + pd.Timedelta(hours=24),
                            deathtime=adm["hadm_id"].map(death), admission_type="URGENT",
                            hospital_expire_flag=adm["hadm_id"].isin(list(death)).astype(int))
    ce = [(101, 1, 226512, 100.0), (101, 7, 223761, 102.2), (101, 7, 223835, 40.0), (101, 11, 220277, 90.0)]
    chartevents = pd.DataFrame({
        "subject_id": 1, "hadm_id": 11, "stay_id": [c[0] for c in ce], "caregiver_id": 1,
        "charttime": [h(c[1]) for c in ce], "storetime": [h(c[1]) for c in ce], "itemid": [c[2] for c in ce],
        "value": [str(c[3]) for c in ce], "valuenum": [c[3] for c in ce], "valueuom": "", "warning": 0})
    lab = [(1, 11, 5, 51265, 40.0), (1, 11, 13, 51265, 120.0), (1, 11, 7, 50821, 200.0), (1, 11, 14, 50821, 200.0),
           (6, 61, 1, 50912, 3.6), (7, 71, 1, 50912, 3.6), (8, 81, 1, 50912, 3.6)]
    labevents = pd.DataFrame({
        "labevent_id": range(len(lab)), "subject_id": [x[0] for x in lab], "hadm_id": [x[1] for x in lab],
        "specimen_id": range(len(lab)), "itemid": [x[3] for x in lab], "charttime": [h(x[2]) for x in lab],
        "value": [str(x[4]) for x in lab], "valuenum": [x[4] for x in lab]})
    gases = labevents[labevents["itemid"] == 50821]   # both of 101's gases are arterial
    labevents = pd.concat([labevents, gases.assign(labevent_id=gases["labevent_id"] + 100, itemid=52033,
                                                   value="ART.", valuenum=np.nan)], ignore_index=True)
    out = [(101, 6, 226559, 300.0), (101, 6, 226559, 300.0), (101, 6.5, 226559, -100.0), (101, 10, 226559, 100.0)]
    outputevents = pd.DataFrame({
        "subject_id": 1, "hadm_id": 11, "stay_id": [o[0] for o in out], "caregiver_id": 1,
        "charttime": [h(o[1]) for o in out], "storetime": h(20), "itemid": [o[2] for o in out],
        "value": [o[3] for o in out], "valueuom": "mL"})
    # stay, start, end, itemid, amount, rate, rateuom
    inp = [(101, 9, 9.02, 225158, 1000.0, np.nan, ""), (101, 12, 16, 225828, 400.0, 100.0, "mL/hour"),
           (101, 10, 14, 221906, 4.8, 0.2, "mcg/kg/min"), (801, 3, 3.02, 225158, 11000.0, np.nan, "")]
    inputevents = pd.DataFrame({
        "subject_id": [1, 1, 1, 8], "hadm_id": [11, 11, 11, 81], "stay_id": [i[0] for i in inp],
        "starttime": [h(i[1]) for i in inp], "endtime": [h(i[2]) for i in inp], "itemid": [i[3] for i in inp],
        "amount": [i[4] for i in inp], "amountuom": ["mL", "mL", "mg", "mL"], "rate": [i[5] for i in inp],
        "rateuom": [i[6] for i in inp], "orderid": range(4), "patientweight": 100.0,
        "statusdescription": "FinishedRunning"})
    procedureevents = pd.DataFrame({
        "subject_id": [6], "hadm_id": [61], "stay_id": [601], "starttime": [h(-30)], "endtime": [h(-20)],
        "itemid": [225792], "value": [600.0]})
    rx = [(1, 11, 10, "Vancomycin", "IV"), (4, 41, 5, "CeFAZolin", "IV"), (5, 51, 11, "Meropenem", "IV"),
          (6, 61, 2, "CefTRIAXone", "IV"), (7, 71, 2, "CefTRIAXone", "IV"), (8, 81, 2, "CefTRIAXone", "IV"),
          (1, 11, 9, "Vancomycin", "OU")]  # eye drops: not systemic
    prescriptions = pd.DataFrame({
        "subject_id": [r[0] for r in rx], "hadm_id": [r[1] for r in rx], "pharmacy_id": range(len(rx)),
        "starttime": [h(r[2]) for r in rx], "stoptime": [h(r[2] + 24) for r in rx], "drug_type": "MAIN",
        "drug": [r[3] for r in rx], "route": [r[4] for r in rx]})
    mb = [(1, 11, 8), (5, 51, 10), (6, 61, 6), (7, 71, 6), (8, 81, 6)]
    microbiologyevents = pd.DataFrame({
        "microevent_id": range(len(mb)), "subject_id": [m[0] for m in mb], "hadm_id": [m[1] for m in mb],
        "micro_specimen_id": [100 + i for i in range(len(mb))], "chartdate": [h(m[2]).normalize() for m in mb],
        "charttime": [h(m[2]) for m in mb], "spec_itemid": 70012, "spec_type_desc": "BLOOD CULTURE",
        "test_seq": 1, "org_itemid": np.nan})
    d_items = pd.DataFrame({"itemid": [220045, 226559], "label": ["Heart Rate", "Foley"], "linksto": "chartevents"})
    d_labitems = pd.DataFrame({"itemid": [50912, 51265], "label": ["Creatinine", "Platelet Count"]})
    return {"patients": patients, "admissions": admissions, "icustays": icustays, "chartevents": chartevents,
            "labevents": labevents, "outputevents": outputevents, "inputevents": inputevents,
            "procedureevents": procedureevents, "prescriptions": prescriptions,
            "microbiologyevents": microbiologyevents, "d_items": d_items, "d_labitems": d_labitems}


MODULES = {"patients": "hosp", "admissions": "hosp", "labevents": "hosp", "prescriptions": "hosp",
           "microbiologyevents": "hosp", "d_labitems": "hosp", "icustays": "icu", "chartevents": "icu",
           "inputevents": "icu", "outputevents": "icu", "procedureevents": "icu", "d_items": "icu"}


def write_mimic_dir(root: Path, tables: dict[str, pd.DataFrame], fmt: str = "csv.gz") -> Path:
    for name, frame in tables.items():
        folder = root / MODULES[name]
        folder.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            frame.to_parquet(folder / f"{name}.parquet", index=False)
        else:
            frame.to_csv(folder / f"{name}.csv.gz", index=False, compression="gzip",
                         date_format="%Y-%m-%d %H:%M:%S")
    return root


@pytest.fixture
def tiny_mimic(tmp_path: Path) -> Path:
    """Path of a freshly written tiny MIMIC-IV-layout directory (csv.gz)."""
    return write_mimic_dir(tmp_path / "mimic", tiny_mimic_tables())


@pytest.fixture
def mimic_tables() -> dict[str, pd.DataFrame]:
    """Fresh copies of the hand-written tables (tests modify them to break one rule)."""
    return tiny_mimic_tables()


@pytest.fixture
def write_mimic():
    """``write_mimic(root, tables, fmt="csv.gz")`` writes a MIMIC-IV-layout directory and returns ``root``."""
    return write_mimic_dir


@pytest.fixture()
def con():
    """An in-memory DuckDB connection (1 GB, 1 thread), closed after the test."""
    c = views.connect("1GB", 1)
    yield c
    c.close()
