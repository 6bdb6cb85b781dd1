"""Layout of the written tables against MIMIC-IV v3.1 (mimic-iv-reference.md §1.2) and the data contract."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from ogsrl import features as F
from ogsrl.synth import engine as E
from ogsrl.synth import tables as T

# column lists copied from mimic-code create.sql (reference §1.2), in file order
REFERENCE = {
    "patients": "subject_id gender anchor_age anchor_year anchor_year_group dod",
    "admissions": "subject_id hadm_id admittime dischtime deathtime admission_type admit_provider_id "
                  "admission_location discharge_location insurance language marital_status race edregtime "
                  "edouttime hospital_expire_flag",
    "icustays": "subject_id hadm_id stay_id first_careunit last_careunit intime outtime los",
    "chartevents": "subject_id hadm_id stay_id caregiver_id charttime storetime itemid value valuenum valueuom "
                   "warning",
    "inputevents": "subject_id hadm_id stay_id caregiver_id starttime endtime storetime itemid amount amountuom "
                   "rate rateuom orderid linkorderid ordercategoryname secondaryordercategoryname "
                   "ordercomponenttypedescription ordercategorydescription patientweight totalamount "
                   "totalamountuom isopenbag continueinnextdept statusdescription originalamount originalrate",
    "outputevents": "subject_id hadm_id stay_id caregiver_id charttime storetime itemid value valueuom",
    "procedureevents": "subject_id hadm_id stay_id caregiver_id starttime endtime storetime itemid value valueuom "
                       "location locationcategory orderid linkorderid ordercategoryname ordercategorydescription "
                       "patientweight isopenbag continueinnextdept statusdescription originalamount originalrate",
    "d_items": "itemid label abbreviation linksto category unitname param_type lownormalvalue highnormalvalue",
    "labevents": "labevent_id subject_id hadm_id specimen_id itemid order_provider_id charttime storetime value "
                 "valuenum valueuom ref_range_lower ref_range_upper flag priority comments",
    "d_labitems": "itemid label fluid category",
    "prescriptions": "subject_id hadm_id pharmacy_id poe_id poe_seq order_provider_id starttime stoptime drug_type "
                     "drug formulary_drug_cd gsn ndc prod_strength form_rx dose_val_rx dose_unit_rx form_val_disp "
                     "form_unit_disp doses_per_24_hrs route",
    "microbiologyevents": "microevent_id subject_id hadm_id micro_specimen_id order_provider_id chartdate charttime "
                          "spec_itemid spec_type_desc test_seq storedate storetime test_itemid test_name org_itemid "
                          "org_name isolate_num quantity ab_itemid ab_name dilution_text dilution_comparison "
                          "dilution_value interpretation comments",
}
TYPES = {"int": {pa.int32(), pa.int16()}, "float": {pa.float64()}, "ts": {pa.timestamp("s"), pa.date32()},
         "str": {pa.string()}}
INT_COLS = {"subject_id", "hadm_id", "stay_id", "itemid", "caregiver_id", "orderid", "linkorderid", "labevent_id",
            "specimen_id", "pharmacy_id", "poe_seq", "microevent_id", "micro_specimen_id", "spec_itemid",
            "test_seq", "test_itemid", "org_itemid", "ab_itemid", "isolate_num", "anchor_age", "anchor_year",
            "hospital_expire_flag", "warning", "isopenbag", "continueinnextdept"}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_schema_matches_reference(name: str) -> None:
    assert T.SCHEMAS[name].names == REFERENCE[name].split()
    for field in T.SCHEMAS[name]:
        if field.name in INT_COLS:
            assert field.type in TYPES["int"], field
        elif field.name.endswith(("time", "date")) or field.name in ("dod", "intime", "outtime"):
            assert field.type in TYPES["ts"], field
        elif field.name in ("valuenum", "amount", "rate", "los", "patientweight", "totalamount", "originalamount",
                            "originalrate", "ref_range_lower", "ref_range_upper", "doses_per_24_hrs",
                            "dilution_value", "lownormalvalue", "highnormalvalue") or (
                name in ("outputevents", "procedureevents") and field.name == "value"):
            assert field.type == pa.float64(), field
        else:
            assert field.type == pa.string(), field


def test_written_tables_have_the_schema_and_dictionary_rows(small_sim: E.SimResult) -> None:
    for name, table in small_sim.tables.items():
        assert table.schema.equals(T.SCHEMAS[name]), name
        assert table.num_rows > 0, name
    items = set(T.d_items().column("itemid").to_pylist())
    for name in ("chartevents", "inputevents", "outputevents", "procedureevents"):
        written = set(small_sim.tables[name].column("itemid").to_pylist())
        assert written <= items, (name, written - items)
        assert written, name
    labs = set(small_sim.tables["labevents"].column("itemid").to_pylist())
    assert labs == set(F.LAB_ITEMS) | {52033}
    assert labs <= set(T.d_labitems().column("itemid").to_pylist())
    # every blood gas carries its specimen type on the same specimen_id: 'ART.' (arterial), no value number
    lab = small_sim.tables["labevents"].to_pandas()
    spec = lab[lab["itemid"] == 52033]
    assert (spec["value"] == "ART.").all() and spec["valuenum"].isna().all()
    gas = set(lab.loc[lab["itemid"] == 50821, "specimen_id"])
    assert gas and gas == set(spec["specimen_id"]) and not spec["specimen_id"].duplicated().any()
    numeric = lab[lab["itemid"] != 52033]
    assert numeric["value"].notna().all() and numeric["valuenum"].notna().all()
    chart = set(small_sim.tables["chartevents"].column("itemid").to_pylist())
    assert chart <= set(F.CHART_ITEMS)
    assert {220045, 220277, 223761, 223762, 223835, 226512} <= chart
    inputs = set(small_sim.tables["inputevents"].column("itemid").to_pylist())
    assert 221906 in inputs and inputs <= set(F.FLUID_TONICITY) | set(F.NEE_FACTORS)


def test_csv_reads_back_with_duckdb_types(small_dir: Path) -> None:
    con = duckdb.connect()
    rows = con.execute(f"DESCRIBE SELECT * FROM read_csv('{small_dir}/icu/chartevents.csv.gz')").fetchall()
    types = {r[0]: r[1] for r in rows}
    assert [r[0] for r in rows] == REFERENCE["chartevents"].split()
    assert types["charttime"].startswith("TIMESTAMP") and types["valuenum"] == "DOUBLE"
    assert types["itemid"] in ("BIGINT", "INTEGER")
    (n,) = con.execute(f"SELECT count(*) FROM read_csv('{small_dir}/hosp/patients.csv.gz')").fetchone()
    assert n == 120


def test_mess_is_present_at_documented_rates(small_sim: E.SimResult) -> None:
    ce = small_sim.tables["chartevents"].to_pandas()
    temp = ce[ce.itemid.isin([223761, 223762])]
    share_f = (temp.itemid == 223761).mean()
    assert 0.03 < share_f < 0.15  # Mess.fahrenheit = 0.08
    fio2 = ce[ce.itemid == 223835].valuenum
    assert ((fio2 <= 1.0).mean() > 0.01) and ((fio2 > 20).mean() > 0.8)  # Mess.fio2_fraction = 0.05
    hr = ce[ce.itemid == 220045].valuenum
    bad = (hr > F.BY_NAME["hr"].high).mean()
    assert 0.0005 < bad < 0.01  # Mess.error_rate = 0.003 (×10 errors)
