"""Discrete CQL over the 5 x 5 action bins: the conservative penalty on a hand-built batch, improvement over the
random behaviour on the toy CMDP, the served BinnedPolicy (density, save/load), determinism and errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import integrate

from ogsrl import features
from ogsrl.agents import common, cql_discrete as dcql, toy_cmdp
from ogsrl.agents.binned import N_BINS, BinnedPolicy
from ogsrl.agents.inputs import TrainInputs
from ogsrl.config import ConfigError, build
from ogsrl.errors import DataError

NAMES, COSTS = toy_cmdp.FEATURES, toy_cmdp.COSTS


def _inputs(frame: pd.DataFrame) -> TrainInputs:
    return TrainInputs(train=frame, val=frame, state_features=NAMES, action_names=features.ACTIONS, cost_columns=COSTS,
                       cost_limits=np.array([0.8, 0.5]), step_h=4.0, discount=1.0, guarded=False,
                       make_env=lambda *a: None, behaviour_clone=lambda s: None)


def test_conservative_penalty_pushes_down_unseen_bins() -> None:
    # one state, only bins 0 and 7 logged, reward 1 for both, every step terminal: Q(s, b) = 1 for logged bins
    n = 64
    obs = torch.zeros(n, 2)
    bins = torch.tensor([0, 7] * (n // 2))
    args = (obs, obs, bins, torch.ones(n), torch.zeros(n, 2), torch.ones(n), torch.arange(1))

    def q_values(alpha: float) -> np.ndarray:
        cfg = dcql.Config(steps=400, batch_size=32, hidden=(16,), lr=1e-2, alpha=alpha, tau=0.1, log_every=400)
        net, _, _, _ = dcql.train(cfg, *args, np.zeros(2), seed=0)
        with torch.no_grad():
            return net(obs[:1]).numpy()[0]

    plain, conservative = q_values(0.0), q_values(1.0)
    seen = np.isin(np.arange(N_BINS), [0, 7])
    assert np.abs(conservative[seen] - 1.0).max() < 0.3 and np.abs(plain[seen] - 1.0).max() < 0.1
    assert conservative[~seen].max() < conservative[seen].min() - 0.5  # unseen bins pushed below the logged ones
    assert conservative[~seen].mean() < plain[~seen].mean() - 0.5


def test_warm_start_sets_every_bin_to_the_logged_returns_to_go() -> None:
    frame = toy_cmdp.logged_frame(300, 4)
    obs = torch.tensor(frame[list(NAMES)].to_numpy(np.float32))
    rew, done = torch.tensor(frame["reward"].to_numpy(np.float32)), torch.tensor(frame["done"].to_numpy(np.float32))
    cost = torch.tensor(frame[list(COSTS)].to_numpy(np.float32))
    net = common.mlp(len(NAMES), (32, 32), 3 * N_BINS, torch.Generator().manual_seed(0))
    mse = dcql.warm_start(net, obs, rew, cost, done, 1.0, 800, 64, 3e-3, torch.Generator().manual_seed(1))
    starts = np.flatnonzero(frame["step"].to_numpy() == 0)
    with torch.no_grad():
        q0 = net(obs[starts]).reshape(len(starts), 3, N_BINS).mean(dim=0).numpy()  # (heads, bins) at start states
    per_stay = frame.groupby("stay_key", sort=False)[["reward", *COSTS]].sum().mean().to_numpy()
    np.testing.assert_allclose(q0, np.repeat(per_stay[:, None], N_BINS, axis=1), atol=0.15 * np.abs(per_stay).max())
    assert np.isfinite(mse)
    cold = common.mlp(len(NAMES), (32, 32), 3 * N_BINS, torch.Generator().manual_seed(0))
    with torch.no_grad():
        untrained = cold(obs[starts]).reshape(len(starts), 3, N_BINS).mean(dim=0).numpy()
    assert np.abs(untrained - per_stay[:, None]).max() > 0.3 * np.abs(per_stay).max()


@pytest.fixture(scope="module")
def fitted() -> tuple:
    torch.set_num_threads(1)
    frame = toy_cmdp.logged_frame(300, 0)
    cfg = dcql.Config(steps=600, batch_size=64, hidden=(32, 32), lr=1e-3, tau=0.05, temperature=0.1, log_every=200)
    return frame, dcql.fit(cfg, _inputs(frame), 3)


def test_discrete_cql_improves_on_the_random_behaviour(fitted: tuple) -> None:
    frame, res = fitted
    env = toy_cmdp.DoseCMDP(2000, seed=9)
    obs, _ = env.reset(seed=9)
    rng, total = np.random.default_rng(9), np.zeros(2000)
    for _ in range(5):
        obs, rew, _, _, info = env.step(res.policy.act(obs.astype(np.float64), rng))
        total += rew * info["active"]
    assert total.mean() > frame.groupby("stay_key")["reward"].sum().mean() + 0.3
    assert [h["step"] for h in res.history] == [200.0, 400.0, 600.0]


def test_binned_policy_density_integrates_to_one_and_round_trips(fitted: tuple, tmp_path) -> None:  # noqa: ANN001
    _, res = fitted
    pol: BinnedPolicy = res.policy
    s = np.array([[0.3, 0.2]])
    # P(no fluid) + ∫ p(fluid, nee = 0) over the non-zero fluid doses = P(nee = 0)
    p_zero = float(np.exp(pol.log_prob(s, np.zeros((1, 2))))[0])
    cont, _ = integrate.quad(lambda a: float(np.exp(pol.log_prob(s, np.array([[a, 0.0]])))[0]), 0.0,
                             common.ACTION_MAX[0], points=pol.doses.edges["fluid_ml"], limit=200)
    probs = np.exp(pol.log_probs_bins(s))[0]
    np.testing.assert_allclose(p_zero + cont, probs[0::5].sum(), rtol=1e-3)
    acts = pol.act(np.tile(s, (500, 1)), np.random.default_rng(0))
    assert np.isfinite(pol.log_prob(np.tile(s, (500, 1)), acts)).all()
    pol.save(tmp_path / "p")
    back = dcql.load(tmp_path / "p")
    np.testing.assert_array_equal(back.log_prob(np.tile(s, (500, 1)), acts), pol.log_prob(np.tile(s, (500, 1)), acts))
    np.testing.assert_array_equal(back.act(np.tile(s, (9, 1)), np.random.default_rng(1)),
                                  pol.act(np.tile(s, (9, 1)), np.random.default_rng(1)))
    mode = back.with_serving("mode", {}, 0)
    assert (mode.act(s) == mode.act(s)).all()
    with pytest.raises(ValueError, match="no density"):
        mode.log_prob(s, np.zeros((1, 2)))


def test_same_seed_same_policy() -> None:
    frame = toy_cmdp.logged_frame(60, 1)
    cfg = dcql.Config(steps=30, batch_size=16, hidden=(8,), log_every=30, constrained=True)
    a, b = dcql.fit(cfg, _inputs(frame), 5).policy, dcql.fit(cfg, _inputs(frame), 5).policy
    for (k, ta), tb in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(ta, tb), k


def test_bad_params_and_missing_bins_are_one_line_errors() -> None:
    frame = toy_cmdp.logged_frame(20, 2)
    frame["action_bin"] = -1
    with pytest.raises(ValueError, match="no action bins") as err:
        dcql.fit(dcql.Config(steps=1), _inputs(frame), 0)
    assert "\n" not in str(err.value)
    for key, value, match in (("alpha", -0.5, "alpha must be ≥ 0"), ("temperature", 0.0, "temperature"),
                              ("critic_warm_start", -1, "critic_warm_start must be ≥ 0"),
                              ("steps_", 3, r"unknown key\(s\) policies.algorithms.cql_discrete.steps_")):
        with pytest.raises(ConfigError, match=match) as err:
            build(dcql.Config, {key: value}, "policies.algorithms.cql_discrete")
        assert "\n" not in str(err.value)


def test_declared_discrete_column_serves_a_categorical_policy(tmp_path) -> None:
    """A bring-your-own discrete column (contract v2): Q over its n ids; the Boltzmann policy is served as a
    categorical actor whose logits are (Q_R − λ·Q_C)/T of the trained network; unlogged ids are pushed down."""
    from ogsrl.agents import cql_discrete as cqd
    from ogsrl.agents.actor import SavedPolicy, load_policy
    from ogsrl.agents.common import DiscreteSpace
    from ogsrl.synth import tabular as T

    frame = T.simulate(T.MDPConfig(stays=200, horizon=5, seed=2))
    frame = frame[frame["treatment"] != 3].reset_index(drop=True)  # id 3 never logged
    frame = frame.assign(done=frame["done"] | (frame["step"] == frame.groupby("stay_key")["step"].transform("max")))
    space = DiscreteSpace("treatment", 4, T.LABELS)
    inputs = TrainInputs(train=frame, val=frame, state_features=T.STATE, action_names=("treatment",),
                         cost_columns=(T.COST,), cost_limits=np.array([1.0]), step_h=4.0, discount=1.0,
                         guarded=False, make_env=lambda *a: None, behaviour_clone=lambda s: None, action_space=space)
    res = cqd.fit(cqd.Config(steps=300, batch_size=64, hidden=(16,), alpha=2.0, log_every=100), inputs, seed=1)
    assert isinstance(res.policy, SavedPolicy) and res.policy.action_columns == ("treatment",)
    obs = frame[list(T.STATE)].to_numpy()[:200]
    p = res.policy.actor.probs(obs)
    assert p[:, 3].mean() < 0.5 * p[:, :3].mean()  # the conservative term keeps π off the unlogged id
    res.policy.save(tmp_path / "q")
    back = cqd.load(tmp_path / "q")
    assert isinstance(back, SavedPolicy) and np.allclose(back.actor.probs(obs), p)
    assert load_policy(tmp_path / "q").act(obs[:5], np.random.default_rng(0)).shape == (5, 1)
    with pytest.raises(DataError, match="integers in 0 … 3"):
        bad = frame.assign(treatment=frame["treatment"].astype(float) + 0.5)
        cqd.fit(cqd.Config(steps=1), dataclasses.replace(inputs, train=bad), seed=1)
