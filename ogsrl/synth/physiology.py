"""Hidden patient physiology of the demo simulator: a vectorised, hourly, compartment-style septic patient.

Every equation and constant is documented in docs/simulator.md (§2). Arrays are shaped ``(N,)`` (one entry per
simulated patient). Nothing here is written to the tables directly: `charting.py` observes these values with noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Arr = npt.NDArray[np.float64]

# ---- constants (docs/simulator.md §2) -----------------------------------------------------------------------
GROWTH_H = 0.035          # infection growth rate before antibiotics, 1/h
KILL_H = 0.035            # median antibiotic kill rate, 1/h
SVR_DROP = 0.42           # max fractional fall of vascular resistance at full infection saturation
VASO_MEDIAN = 0.85        # median per-patient vasoplegic response to the infection (multiplies SVR_DROP)
VASO_SIGMA = 0.5          # its log-normal spread: a minority develops vasopressor-dependent shock
CO_GAIN = 0.24            # max fractional cardiac-output change from preload (responders)
NONRESP_GAIN = 0.25       # preload gain of non-responders relative to responders
VOL_SCALE = 1000.0        # mL: preload saturation scale
PRESSOR_EMAX = 45.0       # mmHg: maximal MAP rise from vasopressors
PRESSOR_EC50 = 0.35       # µg/kg/min NE-equivalent giving half the maximal MAP rise
LEAK_H = 0.07             # fraction of (volume + 1500 mL) leaking per hour at full capillary leak
LUNG_SHARE = 0.35         # share of the leak that becomes extravascular lung water
LUNG_HYDRO_H = 0.01       # share of the volume above euvolaemia filtered into the lungs per hour (hydrostatic oedema)
LUNG_CLEAR_H = 0.012      # lung-water clearance per hour
LUNG_SCALE = 1200.0       # mL of lung water that divides P/F by e
PAO2_TARGET = 68.0        # mmHg: PaO2 the bedside team titrates FiO2 to
FIO2_ROUND_H = 0.30       # probability per hour that FiO2 is re-titrated
INTUBATE_PF = 130.0       # native P/F below which intubation is considered (probability 0.3/h)
URINE_BASE = 1.2         # mL/kg/h urine output of a well-perfused, euvolaemic kidney
URINE_UNREPLACED = 0.25   # share of urine output not replaced by enteral/drug intake and interstitial refill


@dataclass(slots=True)
class Patients:
    """Static traits (drawn once) and hidden dynamic state of N patients."""

    age: Arr
    female: Arr
    weight: Arr
    frailty: Arr
    responder: Arr
    vasoplegia: Arr
    map0: Arr
    hr0: Arr
    pf0: Arr
    creat0: Arr
    bili0: Arr
    plt0: Arr
    pneumonia: Arr
    fever: Arr
    kill: Arr
    # dynamic
    infection: Arr
    volume: Arr
    lung_water: Arr
    kidney: Arr
    creat: Arr
    bili: Arr
    plt: Arr
    lactate: Arr
    map_noise: Arr
    vent: Arr
    fio2: Arr
    pressor: Arr
    fluid_cum: Arr
    urine_cum: Arr
    alive: Arr
    # derived observables of the current hour (filled by `observables`)
    obs: dict[str, Arr] = field(default_factory=dict)


def sample_patients(n: int, rng: np.random.Generator, severity_scale: float = 1.0) -> Patients:
    """Draw N heterogeneous septic patients at ICU admission (docs/simulator.md §2.1).

    Args:
        n: number of patients.
        rng: generator.
        severity_scale: multiplies the infection burden (0.3 gives the mild non-infected stays).
    """
    age = np.clip(rng.normal(64.0, 16.0, n), 18.0, 91.0).round()
    frailty = np.clip(rng.beta(2.0, 5.0, n) + 0.004 * (age - 64.0), 0.0, 1.0)
    weight = np.clip(rng.lognormal(np.log(80.0), 0.22, n), 40.0, 200.0).round(1)
    resistant = rng.random(n) < 0.12
    kill = KILL_H * rng.lognormal(0.0, 0.35, n) * np.where(resistant, 0.3, 1.0)
    severity = rng.lognormal(np.log(1.0), 0.65, n) * severity_scale
    creat0 = rng.lognormal(np.log(0.85) + 0.5 * frailty, 0.25, n)
    vaso = np.clip(rng.lognormal(np.log(VASO_MEDIAN), VASO_SIGMA, n), 0.1, 2.5)
    p = Patients(
        age=age,
        female=(rng.random(n) < 0.43).astype(float),
        weight=weight,
        frailty=frailty,
        responder=(rng.random(n) < 0.55).astype(float),
        vasoplegia=vaso,
        map0=rng.normal(88.0, 8.0, n),
        hr0=rng.normal(80.0, 10.0, n),
        pf0=np.clip(rng.normal(430.0, 40.0, n), 320.0, 520.0),
        creat0=creat0,
        bili0=rng.lognormal(np.log(0.6), 0.3, n),
        plt0=np.clip(rng.normal(240.0, 60.0, n), 100.0, 450.0),
        pneumonia=(rng.random(n) < 0.4).astype(float),
        fever=np.where(rng.random(n) < 0.88, 1.0, -0.6),
        kill=kill,
        infection=severity,
        volume=-np.clip(rng.normal(1200.0, 600.0, n), 0.0, 3000.0) * np.minimum(severity_scale * 1.0, 1.0),
        lung_water=np.zeros(n),
        kidney=np.clip(rng.normal(0.1, 0.1, n), 0.0, 0.5) * severity_scale,
        creat=creat0.copy(),
        bili=np.zeros(n),
        plt=np.zeros(n),
        lactate=np.full(n, 1.2),
        map_noise=np.zeros(n),
        vent=np.zeros(n),
        fio2=np.full(n, 0.21),
        pressor=np.zeros(n),
        fluid_cum=np.zeros(n),
        urine_cum=np.zeros(n),
        alive=np.ones(n),
    )
    p.bili = p.bili0.copy()
    p.plt = p.plt0.copy()
    return p


def sat(x: Arr) -> Arr:
    """Saturating infection effect s = I / (1 + I) in [0, 1)."""
    return x / (1.0 + x)


def severinghaus(pao2: Arr) -> Arr:
    """SpO2 (%) from PaO2 (mmHg), Severinghaus 1979: 100 / (23400 / (P³ + 150 P) + 1)."""
    p = np.maximum(pao2, 1.0)
    return 100.0 / (23400.0 / (p**3 + 150.0 * p) + 1.0)


def observables(p: Patients) -> dict[str, Arr]:
    """True (noise-free) observable values implied by the hidden state (docs/simulator.md §2.2)."""
    s = sat(p.infection)
    co = 1.0 + CO_GAIN * np.where(p.responder > 0, 1.0, NONRESP_GAIN) * np.tanh(p.volume / VOL_SCALE)
    svr = 1.0 - SVR_DROP * s * p.vasoplegia * (1.0 + 0.3 * p.frailty)
    lift = PRESSOR_EMAX * p.pressor / (p.pressor + PRESSOR_EC50)
    mapv = np.clip(p.map0 * co * svr + lift + p.map_noise, 25.0, 160.0)
    sbp = 1.35 * mapv + 8.0
    hr = np.clip(p.hr0 + 30.0 * s + 15.0 * np.maximum(-p.volume, 0.0) / 1000.0
                 + 35.0 * p.pressor / (p.pressor + 0.5), 40.0, 190.0)
    temp = 37.0 + p.fever * 1.8 * s
    pf = p.pf0 * (1.0 - 0.45 * p.pneumonia * s - 0.15 * s) * np.exp(-p.lung_water / LUNG_SCALE)
    pf = pf * np.where(p.vent > 0, 1.4, 1.0)
    pao2 = pf * p.fio2
    spo2 = severinghaus(pao2)
    hypoperf = np.clip((65.0 - mapv) / 15.0, 0.0, 2.0)
    gcs = 15.0 - 5.0 * s * (0.6 + p.frailty) - 3.0 * hypoperf - 3.0 * (spo2 < 85) - 3.0 * p.vent
    rr = np.where(p.vent > 0, 16.0, 14.0 + 10.0 * s + 14.0 * np.clip(1.0 - pf / 450.0, 0.0, 1.0))
    return {
        "map": mapv, "sbp": sbp, "hr": hr, "temp_c": temp, "pf_ratio": pf, "pao2": pao2, "spo2": spo2,
        "gcs": np.clip(np.round(gcs), 3.0, 15.0), "rr": rr, "hypoperf": hypoperf, "s": s,
    }


def urine_rate(p: Patients, o: dict[str, Arr]) -> Arr:
    """Urine output mL/h: weight × URINE_BASE × kidney function × renal perfusion × volume status."""
    perf = 1.0 / (1.0 + np.exp(-(o["map"] - 58.0) / 5.0))
    vol = 1.0 + 0.35 * np.tanh(p.volume / 1000.0)
    return p.weight * URINE_BASE * np.clip(1.0 - p.kidney, 0.03, 1.0) * perf * vol


def step_hour(p: Patients, fluid_ml: Arr, nee: Arr, on_abx: Arr, rng: np.random.Generator,
              active: Arr) -> dict[str, Arr]:
    """Advance the hidden state of ``active`` living patients by one hour.

    Args:
        fluid_ml: tonicity-adjusted IV fluid given this hour (mL).
        nee: vasopressor dose this hour (µg/kg/min norepinephrine-equivalent).
        on_abx: 1 where antibiotics are running.
        active: 1 for patients in the ICU this hour.

    Returns:
        the hour's observables (after the update), with ``urine`` (mL this hour) and ``hazard`` (death hazard per
        hour) added.
    """
    m = (active > 0) & (p.alive > 0)
    p.pressor = np.where(m, nee, p.pressor)
    o = observables(p)
    s, hyp = o["s"], o["hypoperf"]
    # infection: grows until antibiotics, then decays; shock slows clearance (docs §2.1)
    rate = np.where(on_abx > 0, -p.kill * (1.0 - 0.35 * np.minimum(hyp, 1.0)), GROWTH_H * (1.0 - p.infection / 6.0))
    infection = p.infection * np.exp(rate)
    # volume: IV fluids in; capillary leak and the urine not replaced by non-IV intake/refill out
    leak = LEAK_H * s * np.maximum(p.volume + 1500.0, 0.0)
    urine = urine_rate(p, o)
    volume = p.volume + fluid_ml - leak - URINE_UNREPLACED * urine
    lung = (p.lung_water * (1.0 - LUNG_CLEAR_H * (0.5 + 0.5 * (1.0 - p.kidney))) + LUNG_SHARE * leak
            + LUNG_HYDRO_H * np.maximum(p.volume, 0.0))
    # kidney: injury from hypoperfusion, sepsis and high pressor doses; slow recovery
    dry = hypovolaemia(p)
    dk = (0.05 * hyp + 0.006 * s + 0.02 * np.maximum(nee - 0.5, 0.0) + K_DRY_PRESSOR * pressor_effect(nee) * dry
          + K_CONGESTION * np.clip(p.volume / 1000.0, 0.0, 3.0) - 0.012 * p.kidney * (hyp == 0))
    kidney = np.clip(p.kidney + dk, 0.0, 1.5)
    creat = p.creat + (p.creat0 * (1.0 + 3.0 * kidney) - p.creat) / 12.0
    lac_target = (1.0 + 3.0 * hyp + 2.5 * s * s + 2.0 * np.maximum(nee - 0.5, 0.0)
                  + LAC_DRY_PRESSOR * pressor_effect(nee) * dry)
    lactate = p.lactate + (lac_target - p.lactate) / np.where(lac_target > p.lactate, 3.0, 6.0)
    bili = p.bili + (p.bili0 * (1.0 + 4.0 * s * s + 1.5 * hyp) - p.bili) / 24.0
    plt = p.plt + (p.plt0 * (1.0 - 0.7 * s) - p.plt) / 24.0
    noise = 0.8 * p.map_noise + rng.normal(0.0, 2.0, len(p.age))
    # ventilation: intubate when oxygenation or consciousness fails; extubate when recovered
    pf_native = o["pf_ratio"] / np.where(p.vent > 0, 1.4, 1.0)
    u = rng.random(len(p.age))
    intubate = (p.vent == 0) & (((pf_native < INTUBATE_PF) & (u < 0.3)) | ((o["gcs"] < 8) & (u < 0.5)))
    extubate = (p.vent > 0) & (pf_native > 250) & (o["gcs"] + 3 >= 11) & (u < 0.12)
    vent = np.where(intubate, 1.0, np.where(extubate, 0.0, p.vent))
    # FiO2 titrated by the bedside team to PaO2 ≈ PAO2_TARGET (room air when enough; ≤ 0.5 without a ventilator)
    pf_next = pf_native * np.where(vent > 0, 1.4, 1.0)
    need = np.ceil(PAO2_TARGET / np.maximum(pf_next, 1.0) * 20.0) / 20.0
    fio2 = np.clip(need, 0.21, np.where(vent > 0, 1.0, 0.5))
    fio2 = np.where(fio2 < 0.25, 0.21, fio2)
    # FiO2 is re-titrated at bedside rounds (probability FIO2_ROUND_H per hour), at once when SpO2 < 88 or the
    # airway changes; in between it stays, so worsening lungs show up as desaturation
    retitrate = (rng.random(len(p.age)) < FIO2_ROUND_H) | (o["spo2"] < 88) | (vent != p.vent)
    fio2 = np.where(retitrate, fio2, p.fio2)
    for name, new in (("infection", infection), ("volume", volume), ("lung_water", lung), ("kidney", kidney),
                      ("creat", creat), ("lactate", lactate), ("bili", bili), ("plt", plt), ("map_noise", noise),
                      ("vent", vent), ("fio2", fio2)):
        setattr(p, name, np.where(m, new, getattr(p, name)))
    p.fluid_cum = p.fluid_cum + np.where(m, fluid_ml, 0.0)
    urine = np.where(m, urine, 0.0)
    p.urine_cum = p.urine_cum + urine
    o = observables(p)
    o["urine"] = urine
    o["hazard"] = np.where(m, hazard(p, o, nee), 0.0)
    return o


def organ_score(p: Patients, o: dict[str, Arr]) -> Arr:
    """SOFA-like 0–24 score of the true state; the cardiovascular part uses MAP only (pressor doses enter the
    hazard as harms instead), so it measures shock, not treatment (docs/simulator.md §2.3)."""
    pf = o["pf_ratio"]
    resp = np.select([pf < 100, pf < 200, pf < 300, pf < 400], [4, 3, 2, 1], 0)
    resp = np.where(p.vent > 0, resp, np.minimum(resp, 2))
    coag = np.select([p.plt < 20, p.plt < 50, p.plt < 100, p.plt < 150], [4, 3, 2, 1], 0)
    liver = np.select([p.bili >= 12, p.bili >= 6, p.bili >= 2, p.bili >= 1.2], [4, 3, 2, 1], 0)
    cardio = np.select([o["map"] < c for c in CARDIO_CUTS], [4, 3, 2, 1], 0)
    g = o["gcs"] + 3.0 * p.vent  # sedation is not brain failure
    cns = np.select([g < 6, g < 10, g < 13, g < 15], [4, 3, 2, 1], 0)
    renal = np.select([p.creat >= 5, p.creat >= 3.5, p.creat >= 2, p.creat >= 1.2], [4, 3, 2, 1], 0)
    return (resp + coag + liver + cardio + cns + renal).astype(float)


CARDIO_CUTS = (50.0, 55.0, 60.0, 65.0)  # mmHg: MAP below each gives 4, 3, 2, 1 points (hypoperfusion only)
HAZ_B0 = -8.6             # log hazard per hour at score 0, age 65, frailty 0
HAZ_SCORE = 0.30          # per organ-score point
HAZ_FRAIL = 1.2           # per unit frailty
HAZ_AGE = 0.15            # per 10 years of age
# vasopressor harms, per hour at full pressor effect e = d/(d + EC50) (e = 0.22 at 0.1, 0.46 at 0.3 µg/kg/min)
HARM_TOX = 0.002          # catecholamine toxicity (arrhythmia, myocardial and digital ischaemia) from any dose
HARM_OVER = 0.01          # over-constriction, per 10 mmHg of MAP above MAP_TARGET_HI (up to 30 mmHg)
MAP_TARGET_HI = 80.0      # mmHg above which a pressor adds no organ perfusion, only afterload and arrhythmia
HARM_DRY = 0.01           # vasoconstriction replacing volume, per litre of deficit (splanchnic ischaemia)
K_DRY_PRESSOR = 0.01      # kidney injury per hour at full effect per litre of deficit (renal vasoconstriction)
LAC_DRY_PRESSOR = 4.0     # mmol/L lactate target at full effect per litre of deficit (splanchnic ischaemia)
# fluid harms
K_CONGESTION = 0.008      # kidney injury per hour per litre above euvolaemia (renal venous congestion)
HARM_OVERLOAD = 0.001     # death hazard per hour per litre of net fluid balance beyond OVERLOAD_FROM_L
OVERLOAD_FROM_L = 3.0     # litres of net positive balance (fluid_cum − urine_cum) where that hazard starts


def hypovolaemia(p: Patients) -> Arr:
    """Volume deficit in litres below euvolaemia, clipped to [0, 2] (the scale of the pressor-in-hypovolaemia harms)."""
    return np.clip(-p.volume / 1000.0, 0.0, 2.0)


def pressor_effect(nee: Arr) -> Arr:
    """Share of the maximal vasopressor effect, d / (d + EC50) in [0, 1): the MAP lift is PRESSOR_EMAX times this."""
    return nee / (nee + PRESSOR_EC50)


def pressor_harm(p: Patients, o: dict[str, Arr], nee: Arr) -> Arr:
    """Death hazard per hour from vasopressors (docs/simulator.md §2.4). Each term scales with the pressor's effect
    (the same receptor pharmacology that lifts MAP), so low doses are not free: catecholamine toxicity
    (arrhythmia, ischaemia), over-constriction when MAP is already above target, vasoconstriction replacing missing
    volume, and the refractory-dose term."""
    e = pressor_effect(nee)
    toxicity = HARM_TOX * e
    over = HARM_OVER * e * np.clip((o["map"] - MAP_TARGET_HI) / 10.0, 0.0, 3.0)
    dry = HARM_DRY * e * hypovolaemia(p)
    return toxicity + over + dry + 0.02 * np.maximum(nee - 0.3, 0.0) ** 1.5


def hazard(p: Patients, o: dict[str, Arr], nee: Arr) -> Arr:
    """Death hazard per hour: exp(b0 + b_s·score + b_f·frailty + b_a·(age−65)/10) + treatment harms."""
    score = organ_score(p, o)
    base = np.exp(HAZ_B0 + HAZ_SCORE * score + HAZ_FRAIL * p.frailty + HAZ_AGE * (p.age - 65.0) / 10.0)
    hypox_harm = 0.004 * np.clip((90.0 - o["spo2"]) / 10.0, 0.0, 2.0)
    balance = (p.fluid_cum - p.urine_cum) / 1000.0
    overload = HARM_OVERLOAD * np.clip(balance - OVERLOAD_FROM_L, 0.0, 10.0)
    return base + pressor_harm(p, o, nee) + hypox_harm + overload


def post_window_death_prob(p: Patients, o: dict[str, Arr]) -> Arr:
    """Probability of dying in hospital after the simulated window, from the state at its end (docs §2.4)."""
    score = organ_score(p, o)
    z = -5.2 + 0.38 * score + 1.5 * p.frailty + 0.2 * (p.age - 65.0) / 10.0 + 0.3 * (p.infection > 1.0)
    return 1.0 / (1.0 + np.exp(-z))


def post_discharge_death_prob(p: Patients, o: dict[str, Arr]) -> Arr:
    """Probability of death within 90 days of ICU admission after surviving the hospital stay."""
    score = organ_score(p, o)
    z = -4.2 + 0.2 * score + 2.0 * p.frailty + 0.35 * (p.age - 65.0) / 10.0
    return 1.0 / (1.0 + np.exp(-z))
