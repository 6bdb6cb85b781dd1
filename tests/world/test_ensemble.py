"""Tests for ogsrl/world/ensemble.py: shapes, determinism, persistence, early stopping, recovery, bad input."""

from __future__ import annotations

import copy

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ogsrl import features as F
from ogsrl.errors import DataError
from ogsrl.world.data import Layout, Transitions
from ogsrl.world.ensemble import CONFIG_FILE, MODEL_FILE, EnsembleConfig, WorldModel

from .conftest import COSTS, STATE, TINY


def _linear_system(n: int, rng: np.random.Generator, noise: float) -> tuple[Transitions, np.ndarray, np.ndarray]:
    """s' = s + A (s − m) + B a + noise on (map, lactate, spo2); returns data, noiseless s', noise std."""
    m = np.array([80.0, 2.0, 95.0])
    sd = np.array([10.0, 1.0, 2.0])
    a_mat = np.array([[-0.3, 0.0, 0.1], [0.0, -0.2, 0.0], [0.05, 0.0, -0.4]])
    b_mat = np.array([[0.004, 20.0], [0.0, -0.5], [0.0, 0.0]])
    obs = m + sd * rng.standard_normal((n, 3))
    act = np.column_stack([rng.uniform(0, 1000, n), rng.uniform(0, 0.5, n)])
    clean = obs + (obs - m) @ a_mat.T + act @ b_mat.T
    noise_sd = noise * sd
    nxt = clean + noise_sd * rng.standard_normal((n, 3))
    z = np.zeros(n, dtype=np.float32)
    data = Transitions(obs=obs.astype(np.float32), act=act.astype(np.float32), next_obs=nxt.astype(np.float32),
                       rew=(-0.1 * obs[:, 0]).astype(np.float32), cost=np.zeros((n, 1), np.float32), death=z)
    return data, clean, noise_sd


def test_prediction_and_step_shapes(tiny_model: WorldModel, toy_data: tuple[Transitions, Transitions]) -> None:
    val = toy_data[1]
    obs, act = val.obs[:17], val.act[:17]
    p = tiny_model.predict(obs, act)
    assert p.next_mean.shape == p.next_var.shape == (3, 17, len(STATE)) and p.next_mean.dtype == np.float32
    assert p.rew_mean.shape == p.death_prob.shape == (3, 17) and p.cost_prob.shape == (3, 17, len(COSTS))
    assert ((p.cost_prob >= 0) & (p.cost_prob <= 1)).all() and (p.next_var >= 0).all()
    lay = tiny_model.layout
    np.testing.assert_array_equal(p.next_mean[:, :, list(lay.copy_idx)],
                                  np.broadcast_to(obs[:, list(lay.copy_idx)], (3, 17, 3)))
    assert (p.next_var[:, :, list(lay.copy_idx)] == 0).all()
    for mode in ("mean", "random_member", "random_elite"):
        s = tiny_model.step(obs, act, mode, np.random.default_rng(0))
        assert s.next_obs.shape == (17, len(STATE)) and s.next_obs.dtype == np.float32
        assert s.rew.shape == s.death_prob.shape == s.uncertainty.shape == (17,)
        assert s.cost_prob.shape == (17, len(COSTS))
        assert np.isin(s.next_obs[:, list(lay.binary_idx)], (0.0, 1.0)).all()
        np.testing.assert_array_equal(s.next_obs[:, list(lay.copy_idx)], obs[:, list(lay.copy_idx)])
        assert (s.uncertainty >= 0).all() and np.isfinite(s.next_obs).all()
    with pytest.raises(ValueError, match="mode"):
        tiny_model.step(obs, act, "median", np.random.default_rng(0))  # type: ignore[arg-type]


def test_clip_state_bounds_and_cumulative(tiny_model: WorldModel) -> None:
    obs = np.tile(np.array([[F.BY_NAME[f].normal for f in STATE]], np.float32), (2, 1))
    cum = STATE.index("urine_cum")
    obs[:, cum] = 500.0
    nxt = obs.copy()
    nxt[0, STATE.index("spo2")] = 140.0
    nxt[1, cum] = 100.0
    out = tiny_model.clip_state(obs, nxt)
    assert out[0, STATE.index("spo2")] == 100.0 and out[1, cum] == 500.0


