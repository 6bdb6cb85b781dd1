"""CPO/TRPO: every case of the pure step against analytic answers and a full-dimensional QCQP, the line search,
and training on the toy CMDP (TRPO violates the limits, CPO keeps them)."""

from __future__ import annotations

import math

import cvxpy as cp
import numpy as np
import pytest
import torch

from ogsrl.agents import cpo, onpolicy as op, toy_cmdp
from ogsrl.agents.cpo import CPOCase, cpo_step

DELTA = 0.5  # with H = I the trust region is the unit disc


def _step(g: list[float], b: list[list[float]], c: list[float], h: np.ndarray | None = None,
          delta: float = DELTA) -> tuple[np.ndarray, CPOCase]:
    g_, b_ = np.array(g, float), np.array(b, float).reshape(len(c), len(g))
    hinv = np.linalg.inv(np.eye(len(g)) if h is None else h)
    return cpo_step(g_, b_, np.array(c, float), hinv @ g_, (hinv @ b_.T).T, delta)


def test_feasible_inactive_constraint_gives_the_natural_step() -> None:
    h = np.diag([2.0, 0.5])
    x, case = _step([1.0, 1.0], [[1.0, 0.0]], [-5.0], h)
    natural = np.sqrt(2 * DELTA / (np.array([1.0, 1.0]) @ np.linalg.solve(h, [1.0, 1.0]))) * np.linalg.solve(h, [1, 1])
    assert case == CPOCase.FEASIBLE
    np.testing.assert_allclose(x, natural)
    assert 0.5 * x @ h @ x == pytest.approx(DELTA)


def test_no_constraint_and_flat_cost_gradient_give_the_natural_step() -> None:
    x, case = _step([3.0, 4.0], [], [])
    assert case == CPOCase.NO_CONSTRAINT
    np.testing.assert_allclose(x, [0.6, 0.8])
    x, case = _step([3.0, 4.0], [[0.0, 0.0]], [-0.1])
    assert case == CPOCase.NO_CONSTRAINT
    np.testing.assert_allclose(x, [0.6, 0.8])


def test_feasible_active_constraint_gives_the_projected_step() -> None:
    # max x₁ on the unit disc with x₁ + x₂ ≤ 0.5: the disc meets the line at x₁ = (0.5 + √1.75)/2
    x, case = _step([1.0, 0.0], [[1.0, 1.0]], [-0.5])
    assert case == CPOCase.PARTIAL
    x1 = (0.5 + math.sqrt(1.75)) / 2
    np.testing.assert_allclose(x, [x1, 0.5 - x1], atol=1e-9)


def test_infeasible_but_recoverable_steps_onto_the_constraint() -> None:
    # currently violated by 0.3: x₁ + x₂ ≤ −0.3 still cuts the unit disc
    x, case = _step([1.0, 0.0], [[1.0, 1.0]], [0.3])
    assert case == CPOCase.INFEASIBLE
    x1 = (-0.3 + math.sqrt(2 - 0.09)) / 2
    np.testing.assert_allclose(x, [x1, -0.3 - x1], atol=1e-9)


def test_infeasible_gives_the_recovery_step() -> None:
    # x₁ + x₂ ≤ −2 misses the unit disc: go as far against b as the region allows, −√(2δ/s)·H⁻¹b
    x, case = _step([1.0, 0.0], [[1.0, 1.0]], [2.0])
    assert case == CPOCase.RECOVERY
    np.testing.assert_allclose(x, [-1 / math.sqrt(2), -1 / math.sqrt(2)], atol=1e-9)
    # two constraints, jointly infeasible: minimise the worst violation (symmetric answer x = (−1, 0)·…)
    x, case = _step([0.0, 1.0], [[-1.0, 1.0], [-1.0, -1.0]], [2.0, 2.0])
    assert case == CPOCase.RECOVERY
    np.testing.assert_allclose(x, [1.0, 0.0], atol=1e-5)


def _full_qcqp(g: np.ndarray, b: np.ndarray, c: np.ndarray, h: np.ndarray, delta: float) -> np.ndarray:
    x = cp.Variable(len(g))
    cp.Problem(cp.Maximize(g @ x), [0.5 * cp.quad_form(x, h) <= delta, b @ x + c <= 0]).solve(solver=cp.CLARABEL)
    return np.asarray(x.value)


def _worst_violation(b: np.ndarray, c: np.ndarray, h: np.ndarray, delta: float) -> float:
    x, t = cp.Variable(b.shape[1]), cp.Variable()
    cp.Problem(cp.Minimize(t), [b @ x + c <= t, 0.5 * cp.quad_form(x, h) <= delta]).solve(solver=cp.CLARABEL)
    return float(t.value)


