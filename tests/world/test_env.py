"""Tests for ogsrl/world/env.py: reset/step contracts, horizon, death, guardian hook, rollouts, bad input."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from ogsrl.errors import DataError
from ogsrl.world.ensemble import WorldModel
from ogsrl.world.env import EnvConfig, WorldModelEnv, logged_returns, rollout, start_states, steps_left

from .conftest import COSTS, STATE


@pytest.fixture()
def starts(toy_frame: pd.DataFrame) -> np.ndarray:
    return start_states(toy_frame, STATE)


def _behaviour(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.column_stack([rng.uniform(0, 800, len(obs)), rng.uniform(0, 0.2, len(obs))]).astype(np.float32)


def _never_die(model: WorldModel) -> WorldModel:
    """A copy whose episodes end only at the horizon: death and discharge logits (the last two) pinned at −50."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.net.head.bias[:, 0, -2:] = -50.0
        m.net.skip.weight[:, :, -2:] = 0.0
    return m


def test_start_states_are_each_stays_first_row(toy_frame: pd.DataFrame, starts: np.ndarray) -> None:
    expected = toy_frame.loc[toy_frame["step"] == 0, list(STATE)].to_numpy(np.float32)
    np.testing.assert_array_equal(starts, expected)  # toy stays start at step 0 and are sorted by key
    late = toy_frame[toy_frame["step"] >= 2].iloc[::-1]  # stays entering the grid later, rows shuffled
    got = start_states(late, STATE)
    first = late.sort_values(["stay_key", "step"]).groupby("stay_key").head(1)
    np.testing.assert_array_equal(got, first[list(STATE)].to_numpy(np.float32))
    with pytest.raises(DataError, match="no rows"):
        start_states(toy_frame.iloc[:0], STATE)


def test_reset_and_step_contract(tiny_model: WorldModel, starts: np.ndarray) -> None:
    env = WorldModelEnv(tiny_model, starts, num_envs=9, cfg=EnvConfig(horizon=5))
    obs, info = env.reset(seed=1)
    assert obs.shape == (9, len(STATE)) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs, starts[info["start_index"]])
    obs2, _ = env.reset(seed=1)
    np.testing.assert_array_equal(obs, obs2)
    assert env.observation_space.shape == (9, len(STATE)) and env.action_space.shape == (9, 2)
    nxt, rew, term, trunc, info = env.step(np.full((9, 2), [300.0, 0.1], np.float32))
    assert nxt.shape == obs.shape and rew.shape == term.shape == trunc.shape == (9,)
    assert rew.dtype == np.float32 and term.dtype == np.bool_
    assert info["cost"].shape == (9, len(COSTS)) and info["uncertainty"].shape == (9,)
    assert info["active"].all() and ((info["cost"] >= 0) & (info["cost"] <= 1)).all()


def test_truncates_at_horizon_and_freezes(tiny_model: WorldModel, starts: np.ndarray) -> None:
    env = WorldModelEnv(_never_die(tiny_model), starts, num_envs=6, cfg=EnvConfig(horizon=3))
    env.reset(seed=0)
    act = np.full((6, 2), [200.0, 0.0], np.float32)
    for t in range(3):
        obs, _, term, trunc, _ = env.step(act)
        assert not term.any()
        assert trunc.all() == (t == 2)
    frozen, rew, term, trunc, info = env.step(act)
    np.testing.assert_array_equal(frozen, obs)
    assert not info["active"].any() and (rew == 0).all() and not (term | trunc).any()
    assert (info["cost"] == 0).all()


def test_death_terminates(tiny_model: WorldModel, starts: np.ndarray) -> None:
    m = copy.deepcopy(tiny_model)
    with torch.no_grad():
        m.net.head.bias[:, 0, -2] = 50.0
    env = WorldModelEnv(m, starts, num_envs=4, cfg=EnvConfig(horizon=10))
    env.reset(seed=0)
    _, _, term, trunc, info = env.step(np.zeros((4, 2), np.float32))
    assert term.all() and info["death"].all() and not trunc.any() and not env.running.any()
    assert not info["discharge"].any()


