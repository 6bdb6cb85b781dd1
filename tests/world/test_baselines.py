"""Tests for ogsrl/world/baselines.py: 1-NN lookup and the linear model."""

from __future__ import annotations

import numpy as np
import pytest

from ogsrl.world.baselines import linear_model, nearest_neighbour
from ogsrl.world.data import Transitions


def _data(n: int, rng: np.random.Generator, noise: float = 0.0) -> Transitions:
    obs = rng.normal(0, 1, (n, 3)).astype(np.float32) * [10, 1, 2] + [80, 2, 95]
    act = rng.uniform(0, 1, (n, 2)).astype(np.float32)
    nxt = obs + 0.1 * (obs - [80, 2, 95]) + act @ np.array([[5.0, 0, 0], [0, -1.0, 0.5]]) + noise * rng.normal(0, 1, (n, 3))
    z = np.zeros(n, np.float32)
    return Transitions(obs=obs.astype(np.float32), act=act, next_obs=nxt.astype(np.float32), rew=z,
                       cost=np.zeros((n, 1), np.float32), death=z)


def test_nearest_neighbour_returns_logged_next_state_on_training_rows() -> None:
    rng = np.random.default_rng(0)
    train, val = _data(300, rng, 0.5), _data(100, rng, 0.5)
    knn = nearest_neighbour().fit(train, val)
    f = knn.predict(train.obs[:20], train.act[:20])
    np.testing.assert_allclose(f.mean, train.next_obs[:20], atol=1e-4)
    assert f.std.shape == (20, 3) and (f.std > 0).all()
    resid = val.next_obs - knn.predict(val.obs, val.act).mean
    np.testing.assert_allclose(f.std[0], np.sqrt((resid.astype(np.float64) ** 2).mean(0)), rtol=1e-4)


def test_linear_model_recovers_noiseless_linear_system() -> None:
    rng = np.random.default_rng(1)
    train, val, test = _data(400, rng), _data(100, rng), _data(100, rng)
    lin = linear_model().fit(train, val)
    f = lin.predict(test.obs, test.act)
    np.testing.assert_allclose(f.mean, test.next_obs, atol=1e-2)
    assert (f.std < 1e-2).all()


def test_predict_before_fit_raises() -> None:
    with pytest.raises(RuntimeError, match="fit"):
        nearest_neighbour().predict(np.zeros((1, 3)), np.zeros((1, 2)))
