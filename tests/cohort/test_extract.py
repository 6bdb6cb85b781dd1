"""Cohort extraction on the hand-written MIMIC-IV directory of conftest.py; expected values worked out on paper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ogsrl.cohort import views
from ogsrl.cohort.extract import CohortConfig, assign_action_bins, extract, fit_action_bins, split_stays
from ogsrl.config import ConfigError, build
from ogsrl.costs import CostsConfig
from ogsrl.data.contract import check_trajectories
from ogsrl.errors import DataError
from ogsrl.io import salted_hash

from ogsrl.cohort.extract import EXCLUSIONS

from .conftest import h

CFG = CohortConfig(window_start_h=-4, n_steps=3, exclusions=EXCLUSIONS)  # all five rules, so each is exercised


def run(root: Path, cfg: CohortConfig = CFG):
    con = views.connect("1GB", 1)
    try:
        views.register_directory(con, root)
        return extract(con, cfg, CostsConfig())
    finally:
        con.close()


def rows_of(ex, stay_id: int) -> pd.DataFrame:
    df = pd.concat(ex.tables.values(), ignore_index=True)
    key = salted_hash([stay_id], CFG.salt)[0]
    return df[df["stay_key"] == key].sort_values("step").reset_index(drop=True)


def test_cohort_counts_and_exclusions(tiny_mimic: Path) -> None:
    m = run(tiny_mimic).metrics
    assert m["icu_stays"] == 9
    assert (m["excluded_not_first_stay"], m["excluded_under_min_age"]) == (1, 1)          # 102, 201
    assert (m["excluded_no_suspected_infection"], m["excluded_no_sepsis3"]) == (2, 1)     # 401 + 600, 501
    assert (m["excluded_extreme_fluid"], m["excluded_icu_death_in_window"]) == (1, 1)     # 801, 701
    assert m["excluded_no_steps"] == m["excluded_extreme_urine"] == m["excluded_withdrawal"] == 0
    assert m["cohort_stays"] == 2 and m["rows"] == 5                                        # 101: 3 steps, 601: 2
    assert m["mortality_in_hosp"] == 0.5 and m["mortality_90d"] == 0.5
    assert (m["steps_per_stay_min"], m["steps_per_stay_max"], m["full_horizon_stays"]) == (2, 3, 1)
    # raw-row cleaning: one negative urine row and one exact duplicate
    assert m["cleaned_negative_outputevents"] == 1 and m["cleaned_duplicate_outputevents"] == 1
    # imputed shares over the 5 cohort rows: weight charted for 101 only (3/5 seen); SpO2 seen at 101's t=12 only
    assert m["missing_weight"] == pytest.approx(0.4) and m["missing_spo2"] == pytest.approx(0.8)
    assert m["missing_creatinine"] == pytest.approx(0.6)  # 601's two rows see creatinine 3.6
    assert m["cost_spo2_low_rate"] == pytest.approx(0.2) and m["cost_urine_low_rate"] == pytest.approx(0.8)


def test_stay_101_states_actions_reward_costs(tiny_mimic: Path) -> None:
    r = rows_of(run(tiny_mimic), 101)
    # onset 08:00 (culture first); t = 04, 08, 12 → hours −4, 0, 4; next states at 08, 12, 16
    np.testing.assert_array_equal(r["step"], [0, 1, 2])
    np.testing.assert_allclose(r["hours_since_onset"], [-4, 0, 4])
    np.testing.assert_allclose(r["next_platelets"], [40, 40, 120])
    np.testing.assert_allclose(r["next_temp_c"], [39.0, 39.0, 37.0], atol=1e-5)   # 102.2 °F, held 6 h
    np.testing.assert_allclose(r["fio2"], [0.21, 0.4, 0.4], atol=1e-6)             # 40 % → 0.4
    np.testing.assert_allclose(r["next_pf_ratio"], [500, 500, 500], atol=1e-3)
    np.testing.assert_allclose(r["next_urine_step"], [300, 100, 0])                 # dup and −100 dropped
    np.testing.assert_allclose(r["next_urine_cum"], [300, 400, 400])
    np.testing.assert_allclose(r["next_fluid_cum"], [0, 1000, 1400])
    np.testing.assert_allclose(r["fluid_ml"], [0, 1000, 400])
    np.testing.assert_allclose(r["nee_max"], [0, 0.2, 0.2], atol=1e-7)
    # SOFA(08) coag 3; SOFA(12) coag 3 + cardio 4 (NEE 0.2); SOFA(16) coag 1 (120) + cardio 4
    np.testing.assert_allclose(r["sofa"], [0, 3, 7])
    np.testing.assert_allclose(r["next_sofa"], [3, 7, 5])
    np.testing.assert_allclose(r["reward"], [-3, -7, -5])
    # SpO2(12) = 90 < 92; urine rate 300/100/4 = 0.75, 100/100/4 = 0.25, 0
    np.testing.assert_array_equal(r["cost_spo2_low"], [0, 1, 0])
    np.testing.assert_array_equal(r["cost_urine_low"], [0, 1, 1])
    np.testing.assert_array_equal(r["cost_total"], [0, 2, 1])
    np.testing.assert_array_equal(r["done"], [False, False, True])
    assert not r["died_in_hosp"].any() and not r["died_90d"].any() and not r["death_in_step"].any()
    np.testing.assert_allclose(r[["age", "gender", "weight", "mechvent", "readmission"]].iloc[0], [50, 1, 100, 0, 0])


def test_stay_601_antibiotic_first_onset_and_mortality(tiny_mimic: Path) -> None:
    r = rows_of(run(tiny_mimic), 601)
    # suspicion = antibiotic time 02:00; t = −2 h is before intime → dropped; kept t = 02, 06
    np.testing.assert_allclose(r["hours_since_onset"], [0, 4])
    np.testing.assert_array_equal(r["step"], [0, 1])
    np.testing.assert_allclose(r["sofa"], [3, 3])          # creatinine 3.6 → renal 3
    np.testing.assert_allclose(r["reward"], [-3, -3])
    np.testing.assert_allclose(r["age"], [82, 82])
    np.testing.assert_allclose(r["readmission"], [1, 1])   # stay 600, 100 days earlier
    assert r["died_in_hosp"].all() and r["died_90d"].all() and not r["death_in_step"].any()


def test_no_exclusions_keeps_the_icu_death_with_a_death_step(tiny_mimic: Path) -> None:
    ex = run(tiny_mimic, CohortConfig(window_start_h=-4, n_steps=3, exclusions=()))
    assert ex.metrics["cohort_stays"] == 4
    r = rows_of(ex, 701)
    np.testing.assert_array_equal(r["death_in_step"], [False, True])   # dies 09:00 in [06, 10)
    np.testing.assert_array_equal(r["hours_since_onset"], [0, 4])      # window steps k = 1, 2 of n_steps = 3
    np.testing.assert_allclose(r["reward"], [-3, -12.5])               # death at the window's last step → −hi
    longer = dict(window_start_h=-4, n_steps=5, exclusions=())
    np.testing.assert_allclose(rows_of(run(tiny_mimic, CohortConfig(**longer)), 701)["reward"],
                               [-3, -12.5 * 3])                        # k = 2 of 5: −hi for k = 2, 3, 4
    np.testing.assert_allclose(rows_of(run(tiny_mimic, CohortConfig(**longer, death_reward="step")), 701)["reward"],
                               [-3, -12.5])                            # death_reward: step → −hi once
    np.testing.assert_allclose(rows_of(ex, 801)["fluid_ml"], [11000, 0])


def test_terminal_reward_and_bins(tiny_mimic: Path) -> None:
    ex = run(tiny_mimic, CohortConfig(window_start_h=-4, n_steps=3, reward="terminal", terminal_reward=100))
    np.testing.assert_allclose(rows_of(ex, 101)["reward"], [0, 0, 100])
    np.testing.assert_allclose(rows_of(ex, 601)["reward"], [0, -100])
    df = pd.concat(ex.tables.values(), ignore_index=True)
    train = df[df["split"] == "train"]
    edges = fit_action_bins(train["fluid_ml"].to_numpy(), train["nee_max"].to_numpy())
    np.testing.assert_array_equal(df["action_bin"], assign_action_bins(df["fluid_ml"].to_numpy(),
                                                                       df["nee_max"].to_numpy(), edges))
    assert (df.loc[(df["fluid_ml"] == 0) & (df["nee_max"] == 0), "action_bin"] == 0).all()
    check_trajectories(df)
    # privacy: no raw ids or timestamps
    assert not any(c in df.columns for c in ("stay_id", "subject_id", "hadm_id", "t", "intime"))
    assert not any(pd.api.types.is_datetime64_any_dtype(df[c]) for c in df.columns)


def test_action_bins_by_hand() -> None:
    fluid = np.array([0, 100, 200, 300, 400, 500.0])
    nee = np.array([0, 0, 0.1, 0.2, 0.3, 0.4])
    edges = fit_action_bins(fluid, nee)   # fluid non-zero 100..500: 200, 300, 400; nee 0.1..0.4: .175,.25,.325
    np.testing.assert_allclose(edges["fluid_ml"], [200, 300, 400])
    np.testing.assert_allclose(edges["nee_max"], [0.175, 0.25, 0.325])
    np.testing.assert_array_equal(assign_action_bins(fluid, nee, edges), [0, 5, 11, 17, 23, 24])


def test_split_is_seeded_by_stay_and_covers_all() -> None:
    keys = np.array([f"k{i}" for i in range(100)])
    a, b = split_stays(keys, (0.6, 0.2, 0.2), 1), split_stays(keys[::-1], (0.6, 0.2, 0.2), 1)
    assert a == b
    counts = pd.Series(a).value_counts()
    assert (counts["train"], counts["val"], counts["test"]) == (60, 20, 20)
    assert split_stays(keys, (0.6, 0.2, 0.2), 2) != a


def test_empty_cohort_names_the_exclusions(tiny_mimic: Path) -> None:
    with pytest.raises(DataError, match=r"empty cohort.*'excluded_under_min_age': 8"):
        run(tiny_mimic, CohortConfig(window_start_h=-4, n_steps=3, min_age=95))


def test_outtime_before_intime_is_an_error(tmp_path: Path, mimic_tables, write_mimic) -> None:
    tabs = mimic_tables
    tabs["icustays"].loc[tabs["icustays"]["stay_id"] == 501, "outtime"] = pd.Timestamp("2179-12-31")
    root = write_mimic(tmp_path / "m", tabs)
    with pytest.raises(DataError, match=r"'icustays', column 'outtime'.*offending rows: 501"):
        run(root)


def test_parquet_source_gives_the_same_tables(tmp_path: Path, tiny_mimic: Path, mimic_tables, write_mimic) -> None:
    root = write_mimic(tmp_path / "pq", mimic_tables, fmt="parquet")
    a, b = run(tiny_mimic), run(root)
    for s in ("train", "val", "test"):
        pd.testing.assert_frame_equal(a.tables[s], b.tables[s])


@pytest.mark.parametrize(("key", "value", "message"), [
    ("n_steps", 0, "n_steps"), ("split", [0.5, 0.2, 0.2], "split"), ("split", [0.6, 0.4], "split"),
    ("reward_clip", [3, 1], "reward_clip"), ("reward", "lactate", "reward"),
    ("state_features", ["spo2", "nope"], "nope"), ("exclusions", ["tall"], "tall"), ("step_h", "4h", "number"),
])
def test_invalid_cohort_params(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(CohortConfig, {key: value}, "cohort")


def test_conflicting_duplicate_stay_ids_are_an_error(tmp_path: Path, mimic_tables, write_mimic) -> None:
    icu = mimic_tables["icustays"]
    extra = icu[icu["stay_id"] == 601].assign(hadm_id=62, intime=pd.Timestamp("2179-12-01"),
                                              outtime=pd.Timestamp("2179-12-02"))
    mimic_tables["icustays"] = pd.concat([icu, extra], ignore_index=True)
    with pytest.raises(DataError, match=r"'icustays', column 'stay_id': duplicate stay_id.*offending rows: 601"):
        run(write_mimic(tmp_path / "m", mimic_tables))


def add_septic_stay(tabs: dict[str, pd.DataFrame], subject: int, hadm: int, stay: int, *, intime: float = 0.0,
                    outtime: float = 72.0, deathtime: float | None = None, weight: float | None = None,
                    urine: tuple[tuple[float, float], ...] = ()) -> None:
    """Append a stay like 601 (times in hours after D): ceftriaxone at intime + 2 h, a culture at intime + 6 h
    → suspicion (antibiotic first) at intime + 2 h; creatinine 3.6 at intime + 1 h → renal 3 → Sepsis-3 with onset
    intime + 2 h. With CFG's grid (−4 h, 3 steps): decision times intime − 2 (before intime: dropped), intime + 2,
    intime + 6, kept while before ICU discharge and death. ``urine``: (hour, mL) Foley rows."""
    def add(name: str, rows: list[dict]) -> None:
        tabs[name] = pd.concat([tabs[name], pd.DataFrame(rows)], ignore_index=True)

    if subject not in set(tabs["patients"]["subject_id"]):
        add("patients", [{"subject_id": subject, "gender": "M", "anchor_age": 60, "anchor_year": 2180,
                          "anchor_year_group": "2014 - 2016", "dod": h(deathtime).date() if deathtime else None}])
    add("admissions", [{"subject_id": subject, "hadm_id": hadm, "admittime": h(intime - 4),
                        "dischtime": h(outtime + 24), "deathtime": h(deathtime) if deathtime is not None else pd.NaT,
                        "admission_type": "URGENT", "hospital_expire_flag": int(deathtime is not None)}])
    add("icustays", [{"subject_id": subject, "hadm_id": hadm, "stay_id": stay, "first_careunit": "MICU",
                      "last_careunit": "MICU", "intime": h(intime), "outtime": h(outtime),
                      "los": (outtime - intime) / 24}])
    add("labevents", [{"labevent_id": 1000 + stay, "subject_id": subject, "hadm_id": hadm, "specimen_id": 1000 + stay,
                       "itemid": 50912, "charttime": h(intime + 1), "value": "3.6", "valuenum": 3.6}])
    add("prescriptions", [{"subject_id": subject, "hadm_id": hadm, "pharmacy_id": 1000 + stay,
                           "starttime": h(intime + 2), "stoptime": h(intime + 26), "drug_type": "MAIN",
                           "drug": "CefTRIAXone", "route": "IV"}])
    add("microbiologyevents", [{"microevent_id": 1000 + stay, "subject_id": subject, "hadm_id": hadm,
                                "micro_specimen_id": 1000 + stay, "chartdate": h(intime + 6).normalize(),
                                "charttime": h(intime + 6), "spec_itemid": 70012, "spec_type_desc": "BLOOD CULTURE",
                                "test_seq": 1, "org_itemid": np.nan}])
    if weight is not None:
        add("chartevents", [{"subject_id": subject, "hadm_id": hadm, "stay_id": stay, "caregiver_id": 1,
                             "charttime": h(intime + 1), "storetime": h(intime + 1), "itemid": 226512,
                             "value": str(weight), "valuenum": weight, "valueuom": "kg", "warning": 0}])
    if urine:
        add("outputevents", [{"subject_id": subject, "hadm_id": hadm, "stay_id": stay, "caregiver_id": 1,
                              "charttime": h(intime + t), "storetime": h(intime + t), "itemid": 226559, "value": v,
                              "valueuom": "mL"} for t, v in urine])


NO_EXCL = CohortConfig(window_start_h=-4, n_steps=3, exclusions=())


def test_death_exactly_on_a_decision_time_is_recorded_on_the_last_step(tmp_path: Path, mimic_tables,
                                                                        write_mimic) -> None:
    # stay 901 dies in the ICU at 06:00, exactly the decision time after 02:00: 06:00 is not kept (t < deathtime),
    # so the death belongs to the step [02:00, 06:00] and must be recorded there
    add_septic_stay(mimic_tables, 90, 9010, 901, outtime=6.0, deathtime=6.0)
    ex = run(write_mimic(tmp_path / "m", mimic_tables), NO_EXCL)
    r = rows_of(ex, 901)
    np.testing.assert_array_equal(r["step"], [0])
    assert r["done"].tolist() == [True] and r["death_in_step"].tolist() == [True]
    np.testing.assert_allclose(r["reward"], [-12.5 * 2])  # window step k = 1 of 3: charged for k = 1 and 2
    # a death one second after the step is not in it
    mimic_tables["admissions"].loc[mimic_tables["admissions"]["hadm_id"] == 9010, "deathtime"] = h(6 + 1 / 3600)
    r = rows_of(run(write_mimic(tmp_path / "m2", mimic_tables), NO_EXCL), 901)
    assert r["death_in_step"].tolist() == [False]


def test_urine_rate_of_a_step_cut_by_icu_discharge_uses_the_observed_hours(tmp_path: Path, mimic_tables,
                                                                           write_mimic) -> None:
    # 902 (80 kg) leaves the ICU alive at 08:00: step [06, 10) is observed for 2 h, 100 mL in it → 0.625 mL/kg/h
    # (not 100 / 80 / 4 = 0.31 < 0.5); 903 leaves at 06:30: 30 min observed, too short for a rate → no cost
    add_septic_stay(mimic_tables, 92, 9020, 902, outtime=8.0, weight=80.0, urine=((4, 200.0), (7, 100.0)))
    add_septic_stay(mimic_tables, 93, 9030, 903, outtime=6.5, weight=80.0, urine=((4, 200.0),))
    ex = run(write_mimic(tmp_path / "m", mimic_tables), NO_EXCL)
    r = rows_of(ex, 902)
    np.testing.assert_allclose(r["next_urine_step"], [200, 100])
    np.testing.assert_array_equal(r["cost_urine_low"], [0, 0])      # 200 / 80 / 4 = 0.625; 100 / 80 / 2 = 0.625
    np.testing.assert_allclose(r["next_sofa"], [3, 3])               # creatinine only: 100 mL in 2 h ≥ 84 × 2 / 4
    r = rows_of(ex, 903)
    np.testing.assert_allclose(r["next_urine_step"], [200, 0])
    np.testing.assert_array_equal(r["cost_urine_low"], [0, 0])


def test_split_is_by_patient(tmp_path: Path, mimic_tables, write_mimic) -> None:
    # patient 95 has two admissions, each with a septic first ICU stay (951, and 952 500 h later)
    add_septic_stay(mimic_tables, 95, 9510, 951)
    add_septic_stay(mimic_tables, 95, 9520, 952, intime=500.0, outtime=572.0)
    root = write_mimic(tmp_path / "m", mimic_tables)
    keys = salted_hash([951, 952], CFG.salt)
    for seed in range(4):
        ex = run(root, CohortConfig(window_start_h=-4, n_steps=3, exclusions=(), seed=seed))
        df = pd.concat(ex.tables.values(), ignore_index=True)
        split = df.groupby("stay_key")["split"].first()
        assert split[keys[0]] == split[keys[1]], seed
        assert ex.metrics["cohort_patients"] == ex.metrics["cohort_stays"] - 1
        assert "subject_id" not in df.columns


def test_itemid_pushdown_reads_only_our_items(tmp_path: Path, tiny_mimic: Path, mimic_tables, write_mimic) -> None:
    """Rows of other itemids (a full download's bulk) change nothing and never reach the feature queries: the
    materialised event tables hold exactly the rows of the directory without them."""
    from ogsrl.synth.filler import filler_items

    other = filler_items()
    tabs = {k: v.copy() for k, v in mimic_tables.items()}
    for table in ("chartevents", "labevents", "inputevents", "outputevents"):
        frame = tabs[table]
        extra = pd.concat([frame] * 3, ignore_index=True)  # same stays and times, other itemids
        extra["itemid"] = [other[table][i % len(other[table])] for i in range(len(extra))]
        tabs[table] = pd.concat([frame, extra], ignore_index=True)
    padded = write_mimic(tmp_path / "padded", tabs)

    def kept(root: Path) -> tuple[object, dict[str, int], int]:
        con = views.connect("1GB", 1)
        try:
            views.register_directory(con, root)
            ex = extract(con, CFG, CostsConfig())
            counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                      for t in ("chartevents", "labevents", "inputevents", "outputevents")}
            foreign = con.execute("SELECT count(*) FROM chartevents WHERE itemid IN "
                                  f"({', '.join(map(str, other['chartevents']))})").fetchone()[0]
            return ex, counts, foreign
        finally:
            con.close()

    ref, ref_counts, _ = kept(tiny_mimic)
    got, counts, foreign = kept(padded)
    assert foreign == 0 and counts == ref_counts
    assert got.metrics == ref.metrics
    for split in ref.tables:
        pd.testing.assert_frame_equal(got.tables[split], ref.tables[split])
