"""Contract tests for the SOC behaviour-cloning policy (ogsrl/agents/bc.py) and the shared agent helpers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import special
from tests.agents.trajectory_fakes import make_split, true_behaviour

from ogsrl import features
from ogsrl.agents import POLICY_LOADERS, bc, common, load_policy
from ogsrl.agents.bc import batch_of
from ogsrl.errors import DataError
from ogsrl.agents.actor import HurdleActor, SavedPolicy
from ogsrl.policy import StochasticPolicy

NAMES = ("map", "spo2", "age")
TINY = bc.Config(hidden=(8, 8), batch_size=16, max_epochs=6, patience=3)
SEED = 3


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(1)
    return make_split(60, 5, rng, "train"), make_split(20, 5, rng, "val")


@pytest.fixture(scope="module")
def fitted(data: tuple[pd.DataFrame, pd.DataFrame]) -> tuple[SavedPolicy, dict[str, float], list[dict[str, float]]]:
    torch.set_num_threads(1)
    train, val = data
    return bc.fit_actor(TINY, NAMES, batch_of(train, NAMES), batch_of(val, NAMES), SEED)


def test_actor_log_prob_is_differentiable_and_finite_at_the_zero_atom(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, _ = data
    actor = HurdleActor(len(NAMES), (8, 8), 2, torch.Generator().manual_seed(0))
    actor.set_normaliser(*common.fit_normaliser(train[list(NAMES)].to_numpy()))
    obs = torch.as_tensor(train[list(NAMES)].to_numpy()[:16])
    acts = torch.as_tensor(train[list(features.ACTIONS)].to_numpy()[:16], dtype=torch.float64)
    acts[0] = 0.0  # both dimensions on the atom
    lp = actor.log_prob(obs, acts)
    assert lp.shape == (16,) and torch.isfinite(lp).all()
    lp.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in actor.net.parameters())
    params = actor.params(obs.numpy())
    np.testing.assert_allclose(lp.detach().numpy(), common.hurdle_log_prob(*params, acts.numpy()), rtol=1e-4,
                               atol=1e-4)


def test_fit_metrics_and_history(fitted: tuple[SavedPolicy, dict[str, float], list[dict[str, float]]]) -> None:
    pol, metrics, history = fitted
    assert isinstance(pol, StochasticPolicy)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert 1 <= metrics["train/best_epoch"] <= metrics["train/epochs"] == len(history) <= TINY.max_epochs
    assert metrics["loss/val_nll"] == pytest.approx(min(h["loss/val_nll"] for h in history))


def test_same_seed_same_metrics(data: tuple[pd.DataFrame, pd.DataFrame], fitted: tuple) -> None:
    train, val = data
    pol2, metrics2, _ = bc.fit_actor(TINY, NAMES, batch_of(train, NAMES), batch_of(val, NAMES), SEED)
    pol, metrics, _ = fitted
    assert metrics2 == metrics
    obs = val[list(NAMES)].to_numpy()
    np.testing.assert_array_equal(pol2.act(obs, np.random.default_rng(0)), pol.act(obs, np.random.default_rng(0)))
    for name, t in pol2.actor.state_dict().items():
        torch.testing.assert_close(t, pol.actor.state_dict()[name], rtol=0, atol=0)
    other, metrics3, _ = bc.fit_actor(TINY, NAMES, batch_of(train, NAMES), batch_of(val, NAMES), SEED + 1)
    assert metrics3["loss/train_nll"] != metrics["loss/train_nll"]


def _cfg_dict(cfg: bc.Config) -> dict:
    return {f: getattr(cfg, f) for f in cfg.__slots__}


def test_act_shapes_and_bounds(fitted: tuple, data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    pol = fitted[0]
    obs = data[1][list(NAMES)].to_numpy()
    for rng in (None, np.random.default_rng(0)):
        a = pol.act(obs, rng)
        assert a.shape == (len(obs), 2)
        assert (a >= 0).all() and (a <= common.ACTION_MAX).all()
    np.testing.assert_array_equal(pol.act(obs, np.random.default_rng(5)), pol.act(obs, np.random.default_rng(5)))
    assert not np.array_equal(pol.act(obs, np.random.default_rng(5)), pol.act(obs, np.random.default_rng(6)))
    assert pol.log_prob(obs, pol.act(obs, np.random.default_rng(0))).shape == (len(obs),)


def test_checkpoint_round_trip_is_exact(fitted: tuple, data: tuple, tmp_path) -> None:
    pol = fitted[0]
    pol.save(tmp_path / "soc")
    doc = json.loads((tmp_path / "soc" / "config.json").read_text())
    assert doc["kind"] == "actor" and doc["format_version"] == common.FORMAT_VERSION and doc["act_mode"] == "sample"
    assert doc["feature_names"] == list(NAMES)
    back = load_policy(tmp_path / "soc")
    obs = data[1][list(NAMES)].to_numpy()
    np.testing.assert_array_equal(back.actor.mode(obs), pol.actor.mode(obs))
    np.testing.assert_array_equal(back.act(obs, np.random.default_rng(9)), pol.act(obs, np.random.default_rng(9)))
    acts = data[1][list(features.ACTIONS)].to_numpy()
    np.testing.assert_array_equal(back.log_prob(obs, acts), pol.log_prob(obs, acts))
    weights = torch.load(tmp_path / "soc" / "weights.pt", weights_only=True)  # no pickled objects
    assert set(weights) == {"obs_mean", "obs_std", *(f"net.{k}" for k in pol.actor.net.state_dict())}  # actor only


def test_load_policy_errors(fitted: tuple, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_policy(tmp_path / "nothing")
    fitted[0].save(tmp_path / "p")
    cfg_file = tmp_path / "p" / "config.json"
    doc = json.loads(cfg_file.read_text())
    cfg_file.write_text(json.dumps({**doc, "kind": "cql9"}))
    with pytest.raises(ValueError, match="unknown policy kind 'cql9'"):
        load_policy(tmp_path / "p")
    cfg_file.write_text(json.dumps({**doc, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        load_policy(tmp_path / "p")
    cfg_file.write_text(json.dumps({**doc, "format_version": 1}))
    with pytest.raises(ValueError, match="rerun `ogsrl train-policies`"):
        load_policy(tmp_path / "p")
    assert set(POLICY_LOADERS) == {"actor", "guarded", "binned"}


def test_bad_inputs_raise_clear_errors(fitted: tuple) -> None:
    pol = fitted[0]
    obs = np.tile([[80.0, 97.0, 60.0]], (4, 1))
    with pytest.raises(ValueError, match=r"shape \(B, 3\)"):
        pol.act(obs[:, :2])
    bad = obs.copy()
    bad[2, 1] = np.nan
    with pytest.raises(DataError, match=r"column 'spo2'.*offending rows: 2"):
        pol.act(bad)
    acts = np.array([[100.0, 0.1]] * 4)
    acts[1, 0] = -1.0
    with pytest.raises(DataError, match=r"column 'fluid_ml'.*offending rows: 1"):
        pol.log_prob(obs, acts)
    acts[1, 0] = 20000.0
    with pytest.raises(DataError, match="outside"):
        pol.log_prob(obs, acts)
    with pytest.raises(ValueError, match="hidden"):
        bc.Config(hidden=())


MIX = (  # two components: mostly "regular", some "aggressive"; shapes (1, K) and (1, K, A)
    np.array([[1.2, -0.3]]),
    np.array([[[0.3, -0.4], [-2.0, -1.0]]]),
    np.array([[[0.55, 0.05], [0.8, 0.6]]]),
    np.log(np.array([[[0.08, 0.05], [0.05, 0.1]]])),
)


def test_density_integrates_to_one_with_the_atoms() -> None:
    w = special.softmax(MIX[0], axis=-1)[0]  # (K,)
    p0 = special.expit(MIX[1])[0]  # (K, A)
    for dim, lo in ((0, 1e-6), (1, 1e-9)):
        grid = np.geomspace(lo, common.ACTION_MAX[dim], 200001)
        acts = np.zeros((len(grid), 2))
        acts[:, dim] = grid
        params = [np.repeat(p, len(grid), axis=0) for p in MIX]
        dens = np.exp(common.hurdle_log_prob(*params, acts))
        # ∫ p(a_dim, a_other = 0) da_dim = Σ_k w_k P_k(a_other = 0) P_k(a_dim > 0)
        expected = (w * p0[:, 1 - dim] * (1 - p0[:, dim])).sum()
        assert np.trapezoid(dens, grid) == pytest.approx(expected, rel=1e-3)
    both_zero = np.exp(common.hurdle_log_prob(*MIX, np.zeros((1, 2))))[0]
    assert both_zero == pytest.approx((w * p0.prod(axis=1)).sum())


def test_mixture_sampling_matches_the_density() -> None:
    n = 40000
    params = [np.repeat(p, n, axis=0) for p in MIX]
    a = common.hurdle_sample(*params, np.random.default_rng(0))
    assert a.shape == (n, 2) and (a >= 0).all() and (a <= common.ACTION_MAX).all()
    w, p0 = special.softmax(MIX[0], axis=-1)[0], special.expit(MIX[1])[0]
    zero = (w[:, None] * p0).sum(axis=0)  # P(a_j = 0) per dimension
    np.testing.assert_array_less(np.abs((a == 0).mean(axis=0) - zero), 4 * np.sqrt(zero * (1 - zero) / n))
    both = np.exp(common.hurdle_log_prob(*MIX, np.zeros((1, 2))))[0]
    assert np.mean((a == 0).all(axis=1)) == pytest.approx(both, abs=4 * np.sqrt(both / n))
    # the fluid mean among draws with no vasopressor = ∫ a p(a, 0) da / P(a1 = 0)
    grid = np.geomspace(1e-6, common.ACTION_MAX[0], 20001)
    dens = np.exp(common.hurdle_log_prob(*[np.repeat(p, len(grid), axis=0) for p in MIX],
                                         np.stack([grid, np.zeros_like(grid)], axis=1)))
    no_pressor = a[:, 1] == 0
    assert a[no_pressor, 0].mean() == pytest.approx(np.trapezoid(grid * dens, grid) / zero[1], rel=0.03)


def test_log_prob_matches_sampling(fitted: tuple) -> None:
    pol = fitted[0]
    obs = np.tile([[70.0, 93.0, 60.0]], (40000, 1))
    a = pol.act(obs, np.random.default_rng(0))
    _, logit0, _, _ = pol.actor.params(obs[:1])  # (1, K=1, 2)
    atom = special.expit(logit0)[0, 0]
    tol = 4 * np.sqrt(atom * (1 - atom) / len(a)) + 1e-3
    np.testing.assert_array_less(np.abs((a == 0).mean(axis=0) - atom), tol)  # sampler's mass at 0
    assert np.exp(pol.log_prob(obs[:1], np.zeros((1, 2))))[0] == pytest.approx(atom.prod(), rel=1e-6)
    # mean fluid draw = ∫ a p(a, a1=0) da / P(a1 = 0), from the density's own continuous part
    grid = np.geomspace(1e-6, common.ACTION_MAX[0], 20001)
    dens = np.exp(pol.log_prob(np.tile(obs[:1], (len(grid), 1)), np.stack([grid, np.zeros_like(grid)], 1)))
    mean0 = np.trapezoid(grid * dens, grid) / atom[1]
    assert a[:, 0].mean() == pytest.approx(mean0, rel=0.03)


def test_mixture_policy_round_trip_and_fit(data: tuple[pd.DataFrame, pd.DataFrame], tmp_path) -> None:
    train, val = data
    cfg = bc.Config(**{**_cfg_dict(TINY), "components": 3})
    pol, metrics, _ = bc.fit_actor(cfg, NAMES, batch_of(train, NAMES), batch_of(val, NAMES), SEED)
    assert all(math.isfinite(v) for v in metrics.values())
    logit_w, logit0, _, _ = pol.actor.params(val[list(NAMES)].to_numpy())
    assert logit_w.shape == (len(val), 3) and logit0.shape == (len(val), 3, 2)
    pol.save(tmp_path / "mix")
    back = load_policy(tmp_path / "mix")
    obs = val[list(NAMES)].to_numpy()
    np.testing.assert_array_equal(back.act(obs, np.random.default_rng(1)), pol.act(obs, np.random.default_rng(1)))
    with pytest.raises(ValueError, match="components"):
        bc.Config(components=0)


def test_fit_recovers_known_behaviour() -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(2)
    train, val = make_split(300, 5, rng, "train"), make_split(60, 5, rng, "val")
    names = ("map", "spo2")
    cfg = bc.Config(hidden=(16, 16), batch_size=64, max_epochs=40, patience=5, lr=3e-3)
    pol, _, _ = bc.fit_actor(cfg, names, batch_of(train, names), batch_of(val, names), 0)
    _, logit0, mu, log_std = (p[:, 0] if p.ndim == 3 else p for p in pol.actor.params(val[list(names)].to_numpy()))
    _, true_logit0, true_mu, true_log_std = (p[:, 0] if p.ndim == 3 else p for p in true_behaviour(val))
    assert np.abs(special.expit(logit0) - special.expit(true_logit0)).mean() < 0.05
    assert np.abs(mu - true_mu).mean() < 0.02
    np.testing.assert_allclose(np.exp(log_std).mean(axis=0), np.exp(true_log_std[0]), rtol=0.2)
