"""Model-based OPE (ogsrl/ope/model_based.py): exact values in a known model, the data's death charge, fits that
hold stays out and are reproducible, the stage's fallback for policies the models cannot serve, bad config."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ogsrl.ope import model_based, neighbour, stage
from ogsrl.world.data import Layout, Transitions, transitions_from_frame
from ogsrl.world.ensemble import EnsembleConfig, StepSample, WorldModel
from ogsrl.world.toy import toy_trajectories
from tests.world.conftest import COSTS, STATE, TINY

LAYOUT = Layout.make(STATE, COSTS, TINY.copy_features, TINY.sum_features)


class KnownModel:
    """Reward = the vasopressor dose × 10 per step, costs with probabilities (0.5, 0.25), the state never moves;
    every patient dies on the first step when ``die`` (death charge ``charge`` per decision time left)."""

    layout = LAYOUT
    elites = np.array([0])

    def __init__(self, die: bool = False, charge: float = 0.0) -> None:
        self.die, self.death_charge = die, charge

    def step(self, obs: np.ndarray, act: np.ndarray, mode: str, rng: np.random.Generator,
             member: np.ndarray | None = None) -> StepSample:
        b = len(obs)
        cost = np.tile(np.float32([0.5, 0.25]), (b, 1))
        return StepSample(next_obs=obs.copy(), rew=10.0 * act[:, 1], cost_prob=cost,
                          death_prob=np.full(b, float(self.die)), discharge_prob=np.zeros(b),
                          uncertainty=np.zeros(b, np.float32), cost_prob_max=cost, cost_prob_sd=0 * cost)


def _dose(v: float) -> model_based.ActFn:
    return lambda obs, rng: np.column_stack([np.zeros(len(obs)), np.full(len(obs), v)]).astype(np.float32)


def _starts(n: int) -> np.ndarray:
    lo, hi = LAYOUT.state_bounds()
    return np.tile((lo + hi) / 2, (n, 1)).astype(np.float32)


def test_each_stay_runs_for_its_own_horizon_with_discounting() -> None:
    horizons = np.array([1, 3, 5, 2])
    got = model_based.stay_values(KnownModel(), _starts(4), horizons, _dose(0.2), 0.9, rollouts=3,
                                  mode="random_elite", env_seed=0, act_rng=np.random.default_rng(0))
    disc = np.array([sum(0.9 ** t for t in range(h)) for h in horizons])
    np.testing.assert_allclose(got[:, 0], 2.0 * disc, rtol=1e-5)  # reward 10 × 0.2 per step
    np.testing.assert_allclose(got[:, 1:], np.outer(disc, [0.5, 0.25]), rtol=1e-5)  # expected costs


def test_a_death_charges_the_decision_times_left() -> None:
    horizons = np.array([4, 1])
    got = model_based.stay_values(KnownModel(die=True, charge=12.5), _starts(2), horizons, _dose(0.1), 1.0,
                                  rollouts=2, mode="random_elite", env_seed=0, act_rng=np.random.default_rng(0))
    np.testing.assert_allclose(got[:, 0], [1.0 - 12.5 * 3, 1.0], rtol=1e-5)  # died at step 0 of 4, of 1
    np.testing.assert_allclose(got[:, 1], [0.5, 0.5], rtol=1e-5)  # the death step's cost, none after


def test_estimate_combines_targets_and_bags_the_models() -> None:
    models = (KnownModel(), KnownModel(), KnownModel())
    combine = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # the return, the total cost
    v, lo, hi = model_based.estimate(models, _starts(5), np.full(5, 4), _dose(0.3), 1.0,  # type: ignore[arg-type]
                                     model_based.Config(refits=2, rollouts=2), 0, np.random.default_rng(0),
                                     np.random.default_rng(1), 200, 0.95, combine)
    np.testing.assert_allclose(v, [12.0, 3.0], rtol=1e-5)  # 4 steps × 3.0; 4 × (0.5 + 0.25)
    np.testing.assert_allclose(hi - lo, 0.0, atol=1e-4)  # every stay and model agree: no spread


@pytest.fixture(scope="module")
def toy() -> tuple[object, np.ndarray]:
    frame = toy_trajectories(40, np.random.default_rng(3))
    return transitions_from_frame(frame, STATE, COSTS), frame["stay_key"].to_numpy()


def _new(seed: int) -> WorldModel:
    torch.set_num_threads(1)
    cfg = EnsembleConfig(n_members=2, n_elites=1, hidden=(8,), batch_size=64, max_epochs=2, patience=1, seed=seed)
    return WorldModel(cfg, LAYOUT)


def test_fits_hold_stays_out_and_are_reproducible(toy: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    data, keys = toy
    sizes: list[tuple[int, int]] = []
    fit = WorldModel.fit

    def spy(self: WorldModel, train: object, val: object) -> object:
        sizes.append((len(train), len(val)))  # type: ignore[arg-type]
        return fit(self, train, val)  # type: ignore[arg-type]

    monkeypatch.setattr(WorldModel, "fit", spy)
    cfg = model_based.Config(refits=2, holdout=0.25, cost_reader="model")
    a = model_based.fit_models(data, keys, _new, cfg, np.random.SeedSequence(5))
    assert len(a) == 3 and len(set(sizes[i][1] for i in range(3))) == 1  # one held-out set for every fit
    assert sizes[0][0] + sizes[0][1] == len(data)  # the full-data fit: every row in exactly one part
    b = model_based.fit_models(data, keys, _new, cfg, np.random.SeedSequence(5))
    obs, act = data.obs[:7], data.act[:7]
    for ma, mb in zip(a, b):
        np.testing.assert_array_equal(ma.predict(obs, act).rew_mean, mb.predict(obs, act).rew_mean)
    assert not np.array_equal(a[0].predict(obs, act).rew_mean, a[1].predict(obs, act).rew_mean)
    with pytest.raises(ValueError, match="stay_labels"):
        model_based.fit_models(data, keys[:-1], _new, cfg, np.random.SeedSequence(5))


def test_a_policy_reading_unmodelled_columns_gets_no_estimate() -> None:
    world = stage.EvalWorld((KnownModel(),), (), LAYOUT.state_features, _starts(3), np.full(3, 2), ("return",),
                            np.eye(3)[:, :1], 0)
    cfg = stage.OPEConfig(n_boot=100, model=model_based.Config(refits=0, rollouts=1))
    policy = SimpleNamespace(feature_names=("spo2", "not_a_state_column"))
    assert stage.estimate_model_based(world, policy, cfg, np.random.SeedSequence(0), 5.0) == {}
    served = SimpleNamespace(feature_names=("spo2",), act=_dose(0.5))
    got = stage.estimate_model_based(world, served, cfg, np.random.SeedSequence(0), 5.0)
    assert got[("mb", "return")].value == pytest.approx(10.0) and got[("mb", "return")].ess == 5.0


def _rule_data(n: int, seed: int) -> Transitions:
    """States spread over the layout's box; cost 0 = 1[SpO₂ < 92] (a rule of s), cost 1 = 1[NE dose > 0.3] (of a)."""
    rng = np.random.default_rng(seed)
    lo, hi = LAYOUT.state_bounds()
    a_lo, a_hi = LAYOUT.action_bounds()
    obs = (lo + (hi - lo) * rng.random((n, len(lo)))).astype(np.float32)
    act = (a_lo + (a_hi - a_lo) * rng.random((n, len(a_lo)))).astype(np.float32)
    cost = np.column_stack([obs[:, LAYOUT.state_features.index("spo2")] < 92, act[:, 1] > 0.3]).astype(np.float32)
    zeros = np.zeros(n, np.float32)
    return Transitions(obs=obs, act=act, next_obs=obs, rew=zeros, cost=cost, death=zeros)


