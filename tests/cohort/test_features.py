"""ogsrl.cohort.features on hand-written MIMIC-IV-layout frames; every expected number is worked out in comments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ogsrl import features as F
from ogsrl.cohort import features as cf
from ogsrl.cohort import views
from ogsrl.errors import DataError

T = pd.Timestamp
D0 = "2180-01-01"


def _ts(hhmm: str, day: str = D0) -> pd.Timestamp:
    return T(f"{day} {hhmm}")


def tiny_tables() -> dict[str, pd.DataFrame]:
    """Stay 1 (subject 10, female, 60 y, readmitted) is busy; stay 3 (subject 20, male, 72 y) has nothing charted."""
    patients = pd.DataFrame({"subject_id": [10, 20], "gender": ["F", "M"], "anchor_age": [60, 70],
                             "anchor_year": [2180, 2178], "dod": [pd.NaT, pd.NaT]})
    admissions = pd.DataFrame({
        "subject_id": [10, 10, 20], "hadm_id": [99, 100, 300],
        "admittime": [T("2179-06-01"), T("2179-12-31 20:00"), T("2180-01-31 20:00")],
        "dischtime": [T("2179-06-10"), T("2180-01-10"), T("2180-02-10")],
        "deathtime": [pd.NaT, pd.NaT, pd.NaT], "hospital_expire_flag": [0, 0, 0]})
    icustays = pd.DataFrame({
        "subject_id": [10, 10, 20], "hadm_id": [99, 100, 300], "stay_id": [0, 1, 3],
        "intime": [T("2179-06-01"), _ts("00:00"), T("2180-02-01 00:00")],
        "outtime": [T("2179-06-03"), T("2180-01-05"), T("2180-02-05")]})
    ce = [  # (stay, time, itemid, valuenum)
        (1, "05:00", 220045, 100.0), (1, "06:00", 220045, 110.0),     # hr: t=08 mean 105; t=12 6 h old > 2 h → 80
        (1, "07:00", 223761, 100.4),                                     # °F → 38.0 °C, held 6 h
        (1, "06:30", 223762, 10.0),                                      # 10 °C implausible → dropped
        (1, "06:00", 223835, 50.0), (1, "07:00", 223835, 15.0),         # FiO2 50 % → 0.5; 15 → charting error
        (1, "09:00", 220277, 90.0), (1, "10:00", 220277, 94.0),         # spo2: t=08 normal 97; t=12 mean 92
        (1, "07:00", 220739, 3.0), (1, "07:00", 223900, 4.0), (1, "07:00", 223901, 5.0),  # gcs 12
        (1, "01:00", 226531, 220.462),                                   # lb → 100.0 kg
        (1, "07:00", 220052, 60.0),                                      # map 60
    ]
    chartevents = pd.DataFrame({
        "subject_id": [10 if s == 1 else 20 for s, *_ in ce], "hadm_id": [100] * len(ce),
        "stay_id": [s for s, *_ in ce], "charttime": [_ts(h) for _, h, *_ in ce],
        "itemid": [i for *_, i, _ in ce], "value": [str(v) for *_, v in ce], "valuenum": [v for *_, v in ce]})
    chartevents.loc[len(chartevents)] = [20, 300, 3, T("2180-01-31 23:00"), 220045, "120", 120.0]
    lab = [  # (subject, time, itemid, valuenum, specimen)
        (10, "07:30", 50821, 100.0, 1),       # arterial pao2 100 (specimen 1 is 'ART.'); FiO2 0.5 at 06:00 → P/F 200
        (10, "02:00", 51265, 90.0, 2), (10, "02:00", 50885, 2.5, 2), (10, "02:00", 50912, 1.5, 2),
        (10, "08:00", 50912, 2.2, 3),                                     # charted AT t=08: only seen from t=12
    ]
    labevents = pd.DataFrame({
        "labevent_id": range(len(lab)), "subject_id": [s for s, *_ in lab], "hadm_id": [100.0] * len(lab),
        "specimen_id": [x[4] for x in lab], "itemid": [x[2] for x in lab], "charttime": [_ts(x[1]) for x in lab],
        "value": [str(x[3]) for x in lab], "valuenum": [x[3] for x in lab]})
    labevents.loc[len(labevents)] = [9, 10, np.nan, 4, 50912, T("2179-06-02"), "6.0", 6.0]  # old stay: outside hold
    labevents.loc[len(labevents)] = [10, 10, 100.0, 1, 52033, _ts("07:30"), "ART.", np.nan]  # specimen type
    out = [
        (1, T("2179-12-31 23:00"), 226559, 500.0),   # before intime → not counted
        (1, _ts("03:00"), 226559, 100.0), (1, _ts("05:00"), 226559, 30.0), (1, _ts("05:00"), 226559, 30.0),  # dup
        (1, _ts("05:30"), 226559, -50.0),            # negative → dropped
        (1, _ts("06:00"), 226559, 20.0), (1, _ts("06:00"), 227488, 10.0),  # irrigant in: subtracted
        (1, _ts("09:00"), 226559, 200.0),
    ]
    outputevents = pd.DataFrame({"stay_id": [o[0] for o in out], "charttime": [o[1] for o in out],
                                 "itemid": [o[2] for o in out], "value": [o[3] for o in out]})
    inp = [  # stay, start, end, itemid, amount, uom, rate, rateuom, weight, status
        (1, "02:00", "02:01", 225158, 500.0, "mL", None, None, 100.0, "FinishedRunning"),   # bolus 500
        (1, "03:00", "03:01", 225158, 1000.0, "mL", None, None, 100.0, "Rewritten"),        # ignored
        (1, "06:00", "10:00", 220862, 100.0, "mL", 25.0, "mL/hour", 100.0, "FinishedRunning"),  # ×5, pro-rated
        (1, "09:00", "09:01", 225159, 200.0, "mL", None, None, 100.0, "FinishedRunning"),   # ×0.5 = 100
        (1, "05:00", "09:00", 221906, 0.012, "mg", 0.05, "mcg/kg/min", 100.0, "FinishedRunning"),  # NE 0.05
        (1, "07:00", "11:00", 222315, 9.6, "units", 2.4, "units/hour", 100.0, "FinishedRunning"),  # 0.1 NEE
        (1, "10:00", "11:00", 221749, 6.0, "mg", 100.0, "mcg/min", 100.0, "FinishedRunning"),  # 1 µg/kg/min ×0.1
        (1, "10:00", "11:00", 221906, 1.0, "mg", 5.0, "mcg/kg/min", 100.0, "Rewritten"),       # ignored
    ]
    inputevents = pd.DataFrame({
        "stay_id": [r[0] for r in inp], "starttime": [_ts(r[1]) for r in inp], "endtime": [_ts(r[2]) for r in inp],
        "itemid": [r[3] for r in inp], "amount": [r[4] for r in inp], "amountuom": [r[5] for r in inp],
        "rate": [np.nan if r[6] is None else r[6] for r in inp], "rateuom": [r[7] for r in inp],
        "patientweight": [r[8] for r in inp], "statusdescription": [r[9] for r in inp]})
    procedureevents = pd.DataFrame({
        "stay_id": [1, 3], "starttime": [_ts("06:00"), T("2180-01-31 23:00")],
        "endtime": [_ts("09:30"), T("2180-02-01 00:00")], "itemid": [225792, 225792]})
    return {"patients": patients, "admissions": admissions, "icustays": icustays, "chartevents": chartevents,
            "labevents": labevents, "outputevents": outputevents, "inputevents": inputevents,
            "procedureevents": procedureevents}


def grid() -> pd.DataFrame:
    # deliberately not sorted: the output must keep this order
    return pd.DataFrame({"stay_id": [1, 3, 1], "step": [1, 0, 0],
                         "t": [_ts("12:00"), T("2180-02-01 04:00"), _ts("08:00")], "tag": ["a", "b", "c"]})


EXPECTED = {  # row order of grid(): stay 1 @12:00, stay 3 @04:00, stay 1 @08:00
    # stay 3: no arterial gas → PaO2 imputed as a normal lung's at its FiO2 (430 × 0.21), P/F 430
    "hr": [80, 80, 105], "temp_c": [38.0, 37, 38.0], "fio2": [0.5, 0.21, 0.5], "pao2": [100, 430 * 0.21, 100],
    "pf_ratio": [200, 430, 200], "spo2": [92, 97, 97], "gcs": [12, 15, 12], "weight": [100, 80, 100],
    "map": [80, 80, 60], "platelets": [90, 250, 90], "bilirubin": [2.5, 0.6, 2.5], "creatinine": [2.2, 0.9, 1.5],
    "urine_step": [200, 0, 40], "urine_cum": [340, 0, 140], "fluid_cum": [1100, 0, 750],
    "mechvent": [1, 0, 1], "gender": [1, 0, 1], "age": [60, 72, 60], "readmission": [1, 0, 1],
    "lactate": [1.0, 1.0, 1.0], "rr": [16, 16, 16], "sbp": [120, 120, 120],
    # t=08: resp 2 (P/F 200) + coag 2 (90) + liver 2 (2.5) + cardio 4 (NEE 0.05+0.1 at 07:00) + cns 2 (12)
    #       + renal 3 (urine 40 mL in 4 h < 84) = 15
    # t=12: resp 2 + coag 2 + liver 2 + cardio 4 (NEE 0.1+0.1 at 10:00) + cns 2 + renal 2 (creat 2.2) = 14
    "sofa": [14, 0, 15],
}


def test_states_match_hand_computed_values(con) -> None:
    views.register_frames(con, tiny_tables())
    g = grid()
    s = cf.compute_states(con, g, step_h=4.0)
    assert list(s.columns[:4]) == ["stay_id", "step", "t", "tag"] and list(s["tag"]) == ["a", "b", "c"]
    for name in F.ALL:
        assert s[name].dtype == np.float32, name
    for name, want in EXPECTED.items():
        np.testing.assert_allclose(s[name].to_numpy(np.float64), want, rtol=1e-5, atol=1e-4, err_msg=name)
    assert set(EXPECTED) == set(F.ALL)


def test_actions_match_hand_computed_values(con) -> None:
    views.register_frames(con, tiny_tables())
    a = cf.compute_actions(con, grid(), step_h=4.0)
    # stay 1 [08,12): albumin 25% 100 mL over 06–10 ×5 → half = 250, plus NaCl 0.45% 200 × 0.5 = 100 → 350;
    #   NEE at 08:00 NE 0.05 + vaso 0.1; at 10:00 vaso 0.1 + phenylephrine 100/100 × 0.1 → max 0.2
    # stay 1 [12,16): nothing; stay 3: nothing
    np.testing.assert_allclose(a["fluid_ml"], [0, 0, 350], atol=1e-4)
    np.testing.assert_allclose(a["nee_max"], [0, 0, 0.2], atol=1e-6)
    assert a["fluid_ml"].dtype == np.float32 and a["nee_max"].dtype == np.float32


def test_vasopressin_units_per_minute_and_step_length(con) -> None:
    tabs = tiny_tables()
    inp = tabs["inputevents"]
    i = inp.index[inp["itemid"] == 222315][0]
    inp.loc[i, ["rate", "rateuom"]] = [0.04, "units/min"]   # 0.04 U/min = 2.4 U/h → 0.1 NEE, same as before
    views.register_frames(con, tabs)
    a = cf.compute_actions(con, grid(), step_h=4.0)
    np.testing.assert_allclose(a["nee_max"], [0, 0, 0.2], atol=1e-6)
    # a 1-hour step from 08:00: [08,09) holds only the clipped infusions NE 0.05 + vaso 0.1; albumin 25/h×5 = 125
    a1 = cf.compute_actions(con, grid().iloc[[2]], step_h=1.0)
    np.testing.assert_allclose(a1["nee_max"], [0.15], atol=1e-6)
    np.testing.assert_allclose(a1["fluid_ml"], [125.0], atol=1e-4)


def test_sofa_4h_cut_points() -> None:
    one = np.ones(1)
    base = dict(pf=500 * one, platelets=300 * one, bilirubin=0.5 * one, map_=80 * one, nee=0 * one,
                gcs=15 * one, creatinine=0.5 * one, urine=np.nan * one)
    assert cf.sofa_4h(**base)[0] == 0
    assert cf.sofa_4h(**{**base, "pf": 99 * one})[0] == 4
    assert cf.sofa_4h(**{**base, "map_": 66 * one})[0] == 1
    assert cf.sofa_4h(**{**base, "map_": 64 * one})[0] == 2
    assert cf.sofa_4h(**{**base, "nee": 0.1 * one})[0] == 3
    assert cf.sofa_4h(**{**base, "gcs": 5 * one})[0] == 4
    assert cf.sofa_4h(**{**base, "urine": 33 * one})[0] == 4
    assert cf.sofa_4h(**{**base, "urine": 10 * one}, step_h=1.0)[0] == 3  # thresholds 8.5 / 21 mL per hour
    assert cf.sofa_4h(**{**base, "creatinine": 5 * one, "bilirubin": 12 * one, "platelets": 19 * one})[0] == 12


def _write_dir(root: Path, tabs: dict[str, pd.DataFrame], fmt: str) -> None:
    for name, frame in tabs.items():
        folder = root / views.MODULE[name]
        folder.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            frame.to_parquet(folder / f"{name}.parquet", index=False)
        else:
            frame.to_csv(folder / f"{name}.csv.gz", index=False, compression="gzip", date_format="%Y-%m-%d %H:%M:%S")


@pytest.mark.parametrize("fmt", ["csv.gz", "parquet"])
def test_directory_gives_the_same_states(tmp_path: Path, con, fmt: str) -> None:
    _write_dir(tmp_path, tiny_tables(), fmt)
    found = views.register_directory(con, tmp_path, required=views.STATE_TABLES)
    assert found["chartevents"].name == f"chartevents.{fmt}"
    s = cf.compute_states(con, grid())
    for name, want in EXPECTED.items():
        np.testing.assert_allclose(s[name].to_numpy(np.float64), want, rtol=1e-5, atol=1e-4, err_msg=name)
    a = cf.compute_actions(con, grid())
    np.testing.assert_allclose(a["fluid_ml"], [0, 0, 350], atol=1e-4)


def test_missing_flags_mark_imputed_values(con) -> None:
    views.register_frames(con, tiny_tables())
    s = cf.compute_states(con, grid(), missing=True)
    # rows: stay 1 @12, stay 3 @04, stay 1 @08
    np.testing.assert_array_equal(s["missing_hr"], [True, True, False])       # 6 h old at 12:00 > 2 h hold
    np.testing.assert_array_equal(s["missing_temp_c"], [False, True, False])  # held 5 h ≤ 6 h
    np.testing.assert_array_equal(s["missing_gcs"], [False, True, False])
    np.testing.assert_array_equal(s["missing_urine_step"], [False, True, False])
    assert "missing_sofa" not in s.columns


def test_unknown_grid_stay_names_the_rows(con) -> None:
    tabs = tiny_tables()
    views.register_frames(con, tabs)
    with pytest.raises(DataError, match="not found in icustays.*offending rows: 77"):
        cf.compute_states(con, pd.DataFrame({"stay_id": [77], "step": [0], "t": [_ts("08:00")]}))


def _gas_tables(specimen: str | None, fio2_hours_before: float | None) -> dict[str, pd.DataFrame]:
    """Stay 3 (nothing else abnormal) with one pO2 of 60 at 03:00 on specimen 9 of type ``specimen`` (None: no
    specimen-type row) and a charted FiO2 of 60 % ``fio2_hours_before`` hours before the gas (None: none)."""
    tabs = tiny_tables()
    lab = tabs["labevents"]
    rows = [[20, 20, 300.0, 9, 50821, T("2180-02-01 03:00"), "60", 60.0]]
    if specimen is not None:
        rows.append([21, 20, 300.0, 9, 52033, T("2180-02-01 03:00"), specimen, np.nan])
    tabs["labevents"] = pd.concat([lab, pd.DataFrame(rows, columns=lab.columns)], ignore_index=True)
    if fio2_hours_before is not None:
        ce = tabs["chartevents"]
        at = T("2180-02-01 03:00") - pd.Timedelta(hours=fio2_hours_before)
        tabs["chartevents"].loc[len(ce)] = [20, 300, 3, at, 223835, "60", 60.0]
    return tabs


def _stay3(con, tabs: dict[str, pd.DataFrame]) -> pd.Series:
    views.register_frames(con, tabs)
    g = pd.DataFrame({"stay_id": [3], "step": [0], "t": [T("2180-02-01 04:00")]})
    return cf.compute_states(con, g, missing=True).iloc[0]


@pytest.mark.parametrize(("specimen", "fio2_before", "pao2", "pf", "sofa"), [
    ("ART.", 3.0, 60, 100, 3),    # arterial gas, FiO2 0.6 charted 3 h before → P/F 100 → respiration 3
    ("ART.", 4.0, 60, 100, 3),    # exactly 4 h before still pairs (mimic-code: BETWEEN gas − 4 h AND gas)
    ("ART.", 5.0, 60, 100, 0),    # FiO2 5 h before the gas: not paired → no P/F → no respiratory points
    ("ART.", None, 60, 60 / 0.21, 0),  # no FiO2 at all: the state assumes room air, the SOFA has no P/F
    ("VEN.", 3.0, 430 * 0.6, 430, 0),  # a venous pO2 is not a PaO2: imputed, P/F normal
    (None, 3.0, 430 * 0.6, 430, 0),    # no specimen type: not known to be arterial
])
def test_only_arterial_gases_paired_with_fio2_give_respiratory_points(con, specimen, fio2_before, pao2, pf,
                                                                       sofa) -> None:
    s = _stay3(con, _gas_tables(specimen, fio2_before))
    assert s["pao2"] == pytest.approx(pao2, abs=1e-3) and s["pf_ratio"] == pytest.approx(pf, abs=1e-2)
    assert s["sofa"] == sofa
    assert s["missing_pf_gas"] == (sofa == 0)


def test_fio2_on_the_gas_specimen_wins_over_charted_fio2(con) -> None:
    tabs = _gas_tables("ART.", 1.0)   # charted 60 % one hour before
    lab = tabs["labevents"]
    row = [22, 20, 300.0, 9, 50816, T("2180-02-01 03:00"), "30", 30.0]  # FiO2 30 % on the gas itself
    tabs["labevents"] = pd.concat([lab, pd.DataFrame([row], columns=lab.columns)], ignore_index=True)
    s = _stay3(con, tabs)
    assert s["sofa"] == 2     # P/F 60 / 0.3 = 200: < 400 and < 300 hold, < 200 does not (0.6 would give 100 → 3)


def test_no_gas_with_charted_fio2_gives_no_respiratory_points(con) -> None:
    # the reported bug: no blood gas, FiO2 60 % charted → PaO2 used to be imputed 90 → P/F 150 → respiration 3
    tabs = tiny_tables()
    tabs["chartevents"].loc[len(tabs["chartevents"])] = [20, 300, 3, T("2180-02-01 02:00"), 223835, "60", 60.0]
    s = _stay3(con, tabs)
    assert s["missing_pao2"] and s["fio2"] == pytest.approx(0.6)
    assert s["pf_ratio"] == pytest.approx(430, abs=1e-2) and s["sofa"] == 0


@pytest.mark.parametrize(("out_h", "urine_ml", "hours", "sofa"), [
    (None, 60.0, 4.0, 3),    # whole window observed: 60 mL < 84 mL per 4 h → renal 3
    (2.5, 60.0, 2.5, 0),     # stay ends 02:30: 60 mL in 2.5 h ≥ 84 × 2.5/4 = 52.5 → not oliguria
    (2.5, 20.0, 2.5, 4),     # 20 mL in 2.5 h < 34 × 2.5/4 = 21.25 → renal 4
    (0.5, 0.0, 0.5, 0),      # 30 min observed (< 1 h): no urine rate, criterion skipped
])
def test_urine_window_cut_by_icu_discharge_is_rated_on_observed_hours(con, out_h, urine_ml, hours, sofa) -> None:
    tabs = tiny_tables()
    if out_h is not None:   # stay 3 (intime 00:00) leaves the ICU inside the window [00, 04)
        tabs["icustays"].loc[tabs["icustays"]["stay_id"] == 3, "outtime"] = T("2180-02-01") + pd.Timedelta(
            hours=out_h)
    tabs["outputevents"].loc[len(tabs["outputevents"])] = [3, T("2180-02-01 00:20"), 226559, urine_ml]
    s = _stay3(con, tabs)
    assert s["urine_step"] == urine_ml and s["urine_hours"] == pytest.approx(hours)
    assert s["sofa"] == sofa