def test_death_charges_the_steps_the_episode_had_left(tiny_model: WorldModel, starts: np.ndarray) -> None:
    m = copy.deepcopy(tiny_model)
    with torch.no_grad():
        m.net.head.bias[:, 0, -2] = 50.0
    horizons = np.full(len(starts), 10)
    horizons[: len(starts) // 2] = 3
    plain = WorldModelEnv(m, starts, num_envs=len(starts), cfg=EnvConfig(horizon=10), horizons=horizons)
    plain.reset(seed=0)
    _, rew, _, _, info = plain.step(np.zeros((len(starts), 2), np.float32))
    m.death_charge = 12.5
    charged = WorldModelEnv(m, starts, num_envs=len(starts), cfg=EnvConfig(horizon=10), horizons=horizons)
    charged.reset(seed=0)
    _, rew_c, _, _, info_c = charged.step(np.zeros((len(starts), 2), np.float32))
    assert info["death"].all() and info_c["death"].all()
    left = charged._limit - 1  # steps after the first one
    assert set(left.tolist()) == {2, 9}
    np.testing.assert_allclose(rew_c, rew - 12.5 * left, rtol=1e-6)


def test_discharge_terminates_unless_disabled(tiny_model: WorldModel, starts: np.ndarray) -> None:
    m = _never_die(tiny_model)
    with torch.no_grad():
        m.net.head.bias[:, 0, -1] = 50.0  # discharge logit
    env = WorldModelEnv(m, starts, num_envs=4, cfg=EnvConfig(horizon=10))
    env.reset(seed=0)
    _, _, term, trunc, info = env.step(np.zeros((4, 2), np.float32))
    assert term.all() and info["discharge"].all() and not info["death"].any() and not env.running.any()
    ro = rollout(WorldModelEnv(m, starts, 4, EnvConfig(horizon=10, discharge=False)), _behaviour, seed=0)
    assert not ro.discharge.any() and ro.active.all()


def test_death_and_discharge_rates_follow_the_model(tiny_model: WorldModel, starts: np.ndarray) -> None:
    m = _never_die(tiny_model)
    with torch.no_grad():  # constant P(death) = 0.2, P(discharge) = 0.3; exclusive, so half the patients stay
        m.net.head.weight[:, :, -2:] = 0.0
        m.net.skip.bias[:, 0, -2:] = 0.0
        m.net.head.bias[:, 0, -2] = float(np.log(0.2 / 0.8))
        m.net.head.bias[:, 0, -1] = float(np.log(0.3 / 0.7))
    env = WorldModelEnv(m, starts, num_envs=8000, cfg=EnvConfig(horizon=5))
    env.reset(seed=3)
    _, _, term, trunc, info = env.step(np.zeros((8000, 2), np.float32))
    assert not (info["death"] & info["discharge"]).any() and not trunc.any()
    np.testing.assert_array_equal(term, info["death"] | info["discharge"])
    assert info["death"].mean() == pytest.approx(0.2, abs=0.015)
    assert info["discharge"].mean() == pytest.approx(0.3, abs=0.015)


def test_guard_penalises_and_ends(tiny_model: WorldModel, starts: np.ndarray) -> None:
    def guard(obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        return act[:, 0] < 1000.0

    env = WorldModelEnv(_never_die(tiny_model), starts, num_envs=4, cfg=EnvConfig(horizon=5, ood_penalty=-25.0),
                        guard=guard)
    obs, _ = env.reset(seed=2)
    act = np.array([[100, 0], [5000, 0], [100, 0], [9000, 0.1]], np.float32)
    nxt, rew, term, _, info = env.step(act)
    np.testing.assert_array_equal(info["ood"], [False, True, False, True])
    np.testing.assert_array_equal(term, [False, True, False, True])
    assert rew[1] == rew[3] == -25.0 and rew[0] != -25.0
    np.testing.assert_array_equal(nxt[[1, 3]], obs[[1, 3]])
    assert (info["cost"][[1, 3]] == 0).all()
    bad = WorldModelEnv(tiny_model, starts, 4, EnvConfig(), guard=lambda o, a: np.ones(3, bool))
    bad.reset(seed=0)
    with pytest.raises(ValueError, match="guard must return"):
        bad.step(act)


def test_guard_charges_ood_cost_for_the_steps_left(tiny_model: WorldModel, starts: np.ndarray) -> None:
    horizons = np.full(len(starts), 5, dtype=np.int64)
    horizons[0] = 3
    env = WorldModelEnv(_never_die(tiny_model), starts[[0, 1]], num_envs=2,
                        cfg=EnvConfig(horizon=5, ood_penalty=-25.0, ood_cost=0.5),
                        guard=lambda obs, act: act[:, 0] < 1000.0, horizons=horizons[[0, 1]],
                        ood_cost_rates=np.linspace(1.0, 2.0, len(tiny_model.layout.cost_names)))
    env.reset(seed=0)
    start = env._limit.copy()  # steps each row may play: 3 or 5
    env.step(np.array([[100, 0], [100, 0]], np.float32))  # t = 0 → 1, both inside
    _, _, term, _, info = env.step(np.array([[5000, 0], [5000, 0]], np.float32))  # t = 1: both rejected
    assert term.all()
    n_cost = info["cost"].shape[1]
    rates = np.linspace(1.0, 2.0, n_cost)
    np.testing.assert_allclose(info["cost"], 0.5 * (start - 1)[:, None] * rates[None, :], rtol=1e-6)
    with pytest.raises(ValueError, match="ood_cost"):
        EnvConfig(ood_cost=-1.0)
    with pytest.raises(ValueError, match="ood_cost_rates"):
        WorldModelEnv(tiny_model, starts, 2, EnvConfig(), ood_cost_rates=[-1.0] * n_cost)


def test_fallback_mode_plays_the_fallback_action_and_goes_on(tiny_model: WorldModel, starts: np.ndarray) -> None:
    model = _never_die(tiny_model)
    guard = lambda obs, act: act[:, 0] < 1000.0  # noqa: E731
    played: list[np.ndarray] = []

    def fallback(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        played.append(obs.copy())
        return np.tile(np.array([[200.0, 0.05]], np.float32), (len(obs), 1))

    cfg = EnvConfig(horizon=5, ood_penalty=-25.0, ood_mode="fallback", discharge=False)
    env = WorldModelEnv(model, starts, num_envs=4, cfg=cfg, guard=guard, fallback=fallback)
    obs, _ = env.reset(seed=2)
    act = np.array([[100, 0], [5000, 0], [100, 0], [9000, 0.1]], np.float32)
    nxt, rew, term, _, info = env.step(act)
    np.testing.assert_array_equal(info["ood"], [False, True, False, True])
    assert not term.any() and env.running.all()  # the episode goes on
    assert len(played) == 1 and np.array_equal(played[0], obs[[1, 3]])
    # the rejected rows advance as if the fallback's action had been taken, and pay the penalty on top
    ref = WorldModelEnv(model, starts, num_envs=4, cfg=EnvConfig(horizon=5, discharge=False))
    ref.reset(seed=2)
    swapped = act.copy()
    swapped[[1, 3]] = [200.0, 0.05]
    r_nxt, r_rew, _, _, r_info = ref.step(swapped)
    np.testing.assert_allclose(nxt, r_nxt, rtol=1e-6)
    np.testing.assert_allclose(rew, r_rew + np.array([0, -25.0, 0, -25.0], np.float32), rtol=1e-6)
    np.testing.assert_allclose(info["cost"], r_info["cost"], rtol=1e-6)  # the fallback step's own costs
    with pytest.raises(ValueError, match="needs a fallback policy"):
        WorldModelEnv(model, starts, 4, cfg, guard=guard)


def test_rollout_seeded_and_consistent(tiny_model: WorldModel, starts: np.ndarray) -> None:
    cfg = EnvConfig(horizon=6, mode="random_elite", cost_mode="sample")
    r1 = rollout(WorldModelEnv(tiny_model, starts, 32, cfg), _behaviour, seed=4)
    r2 = rollout(WorldModelEnv(tiny_model, starts, 32, cfg), _behaviour, seed=4)
    r3 = rollout(WorldModelEnv(tiny_model, starts, 32, cfg), _behaviour, seed=5)
    np.testing.assert_array_equal(r1.obs, r2.obs)
    np.testing.assert_array_equal(r1.rew, r2.rew)
    assert not np.array_equal(r1.obs, r3.obs)
    assert r1.obs.shape == (7, 32, len(STATE)) and r1.cost.shape == (6, 32, len(COSTS))
    assert np.isin(r1.cost, (0.0, 1.0)).all() and 0.0 <= r1.mortality <= 1.0
    # once a row stops being active it never becomes active again
    assert (np.diff(r1.active.astype(int), axis=0) <= 0).all()
    mean_env = WorldModelEnv(_never_die(tiny_model), starts, 8, EnvConfig(horizon=4, mode="mean"))
    a = rollout(mean_env, lambda o, rng: np.full((len(o), 2), [250.0, 0.05], np.float32), seed=1)
    b = rollout(mean_env, lambda o, rng: np.full((len(o), 2), [250.0, 0.05], np.float32), seed=1)
    np.testing.assert_array_equal(a.obs, b.obs)


def test_bad_actions_and_inputs(tiny_model: WorldModel, starts: np.ndarray) -> None:
    env = WorldModelEnv(tiny_model, starts, 3, EnvConfig())
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros((3, 2), np.float32))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions must be \(3, 2\)"):
        env.step(np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([[0, 0], [np.nan, 0], [0, 0]], np.float32))
    with pytest.raises(ValueError, match="start states"):
        WorldModelEnv(tiny_model, starts[:, :-1], 3, EnvConfig())
    with pytest.raises(ValueError, match="horizon"):
        EnvConfig(horizon=0)


def test_steps_left_and_per_start_horizons(tiny_model: WorldModel, toy_frame: pd.DataFrame) -> None:
    late = toy_frame[toy_frame["step"] >= 3]  # every stay now enters the grid at decision time −24 + 3·4 h
    left = steps_left(late, window_start_h=-24, step_h=4, n_steps=20)
    assert left.shape == (late["stay_key"].nunique(),) and (left == 17).all()
    starts = start_states(late, STATE)
    limits = np.array([1, 2, 3] * (len(starts) // 3) + [3] * (len(starts) % 3))
    env = WorldModelEnv(_never_die(tiny_model), starts, 300, EnvConfig(horizon=5), horizons=limits)
    ro = rollout(env, _behaviour, seed=0)
    # an episode runs exactly as many steps as its start state's limit allows
    np.testing.assert_array_equal(ro.active.sum(0), limits[ro.start_index])
    with pytest.raises(ValueError, match="horizons must lie in 1"):
        WorldModelEnv(tiny_model, starts, 4, EnvConfig(horizon=5), horizons=np.full(len(starts), 6))
    with pytest.raises(ValueError, match="one per start state"):
        WorldModelEnv(tiny_model, starts, 4, EnvConfig(horizon=5), horizons=np.ones(3, dtype=int))
    off = late.assign(hours_since_onset=late["hours_since_onset"] + 1.0)
    with pytest.raises(DataError, match="column .hours_since_onset.: first decision time off the grid"):
        steps_left(off, window_start_h=-24, step_h=4, n_steps=20)


def test_episode_elite_keeps_one_member_per_episode(tiny_model: WorldModel, starts: np.ndarray) -> None:
    m = _never_die(tiny_model)
    with torch.no_grad():  # (almost) no aleatoric noise: a step returns its member's mean exactly
        m.net.max_logvar.fill_(-30.0)
        m.net.min_logvar.fill_(-40.0)
    env = WorldModelEnv(m, starts, 64, EnvConfig(horizon=4, mode="episode_elite"))
    env.reset(seed=5)
    member = env._member.copy()
    assert set(member) <= set(m.elites.tolist()) and len(set(member)) > 1
    gi, rows = list(m.layout.gauss_idx), np.arange(64)
    act = np.full((64, 2), [300.0, 0.05], np.float32)
    for _ in range(3):  # the same member on every step of the episode
        obs = env._obs.copy()
        nxt, *_ = env.step(act)
        want = m.clip_state(obs, m.predict(obs, act).next_mean[member, rows])
        np.testing.assert_allclose(nxt[:, gi], want[:, gi], rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="episode_elite needs member"):
        m.step(obs, act, "episode_elite", np.random.default_rng(0))
    with pytest.raises(ValueError, match="episode_elite needs member"):
        m.step(obs, act, "episode_elite", np.random.default_rng(0), member=np.full(64, 99))


def test_cost_mode_max_is_the_most_pessimistic_elite(tiny_model: WorldModel, starts: np.ndarray) -> None:
    act = np.tile(np.array([[300.0, 0.05]], np.float32), (8, 1))
    steps = {}
    for mode in ("prob", "max"):
        env = WorldModelEnv(tiny_model, starts, 8, EnvConfig(horizon=3, mode="mean", cost_mode=mode))
        obs, _ = env.reset(seed=3)
        steps[mode] = env.step(act)[4]["cost"]
    probs = tiny_model.predict(obs, act).cost_prob[tiny_model.elites]  # (E, B, C)
    np.testing.assert_allclose(steps["prob"], probs.mean(0), rtol=1e-5)
    np.testing.assert_allclose(steps["max"], probs.max(0), rtol=1e-5)
    assert (steps["max"] >= steps["prob"] - 1e-7).all() and (steps["max"] > steps["prob"] + 1e-4).any()


def test_cost_uncertainty_charges_the_elites_disagreement(tiny_model: WorldModel, starts: np.ndarray) -> None:
    act = np.tile(np.array([[300.0, 0.05]], np.float32), (8, 1))
    env = WorldModelEnv(tiny_model, starts, 8, EnvConfig(horizon=3, mode="mean", cost_uncertainty=2.0))
    obs, _ = env.reset(seed=3)
    cost = env.step(act)[4]["cost"]
    probs = tiny_model.predict(obs, act).cost_prob[tiny_model.elites]  # (E, B, C)
    np.testing.assert_allclose(cost, np.minimum(probs.mean(0) + 2.0 * probs.std(0), 1.0), rtol=1e-5)
    assert (probs.std(0) > 1e-4).any()
    with pytest.raises(ValueError, match="cost_uncertainty"):
        EnvConfig(cost_uncertainty=1.0, cost_mode="max")
    with pytest.raises(ValueError, match="cost_uncertainty"):
        EnvConfig(cost_uncertainty=-0.1)


def test_reset_can_start_from_given_rows(tiny_model: WorldModel, starts: np.ndarray) -> None:
    env = WorldModelEnv(tiny_model, starts, num_envs=4, cfg=EnvConfig(horizon=3))
    obs, info = env.reset(seed=0, options={"start_index": np.array([3, 0, 3, 7])})
    np.testing.assert_array_equal(obs, starts[[3, 0, 3, 7]])
    np.testing.assert_array_equal(info["start_index"], [3, 0, 3, 7])
    for bad in (np.array([0, 1]), np.array([0, 1, 2, len(starts)]), np.array([0.0, 1.0, 2.0, 3.0])):
        with pytest.raises(ValueError, match="start_index"):
            env.reset(options={"start_index": bad})


def test_logged_returns_discount_from_each_stays_first_step_and_stop_at_its_horizon() -> None:
    test = pd.DataFrame({"stay_key": ["b", "a", "a", "a", "b"], "step": [3, 5, 6, 8, 4],
                         "reward": [1.0, 2.0, 4.0, 8.0, 16.0], "cost_x": [0.0, 1.0, 1.0, 1.0, 1.0]})
    got = logged_returns(test, ("reward", "cost_x"), np.array([3, 1]), 0.5)
    # stay a (first step 5): steps 5 and 6 kept (8 is 3 steps on), b (first step 3): only step 3
    np.testing.assert_allclose(got, [[2.0 + 0.5 * 4.0, 1.0 + 0.5], [1.0, 0.0]])
    with pytest.raises(DataError, match=r"'test.parquet'.*cost_y"):
        logged_returns(test, ("reward", "cost_y"), np.array([3, 1]), 0.5, "test.parquet")
    with pytest.raises(ValueError, match="one per stay"):
        logged_returns(test, ("reward",), np.array([3, 1, 2]), 0.5)
