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


@pytest.mark.parametrize("attending", [0, 7])
def test_samples_match_density_on_bins(attending: int) -> None:
    n = 40000
    s = pd.concat([_state()] * n, ignore_index=True)
    a = C.sample(s, np.full(n, attending), np.random.default_rng(0))
    one = _state()
    # point mass at (0, 0)
    p00 = np.exp(C.log_prob(one, np.zeros((1, 2)), [attending]))[0]
    emp = np.mean((a[:, 0] == 0) & (a[:, 1] == 0))
    assert abs(emp - p00) < 4 * np.sqrt(p00 * (1 - p00) / n)
    # fluid in bins with no vasopressor: ∫ density over the bin (trapezoid on a fine grid)
    for lo, hi in ((100, 400), (400, 800), (800, 2000)):
        x = np.linspace(lo, hi, 2001)
        acts = np.stack([x, np.zeros_like(x)], axis=1)
        dens = np.exp(C.log_prob(pd.concat([one] * len(x), ignore_index=True), acts, np.full(len(x), attending)))
        p = np.trapezoid(dens, x)
        emp = np.mean((a[:, 0] >= lo) & (a[:, 0] < hi) & (a[:, 1] == 0))
        assert abs(emp - p) < 4 * np.sqrt(p * (1 - p) / n) + 0.004, (lo, hi, emp, p)
    # vasopressor dose bins with no fluid
    for lo, hi in ((0.02, 0.08), (0.08, 0.3)):
        x = np.linspace(lo, hi, 2001)
        acts = np.stack([np.zeros_like(x), x], axis=1)
        dens = np.exp(C.log_prob(pd.concat([one] * len(x), ignore_index=True), acts, np.full(len(x), attending)))
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
