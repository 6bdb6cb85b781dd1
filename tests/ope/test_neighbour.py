"""Nearest-neighbour OPE (ogsrl/ope/neighbour.py): exact values when the logged transitions cover the policy's
actions, the change carried over to the policy's own state, deaths and their charge, pools that are reproducible
resamples of stays, the stage's estimates beside (and independent of) ``mb``, bad config."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from ogsrl.ope import model_based, neighbour, stage
from ogsrl.world.data import Transitions
from tests.ope.test_model_based import LAYOUT, KnownModel, _dose, _starts

S = len(LAYOUT.state_features)
DOSES = (0.1, 0.3, 0.5)


def _pool(die_at: float | None = None, shift: float = 0.0) -> Transitions:
    """One logged step per dose from the mid state: reward 10 × dose, cost_spo2_low at the top dose, the state's
    Glasgow score (column 4) moved by ``shift``, ventilation (column 3) off after it; a death at dose ``die_at``."""
    n = len(DOSES)
    obs = _starts(n)
    nxt = obs.copy()
    nxt[:, 4] += shift
    nxt[:, 3] = 0.0  # not ventilated after the step
    act = np.column_stack([np.zeros(n), DOSES]).astype(np.float32)
    dose = np.asarray(DOSES, dtype=np.float32)
    cost = np.column_stack([dose == 0.5, np.zeros(n)]).astype(np.float32)
    death = (dose == die_at).astype(np.float32) if die_at is not None else np.zeros(n, np.float32)
    return Transitions(obs=obs, act=act, next_obs=nxt, rew=10.0 * dose, cost=cost, death=death,
                       discharge=np.zeros(n, np.float32))


def _values(pool: Transitions, dose: float, horizons: np.ndarray, charge: float = 0.0) -> np.ndarray:
    model = neighbour.NeighbourModel(pool, LAYOUT, k=1, action_weight=1.0, death_charge=charge)
    return model_based.stay_values(model, _starts(len(horizons)), horizons, _dose(dose), 1.0,  # type: ignore[arg-type]
                                   rollouts=2, mode="random_elite", env_seed=0, act_rng=np.random.default_rng(0))


@pytest.mark.parametrize("dose", DOSES)
def test_logged_actions_give_the_exact_value(dose: float) -> None:
    got = _values(_pool(), dose, np.array([4, 2]))
    np.testing.assert_allclose(got[:, 0], 10 * dose * np.array([4, 2]), rtol=1e-5)
    np.testing.assert_allclose(got[:, 1], (dose == 0.5) * np.array([4, 2]), atol=1e-6)


def test_a_drawn_death_ends_the_episode_and_charges_the_times_left() -> None:
    got = _values(_pool(die_at=0.5), 0.5, np.array([4, 1]), charge=12.5)
    np.testing.assert_allclose(got[:, 0], [5.0 - 12.5 * 3, 5.0], rtol=1e-5)
    np.testing.assert_allclose(_values(_pool(die_at=0.5), 0.1, np.array([4]), charge=12.5)[:, 0], [4.0], rtol=1e-5)


def test_a_step_carries_the_logged_change_to_the_own_state() -> None:
    model = neighbour.NeighbourModel(_pool(shift=-2.0), LAYOUT, k=1, action_weight=1.0, death_charge=0.0)
    obs = _starts(1)
    obs[0, 4] = 12.0  # another Glasgow score than any logged state
    obs[0, 3] = 1.0  # ventilated; the logged next states are not
    act = np.float32([[250.0, 0.3]])
    s = model.step(obs, act, "random_elite", np.random.default_rng(0))
    assert s.next_obs[0, 4] == pytest.approx(10.0)  # 12 − 2: the change, not the logged next value
    assert s.next_obs[0, 3] == 0.0  # a binary feature: the logged next value
    fluid_cum = LAYOUT.state_features.index("fluid_cum")
    assert s.next_obs[0, fluid_cum] == pytest.approx(obs[0, fluid_cum] + 250.0)  # the own dose, not the logged one
    assert s.rew[0] == pytest.approx(3.0) and s.uncertainty[0] > 0


def test_the_action_weight_decides_between_a_near_state_and_a_near_dose() -> None:
    rng = np.random.default_rng(0)
    obs = _starts(2)
    obs[1, 4] += 3.0  # a second logged state, far on the Glasgow score, whose logged dose matches the policy's
    act = np.float32([[0.0, 0.1], [0.0, 0.5]])
    pool = Transitions(obs=obs, act=act, next_obs=obs.copy(), rew=np.float32([1.0, 2.0]),
                       cost=np.zeros((2, 2), np.float32), death=np.zeros(2, np.float32))
    here = _starts(1)
    for weight, reward in ((0.01, 1.0), (100.0, 2.0)):
        model = neighbour.NeighbourModel(pool, LAYOUT, k=1, action_weight=weight, death_charge=0.0)
        assert model.step(here, np.float32([[0.0, 0.5]]), "random_elite", rng).rew[0] == reward


def test_pools_resample_whole_stays_reproducibly() -> None:
    base = _pool()
    data = Transitions(obs=np.repeat(base.obs, 4, 0), act=np.tile(base.act, (4, 1)),
                       next_obs=np.repeat(base.next_obs, 4, 0), rew=np.arange(12, dtype=np.float32),
                       cost=np.zeros((12, 2), np.float32), death=np.zeros(12, np.float32))
    stays = np.repeat(np.arange(4), 3)
    cfg = neighbour.Config(refits=2)
    a = neighbour.fit_pools(data, stays, LAYOUT, 0.0, cfg, np.random.SeedSequence(1))
    b = neighbour.fit_pools(data, stays, LAYOUT, 0.0, cfg, np.random.SeedSequence(1))
    assert len(a) == 3 and len(a[0]._pool) == 12
    for pa, pb in zip(a, b):
        np.testing.assert_array_equal(pa._pool.rew, pb._pool.rew)
    for p in a[1:]:  # whole stays: rewards 3i, 3i+1, 3i+2 come together
        r = p._pool.rew.reshape(-1, 3)
        np.testing.assert_array_equal(r - r[:, :1], np.tile([0, 1, 2], (len(r), 1)))
    with pytest.raises(ValueError, match="stay_labels"):
        neighbour.fit_pools(data, stays[:-1], LAYOUT, 0.0, cfg, np.random.SeedSequence(1))


def test_the_full_point_is_the_full_pools_value_whatever_the_resamples() -> None:
    base = _pool()
    data = Transitions(obs=np.repeat(base.obs, 4, 0), act=np.tile(base.act, (4, 1)),
                       next_obs=np.repeat(base.next_obs, 4, 0), rew=np.arange(12, dtype=np.float32),
                       cost=np.zeros((12, 2), np.float32), death=np.zeros(12, np.float32))
    stays, starts, horizons = np.repeat(np.arange(4), 3), base.obs, np.array([2, 3, 1])

    def value(point: str, seed: int) -> np.ndarray:
        cfg = neighbour.Config(k=1, refits=3, rollouts=2, point=point)
        pools = neighbour.fit_pools(data, stays, LAYOUT, 0.0, cfg, np.random.SeedSequence(seed))
        return neighbour.estimate(pools, starts, horizons, _dose(0.5), 1.0, cfg, 0, np.random.default_rng(1),
                                  np.random.default_rng(2), 100, 0.95)[0]

    full = [value("full", seed) for seed in range(4)]
    np.testing.assert_allclose(full[1:], [full[0]] * 3)  # another resample seed moves the interval, not the value
    bagged = [value("bagged", seed)[0] for seed in range(4)]
    assert np.ptp(bagged) > 0.1  # bagging averages in resamples that differ by seed


def test_the_stage_reports_knn_beside_mb_without_moving_it() -> None:
    pools = neighbour.fit_pools(_pool(), np.arange(3), LAYOUT, 0.0, neighbour.Config(k=1, refits=0),
                                np.random.SeedSequence(0))
    cfg = stage.OPEConfig(n_boot=100, model=model_based.Config(refits=0, rollouts=1),
                          neighbour=neighbour.Config(k=1, refits=0, rollouts=1))
    args = (_starts(3), np.full(3, 2), ("return",), np.eye(3)[:, :1], 0)
    served = SimpleNamespace(feature_names=("spo2",), act=_dose(0.3))
    both = stage.EvalWorld((KnownModel(),), pools, LAYOUT.state_features, *args)
    only_mb = stage.EvalWorld((KnownModel(),), (), LAYOUT.state_features, *args)
    only_knn = stage.EvalWorld((), pools, LAYOUT.state_features, *args)
    got = stage.estimate_model_based(both, served, cfg, np.random.SeedSequence(0), 5.0)
    assert got[("knn", "return")].value == pytest.approx(6.0) and got[("mb", "return")].value == pytest.approx(6.0)
    assert got[("mb", "return")] == stage.estimate_model_based(only_mb, served, cfg, np.random.SeedSequence(0),
                                                               5.0)[("mb", "return")]
    assert set(stage.estimate_model_based(only_knn, served, cfg, np.random.SeedSequence(0), 5.0)) == {
        ("knn", "return")}


@pytest.mark.parametrize(("kw", "match"), [({"k": 0}, "k must"), ({"action_weight": 0.0}, "action_weight"),
                                           ({"refits": 1}, "refits"), ({"rollouts": 0}, "rollouts"),
                                           ({"point": "mean"}, "point must be 'bagged' or 'full'")])
def test_bad_config_fails_with_one_line(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        neighbour.Config(**kw)


def test_a_pool_smaller_than_k_is_an_error() -> None:
    with pytest.raises(ValueError, match="k=5"):
        neighbour.NeighbourModel(_pool(), LAYOUT, k=5, action_weight=1.0, death_charge=0.0)


def _three_states() -> Transitions:
    """Three logged states (Glasgow 6, 10, 14) that never move, each with its own dose (0.1, 0.3, 0.5)."""
    obs = _starts(3)
    obs[:, 4] = [6.0, 10.0, 14.0]
    dose = np.float32([0.1, 0.3, 0.5])
    return Transitions(obs=obs, act=np.column_stack([np.zeros(3), dose]).astype(np.float32), next_obs=obs.copy(),
                       rew=10.0 * dose, cost=np.zeros((3, 2), np.float32), death=np.zeros(3, np.float32))


def test_the_clinicians_in_the_pool_play_the_nearest_states_logged_action() -> None:
    model = neighbour.NeighbourModel(_three_states(), LAYOUT, k=1, action_weight=1.0, death_charge=0.0)
    obs = _starts(2)
    obs[:, 4] = [13.0, 7.0]
    np.testing.assert_allclose(model.logged_action(obs, np.random.default_rng(0))[:, 1], [0.5, 0.1])


def test_anchoring_returns_the_clinicians_logged_value_and_keeps_differences() -> None:
    pool = neighbour.NeighbourModel(_three_states(), LAYOUT, k=1, action_weight=1.0, death_charge=0.0)
    starts, horizons = pool._pool.obs, np.array([4, 2, 3])
    logged = np.array([[-7.0, 1.0, 0.0], [3.0, 0.0, 2.0], [0.5, 0.0, 0.0]])  # any recorded returns
    cfg = neighbour.Config(k=1, refits=0, rollouts=2)
    offsets = neighbour.clinician_offsets((pool,), starts, horizons, logged, 1.0, cfg, env_seed=0)
    np.testing.assert_allclose(offsets[0][:, 0], logged[:, 0] - 10 * np.array([0.1, 0.3, 0.5]) * horizons, rtol=1e-5)

    def run(act: model_based.ActFn, anchored: bool) -> np.ndarray:
        return neighbour.estimate((pool,), starts, horizons, act, 1.0, cfg, 0, np.random.default_rng(1),
                                  np.random.default_rng(2), 200, 0.95, offsets=offsets if anchored else ())[0]

    clinicians = run(lambda obs, rng: pool.logged_action(obs, rng), True)
    np.testing.assert_allclose(clinicians, logged.mean(0), rtol=1e-5, atol=1e-6)
    gap = run(_dose(0.5), True) - clinicians
    np.testing.assert_allclose(gap, run(_dose(0.5), False) - run(lambda obs, rng: pool.logged_action(obs, rng), False),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="logged must be"):
        neighbour.clinician_offsets((pool,), starts, horizons, logged[:2], 1.0, cfg, env_seed=0)


def test_an_anchored_pool_reads_the_clinicians_logged_means_and_a_policys_difference_to_them() -> None:
    data = _three_states()
    starts, horizons = data.obs[:2], np.array([4, 2])  # a subset of the pool's stays
    logged = np.array([[-7.0, 1.0, 0.0], [3.0, 0.0, 2.0]])
    cfg = neighbour.Config(k=1, refits=0, rollouts=2)
    reading = neighbour.anchored_pool(data, starts, horizons, logged, LAYOUT, 0.0, 1.0, cfg, env_seed=0)
    assert reading.cost_names == LAYOUT.cost_names and reading.offsets.shape == (2, 3)
    pool = reading.pool
    np.testing.assert_allclose(reading.value(lambda obs, rng: pool.logged_action(obs, rng), np.random.default_rng(1)),
                               logged.mean(0), rtol=1e-5, atol=1e-6)
    # dose 0.5 from Glasgow 6 and 10 lands on the Glasgow-14 transition (reward 5 a step): 10·(0.5 − dose_i)·h_i more
    gain = 10 * (0.5 - np.array([0.1, 0.3])) * horizons
    np.testing.assert_allclose(reading.value(_dose(0.5), np.random.default_rng(1))[0], logged[:, 0].mean() + gain.mean(),
                               rtol=1e-5)
