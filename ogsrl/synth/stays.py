"""Stay-level tables of a simulated chunk: patients, admissions, icustays (with the extra earlier stays that make
readmissions and second ICU stays), cultures and antibiotic orders (docs/simulator.md §4.1)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ogsrl.synth import tables as T
from ogsrl.synth.charting import HOUR

KIND_SEPSIS, KIND_NO_INFECTION, KIND_SECOND_STAY = 0, 1, 2
KIND_NAMES = ("sepsis", "no_infection", "second_icu_stay")
ABX_DRUGS = np.array(["Vancomycin", "Piperacillin-Tazobactam", "Cefepime", "Meropenem", "CefTRIAXone",
                      "Levofloxacin"], dtype=object)
OTHER_DRUGS = np.array(["Acetaminophen", "Heparin", "Pantoprazole", "Insulin"], dtype=object)


def stay_tables(ids: dict[str, np.ndarray], st: dict[str, Any], final: bool) -> dict[str, pa.Table]:
    """patients / admissions / icustays of the chunk (provisional while simulating: no outcomes yet)."""
    n = len(ids["stay_id"])
    onset = st["onset"]
    intime = st["intime"]
    outtime = st["outtime"] if final else onset + st["h_end"] * HOUR
    nat = np.full(n, np.datetime64("NaT"), dtype="datetime64[s]")
    died = st["died_hosp"] if final else np.zeros(n, bool)
    deathtime = st["deathtime"] if final else nat
    dischtime = st["dischtime"] if final else outtime + 72 * HOUR
    year = st["anchor_year"]
    dod = st["dod"] if final else nat
    patients = T.build("patients", {
        "subject_id": ids["subject_id"], "gender": np.where(st["female"] > 0, "F", "M").astype(object),
        "anchor_age": st["age"].astype(np.int64), "anchor_year": year,
        "anchor_year_group": st["year_group"], "dod": pa.array(dod.astype("datetime64[D]"), pa.date32()),
    }, n)
    adm_cols: dict[str, Any] = {
        "subject_id": ids["subject_id"], "hadm_id": ids["hadm_id"], "admittime": st["admittime"],
        "dischtime": dischtime, "deathtime": deathtime,
        "admission_type": np.full(n, "EW EMER.", dtype=object),
        "admit_provider_id": np.array([f"P{a:03d}SIM" for a in st["attending"]], dtype=object),
        "admission_location": np.full(n, "EMERGENCY ROOM", dtype=object),
        "discharge_location": np.where(died, "DIED", "HOME HEALTH CARE").astype(object) if final else
        np.full(n, None, dtype=object),
        "insurance": np.full(n, "Other", dtype=object), "language": np.full(n, "English", dtype=object),
        "race": np.full(n, "UNKNOWN", dtype=object), "hospital_expire_flag": died.astype(np.int64),
    }
    icu_cols: dict[str, Any] = {
        "subject_id": ids["subject_id"], "hadm_id": ids["hadm_id"], "stay_id": ids["stay_id"],
        "first_careunit": np.full(n, "Medical Intensive Care Unit (MICU)", dtype=object),
        "last_careunit": np.full(n, "Medical Intensive Care Unit (MICU)", dtype=object),
        "intime": intime, "outtime": outtime, "los": np.round((outtime - intime) / np.timedelta64(1, "D"), 4),
    }
    adm = [adm_cols]
    icu = [icu_cols]
    # earlier admission with an ICU stay (readmission) and an earlier ICU stay of the same admission
    r = np.flatnonzero(st["readmit"])
    if len(r):
        a0 = intime[r] - st["readmit_days"][r] * np.timedelta64(86400, "s")
        adm.append({"subject_id": ids["subject_id"][r], "hadm_id": ids["prior_hadm_id"][r], "admittime": a0,
                    "dischtime": a0 + 5 * 24 * HOUR, "deathtime": np.full(len(r), np.datetime64("NaT", "s")),
                    "admission_type": np.full(len(r), "URGENT", dtype=object),
                    "admit_provider_id": np.full(len(r), "P999SIM", dtype=object),
                    "admission_location": np.full(len(r), "TRANSFER FROM HOSPITAL", dtype=object),
                    "discharge_location": np.full(len(r), "HOME", dtype=object),
                    "insurance": np.full(len(r), "Other", dtype=object),
                    "language": np.full(len(r), "English", dtype=object),
                    "race": np.full(len(r), "UNKNOWN", dtype=object),
                    "hospital_expire_flag": np.zeros(len(r), np.int64)})
        icu.append({"subject_id": ids["subject_id"][r], "hadm_id": ids["prior_hadm_id"][r],
                    "stay_id": ids["prior_stay_id"][r], "first_careunit": np.full(len(r), "Surgical ICU", object),
                    "last_careunit": np.full(len(r), "Surgical ICU", object), "intime": a0 + 24 * HOUR,
                    "outtime": a0 + 48 * HOUR, "los": np.ones(len(r))})
    s2 = np.flatnonzero(st["kind"] == KIND_SECOND_STAY)
    if len(s2):
        icu.append({"subject_id": ids["subject_id"][s2], "hadm_id": ids["hadm_id"][s2],
                    "stay_id": ids["second_stay_id"][s2], "first_careunit": np.full(len(s2), "Surgical ICU", object),
                    "last_careunit": np.full(len(s2), "Surgical ICU", object), "intime": intime[s2] - 40 * HOUR,
                    "outtime": intime[s2] - 20 * HOUR, "los": np.full(len(s2), 20.0 / 24.0)})

    def cat(blocks: list[dict[str, Any]]) -> dict[str, Any]:
        return {k: np.concatenate([np.asarray(b[k]) for b in blocks]) for k in blocks[0]}

    a = cat(adm)
    i = cat(icu)
    return {"patients": patients, "admissions": T.build("admissions", a, len(a["hadm_id"])),
            "icustays": T.build("icustays", i, len(i["stay_id"]))}


def infection_rows(ids: dict[str, np.ndarray], st: dict[str, Any], rng: np.random.Generator,
                    first_index: int) -> dict[str, pa.Table]:
    """Cultures (microbiologyevents) and antibiotic + other orders (prescriptions)."""
    n = len(ids["stay_id"])
    has_culture = ~np.isnat(st["culture_time"])
    c = np.flatnonzero(has_culture)
    ct = st["culture_time"][c]
    org = np.where(rng.random(len(c)) < 0.4, "ESCHERICHIA COLI", None).astype(object)
    micro = T.build("microbiologyevents", {
        "microevent_id": first_index + c, "subject_id": ids["subject_id"][c], "hadm_id": ids["hadm_id"][c],
        "micro_specimen_id": first_index + c, "chartdate": ct.astype("datetime64[D]").astype("datetime64[s]"),
        "charttime": ct, "spec_itemid": np.full(len(c), 70012), "spec_type_desc": np.full(len(c), "BLOOD CULTURE",
                                                                                            object),
        "test_seq": np.ones(len(c), np.int64), "storedate": (ct + 48 * HOUR).astype("datetime64[D]").astype(
            "datetime64[s]"), "storetime": ct + 48 * HOUR, "test_itemid": np.full(len(c), 90201),
        "test_name": np.full(len(c), "Blood Culture, Routine", object),
        "org_itemid": np.where(org == None, None, 80002).astype(object),  # noqa: E711
        "org_name": org,
    }, len(c))
    a = np.flatnonzero(~np.isnat(st["abx_time"]))
    at = st["abx_time"][a]
    drug = np.concatenate([ABX_DRUGS[rng.integers(0, len(ABX_DRUGS), len(a))],
                           OTHER_DRUGS[rng.integers(0, len(OTHER_DRUGS), n)]])
    who = np.concatenate([a, np.arange(n)])
    start = np.concatenate([at, st["intime"] + 2 * HOUR])
    k = len(who)
    rx = T.build("prescriptions", {
        "subject_id": ids["subject_id"][who], "hadm_id": ids["hadm_id"][who],
        "pharmacy_id": first_index * 2 + np.arange(k), "starttime": start, "stoptime": start + 5 * 24 * HOUR,
        "drug_type": np.full(k, "MAIN", object), "drug": drug, "route": np.full(k, "IV", object),
        "dose_val_rx": np.full(k, "1", object), "dose_unit_rx": np.full(k, "g", object),
    }, k)
    return {"microbiologyevents": micro, "prescriptions": rx}
