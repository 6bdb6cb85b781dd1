"""MIMIC-IV v3.1 table schemas (column names, order, types) and the dictionary rows the simulator writes.

Column order and types follow mimic-code `buildmimic/postgres/create.sql` (see ../shared/spec/mimic-iv-reference.md
§1.2): INTEGER → int32, SMALLINT → int16, DOUBLE/REAL → float64, VARCHAR/CHAR/TEXT → string, TIMESTAMP → timestamp[s],
DATE → date32. Every table the simulator writes is built as a pyarrow Table with exactly these schemas.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import pyarrow as pa


I32, I16, F64, S, TS, DATE = pa.int32(), pa.int16(), pa.float64(), pa.string(), pa.timestamp("s"), pa.date32()


def _schema(*cols: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(n, t) for n, t in cols])


SCHEMAS: dict[str, pa.Schema] = {
    "patients": _schema(("subject_id", I32), ("gender", S), ("anchor_age", I16), ("anchor_year", I16),
                        ("anchor_year_group", S), ("dod", DATE)),
    "admissions": _schema(("subject_id", I32), ("hadm_id", I32), ("admittime", TS), ("dischtime", TS),
                          ("deathtime", TS), ("admission_type", S), ("admit_provider_id", S),
                          ("admission_location", S), ("discharge_location", S), ("insurance", S), ("language", S),
                          ("marital_status", S), ("race", S), ("edregtime", TS), ("edouttime", TS),
                          ("hospital_expire_flag", I16)),
    "icustays": _schema(("subject_id", I32), ("hadm_id", I32), ("stay_id", I32), ("first_careunit", S),
                        ("last_careunit", S), ("intime", TS), ("outtime", TS), ("los", F64)),
    "chartevents": _schema(("subject_id", I32), ("hadm_id", I32), ("stay_id", I32), ("caregiver_id", I32),
                           ("charttime", TS), ("storetime", TS), ("itemid", I32), ("value", S), ("valuenum", F64),
                           ("valueuom", S), ("warning", I16)),
    "inputevents": _schema(("subject_id", I32), ("hadm_id", I32), ("stay_id", I32), ("caregiver_id", I32),
                           ("starttime", TS), ("endtime", TS), ("storetime", TS), ("itemid", I32), ("amount", F64),
                           ("amountuom", S), ("rate", F64), ("rateuom", S), ("orderid", I32), ("linkorderid", I32),
                           ("ordercategoryname", S), ("secondaryordercategoryname", S),
                           ("ordercomponenttypedescription", S), ("ordercategorydescription", S),
                           ("patientweight", F64), ("totalamount", F64), ("totalamountuom", S), ("isopenbag", I16),
                           ("continueinnextdept", I16), ("statusdescription", S), ("originalamount", F64),
                           ("originalrate", F64)),
    "outputevents": _schema(("subject_id", I32), ("hadm_id", I32), ("stay_id", I32), ("caregiver_id", I32),
                            ("charttime", TS), ("storetime", TS), ("itemid", I32), ("value", F64), ("valueuom", S)),
    "procedureevents": _schema(("subject_id", I32), ("hadm_id", I32), ("stay_id", I32), ("caregiver_id", I32),
                               ("starttime", TS), ("endtime", TS), ("storetime", TS), ("itemid", I32),
                               ("value", F64), ("valueuom", S), ("location", S), ("locationcategory", S),
                               ("orderid", I32), ("linkorderid", I32), ("ordercategoryname", S),
                               ("ordercategorydescription", S), ("patientweight", F64), ("isopenbag", I16),
                               ("continueinnextdept", I16), ("statusdescription", S), ("originalamount", F64),
                               ("originalrate", F64)),
    "d_items": _schema(("itemid", I32), ("label", S), ("abbreviation", S), ("linksto", S), ("category", S),
                       ("unitname", S), ("param_type", S), ("lownormalvalue", F64), ("highnormalvalue", F64)),
    "labevents": _schema(("labevent_id", I32), ("subject_id", I32), ("hadm_id", I32), ("specimen_id", I32),
                         ("itemid", I32), ("order_provider_id", S), ("charttime", TS), ("storetime", TS),
                         ("value", S), ("valuenum", F64), ("valueuom", S), ("ref_range_lower", F64),
                         ("ref_range_upper", F64), ("flag", S), ("priority", S), ("comments", S)),
    "d_labitems": _schema(("itemid", I32), ("label", S), ("fluid", S), ("category", S)),
    "prescriptions": _schema(("subject_id", I32), ("hadm_id", I32), ("pharmacy_id", I32), ("poe_id", S),
                             ("poe_seq", I32), ("order_provider_id", S), ("starttime", TS), ("stoptime", TS),
                             ("drug_type", S), ("drug", S), ("formulary_drug_cd", S), ("gsn", S), ("ndc", S),
                             ("prod_strength", S), ("form_rx", S), ("dose_val_rx", S), ("dose_unit_rx", S),
                             ("form_val_disp", S), ("form_unit_disp", S), ("doses_per_24_hrs", F64), ("route", S)),
    "microbiologyevents": _schema(("microevent_id", I32), ("subject_id", I32), ("hadm_id", I32),
                                  ("micro_specimen_id", I32), ("order_provider_id", S), ("chartdate", TS),
                                  ("charttime", TS), ("spec_itemid", I32), ("spec_type_desc", S), ("test_seq", I32),
                                  ("storedate", TS), ("storetime", TS), ("test_itemid", I32), ("test_name", S),
                                  ("org_itemid", I32), ("org_name", S), ("isolate_num", I16), ("quantity", S),
                                  ("ab_itemid", I32), ("ab_name", S), ("dilution_text", S),
                                  ("dilution_comparison", S), ("dilution_value", F64), ("interpretation", S),
                                  ("comments", S)),
}
MODULE: dict[str, str] = {
    "patients": "hosp", "admissions": "hosp", "labevents": "hosp", "d_labitems": "hosp", "prescriptions": "hosp",
    "microbiologyevents": "hosp", "icustays": "icu", "chartevents": "icu", "inputevents": "icu",
    "outputevents": "icu", "procedureevents": "icu", "d_items": "icu",
}
EVENT_TABLES = ("chartevents", "labevents", "outputevents", "inputevents", "procedureevents", "prescriptions",
                "microbiologyevents")
STAY_TABLES = ("patients", "admissions", "icustays")

# ---- dictionary rows: (itemid, label, abbreviation, linksto, category, unitname, param_type, low, high) -------
_D_ITEMS: tuple[tuple[int, str, str, str, str, str | None, str, float | None, float | None], ...] = (
    (220045, "Heart Rate", "HR", "chartevents", "Routine Vital Signs", "bpm", "Numeric", None, None),
    (220050, "Arterial Blood Pressure systolic", "ABPs", "chartevents", "Routine Vital Signs", "mmHg", "Numeric",
     90.0, 140.0),
    (220052, "Arterial Blood Pressure mean", "ABPm", "chartevents", "Routine Vital Signs", "mmHg", "Numeric",
     None, None),
    (220179, "Non Invasive Blood Pressure systolic", "NBPs", "chartevents", "Routine Vital Signs", "mmHg",
     "Numeric", None, None),
    (220181, "Non Invasive Blood Pressure mean", "NBPm", "chartevents", "Routine Vital Signs", "mmHg", "Numeric",
     None, None),
    (220210, "Respiratory Rate", "RR", "chartevents", "Respiratory", "insp/min", "Numeric", None, None),
    (223761, "Temperature Fahrenheit", "Temperature F", "chartevents", "Routine Vital Signs", "°F", "Numeric",
     None, None),
    (223762, "Temperature Celsius", "Temperature C", "chartevents", "Routine Vital Signs", "°C", "Numeric",
     None, None),
    (220277, "O2 saturation pulseoxymetry", "SpO2", "chartevents", "Respiratory", "%", "Numeric", None, None),
    (223835, "Inspired O2 Fraction", "FiO2", "chartevents", "Respiratory", None, "Numeric", None, None),
    (220224, "Arterial O2 pressure", "PO2 (Arterial)", "chartevents", "Labs", "mmHg", "Numeric", None, None),
    (220739, "GCS - Eye Opening", "GCS - Eye Opening", "chartevents", "Neurological", None, "Text", None, None),
    (223900, "GCS - Verbal Response", "GCS - Verbal Response", "chartevents", "Neurological", None, "Text",
     None, None),
    (223901, "GCS - Motor Response", "GCS - Motor Response", "chartevents", "Neurological", None, "Text",
     None, None),
    (226512, "Admission Weight (Kg)", "Admission Weight (Kg)", "chartevents", "General", "kg", "Numeric",
     None, None),
    (226531, "Admission Weight (lbs.)", "Admission Weight (lbs.)", "chartevents", "General", "lbs", "Numeric",
     None, None),
    (226559, "Foley", "Foley", "outputevents", "Output", "mL", "Numeric", None, None),
    (226560, "Void", "Void", "outputevents", "Output", "mL", "Numeric", None, None),
    (225792, "Invasive Ventilation", "Invasive Ventilation", "procedureevents", "2-Ventilation", None,
     "Process", None, None),
    (225158, "NaCl 0.9%", "NaCl 0.9%", "inputevents", "Fluids/Intake", "mL", "Solution", None, None),
    (225828, "LR", "LR", "inputevents", "Fluids/Intake", "mL", "Solution", None, None),
    (220862, "Albumin 25%", "Albumin 25%", "inputevents", "Blood Products/Colloids", "mL", "Solution", None, None),
    (221906, "Norepinephrine", "Norepinephrine", "inputevents", "Medications", "mg", "Solution", None, None),
    (222315, "Vasopressin", "Vasopressin", "inputevents", "Medications", "units", "Solution", None, None),
)
_D_LABITEMS: tuple[tuple[int, str, str, str], ...] = (
    (50821, "pO2", "Blood", "Blood Gas"),
    (50816, "Oxygen", "Blood", "Blood Gas"),
    (50813, "Lactate", "Blood", "Blood Gas"),
    (50885, "Bilirubin, Total", "Blood", "Chemistry"),
    (50912, "Creatinine", "Blood", "Chemistry"),
    (51265, "Platelet Count", "Blood", "Hematology"),
    (52033, "Specimen Type", "Blood", "Blood Gas"),
)


def d_items() -> pa.Table:
    """icu/d_items rows for every itemid the simulator writes."""
    cols = list(zip(*_D_ITEMS))
    return pa.Table.from_arrays([pa.array(list(c), type=f.type) for c, f in zip(cols, SCHEMAS["d_items"])],
                                schema=SCHEMAS["d_items"])


def d_labitems() -> pa.Table:
    """hosp/d_labitems rows for every lab itemid the simulator writes."""
    cols = list(zip(*_D_LABITEMS))
    return pa.Table.from_arrays([pa.array(list(c), type=f.type) for c, f in zip(cols, SCHEMAS["d_labitems"])],
                                schema=SCHEMAS["d_labitems"])


def build(name: str, columns: Mapping[str, object], n: int) -> pa.Table:
    """Build table ``name`` with ``n`` rows from the given columns; absent columns are all-NULL."""
    schema = SCHEMAS[name]
    unknown = set(columns) - set(schema.names)
    if unknown:
        raise KeyError(f"{name}: unknown column(s) {sorted(unknown)}")
    arrays = []
    for field in schema:
        if field.name in columns:
            col = columns[field.name]
            arr = col.cast(field.type) if isinstance(col, pa.Array) else pa.array(col, type=field.type,
                                                                                   from_pandas=True)
            if len(arr) != n:
                raise ValueError(f"{name}.{field.name}: {len(arr)} values, expected {n}")
        else:
            arr = pa.nulls(n, type=field.type)
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=schema)


_PANDAS_TYPES = {pa.int32(): pd.Int32Dtype(), pa.int16(): pd.Int16Dtype()}


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow table → pandas with nullable Int32/Int16 integer columns, datetime64[s] timestamps, str strings."""
    df = table.to_pandas(types_mapper=_PANDAS_TYPES.get)
    for field in table.schema:
        if field.type == DATE:
            df[field.name] = pd.to_datetime(df[field.name]).astype("datetime64[s]")
    return df
