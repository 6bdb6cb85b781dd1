"""The behaviour policy's exposed densities match its samples and the logged actions (docs/simulator.md §3)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ogsrl.synth import clinician as C
from ogsrl.synth import engine as E


def _state(**kw: float) -> pd.DataFrame:
    base = {"map": 62.0, "lactate": 3.0, "spo2": 96.0, "pf_ratio": 320.0, "urine_step": 80.0, "fluid_cum": 1500.0,
            "weight": 80.0, "sofa": 6.0}
    base.update(kw)
    return pd.DataFrame({k: [v] for k, v in base.items()})


WIDE_LOW = C.Practice(fluid_scale=0.5, vasopressor_scale=2.0, dose_spread=1.5, style_spread=2.0)


@pytest.mark.parametrize(("attending", "practice"), [(0, C.DEMO), (7, C.DEMO), (3, WIDE_LOW)])
def test_samples_match_density_on_bins(attending: int, practice: C.Practice) -> None:
    n = 40000
    s = pd.concat([_state()] * n, ignore_index=True)
    a = C.sample(s, np.full(n, attending), np.random.default_rng(0), practice)
    one = _state()
    # point mass at (0, 0)
    p00 = np.exp(C.log_prob(one, np.zeros((1, 2)), [attending], practice))[0]
    emp = np.mean((a[:, 0] == 0) & (a[:, 1] == 0))
    assert abs(emp - p00) < 4 * np.sqrt(p00 * (1 - p00) / n)
    # fluid in bins with no vasopressor: ∫ density over the bin (trapezoid on a fine grid)
    for lo, hi in ((50, 200), (100, 400), (400, 800), (800, 2000)):
        x = np.linspace(lo, hi, 2001)
        acts = np.stack([x, np.zeros_like(x)], axis=1)
        dens = np.exp(C.log_prob(pd.concat([one] * len(x), ignore_index=True), acts, np.full(len(x), attending),
                                 practice))
        p = np.trapezoid(dens, x)
        emp = np.mean((a[:, 0] >= lo) & (a[:, 0] < hi) & (a[:, 1] == 0))
        assert abs(emp - p) < 4 * np.sqrt(p * (1 - p) / n) + 0.004, (lo, hi, emp, p)
    # vasopressor dose bins with no fluid
    for lo, hi in ((0.02, 0.08), (0.08, 0.3), (0.3, 1.0)):
        x = np.linspace(lo, hi, 2001)
        acts = np.stack([np.zeros_like(x), x], axis=1)
        dens = np.exp(C.log_prob(pd.concat([one] * len(x), ignore_index=True), acts, np.full(len(x), attending),
                                 practice))
        p = np.trapezoid(dens, x)
        emp = np.mean((a[:, 1] >= lo) & (a[:, 1] < hi) & (a[:, 0] == 0))
        assert abs(emp - p) < 4 * np.sqrt(p * (1 - p) / n) + 0.004, (lo, hi, emp, p)


def test_logged_actions_match_exposed_probabilities(small_sim: E.SimResult) -> None:
    s = small_sim.steps
    p = C.mixture_params(s, s["attending"].to_numpy())
    pred_f = (p["w"] * p["pf"]).sum(axis=1)
    pred_v = (p["w"] * p["pv"]).sum(axis=1)
    for pred, col in ((pred_f, "fluid_ml"), (pred_v, "nee_max")):
        emp = (s[col].to_numpy() > 0).astype(float)
        se = np.sqrt((pred * (1 - pred)).sum()) / len(pred)
        assert abs(emp.mean() - pred.mean()) < 4 * se + 1e-3, (col, emp.mean(), pred.mean())
    lp = C.log_prob(s, s[["fluid_ml", "nee_max"]].to_numpy(), s["attending"].to_numpy())
    assert np.isfinite(lp).all()


def test_practice_variation_and_unsafe_share() -> None:
    st = C.attendings()
    assert st.map_target.std() > 1.0 and st.fluid_lib.std() > 0.1
    assert (st.unsafe > 0.03).all() and (st.unsafe < 0.2).all()
    # an overloaded, hypoxic patient still gets fluids sometimes (unsafe over-treatment), never with zero density
    wet = _state(fluid_cum=8000.0, spo2=89.0, pf_ratio=150.0)
    lp = C.log_prob(wet, np.array([[1500.0, 0.0]]), [0])
    assert np.isfinite(lp).all()
    n = 20000
    a = C.sample(pd.concat([wet] * n, ignore_index=True), np.zeros(n, int), np.random.default_rng(1))
    assert 0.01 < np.mean(a[:, 0] >= 1000) < 0.2


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="attending"):
        C.log_prob(_state(), np.zeros((1, 2)), [C.N_ATTENDINGS])
    with pytest.raises(ValueError, match=">= 0"):
        C.log_prob(_state(), np.array([[-1.0, 0.0]]), [0])
    with pytest.raises(ValueError, match="missing"):
        C.log_prob(_state().drop(columns=["map"]), np.zeros((1, 2)), [0])


def test_behaviour_policy_interface_marginal_density() -> None:
    pol = C.BehaviourPolicy()
    obs = _state()[list(pol.feature_names)].to_numpy()
    lp = pol.log_prob(obs, np.zeros((1, 2)))
    per = [np.exp(C.log_prob(obs, np.zeros((1, 2)), [i]))[0] for i in range(C.N_ATTENDINGS)]
    assert np.isclose(np.exp(lp[0]), np.mean(per))
    a = pol.act(np.repeat(obs, 5, axis=0), np.random.default_rng(0))
    assert a.shape == (5, 2) and (a >= 0).all()
    assert np.array_equal(pol.act(obs), pol.act(obs))


def test_practice_scales_every_dose_and_its_density() -> None:
    """Scaled clinicians draw the same decisions at a quarter of the dose: the same zeros, each non-zero dose a
    quarter (to the written precision), and the density of the scaled dose is the original's over the Jacobian."""
    quarter = C.Practice(fluid_scale=0.25, vasopressor_scale=0.25)
    n = 5000
    s = pd.concat([_state()] * n, ignore_index=True)
    att = np.arange(n) % C.N_ATTENDINGS
    demo, low = C.sample(s, att, np.random.default_rng(3)), C.sample(s, att, np.random.default_rng(3), quarter)
    assert np.array_equal(demo > 0, low > 0)
    unclipped = demo[:, 0] < 4000
    assert np.abs(low[unclipped, 0] - 0.25 * demo[unclipped, 0]).max() <= 10.0
    assert np.abs(low[:, 1] - 0.25 * demo[:, 1]).max() <= 0.001
    acts = np.array([[500.0, 0.1], [500.0, 0.0], [0.0, 0.0]])
    three = pd.concat([_state()] * 3, ignore_index=True)
    for a in (0, 5):
        lp_demo = C.log_prob(three, acts, np.full(3, a))
        lp_low = C.log_prob(three, 0.25 * acts, np.full(3, a), quarter)
        assert np.allclose(lp_low - lp_demo, -np.log(0.25) * (acts > 0).sum(axis=1))


