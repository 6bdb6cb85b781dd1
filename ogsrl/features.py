"""Canonical features: names, units, plausible ranges, sample-and-hold limits, imputation values and item maps.

This module is the single source of truth shared by the cohort extraction (which turns MIMIC-IV rows into states)
and the demo simulator (which writes MIMIC-IV rows and evaluates policies on states computed by the same code).
Sources: mimic-code concepts (vitalsign, bg, sofa, urine_output, norepinephrine_equivalent_dose), AI Clinician
(Komorowski 2018; cmudig/AI-Clinician-MIMICIV) and microsoft/mimic_sepsis sample_and_hold.csv.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Feature:
    """One state feature."""

    name: str
    """canonical column name in the trajectory table"""
    unit: str
    """unit after harmonisation"""
    low: float
    """lowest physiologically plausible value; values outside [low, high] are dropped as charting errors"""
    high: float
    """highest plausible value"""
    hold_h: float
    """sample-and-hold limit in hours (0 = not held: per-step or static feature)"""
    normal: float
    """imputation value when nothing was charted within the hold limit (a clinically normal value)"""
    kind: str = "continuous"
    """continuous | binary | static"""


FEATURES: tuple[Feature, ...] = (
    # static / demographic
    Feature("gender", "1=female", 0, 1, 0, 0, "binary"),
    Feature("readmission", "1=previous ICU stay", 0, 1, 0, 0, "binary"),
    Feature("age", "years", 18, 91, 0, 65, "static"),
    Feature("weight", "kg", 25, 300, 72, 80),
    # respiratory
    Feature("mechvent", "1=invasive ventilation", 0, 1, 0, 0, "binary"),
    Feature("fio2", "fraction", 0.21, 1.0, 12, 0.21),
    Feature("pao2", "mmHg", 20, 700, 8, 90),  # normal on room air; the cohort imputes pf_ratio.normal × FiO2
    Feature("pf_ratio", "mmHg", 20, 3000, 8, 430),
    Feature("spo2", "%", 50, 100, 2, 97),
    Feature("rr", "insp/min", 3, 70, 2, 16),
    # haemodynamic
    Feature("map", "mmHg", 20, 200, 2, 80),
    Feature("sbp", "mmHg", 40, 300, 2, 120),
    Feature("hr", "bpm", 20, 250, 2, 80),
    Feature("temp_c", "degC", 25, 45, 6, 37),
    Feature("lactate", "mmol/L", 0.1, 30, 8, 1.0),
    # organs
    Feature("gcs", "points", 3, 15, 6, 15),
    Feature("bilirubin", "mg/dL", 0.1, 70, 28, 0.6),
    Feature("creatinine", "mg/dL", 0.1, 20, 28, 0.9),
    Feature("platelets", "K/uL", 1, 2000, 28, 250),
    # fluid balance (per step / cumulative since ICU admission); urine_step not held (sum, 0 when uncharted)
    Feature("urine_step", "mL per step", 0, 12000, 0, 0),
    Feature("urine_cum", "mL", 0, 200000, 0, 0),
    Feature("fluid_cum", "mL", 0, 200000, 0, 0),
    # derived
    Feature("sofa", "points", 0, 24, 0, 0),
)
BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
ALL: tuple[str, ...] = tuple(f.name for f in FEATURES)

PAPER_STATE: tuple[str, ...] = (
    "gender", "readmission", "age", "mechvent", "gcs", "fio2", "pao2", "pf_ratio", "bilirubin",
    "urine_step", "urine_cum", "fluid_cum", "spo2",
)
"""The 13 state features of the OGSRL paper (MIMIC-III sepsis cohort of microsoft/mimic_sepsis)."""

ACTIONS: tuple[str, ...] = ("fluid_ml", "nee_max")
ACTION_UNITS = {"fluid_ml": "mL per step (tonicity-adjusted)", "nee_max": "ug/kg/min norepinephrine-equivalent"}
ACTION_BOUNDS = {"fluid_ml": (0.0, 10000.0), "nee_max": (0.0, 5.0)}
"""Physical bounds of the actions per 4 h step; larger values are excluded as artefacts (AI Clinician: 10 L)."""

# ---- chartevents -------------------------------------------------------------------------------------------
CHART_ITEMS: dict[int, str] = {
    220045: "hr",
    220050: "sbp", 220179: "sbp",
    220052: "map", 220181: "map",
    220210: "rr",
    223762: "temp_c", 223761: "temp_c",  # 223761 is Fahrenheit
    220277: "spo2",
    223835: "fio2",
    220224: "pao2",
    220739: "gcs_eye", 223900: "gcs_verbal", 223901: "gcs_motor",
    226512: "weight", 226531: "weight",  # 226531 is lb
}
FAHRENHEIT_ITEMS = frozenset({223761})
POUND_ITEMS = frozenset({226531})
LB_TO_KG = 0.453592

# ---- labevents ---------------------------------------------------------------------------------------------
LAB_ITEMS: dict[int, str] = {
    50821: "pao2",
    50816: "fio2",
    50885: "bilirubin",
    50912: "creatinine",
    51265: "platelets",
    50813: "lactate",
}

# ---- outputevents (urine, mL; 227488 irrigant in is subtracted) --------------------------------------------
MIN_URINE_H = 1.0
"""shortest observed part of a urine window (hours) a urine rate is computed from (urine is charted about hourly):
below it, e.g. a last step that ends 30 min after it starts, the renal urine criterion and urine-rate costs are
skipped rather than read as oliguria"""
URINE_ITEMS = frozenset({226559, 226560, 226561, 226584, 226563, 226564, 226565, 226567, 226557, 226558, 227489})
URINE_SUBTRACT_ITEMS = frozenset({227488})

# ---- procedureevents ---------------------------------------------------------------------------------------
VENT_ITEMS = frozenset({225792})

# ---- inputevents: IV fluids with AI Clinician tonicity factors (mL of isotonic equivalent per mL) ------------
FLUID_TONICITY: dict[int, float] = {
    225158: 1.0,   # NaCl 0.9%
    225828: 1.0,   # LR
    225159: 0.5,   # NaCl 0.45%
    225823: 0.5,   # D5 1/2NS
    225825: 1.0,   # D5NS
    225827: 1.0,   # D5LR
    225941: 1.0,   # D5 1/4NS
    226089: 1.0,   # Piggyback
    220864: 1.0,   # Albumin 5%
    220862: 5.0,   # Albumin 25%
    220949: 1.0,   # Dextrose 5%
}

# ---- inputevents: vasopressors → NE-equivalent (mimic-code norepinephrine_equivalent_dose, Goradia 2021) ------
NEE_FACTORS: dict[int, tuple[str, str, float]] = {
    221906: ("norepinephrine", "mcg/kg/min", 1.0),
    221289: ("epinephrine", "mcg/kg/min", 1.0),
    221749: ("phenylephrine", "mcg/kg/min", 0.1),
    221662: ("dopamine", "mcg/kg/min", 0.01),
    222315: ("vasopressin", "units/hour", 2.5 / 60.0),
}
"""itemid → (agent, expected rateuom, factor to NE µg/kg/min). Vasopressin charted in units/min is ×60 first."""

# ---- Sepsis-3 ----------------------------------------------------------------------------------------------
ANTIBIOTIC_NAMES: tuple[str, ...] = (
    "cefepime", "ceftriaxone", "cefazolin", "ceftazidime", "piperacillin", "tazobactam", "meropenem",
    "vancomycin", "levofloxacin", "ciprofloxacin", "metronidazole", "azithromycin", "ampicillin",
    "sulbactam", "clindamycin", "linezolid", "daptomycin", "gentamicin", "tobramycin", "ertapenem",
    "aztreonam", "cefuroxime", "doxycycline", "sulfamethoxazole", "trimethoprim", "nafcillin", "oxacillin",
)
"""Lower-case substrings of `prescriptions.drug` that mark a systemic antibiotic (subset of mimic-code's list)."""
ANTIBIOTIC_EXCLUDED_ROUTES: tuple[str, ...] = ("OU", "OS", "OD", "AU", "AS", "AD", "TP")


def state_features(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Validate a configured state-feature list against the canonical features."""
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown state feature(s) {unknown}; known: {list(ALL)}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate state feature(s) in {list(names)}")
    if not names:
        raise ValueError("the state feature list is empty")
    return tuple(names)
