"""PPO-Lagrangian: the multiplier update, training on the toy CMDP (improves, keeps the limits on average),
determinism and config checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ogsrl.agents import onpolicy as op, ppo_lag, toy_cmdp

LIMITS = np.array([1.0, 1.5])
ENV = toy_cmdp.make_env(horizon=5, hazard=0.1)


def test_multipliers_ascend_on_violation_and_stay_non_negative() -> None:
    lam = ppo_lag.update_multipliers(np.array([0.0, 0.3, 1.0]), np.array([2.0, 0.0, 1.0]), np.array([1.0, 1.0, 1.0]),
                                     lr=0.5)
    np.testing.assert_allclose(lam, [0.5, 0.0, 1.0])


def _fit(iterations: int, seed: int = 0, multiplier_lr: float = 1.0, keep: str = "best_feasible"):  # noqa: ANN202
    """(actor, metrics, history, evaluation of the trained actor in 256 fresh toy episodes)"""
    cfg = ppo_lag.Config(iterations=iterations, num_envs=256, horizon=5, critic_hidden=(16, 16), minibatch_size=256,
                         actor_lr=1e-3, multiplier_lr=multiplier_lr, keep=keep)
    init = ENV(200, 0).reset(seed=0)[0]
    actor = op.fresh_actor(toy_cmdp.FEATURES, (16, 16), 1, init, seed)
    actor, metrics, history = ppo_lag.train(cfg, ENV, toy_cmdp.FEATURES, toy_cmdp.COSTS, LIMITS, actor, seed)
    ev = op.evaluate(ENV(256, 99), actor, np.random.default_rng(99), 5, 99, toy_cmdp.COSTS)
    return actor, metrics, history, ev


def test_ppo_lag_improves_and_keeps_the_limits_on_average(one_thread: None) -> None:
    _, metrics, history, ev = _fit(60)
    assert len(history) == 60 and "train/multiplier/fluid_load" in metrics
    assert {"multiplier/fluid_load", "multiplier/pressor_load", "kl", "seconds"} <= set(history[0])
    assert all(h[k] >= 0 for h in history for k in ("multiplier/fluid_load", "multiplier/pressor_load"))
    assert ev["return"] > history[0]["reward_return"] + 0.5
    late = history[-30:]
    for j, name in enumerate(toy_cmdp.COSTS):
        assert np.mean([h[f"cost_return/{name}"] for h in late]) <= LIMITS[j] + 0.1
    assert max(h["multiplier/fluid_load"] for h in history) > 0  # the fluid limit was hit and priced
    assert metrics["train/selected_feasible"] == 1.0
    assert ev["cost_return/fluid_load"] <= LIMITS[0] + 0.1  # the kept iterate, on fresh episodes
    # without multiplier updates (and keeping the last iterate) the same run is plain PPO and overspends
    _, _, _, free = _fit(25, multiplier_lr=0.0, keep="last")
    assert free["cost_return/fluid_load"] > LIMITS[0] + 0.5


def test_same_seed_same_weights(one_thread: None) -> None:
    a, _, ha, _ = _fit(3, seed=5)
    b, _, hb, _ = _fit(3, seed=5)
    for (k, ta), tb in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(ta, tb), k
    assert ha[-1]["multiplier/fluid_load"] == hb[-1]["multiplier/fluid_load"]


@pytest.mark.parametrize("field,value", [("clip", 0.0), ("lam", 0.0), ("minibatch_size", -1), ("multiplier_lr", -0.1),
                                         ("critic_hidden", (8, 0)), ("cost_confidence", 0.3)])
def test_bad_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        ppo_lag.Config(**{field: value})