@pytest.mark.parametrize("n_constraints", [1, 2, 3])
def test_several_constraints_match_the_full_dimensional_qcqp(n_constraints: int) -> None:
    rng = np.random.default_rng(n_constraints)
    seen = set()
    for _ in range(40):
        p = 6
        a = rng.normal(size=(p, p))
        h = a @ a.T + 0.5 * np.eye(p)
        g, b, c = rng.normal(size=p), rng.normal(size=(n_constraints, p)), 0.3 * rng.normal(size=n_constraints)
        hinv = np.linalg.inv(h)
        x, case = cpo_step(g, b, c, hinv @ g, (hinv @ b.T).T, 0.05)
        seen.add(case)
        assert 0.5 * x @ h @ x <= 0.05 * (1 + 1e-5)
        if case == CPOCase.RECOVERY:
            assert np.max(b @ x + c) == pytest.approx(_worst_violation(b, c, h, 0.05), abs=1e-5)
        else:
            np.testing.assert_allclose(x, _full_qcqp(g, b, c, h, 0.05), atol=2e-4)
    assert {CPOCase.RECOVERY, CPOCase.INFEASIBLE, CPOCase.PARTIAL} <= seen


def test_closed_form_agrees_with_the_subspace_qcqp() -> None:
    rng = np.random.default_rng(9)
    for _ in range(30):
        a = rng.normal(size=(5, 5))
        h = a @ a.T + 0.3 * np.eye(5)
        g, b, c = rng.normal(size=5), rng.normal(size=(1, 5)), 0.2 * rng.normal(size=1)
        hinv = np.linalg.inv(h)
        x, case = cpo_step(g, b, c, hinv @ g, (hinv @ b.T).T, 0.05)
        if case not in (CPOCase.PARTIAL, CPOCase.INFEASIBLE):
            continue
        basis = np.vstack([hinv @ g, hinv @ b[0]])
        lmat, wmat = cpo.whiten(np.vstack([g, b]) @ basis.T)
        np.testing.assert_allclose(x, cpo.subspace_qcqp(lmat, wmat, basis, c, math.sqrt(0.1)), atol=1e-5)


def test_line_search_backtracks_on_kl_and_on_cost() -> None:
    def make(kl_scale: float, cost_scale: float, gain: float = 1.0):  # noqa: ANN202
        return lambda f: (gain * f, np.array([cost_scale * f, 0.0]), kl_scale * f * f)

    ls = dict(delta=0.01, backtrack_coef=0.8, max_backtracks=10)
    assert cpo.line_search(make(0.005, 0.0), np.array([1.0, 1.0]), require_gain=True, **ls) == (1.0, 0)
    frac, k = cpo.line_search(make(0.02, 0.0), np.array([1.0, 1.0]), require_gain=True, **ls)
    assert k == 2 and frac == pytest.approx(0.64)  # 0.02·0.8² > 0.01 ≥ 0.02·0.8⁴… first fit at k = 2
    frac, k = cpo.line_search(make(0.0, 1.0), np.array([0.5, 1.0]), require_gain=True, **ls)
    assert k == 4 and frac == pytest.approx(0.8**4)  # Δcost = frac ≤ slack 0.5 first at 0.8⁴
    assert cpo.line_search(make(0.0, 1.0), np.array([-0.2, 1.0]), require_gain=False, **ls) == (0.0, 11)
    assert cpo.line_search(make(0.0, -1.0), np.array([-0.2, 1.0]), require_gain=False, **ls) == (1.0, 0)
    assert cpo.line_search(make(0.0, 0.0, gain=-1.0), np.zeros(2), require_gain=True, **ls) == (0.0, 11)


def test_line_search_lets_a_lesser_violation_rise_but_not_the_worst() -> None:
    ls = dict(delta=1.0, require_gain=False, backtrack_coef=0.5, max_backtracks=3)
    slack = np.array([-0.1, -2.0, 0.3])  # violated by 0.1 and by 2.0; the third has 0.3 to spare
    # the recovery step lowers the worst (−1·f) while the lesser violation rises (+1·f ≤ 2.0 − 0.1 is fine)
    assert cpo.line_search(lambda f: (0.0, np.array([f, -f, 0.0]), 0.0), slack, **ls) == (1.0, 0)
    # the worst may not grow, and a satisfied constraint may use its slack only
    assert cpo.line_search(lambda f: (0.0, np.array([0.0, f, 0.0]), 0.0), slack, **ls) == (0.0, 4)
    assert cpo.line_search(lambda f: (0.0, np.array([0.0, -f, f]), 0.0), slack, **ls) == (0.25, 2)


LIMITS = np.array([1.0, 1.5])
ENV = toy_cmdp.make_env(horizon=5, hazard=0.1)


