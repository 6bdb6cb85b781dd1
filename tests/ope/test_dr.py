"""DR / WDR on the tiny tabular MDP (tests/ope/tabular.py): exact with the true critic, IS without one."""

from __future__ import annotations

import numpy as np
import pytest

from ogsrl.ope import dr, wis
from ogsrl.ope.estimate import pad_by_stay
from tests.ope import tabular as tab


def _episodes(n: int = 300, seed: int = 0, critic: str = "true") -> tuple[wis.Episodes, np.ndarray]:
    d = tab.logged(n, seed)
    q_true, v_true = tab.exact_q()
    if critic == "true":
        q, v = q_true[d["step"], d["x"], d["g"], 0], v_true[d["step"], d["x"], 0]
    else:  # a wrong critic (V = E_{π_e} Q still, as the stage computes it)
        q, v = 0.7 + 0.3 * d["g"] - 0.2 * d["x"], 0.7 + 0.3 * tab.P_E[d["x"]] - 0.2 * d["x"]
    ep = pad_by_stay(d["stay"], {"r": d["r"], "q": q, "v": v, "lr": d["log_ratio"]})
    return ep, v_true[0, d["x"][d["step"] == 0], 0]


@pytest.mark.parametrize("fn", [dr.dr, dr.wdr])
def test_exact_with_a_perfect_critic(fn) -> None:  # type: ignore[no-untyped-def]
    ep, v0 = _episodes()
    v = ep.values
    est = fn(v["r"], v["q"], v["v"], v["lr"], ep.mask, 1.0, np.random.default_rng(0), n_boot=200)
    assert est.value == pytest.approx(v0.mean(), abs=1e-9)  # deterministic MDP: every stay's term is V(s_0)
    assert est.ci_high - est.ci_low < 1.3 * 2 * 1.96 * v0.std() / np.sqrt(len(v0))  # only the spread of s_0 left
    assert est.ess == pytest.approx(wis.ess(np.where(ep.mask, v["lr"], 0).sum(axis=1)))


def test_unbiased_with_a_wrong_critic_and_wdr_is_pdwis_without_one() -> None:
    _, v_true = tab.exact_q()
    truth = v_true[0, :, 0].mean()  # x_0 ~ Bernoulli(½)
    values = []
    for seed in range(30):
        ep, _ = _episodes(200, seed, critic="wrong")
        v = ep.values
        values.append(dr.dr(v["r"], v["q"], v["v"], v["lr"], ep.mask, 1.0, np.random.default_rng(0),
                            n_boot=100).value)
    assert np.mean(values) == pytest.approx(truth, abs=3 * np.std(values) / np.sqrt(30))
    ep, _ = _episodes(200, 1)
    v, z = ep.values, np.zeros_like(ep.values["r"])
    got = dr.wdr(v["r"], z, z, v["lr"], ep.mask, 1.0, np.random.default_rng(0), n_boot=100).value
    assert got == pytest.approx(wis.pdwis(v["r"], v["lr"], ep.mask, 1.0, np.random.default_rng(0),
                                          n_boot=100).value)


def test_wis_of_the_behaviour_policy_is_the_on_policy_mean() -> None:
    d = tab.logged(100, 3)
    ep = pad_by_stay(d["stay"], {"r": d["r"]})
    zero = np.zeros_like(ep.values["r"])  # π_e = π_b: every log-ratio 0
    est = wis.wis(ep.values["r"], zero, ep.mask, 1.0, np.random.default_rng(0), n_boot=200)
    assert est.value == pytest.approx(ep.values["r"].sum(axis=1).mean()) and est.ess == pytest.approx(100)


def test_zero_density_and_bad_critic() -> None:
    ep, _ = _episodes(50)
    v = ep.values
    lr = v["lr"].copy()
    lr[0, 1] = -np.inf  # π_e cannot take stay 0's second action: its weight is 0 from there on
    est = dr.dr(v["r"], v["q"], v["v"], lr, ep.mask, 1.0, np.random.default_rng(0), n_boot=100)
    assert np.isfinite(est.value)
    with pytest.raises(ValueError, match="every trajectory has weight 0"):
        dr.wdr(v["r"], v["q"], v["v"], np.full_like(lr, -np.inf), ep.mask, 1.0, np.random.default_rng(0))
    bad = v["q"].copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"critic values not finite in trajectories \[3\]"):
        dr.dr(v["r"], bad, v["v"], v["lr"], ep.mask, 1.0, np.random.default_rng(0))