def test_boosted_costs_read_the_cost_rules_and_leave_the_rest_of_the_step(toy: tuple) -> None:
    fit, stop, fresh = _rule_data(3000, 0), _rule_data(600, 1), _rule_data(400, 2)
    model = KnownModel()
    read = model_based.BoostedCosts(model, model_based.fit_cost_trees(fit, stop, seed=3))  # type: ignore[arg-type]
    p = read.cost_prob(fresh.obs, fresh.act)
    assert p.shape == (400, 2) and ((p >= 0) & (p <= 1)).all()
    assert np.mean((p > 0.5) == (fresh.cost > 0.5)) > 0.97  # both rules learnt, on unseen rows
    again = model_based.BoostedCosts(model, model_based.fit_cost_trees(fit, stop, seed=3))  # type: ignore[arg-type]
    np.testing.assert_array_equal(again.cost_prob(fresh.obs, fresh.act), p)
    base = model.step(fresh.obs, fresh.act, "random_elite", np.random.default_rng(0))
    step = read.step(fresh.obs, fresh.act, "random_elite", np.random.default_rng(0))
    np.testing.assert_array_equal(step.cost_prob, p)
    np.testing.assert_array_equal(step.next_obs, base.next_obs)
    np.testing.assert_array_equal(step.rew, base.rew)
    assert read.layout is LAYOUT and read.elites is model.elites