def _fit(constrained: bool, iterations: int, seed: int = 0):  # noqa: ANN202
    """(actor, metrics, history, evaluation of the trained actor in 256 fresh toy episodes)"""
    cfg = cpo.Config(iterations=iterations, num_envs=256, horizon=5, critic_hidden=(16, 16), target_kl=0.02)
    init = ENV(200, 0).reset(seed=0)[0]
    actor = op.fresh_actor(toy_cmdp.FEATURES, (16, 16), 1, init, seed)
    actor, metrics, history = cpo.train(cfg, ENV, toy_cmdp.FEATURES, toy_cmdp.COSTS, LIMITS, actor, seed,
                                        constrained=constrained)
    ev = op.evaluate(ENV(256, 99), actor, np.random.default_rng(99), 5, 99, toy_cmdp.COSTS)
    return actor, metrics, history, ev


def test_trpo_improves_and_violates_the_limits(one_thread: None) -> None:
    _, metrics, history, ev = _fit(constrained=False, iterations=30)
    assert len(history) == 30 and {h["case"] for h in history} == {4.0} and metrics["train/iterations"] == 30
    assert ev["return"] > history[0]["reward_return"] + 1.5
    assert ev["cost_return/fluid_load"] > LIMITS[0] + 0.7


def test_cpo_improves_within_the_limits(one_thread: None) -> None:
    _, metrics, history, ev = _fit(constrained=True, iterations=40)
    assert {"step", "iteration", "reward_return", "cost_return/fluid_load", "kl", "case", "seconds"} <= set(history[0])
    assert metrics["train/iterations_per_s"] > 0
    assert ev["return"] > history[0]["reward_return"] + 0.7
    late = history[-15:]
    for j, name in enumerate(toy_cmdp.COSTS):
        assert ev[f"cost_return/{name}"] <= LIMITS[j] + 0.12
        assert np.mean([h[f"cost_return/{name}"] for h in late]) <= LIMITS[j] + 0.05
    assert all(h["kl"] <= 0.02 for h in history)


def test_same_seed_same_weights(one_thread: None) -> None:
    a, _, ha, _ = _fit(True, 3, seed=5)
    b, _, hb, _ = _fit(True, 3, seed=5)
    c, _, _, _ = _fit(True, 3, seed=6)
    for (k, ta), tb, tc in zip(a.net.state_dict().items(), b.net.state_dict().values(), c.net.state_dict().values()):
        assert torch.equal(ta, tb), k
    assert not all(torch.equal(ta, tc) for ta, tc in zip(a.net.state_dict().values(), c.net.state_dict().values()))
    assert [h["reward_return"] for h in ha] == [h["reward_return"] for h in hb]


@pytest.mark.parametrize("field,value", [("target_kl", 0.0), ("lam", 1.5), ("num_envs", 0), ("hidden", ()),
                                         ("backtrack_coef", 1.0), ("cg_damping", -1.0), ("components", 0),
                                         ("cost_confidence", 0.4), ("cost_confidence", 1.0), ("confirm", -1),
                                         ("forecast_window", -1)])
def test_bad_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        cpo.Config(**{field: value})


def test_forecast_bias_is_the_mean_recent_under_forecast_never_negative() -> None:
    bias = cpo.ForecastBias(2, window=3)
    realised = [np.array([5.0, 1.0]), np.array([5.2, 0.8]), np.array([5.1, 0.9]), np.array([5.3, 1.0]),
                np.array([5.0, 1.0])]
    forecasts = [np.array([5.0, 1.1]), np.array([4.9, 1.0]), np.array([5.0, 1.0]), np.array([4.8, 1.0])]
    for i, r in enumerate(realised):
        bias.observe(r)
        if i == 2:  # two errors recorded so far: no correction yet
            np.testing.assert_array_equal(bias.bias, [0.0, 0.0])
        if i < len(forecasts):
            bias.predict(forecasts[i])
    # errors (realised[k+1] − forecast[k]): (0.2, −0.3), (0.2, −0.1), (0.3, 0.0), (0.2, 0.0); the last three count
    np.testing.assert_allclose(bias.bias, [(0.2 + 0.3 + 0.2) / 3, 0.0])
    bias.observe(np.array([9.0, 9.0]))  # no forecast pending: nothing recorded
    np.testing.assert_allclose(bias.bias, [(0.2 + 0.3 + 0.2) / 3, 0.0])
    assert np.array_equal(cpo.ForecastBias(1, window=0).bias, [0.0])


def test_cpo_logs_the_forecast_bias_and_confirms_its_kept_iterate(one_thread: None) -> None:
    _, metrics, history, _ = _fit(constrained=True, iterations=8)
    assert all(h["forecast_bias/fluid_load"] >= 0 for h in history)
    assert [h["forecast_bias/fluid_load"] for h in history[:3]] == [0.0, 0.0, 0.0]
    assert metrics["train/confirmed_candidates"] == 5.0
    assert 0 <= metrics["train/confirmed_feasible"] <= 5