def test_same_seed_same_model_different_seed_differs(toy_data: tuple[Transitions, Transitions]) -> None:
    cfg = replace(TINY, max_epochs=1)
    lay = Layout.make(STATE, COSTS, cfg.copy_features, cfg.sum_features)
    runs = []
    for seed in (3, 3, 4):
        m = WorldModel(replace(cfg, seed=seed), lay)
        fit = m.fit(*toy_data)
        runs.append((fit.history[0]["val_loss"], m.predict(toy_data[1].obs[:50], toy_data[1].act[:50]).next_mean))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert not np.array_equal(runs[0][1], runs[2][1])


def test_save_load_round_trip_identical(tiny_model: WorldModel, toy_data: tuple[Transitions, Transitions],
                                       tmp_path: Path) -> None:
    tiny_model.save(tmp_path)
    state = torch.load(tmp_path / MODEL_FILE, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert meta["state_features"] == list(STATE) and meta["cost_names"] == list(COSTS)
    loaded = WorldModel.load(tmp_path, state_features=STATE, action_names=F.ACTIONS)
    val = toy_data[1]
    a, b = tiny_model.predict(val.obs, val.act), loaded.predict(val.obs, val.act)
    for field in ("next_mean", "next_var", "rew_mean", "cost_prob", "death_prob"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    np.testing.assert_array_equal(tiny_model.elites, loaded.elites)
    sa = tiny_model.step(val.obs, val.act, "random_elite", np.random.default_rng(5))
    sb = loaded.step(val.obs, val.act, "random_elite", np.random.default_rng(5))
    np.testing.assert_array_equal(sa.next_obs, sb.next_obs)
    assert loaded.death_charge == tiny_model.death_charge == 0.0
    charged = copy.deepcopy(tiny_model)
    charged.death_charge = 12.5
    charged.save(tmp_path / "charged")
    assert WorldModel.load(tmp_path / "charged").death_charge == 12.5


def test_load_rejects_wrong_features_or_actions(tiny_model: WorldModel, tmp_path: Path) -> None:
    tiny_model.save(tmp_path)
    swapped = (STATE[1], STATE[0], *STATE[2:])
    with pytest.raises(ValueError, match="order must be identical"):
        WorldModel.load(tmp_path, state_features=swapped)
    with pytest.raises(ValueError, match="do not match"):
        WorldModel.load(tmp_path, state_features=STATE[:-1])
    with pytest.raises(ValueError, match="dim 1"):
        WorldModel.load(tmp_path, action_names=("fluid_ml",))
    with pytest.raises(FileNotFoundError):
        WorldModel.load(tmp_path / "nowhere")


def test_early_stopping_triggers_on_noise() -> None:
    rng = np.random.default_rng(0)
    n = 600
    obs = (80 + 10 * rng.standard_normal((n, 3))).astype(np.float32)
    data = Transitions(obs=obs, act=rng.uniform(0, 1, (n, 2)).astype(np.float32),
                       next_obs=(obs + rng.standard_normal((n, 3))).astype(np.float32),
                       rew=rng.standard_normal(n).astype(np.float32), cost=np.zeros((n, 1), np.float32),
                       death=np.zeros(n, np.float32))
    cfg = EnsembleConfig(n_members=2, n_elites=1, hidden=(16,), batch_size=100, max_epochs=200, patience=3,
                         lr=3e-3, seed=1, copy_features=())
    m = WorldModel(cfg, Layout.make(("map", "lactate", "spo2"), ("cost_x",), ()))
    fit = m.fit(Transitions(data.obs[:400], data.act[:400], data.next_obs[:400], data.rew[:400],
                            data.cost[:400], data.death[:400]),
                Transitions(data.obs[400:], data.act[400:], data.next_obs[400:], data.rew[400:],
                            data.cost[400:], data.death[400:]))
    assert fit.stopped_early and fit.epochs < 200
    assert len(fit.history) == fit.epochs and fit.elites == [int(np.argmin(fit.member_val_loss))]
    # the kept weights are the best ones: their val loss equals the recorded best
    assert min(h["best_val_loss"] for h in fit.history) == pytest.approx(min(fit.member_val_loss))


def test_hand_built_linear_system_is_recovered() -> None:
    rng = np.random.default_rng(1)
    train, _, _ = _linear_system(3000, rng, noise=0.05)
    val, _, _ = _linear_system(500, rng, noise=0.05)
    test, clean, noise_sd = _linear_system(500, rng, noise=0.05)
    cfg = EnsembleConfig(n_members=3, n_elites=2, hidden=(32, 32), batch_size=128, max_epochs=25, patience=5,
                         lr=3e-3, seed=0, copy_features=())
    m = WorldModel(cfg, Layout.make(("map", "lactate", "spo2"), ("cost_x",), ()))
    m.fit(train, val)
    p = m.predict(test.obs, test.act)
    mean = p.next_mean[m.elites].mean(0)
    err = np.sqrt(((mean - clean) ** 2).mean(0))
    assert (err < 0.5 * noise_sd).all(), (err, noise_sd)
    pred_sd = np.sqrt(p.next_var[m.elites].mean(0)).mean(0)
    np.testing.assert_allclose(pred_sd, noise_sd, rtol=0.35)
    assert np.sqrt(((p.rew_mean[m.elites].mean(0) - test.rew) ** 2).mean()) < 0.2


def test_nan_and_shape_errors(tiny_model: WorldModel) -> None:
    obs = np.tile(np.array([[F.BY_NAME[f].normal for f in STATE]], np.float32), (4, 1))
    act = np.zeros((4, 2), np.float32)
    obs_inf = obs.copy()
    obs_inf[2, 1] = np.inf
    with pytest.raises(DataError, match=r"readmission.*offending rows: 2"):
        tiny_model.predict(obs_inf, act)
    with pytest.raises(ValueError, match=r"act must be \(B=4, 2\)"):
        tiny_model.predict(obs, np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="obs must be"):
        tiny_model.predict(obs[:, :-1], act)


def test_binary_targets_must_be_zero_or_one(toy_data: tuple[Transitions, Transitions]) -> None:
    train, val = toy_data
    nxt = train.next_obs.copy()
    nxt[3, STATE.index("mechvent")] = 0.5
    bad = Transitions(train.obs, train.act, nxt, train.rew, train.cost, train.death)
    with pytest.raises(DataError, match="mechvent"):
        WorldModel(TINY, Layout.make(STATE, COSTS, TINY.copy_features, TINY.sum_features)).fit(bad, val)


def test_sum_features_follow_identity_and_violations_raise(tiny_model: WorldModel,
                                                          toy_data: tuple[Transitions, Transitions]) -> None:
    train, val = toy_data
    cum, step = STATE.index("urine_cum"), STATE.index("urine_step")
    fluid = STATE.index("fluid_cum")
    s = tiny_model.step(val.obs, val.act, "random_elite", np.random.default_rng(1))
    np.testing.assert_allclose(s.next_obs[:, cum], val.obs[:, cum] + s.next_obs[:, step], rtol=1e-6)
    np.testing.assert_allclose(s.next_obs[:, fluid], val.obs[:, fluid] + val.act[:, 0], rtol=1e-6)
    nxt = train.next_obs.copy()
    nxt[7, fluid] += 100.0
    bad = Transitions(train.obs, train.act, nxt, train.rew, train.cost, train.death)
    with pytest.raises(DataError, match=r"column 'next_fluid_cum'.*sum_features.*offending rows: 7"):
        WorldModel(TINY, Layout.make(STATE, COSTS, TINY.copy_features, TINY.sum_features)).fit(bad, val)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="n_elites"):
        EnsembleConfig(n_members=3, n_elites=4)
    with pytest.raises(ValueError, match="hidden"):
        EnsembleConfig(hidden=())


def test_chunked_prediction_matches_single_pass(tiny_model: WorldModel, toy_data: tuple[Transitions, Transitions],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import ogsrl.world.ensemble as ens

    val = toy_data[1]
    whole = tiny_model.predict(val.obs[:50], val.act[:50])
    monkeypatch.setattr(ens, "PREDICT_CHUNK", 7)
    chunked = tiny_model.predict(val.obs[:50], val.act[:50])
    np.testing.assert_allclose(chunked.next_mean, whole.next_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(chunked.death_prob, whole.death_prob, rtol=1e-5, atol=1e-7)


def test_ratio_feature_is_derived_from_its_sources_and_violations_raise(
        tiny_model: WorldModel, toy_data: tuple[Transitions, Transitions]) -> None:
    train, val = toy_data
    pf, pao2, fio2 = (STATE.index(f) for f in ("pf_ratio", "pao2", "fio2"))
    for mode in ("random_elite", "mean"):
        s = tiny_model.step(val.obs, val.act, mode, np.random.default_rng(2))
        derived = np.clip(s.next_obs[:, pao2] / s.next_obs[:, fio2], F.BY_NAME["pf_ratio"].low,
                          F.BY_NAME["pf_ratio"].high)
        np.testing.assert_allclose(s.next_obs[:, pf], derived, rtol=1e-5)
    nxt = train.next_obs.copy()
    nxt[4, pf] += 60.0
    bad = Transitions(train.obs, train.act, nxt, train.rew, train.cost, train.death)
    with pytest.raises(DataError, match=r"column 'next_pf_ratio'.*ratio_features.*offending rows: 4"):
        WorldModel(TINY, Layout.make(STATE, COSTS, TINY.copy_features, TINY.sum_features)).fit(bad, val)
    # a feature without a defining ratio is refused
    with pytest.raises(ValueError, match="no defining ratio"):
        EnsembleConfig(ratio_features=("map",))


def test_foreign_schema_bounds_kinds_and_one_hot_discrete_actions(tmp_path: Path) -> None:
    """A bring-your-own table: kinds and clip bounds from its schema; a discrete id enters as its one-hot code."""
    from ogsrl.synth import tabular as T

    schema = T.schema("discrete")
    lay = Layout.make(T.STATE, ("cost_low_perfusion",), (), (), schema)
    assert lay.action_names == ("treatment",) and lay.discrete_n == 4 and lay.n_act_in == 4
    assert lay.binary_idx == (2,) and lay.gauss_idx == (0, 1)
    lo, hi = lay.state_bounds()
    assert lo.tolist() == [0, 0, 0] and hi.tolist() == [8, 13, 1]
    assert lay.action_input(np.array([[3.0], [0.0]])).tolist() == [[0, 0, 0, 1], [1, 0, 0, 0]]
    with pytest.raises(ValueError, match="must be distinct names of the table's schema"):
        Layout.make(("perfusion_index", "map"), ("cost_low_perfusion",), (), (), schema)
    rng = np.random.default_rng(0)
    df = T.simulate(T.MDPConfig(stays=150, horizon=5, seed=1))
    obs = df[list(T.STATE)].to_numpy(np.float32)
    nxt = df[[f"next_{s}" for s in T.STATE]].to_numpy(np.float32)
    d = Transitions(obs=obs, act=df[["treatment"]].to_numpy(np.float32), next_obs=nxt,
                    rew=df["reward"].to_numpy(np.float32), cost=df[["cost_low_perfusion"]].to_numpy(np.float32),
                    death=(df["done"] & df["died"]).to_numpy(np.float32))
    model = WorldModel(TINY, lay)
    model.fit(d, d)
    step = model.step(obs[:32], d.act[:32], "random_elite", rng)
    assert ((step.next_obs >= lo) & (step.next_obs <= hi)).all() and np.isin(step.next_obs[:, 2], (0, 1)).all()
    model.save(tmp_path / "w")
    back = WorldModel.load(tmp_path / "w", action_names=("treatment",))
    assert back.layout == lay
    p1, p2 = model.predict(obs[:8], d.act[:8]), back.predict(obs[:8], d.act[:8])
    assert np.allclose(p1.next_mean, p2.next_mean)
