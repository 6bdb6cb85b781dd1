"""Treatment effects of the hidden physiology have the documented signs (docs/simulator.md §2)."""

from __future__ import annotations

import numpy as np

from ogsrl.synth import physiology as P


def _cohort(n: int = 400, seed: int = 0, infection: float = 1.5, volume: float = -1500.0) -> P.Patients:
    p = P.sample_patients(n, np.random.default_rng(seed))
    p.infection = np.full(n, infection)
    p.volume = np.full(n, volume)
    p.kill = np.zeros(n)
    return p


def _run(p: P.Patients, hours: int, fluid: float, nee: float, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = len(p.age)
    o: dict[str, np.ndarray] = {}
    for _ in range(hours):
        o = P.step_hour(p, np.full(n, fluid), np.full(n, nee), np.ones(n), rng, np.ones(n))
    return o


def test_fluid_raises_map_and_urine_more_in_responders() -> None:
    dry, wet = _cohort(), _cohort()
    o0 = _run(dry, 2, 0.0, 0.0)
    o1 = _run(wet, 2, 500.0, 0.0)
    gain = o1["map"] - o0["map"]
    assert gain.mean() > 3.0
    assert (o1["urine"] - o0["urine"]).mean() > 0.0
    resp = dry.responder > 0
    assert gain[resp].mean() > 2.0 * gain[~resp].mean()


def test_vasopressor_raises_map_with_dose_and_high_doses_raise_hazard() -> None:
    maps, haz = [], []
    for dose in (0.0, 0.1, 0.3, 1.5):
        p = _cohort()
        o = _run(p, 1, 0.0, dose)
        maps.append(o["map"].mean())
        haz.append(o["hazard"].mean())
    assert maps[0] < maps[1] < maps[2] < maps[3]
    assert 5.0 < maps[1] - maps[0] < 20.0  # ~10–15 mmHg at 0.1 µg/kg/min (simulator notes)
    assert haz[3] > 2.0 * haz[2]


def test_fluid_overload_worsens_oxygenation() -> None:
    dry, wet = _cohort(infection=2.0, volume=0.0), _cohort(infection=2.0, volume=0.0)
    o0 = _run(dry, 36, 0.0, 0.1)
    o1 = _run(wet, 36, 400.0, 0.1)
    assert wet.lung_water.mean() > dry.lung_water.mean() + 300.0
    native0 = o0["pf_ratio"] / np.where(dry.vent > 0, 1.4, 1.0)
    native1 = o1["pf_ratio"] / np.where(wet.vent > 0, 1.4, 1.0)
    assert native1.mean() < 0.8 * native0.mean()
    assert wet.vent.mean() > dry.vent.mean()


def test_untreated_shock_injures_kidneys() -> None:
    shock, treated = _cohort(infection=3.0, volume=-2500.0), _cohort(infection=3.0, volume=-2500.0)
    o0 = _run(shock, 24, 0.0, 0.0)
    o1 = _run(treated, 24, 150.0, 0.25)
    assert o0["map"].mean() < 65.0 < o1["map"].mean()
    assert shock.creat.mean() > treated.creat.mean() * 1.2
    assert o0["urine"].mean() < o1["urine"].mean()
    assert shock.lactate.mean() > treated.lactate.mean()
    assert o0["hazard"].mean() > o1["hazard"].mean()


def test_hazard_rises_with_organ_score_and_antibiotics_clear_infection() -> None:
    p = _cohort(n=2000)
    o = P.observables(p)
    score = P.organ_score(p, o)
    h = P.hazard(p, o, np.zeros(len(score)))
    lo, hi = score <= np.quantile(score, 0.25), score >= np.quantile(score, 0.75)
    assert h[hi].mean() > 2.0 * h[lo].mean()
    q = P.sample_patients(50, np.random.default_rng(3))
    before = q.infection.copy()
    rng = np.random.default_rng(4)
    for _ in range(24):
        P.step_hour(q, np.zeros(50), np.zeros(50), np.ones(50), rng, np.ones(50))
    assert (q.infection < before).all()
    r = P.sample_patients(50, np.random.default_rng(3))
    for _ in range(24):
        P.step_hour(r, np.zeros(50), np.zeros(50), np.zeros(50), rng, np.ones(50))
    assert (r.infection > before).all()


def test_severinghaus_curve() -> None:
    s = P.severinghaus(np.array([27.0, 60.0, 100.0]))
    assert abs(s[0] - 50.0) < 3.0 and abs(s[1] - 90.0) < 2.0 and 97.0 < s[2] < 99.0
