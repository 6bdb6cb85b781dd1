"""The shared actor, the served policy and the guardian fallback (ogsrl/agents/actor.py), and TrainInputs'
environment factory (ogsrl/agents/inputs.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tests.agents.trajectory_fakes import COSTS, STATE

from ogsrl import features
from ogsrl.agents import common, load_policy
from ogsrl.agents.actor import GuardedPolicy, HurdleActor, SavedPolicy
from ogsrl.agents.inputs import GUARDIAN_DIR, WORLD_DIR, EnvFactory
from ogsrl.world.env import EnvConfig

LIMIT = 500.0
"""the toy guardian accepts (s, a) iff fluid_ml ≤ LIMIT"""


class FluidGuardian:
    """A guardian on (map, fluid_ml, nee_max) that rejects more than LIMIT mL."""

    feature_names = ("map", *features.ACTIONS)

    def contains(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)[:, 1] <= LIMIT


def _policy(seed: int, mode: str = "sample") -> SavedPolicy:
    actor = HurdleActor(1, (8,), 1, torch.Generator().manual_seed(seed))
    actor.set_normaliser(np.array([70.0]), np.array([10.0]))
    return SavedPolicy(actor, ("map",), mode, sample_seed=seed)  # type: ignore[arg-type]


def test_bfloat16_hidden_layers_round_the_parameters_and_their_gradients_reach_the_float32_weights() -> None:
    actor = HurdleActor(5, (64, 64), 3, torch.Generator().manual_seed(0))
    obs = torch.randn(300, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = []
    for dtype in (torch.float32, torch.bfloat16):
        actor.zero_grad()
        params = actor(obs, dtype)
        sum(p.double().sum() for p in params).backward()
        grads.append((params, [p.grad.clone() for p in actor.parameters()]))
    (ref, ref_grads), (low, low_grads) = grads
    assert all(p.dtype == torch.float32 for p in low)  # the output layer stays float32
    for a, b in zip(low, ref):  # bfloat16 rounding (8 bits) of inputs, weights and activations, nothing more
        assert 1e-5 < float((a - b).detach().abs().max()) < 0.03
    for a, b in zip(low_grads, ref_grads):
        assert a.dtype == torch.float32 and float((a - b).norm() / b.norm()) < 0.02
    actor.net.insert(1, torch.nn.Tanh())  # a layer the low-precision path would skip: refused, not dropped
    with pytest.raises(ValueError, match="Linear and ReLU"):
        actor(obs, torch.bfloat16)


@pytest.fixture()
def guarded() -> GuardedPolicy:
    return GuardedPolicy(_policy(0), _policy(1), FluidGuardian(), mc_samples=4000, mc_seed=3)


def test_rejected_actions_are_replaced_by_the_fallbacks(guarded: GuardedPolicy) -> None:
    obs = np.full((2000, 1), 65.0)
    raw = guarded.policy.act(obs, np.random.default_rng(5))
    served = guarded.act(obs, np.random.default_rng(5))  # same stream: π's draws first, then the fallback's
    inside = raw[:, 0] <= LIMIT
    assert 0 < inside.mean() < 1  # the toy exercises both branches
    np.testing.assert_array_equal(served[inside], raw[inside])
    assert not np.array_equal(served[~inside], raw[~inside])
    fb = guarded.fallback.act(obs[~inside], np.random.default_rng(11))
    assert served[~inside, 0].mean() == pytest.approx(fb[:, 0].mean(), rel=0.15)  # fallback's distribution


def test_guarded_density_splits_into_inside_and_outside_parts_that_add_up(guarded: GuardedPolicy) -> None:
    s = np.array([[65.0]])
    p_out = float(guarded.prob_outside(s)[0])
    rng = np.random.default_rng(0)
    draws = guarded.policy.act(np.repeat(s, 20000, axis=0), rng)
    assert p_out == pytest.approx(np.mean(draws[:, 0] > LIMIT), abs=0.02)
    # ∫ π_g = 1 on a quadrature grid: the atom at 0 plus the midpoint rule on the scaled axis, per dimension
    n = 300
    y = (np.arange(n) + 0.5) / n
    pts, wts = [], []
    for j in range(2):
        amount = common.unscale_actions(np.tile(y[:, None], (1, 2)))[:, j]
        pts.append(np.r_[0.0, amount])
        wts.append(np.r_[1.0, (common.ACTION_RESOLUTION[j] + amount) * common.LOG_SPAN[j] / n])  # da = dy·(c+a)·L
    f, v = np.meshgrid(pts[0], pts[1], indexing="ij")
    acts = np.column_stack([f.ravel(), v.ravel()])
    w = np.outer(wts[0], wts[1]).ravel()
    obs = np.repeat(s, len(acts), axis=0)
    assert np.sum(np.exp(guarded.policy.log_prob(obs, acts)) * w) == pytest.approx(1.0, abs=2e-3)  # the grid works
    dens = np.exp(guarded.log_prob(obs, acts)) * w
    inside = acts[:, 0] <= LIMIT
    p_in_pi = np.sum(np.exp(guarded.policy.log_prob(obs, acts)) * w * inside)
    p_out_fb = np.sum(np.exp(guarded.fallback.log_prob(obs, acts)) * w * ~inside)
    assert np.sum(dens[~inside]) == pytest.approx(p_out * p_out_fb, rel=1e-3)  # outside: only the fallback's mass
    assert np.sum(dens[inside]) == pytest.approx(p_in_pi + p_out * (1 - p_out_fb), abs=3e-3)
    assert np.sum(dens) == pytest.approx(1.0, abs=0.03)  # = 1 − P_π(out) + p̂_out: off only by the MC error
    # what act() serves matches the density: its share of outside actions is p_out · P_fb(outside)
    served = guarded.act(np.repeat(s, 20000, axis=0), np.random.default_rng(1))
    assert np.mean(served[:, 0] > LIMIT) == pytest.approx(p_out * p_out_fb, abs=0.015)


def test_log_prob_is_deterministic_and_minus_inf_only_when_unreachable(guarded: GuardedPolicy) -> None:
    obs = np.full((5, 1), 65.0)
    acts = np.array([[0.0, 0.0], [300.0, 0.1], [600.0, 0.0], [2000.0, 0.3], [LIMIT, 0.0]])
    lp = guarded.log_prob(obs, acts)
    np.testing.assert_array_equal(lp, guarded.log_prob(obs, acts))
    assert np.isfinite(lp).all()
    class AcceptAll(FluidGuardian):
        def contains(self, x: np.ndarray) -> np.ndarray:
            return np.ones(len(x), dtype=bool)

    never = GuardedPolicy(_policy(0), _policy(1), AcceptAll())
    lp_never = never.log_prob(obs, acts)
    np.testing.assert_allclose(lp_never, never.policy.log_prob(obs, acts))  # nothing rejected: π_g = π


def test_mode_policies_act_deterministically_and_refuse_log_prob() -> None:
    pol = _policy(0, "mode")
    obs = np.full((3, 1), 65.0)
    np.testing.assert_array_equal(pol.act(obs, np.random.default_rng(0)), pol.act(obs, np.random.default_rng(1)))
    with pytest.raises(ValueError, match="act_mode 'sample'"):
        pol.log_prob(obs, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="act_mode"):
        GuardedPolicy(pol, _policy(1), FluidGuardian())


def test_guarded_checkpoint_round_trip(traj_root: Path, guardian_dir: Path, tmp_path: Path) -> None:
    names = STATE
    pols = []
    for seed in (0, 1):
        actor = HurdleActor(len(names), (8,), 2, torch.Generator().manual_seed(seed))
        pols.append(SavedPolicy(actor, names, "sample", {"run": "x", "seed": seed}, sample_seed=seed))
    from ogsrl import guardian as guardian_mod

    g = GuardedPolicy(pols[0], pols[1], guardian_mod.load(guardian_dir), guardian_dir, mc_samples=32, mc_seed=4)
    g.save(tmp_path / "served")
    back = load_policy(tmp_path / "served")
    assert isinstance(back, GuardedPolicy) and back.feature_names == g.feature_names and back.mc_samples == 32
    import pandas as pd

    test = pd.read_parquet(traj_root / "data/trajectories/test.parquet")
    obs, acts = test[list(g.feature_names)].to_numpy(), test[list(features.ACTIONS)].to_numpy()
    np.testing.assert_array_equal(back.log_prob(obs, acts), g.log_prob(obs, acts))
    np.testing.assert_array_equal(back.act(obs, np.random.default_rng(2)), g.act(obs, np.random.default_rng(2)))


def _world(root: Path) -> None:
    from ogsrl.world.data import Layout
    from ogsrl.world.ensemble import EnsembleConfig, WorldModel

    cfg = EnsembleConfig(n_members=2, n_elites=1, hidden=(8,), copy_features=("age",), sum_features=())
    WorldModel(cfg, Layout.make(STATE, COSTS, cfg.copy_features, cfg.sum_features)).save(root / WORLD_DIR)


def test_make_env_loads_once_and_raises_on_a_state_set_mismatch(traj_root: Path, guardian_dir: Path,
                                                              tmp_path: Path) -> None:
    import pandas as pd

    _world(tmp_path)
    (tmp_path / GUARDIAN_DIR).parent.mkdir(parents=True)
    import shutil

    shutil.copytree(guardian_dir, tmp_path / GUARDIAN_DIR)
    train = pd.read_parquet(traj_root / "data/trajectories/train.parquet").sort_values(["stay_key", "step"])
    factory = EnvFactory(tmp_path, train, EnvConfig(horizon=5), -24.0, 4.0, 20)
    env = factory.make(STATE, 4, 7, True)
    assert env.num_envs == 4 and env.guard is not None and env.cfg.seed == 7
    obs, _ = env.reset(seed=7)
    _, _, _, _, info = env.step(np.zeros((4, 2), dtype=np.float32))
    assert info["cost"].shape == (4, len(COSTS))
    assert factory.make(STATE, 2, 7, False).guard is None
    with pytest.raises(ValueError, match="model-based runs need state: model"):
        factory.make(features.ALL, 2, 7, False)


def test_the_neighbour_reading_starts_from_drawn_train_stays_and_anchors_on_their_logged_returns(
        traj_root: Path, guardian_dir: Path, tmp_path: Path) -> None:
    import shutil

    import pandas as pd

    from ogsrl.world.env import logged_returns

    _world(tmp_path)
    shutil.copytree(guardian_dir, tmp_path / GUARDIAN_DIR)
    train = pd.read_parquet(traj_root / "data/trajectories/train.parquet").sort_values(["stay_key", "step"])
    factory = EnvFactory(tmp_path, train, EnvConfig(horizon=5), -24.0, 4.0, 20)
    reading = factory.neighbour_reading(STATE, 30, 2, 5, 1.0)
    again = factory.neighbour_reading(STATE, 30, 2, 5, 1.0)
    np.testing.assert_array_equal(reading.starts, again.starts)
    assert reading.starts.shape == (30, len(STATE)) and reading.cost_names == COSTS and reading.rollouts == 2
    assert len(reading.pool._pool) == len(train)  # every train transition, whichever stays episodes start from
    _, _, starts, horizons = factory._load()
    logged = logged_returns(train, ("reward", *COSTS), horizons, 1.0)
    picked = np.flatnonzero((starts[:, None] == reading.starts[None]).all(-1).any(1))
    assert len(picked) == 30
    # the clinicians in the pool, drawn as the anchor drew them, land exactly on each picked stay's logged returns
    from ogsrl.ope.model_based import stay_values

    rng = np.random.default_rng(np.random.SeedSequence([reading.env_seed, 0]))
    clinicians = stay_values(reading.pool, reading.starts, reading.horizons, reading.pool.logged_action, 1.0, 2,
                             "random_elite", reading.env_seed, rng)
    np.testing.assert_allclose(clinicians + reading.offsets, logged[picked], rtol=1e-5, atol=1e-5)
    assert len(factory.neighbour_reading(STATE, 10**6, 1, 5, 1.0).starts) == train["stay_key"].nunique()
    with pytest.raises(ValueError, match="needs state: model"):
        factory.neighbour_reading(features.ALL, 30, 2, 5, 1.0)


def test_a_policy_scored_on_a_table_with_other_units_is_refused_naming_the_column() -> None:
    import dataclasses

    from ogsrl.data.schema import ContinuousAction, Schema, StateFeature
    from ogsrl.errors import DataError

    action = ContinuousAction(("dose_a", "dose_b"), (0.0, 0.0), (10.0, 2.0), ("mg", "mL/h"))
    schema = Schema((StateFeature("heart_load", "a.u.", 0.0, 5.0), StateFeature("years", "y", 0.0, 120.0, "static")),
                    action, "reward", ("cost_x",), ())
    space = common.action_space_of(schema)
    actor = HurdleActor(2, (8,), 1, torch.Generator().manual_seed(0), space)
    names = ("heart_load", "years")
    policy = SavedPolicy(actor, names, "sample", {"run": "x", **common.training_units(schema, names)})
    assert policy.provenance["state_units"] == {"heart_load": "a.u.", "years": "y"}
    common.check_units(policy, schema, "test split")  # the training table itself passes
    months = dataclasses.replace(schema, state=(schema.state[0], StateFeature("years", "months", 0.0, 1440.0, "static")))
    with pytest.raises(DataError, match=r"column 'years'.*trained with years in 'y', the table declares 'months'"):
        common.check_units(policy, months, "test split")
    grams = dataclasses.replace(schema, action=dataclasses.replace(action, units=("g", "mL/h")))
    with pytest.raises(DataError, match=r"column 'dose_a'.*'mg', the table declares 'g'"):
        common.check_units(policy, grams, "test split")
    guarded = GuardedPolicy(policy, policy, FluidGuardian(), mc_samples=4, mc_seed=0)
    with pytest.raises(DataError, match="years"):  # a served (guarded) checkpoint is checked through its policy
        common.check_units(guarded, months, "test split")
    legacy = SavedPolicy(actor, names, "sample", {"run": "x"})  # saved before units were recorded: state not checked
    common.check_units(legacy, months, "test split")