def test_practice_spreads_doses_and_styles_around_the_same_practice() -> None:
    st, wide = C.attendings(), C.attendings(C.Practice(style_spread=2.0))
    assert np.allclose(wide.fluid_lib, 2.0 * st.fluid_lib) and np.allclose(wide.nee_dose, 2.0 * st.nee_dose)
    assert np.array_equal(wide.map_target, st.map_target) and np.array_equal(wide.unsafe, st.unsafe)
    n = 20000
    s = pd.concat([_state()] * n, ignore_index=True)
    sd = [np.log(a[a[:, 0] > 0, 0]).std() for a in (
        C.sample(s, np.zeros(n, int), np.random.default_rng(4), p) for p in (C.DEMO, C.Practice(dose_spread=1.5)))]
    assert 1.3 < sd[1] / sd[0] < 1.6


@pytest.mark.parametrize("field", ["fluid_scale", "vasopressor_scale", "dose_spread", "style_spread"])
def test_practice_rejects_non_positive_values(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        C.Practice(**{field: 0.0})
    with pytest.raises(ValueError, match=field):
        C.Practice(**{field: float("nan")})


def test_simulated_stays_are_logged_by_the_configured_clinicians() -> None:
    quarter = C.Practice(fluid_scale=0.25, vasopressor_scale=0.25)
    res = E.simulate(40, np.random.default_rng(12), first_index=0, world=E.WorldConfig(clinicians=quarter),
                     observer=E.cohort_observer())
    s = res.steps
    acts, att = s[["fluid_ml", "nee_max"]].to_numpy(), s["attending"].to_numpy()
    nonzero = acts[:, 0] > 0
    lp_low, lp_demo = C.log_prob(s, acts, att, quarter), C.log_prob(s, acts, att)
    assert lp_low[nonzero].mean() - lp_demo[nonzero].mean() > 1.0