def test_a_cost_never_seen_reads_its_constant_rate() -> None:
    fit, stop = _rule_data(500, 0), _rule_data(100, 1)
    never = Transitions(obs=fit.obs, act=fit.act, next_obs=fit.obs, rew=fit.rew,
                        cost=np.column_stack([fit.cost[:, 0], np.zeros(len(fit))]), death=fit.death)
    trees = model_based.fit_cost_trees(never, stop, seed=0)
    read = model_based.BoostedCosts(KnownModel(), trees)  # type: ignore[arg-type]
    assert read.trees[1] == 0.0
    np.testing.assert_array_equal(read.cost_prob(stop.obs, stop.act)[:, 1], 0.0)
    with pytest.raises(ValueError, match="one classifier per cost"):
        model_based.BoostedCosts(KnownModel(), read.trees[:1])  # type: ignore[arg-type]


def test_boosted_fits_share_one_set_of_trees_beside_the_same_models(toy: tuple) -> None:
    data, keys = toy
    cfg = model_based.Config(refits=2, holdout=0.25, cost_reader="boosted")
    fits = model_based.fit_models(data, keys, _new, cfg, np.random.SeedSequence(5))
    assert all(isinstance(f, model_based.BoostedCosts) and f.trees is fits[0].trees for f in fits)  # shared trees
    plain = model_based.fit_models(data, keys, _new, model_based.Config(refits=2, holdout=0.25, cost_reader="model"),
                                   np.random.SeedSequence(5))
    obs, act = data.obs[:7], data.act[:7]
    for f, m in zip(fits, plain):  # the same models, now beside their trees
        np.testing.assert_array_equal(f.model.predict(obs, act).rew_mean, m.predict(obs, act).rew_mean)
    v = model_based.estimate(fits, data.obs[:4], np.full(4, 3), _dose(0.2), 1.0, cfg, 0, np.random.default_rng(0),
                             np.random.default_rng(1), 50, 0.95)[0]
    assert np.isfinite(v).all() and (v[1:] >= 0).all() and (v[1:] <= 3).all()  # expected counts over 3 steps


@pytest.mark.parametrize(("kw", "match"), [({"refits": 1}, "refits"), ({"rollouts": 0}, "rollouts"),
                                           ({"holdout": 0.6}, "holdout"), ({"cost_reader": "head"}, "cost_reader")])
def test_bad_config_fails_with_one_line(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        model_based.Config(**kw)


def test_too_few_test_stays_skip_the_models_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    import pandas as pd

    cfg = stage.OPEConfig(model=model_based.Config(holdout=0.2), neighbour=neighbour.Config(enabled=False),
                          consensus=())
    assert model_based.enough_stays(3, cfg.model) and not model_based.enough_stays(2, cfg.model)
    two = pd.DataFrame({"stay_key": ["a", "a", "b"]})
    with caplog.at_level("WARNING"):
        assert stage.eval_world({}, cfg, Path("."), two, {}) is None
    assert "too few for model-based OPE" in caplog.text
