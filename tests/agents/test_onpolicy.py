"""Shared on-policy machinery: GAE on masked rollouts, rollouts in a frozen-after-termination env, exact
log-probs of the shared actor, the mixture trust-region metric, the trust-region linear algebra and the progress
log."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from ogsrl.agents import common, onpolicy as op, toy_cmdp
from ogsrl.agents.actor import HurdleActor

NAMES = toy_cmdp.FEATURES


def _policy(seed: int = 0, hidden: tuple[int, ...] = (8, 8), components: int = 1) -> HurdleActor:
    states = np.random.default_rng(1).random((50, 2))
    return op.fresh_actor(NAMES, hidden, components, states, seed)


def test_gae_and_returns_exact_on_a_masked_rollout() -> None:
    g, lam = 0.9, 0.5
    # row 0 runs 3 steps and is truncated; row 1 terminates after step 1 (frozen at step 2, junk reward there);
    # row 2 is still running at the cap (its last step bootstraps from V(s_3))
    active = np.array([[1, 1, 1], [1, 1, 1], [1, 0, 1]], dtype=bool)  # (T, B)
    alive = np.array([[1, 1, 1], [1, 0, 1], [0, 0, 1]], dtype=bool)
    rew = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 99.0, 8.0]])
    v = np.array([[0.5, 1.0, 1.5], [2.0, 2.5, 3.0], [3.5, 4.0, 4.5], [5.0, 6.0, 7.0]])  # (T+1, B)
    adv, target = op.gae(rew[..., None], v[..., None], active, alive, g, lam)
    adv, target = adv[..., 0], target[..., 0]
    a2 = 7.0 - 3.5
    a1 = 4.0 + g * 3.5 - 2.0 + g * lam * a2
    a0 = 1.0 + g * 2.0 - 0.5 + g * lam * a1
    np.testing.assert_allclose(adv[:, 0], [a0, a1, a2])
    b1 = 5.0 - 2.5
    np.testing.assert_allclose(adv[:, 1], [2.0 + g * 2.5 - 1.0 + g * lam * b1, b1, 0.0])
    c2 = 8.0 + g * 7.0 - 4.5
    c1 = 6.0 + g * 4.5 - 3.0 + g * lam * c2
    np.testing.assert_allclose(adv[:, 2], [3.0 + g * 3.0 - 1.5 + g * lam * c1, c1, c2])
    np.testing.assert_allclose(target, (adv + v[:-1]) * active)
    np.testing.assert_allclose(op.episode_returns(rew, active), [12.0, 7.0, 17.0])
    lam_one, _ = op.gae(rew[..., None], np.zeros((4, 3, 1)), active, alive, 1.0, 1.0)  # V = 0, γ = λ = 1
    np.testing.assert_allclose(lam_one[0, :, 0], [12.0, 7.0, 17.0])  # advantage = the return to go


def test_collect_masks_finished_rows_and_freezes_them() -> None:
    env = toy_cmdp.DoseCMDP(64, horizon=6, hazard=0.3, seed=0)
    ro = op.collect(env, _policy(), np.random.default_rng(0), horizon=6, seed=3, n_costs=2)
    assert ro.obs.shape[1:] == (64, 2) and ro.act.shape[1:] == (64, 2) and ro.cost.shape[1:] == (64, 2)
    assert not ro.alive[-1].any() and ro.active[0].all()
    np.testing.assert_array_equal(ro.active[1:], ro.alive[:-1])  # running after t ⇔ running before t + 1
    assert (ro.rew[~ro.active] == 0).all() and (ro.cost[~ro.active] == 0).all()
    for t in range(1, ro.obs.shape[0] - 1):  # a finished row keeps its observation
        done = ~ro.active[t]
        np.testing.assert_array_equal(ro.obs[t + 1][done], ro.obs[t][done])
    y = common.scale_actions(ro.act)
    expected = ((0.5 + ro.obs[0, :, 0]) * y[..., 0] + y[..., 1]) * ro.active
    np.testing.assert_allclose(ro.rew, expected, atol=1e-5)
    full = op.collect(toy_cmdp.DoseCMDP(8, horizon=4, hazard=0.0), _policy(), np.random.default_rng(0), 10, 1, 2)
    assert full.rew.shape[0] == 4 and full.active.all()  # stops when every episode ended (truncated at 4)


def test_log_prob_is_finite_at_zero_dose_and_differentiable() -> None:
    pol = _policy()
    obs = np.random.default_rng(0).random((5, 2))
    acts = np.array([[0.0, 0.0], [0.0, 0.2], [500.0, 0.0], [10000.0, 5.0], [1.0, 0.001]])
    lp = common.hurdle_log_prob(*pol.params(obs), acts)
    assert lp.shape == (5,) and np.isfinite(lp).all()
    params = pol(torch.as_tensor(obs))
    y = torch.as_tensor(common.scale_actions(acts))
    torch_lp = op.log_prob_scaled(params, y)
    torch_lp.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in pol.net.parameters() if p.grad is not None)
    log_jac = np.where(acts > 0, -np.log((common.ACTION_RESOLUTION + acts) * common.LOG_SPAN), 0.0).sum(1)
    np.testing.assert_allclose(torch_lp.detach().numpy() + log_jac, lp, rtol=1e-5, atol=1e-5)


def test_metric_is_the_hurdle_kl_when_truncation_is_negligible() -> None:
    def params(l0: float, mu: float, ls: float) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(1, 1), torch.full((1, 1, 2), l0, dtype=torch.float64),
                torch.full((1, 1, 2), mu, dtype=torch.float64), torch.full((1, 1, 2), ls, dtype=torch.float64))

    old, new = params(0.3, 0.5, np.log(0.05)), params(-0.2, 0.53, np.log(0.06))
    assert float(op.hurdle_kl(old, old)) == 0.0
    metric = float(op.hurdle_kl(old, new))
    rng = np.random.default_rng(0)
    n = 200_000
    np_old = [np.repeat(t.numpy(), n, axis=0) for t in old]
    np_new = [np.repeat(t.numpy(), n, axis=0) for t in new]
    a = common.hurdle_sample(*np_old, rng)
    ratio = common.hurdle_log_prob(*np_old, a) - common.hurdle_log_prob(*np_new, a)
    assert abs(ratio.mean() - metric) < 4 * ratio.std() / np.sqrt(n)


def test_mixture_metric_bounds_the_mixture_kl_from_above() -> None:
    pol, other = _policy(seed=0, components=3), _policy(seed=1, components=3)
    obs = torch.as_tensor(np.random.default_rng(2).random((4, 2)))
    with torch.no_grad():
        old, new = pol(obs), other(obs)
        assert torch.allclose(op.hurdle_kl(old, old), torch.zeros(4, dtype=torch.float64))
        metric = op.hurdle_kl(old, new).numpy()
    rng = np.random.default_rng(0)
    n = 50_000
    for row in range(4):
        p_old = [np.repeat(t[row:row + 1].double().numpy(), n, axis=0) for t in old]
        p_new = [np.repeat(t[row:row + 1].double().numpy(), n, axis=0) for t in new]
        a = common.hurdle_sample(*p_old, rng)
        kl = common.hurdle_log_prob(*p_old, a) - common.hurdle_log_prob(*p_new, a)
        assert metric[row] >= kl.mean() - 4 * kl.std() / np.sqrt(n)


def test_fisher_product_is_the_metric_hessian_and_cg_solves() -> None:
    pol = _policy(hidden=(3,), components=2)
    x = torch.as_tensor(np.random.default_rng(0).random((40, 2)))
    params = op.actor_params(pol)
    old = tuple(t.detach() for t in pol(x))
    theta = torch.nn.utils.parameters_to_vector(params).detach()

    def metric(flat: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(pol, _unflatten(pol, flat), (x,))
        return op.hurdle_kl(old, out).mean()

    hess = torch.autograd.functional.hessian(metric, theta.double()).double()
    product = op.fisher_product(pol, x, old, damping=0.1)
    v = torch.randn(len(theta), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    np.testing.assert_allclose(product(v).numpy(), (hess @ v + 0.1 * v).numpy(), rtol=1e-4, atol=1e-6)
    eig = torch.linalg.eigvalsh(hess)
    assert eig.min() > -1e-7 * eig.max()  # PSD up to round-off
    a = torch.randn(6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    spd = a @ a.T + torch.eye(6, dtype=torch.float64)
    rhs = torch.arange(6, dtype=torch.float64)
    np.testing.assert_allclose(op.conjugate_gradient(lambda u: spd @ u, rhs, 20).numpy(),
                               torch.linalg.solve(spd, rhs).numpy(), rtol=1e-6, atol=1e-8)


def _unflatten(pol: HurdleActor, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for name, p in pol.named_parameters():
        out[name] = flat[i:i + p.numel()].reshape(p.shape).to(p.dtype)
        i += p.numel()
    return out


def test_fit_inputs_are_checked() -> None:
    pol = _policy()
    with pytest.raises(ValueError, match="cost_limits"):
        op.check_fit_inputs(NAMES, ("a", "b"), np.array([1.0]), pol)
    with pytest.raises(ValueError, match="cost_limits"):
        op.check_fit_inputs(NAMES, ("a",), np.array([-1.0]), pol)
    with pytest.raises(ValueError, match="initial actor reads 2 features"):
        op.check_fit_inputs(("a", "b", "c"), ("a",), np.array([1.0]), pol)


def test_progress_logs_every_k_iterations_and_a_summary(caplog: pytest.LogCaptureFixture) -> None:
    progress = op.ProgressLog("gmb_cpo seed 1", 7, ("cost_spo2_low",), np.array([2.0]), every=3)
    rows = [{"iteration": float(i), "reward_return": -10.0 + i, "cost_return/cost_spo2_low": 2.5, "kl": 0.01}
            for i in range(7)]
    with caplog.at_level(logging.INFO, logger="ogsrl.agents.onpolicy"):
        for row in rows:
            progress(row)
        progress.summary(rows)
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split("  ")[0] for line in lines[:3]] == ["gmb_cpo seed 1: it 3/7", "gmb_cpo seed 1: it 6/7",
                                                           "gmb_cpo seed 1: it 7/7"]
    assert "cost spo2_low 2.50/2.00" in lines[0] and "ETA" in lines[0]
    assert lines[3].startswith("gmb_cpo seed 1: 7 iterations in") and len(lines) == 4


def test_feasible_iterate_keeps_the_best_feasible_else_the_least_violating() -> None:
    actor = _policy()
    keeper = op.FeasibleIterate(np.array([1.0, 4.0]))
    weights = []
    for it, (ret, cost) in enumerate([(-50.0, [1.2, 3.0]), (-60.0, [0.9, 4.0]), (-40.0, [0.5, 4.5]),
                                      (-55.0, [1.0, 3.9])]):
        with torch.no_grad():
            next(actor.net.parameters()).add_(1.0)
        weights.append(next(actor.net.parameters()).detach().clone())
        keeper.offer(actor, it, ret, np.array(cost), np.zeros(2))
    out = keeper.restore(actor)
    assert out == {"train/selected_iteration": 3.0, "train/selected_feasible": 1.0, "train/selected_return": -55.0}
    torch.testing.assert_close(next(actor.net.parameters()), weights[3])
    # nothing feasible: the smallest total relative violation (0.1/1 + 0 < 0 + 1/4)
    keeper = op.FeasibleIterate(np.array([1.0, 4.0]))
    keeper.offer(actor, 0, -10.0, np.array([1.0, 5.0]), np.zeros(2))
    keeper.offer(actor, 1, -90.0, np.array([1.1, 4.0]), np.zeros(2))
    assert keeper.restore(actor)["train/selected_iteration"] == 1.0
    with pytest.raises(RuntimeError, match="no iterate"):
        op.FeasibleIterate(np.array([1.0])).restore(actor)


def test_feasible_iterate_judges_the_upper_confidence_bound() -> None:
    """At 95 % a batch mean 0.2 under the limit with se 0.15 (bound 0.2467 over) is not feasible; the iterate whose
    bound clears the limit is kept although its return is lower."""
    actor = _policy()
    keeper = op.FeasibleIterate(np.array([4.0]), confidence=0.95)
    keeper.offer(actor, 0, -50.0, np.array([3.8]), np.array([0.15]))
    keeper.offer(actor, 1, -70.0, np.array([3.7]), np.array([0.15]))
    out = keeper.restore(actor)
    assert (out["train/selected_iteration"], out["train/selected_feasible"]) == (1.0, 1.0)
    point = op.FeasibleIterate(np.array([4.0]), confidence=0.5)
    point.offer(actor, 0, -50.0, np.array([3.8]), np.array([0.15]))
    point.offer(actor, 1, -70.0, np.array([3.7]), np.array([0.15]))
    assert point.restore(actor)["train/selected_iteration"] == 0.0


def test_feasible_iterate_confirms_the_best_candidates_on_fresh_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """The iterate whose own batch looked best (return −40, cost 3.9) costs 4.3 on a fresh batch: the kept one is the
    best of the fresh measurements that stay within the limit, and its fresh figures are what is reported."""
    actor = _policy()
    fresh = {0: (-52.0, 3.5), 1: (-45.0, 4.3), 2: (-47.0, 3.8), 3: (-41.0, 4.6)}  # iteration → fresh (return, cost)

    def fake_evaluate(env, act, rng, horizon, seed, cost_names, gamma=1.0):  # noqa: ANN001, ANN202
        ret, cost = fresh[int(next(act.net.parameters()).detach().flatten()[0].round().item()) % 10]
        return {"return": ret, "cost_return/c": cost, "cost_return_se/c": 0.0, "episode_length": 5.0}

    monkeypatch.setattr(op, "evaluate", fake_evaluate)
    keeper = op.FeasibleIterate(np.array([4.0]), confidence=0.5, confirm=2)
    with torch.no_grad():
        first = next(actor.net.parameters())
        first.flatten()[0] = 0.0
        for it, (ret, cost) in enumerate([(-50.0, 3.5), (-40.0, 3.9), (-44.0, 3.95)]):
            first.flatten()[0] = float(it)
            keeper.offer(actor, it, ret, np.array([cost]), np.array([0.0]))
        first.flatten()[0] = 3.0  # the final iterate: measured once (fresh[3], infeasible), then not kept
    seeds = iter(range(100))
    out = keeper.finish(None, actor, np.random.default_rng(0), 5, lambda: next(seeds), ("c",), 1.0, 3, "t")
    assert out["train/selected_iteration"] == 2.0 and out["train/selected_feasible"] == 1.0
    assert out["train/selected_return"] == -47.0 and out["train/selected_cost_bound/c"] == 3.8
    assert (out["train/confirmed_candidates"], out["train/confirmed_feasible"]) == (2.0, 1.0)
    assert next(actor.net.parameters()).flatten()[0].item() == 2.0


def test_cost_return_stats_and_upper_bound() -> None:
    per_episode = np.array([[0.0, 2.0], [1.0, 2.0], [2.0, 2.0], [3.0, 2.0]])
    stats = op.cost_return_stats(per_episode)
    np.testing.assert_allclose(stats["cost_return"], [1.5, 2.0])
    np.testing.assert_allclose(stats["cost_return_se"], [np.sqrt(5 / 3) / 2, 0.0])
    np.testing.assert_allclose(op.cost_upper_bound(stats["cost_return"], stats["cost_return_se"], 0.975),
                               [1.5 + 1.959964 * np.sqrt(5 / 3) / 2, 2.0], rtol=1e-6)
    np.testing.assert_allclose(op.cost_upper_bound(stats["cost_return"], stats["cost_return_se"], 0.5), [1.5, 2.0])
    np.testing.assert_array_equal(op.cost_return_stats(per_episode[:1])["cost_return_se"], [0.0, 0.0])


def test_threads_sets_then_restores_the_counts() -> None:
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    with op.threads(1):
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert torch.get_num_threads() == before
