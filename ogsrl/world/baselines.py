"""One-step baselines for the world model, scored in the same run on the same split.

* :func:`nearest_neighbour` — 1-NN lookup in standardised (s, a) space: s' is the logged next state of the nearest
  training transition (the approach of the OGSRL authors' code, github.com/Runz96/SafeRL-OGSRL).
* :func:`linear_model` — ridge regression of s' − s on (s, a).

Both give a Gaussian predictive distribution whose per-feature standard deviation is the residual spread measured on
the validation split (1-NN residuals on training rows are zero by construction), so NLL and interval coverage are
comparable with the ensemble's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.neighbors import KNeighborsRegressor

from ogsrl.world.data import FloatArray, Transitions

MIN_STD = 1e-6


@dataclass(frozen=True, slots=True)
class GaussianForecast:
    """Per-feature Gaussian one-step forecast in physical units."""

    mean: FloatArray
    """(B, S) predicted s'"""
    std: FloatArray
    """(B, S) predictive standard deviation"""


class DeltaRegressor:
    """Standardise (s, a), regress s' − s with a scikit-learn estimator, residual std from validation rows."""

    def __init__(self, name: str, estimator: Any) -> None:
        self.name = name
        """label used in reports (knn, linear)"""
        self.estimator = estimator
        self._mu: np.ndarray | None = None
        self._sd: np.ndarray | None = None
        self._res_std: np.ndarray | None = None

    def _mean(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        assert self._mu is not None and self._sd is not None
        x = (np.concatenate([obs, act], axis=1).astype(np.float64) - self._mu) / self._sd
        return np.asarray(obs, dtype=np.float64) + self.estimator.predict(x)

    def fit(self, train: Transitions, val: Transitions) -> DeltaRegressor:
        """Fit on ``train``; per-feature residual std (RMSE) measured on ``val``."""
        x = np.concatenate([train.obs, train.act], axis=1).astype(np.float64)
        self._mu = x.mean(0)
        sd = x.std(0)
        self._sd = np.where(sd > MIN_STD, sd, 1.0)
        self.estimator.fit((x - self._mu) / self._sd, (train.next_obs - train.obs).astype(np.float64))
        resid = val.next_obs - self._mean(val.obs, val.act)
        self._res_std = np.maximum(np.sqrt((resid ** 2).mean(0)), MIN_STD)
        return self

    def predict(self, obs: np.ndarray, act: np.ndarray) -> GaussianForecast:
        """Forecast for ``obs (B, S)``, ``act (B, A)``."""
        if self._res_std is None:
            raise RuntimeError(f"{self.name}: call fit() first")
        mean = self._mean(obs, act).astype(np.float32)
        return GaussianForecast(mean=mean, std=np.broadcast_to(self._res_std, mean.shape).astype(np.float32))


def nearest_neighbour() -> DeltaRegressor:
    """1-NN lookup: s' − s of the closest training (s, a), Euclidean in standardised units."""
    return DeltaRegressor("knn", KNeighborsRegressor(n_neighbors=1, algorithm="kd_tree"))


def linear_model() -> DeltaRegressor:
    """Ridge regression s' − s = W [s, a] + b (α = 1e-3 on standardised inputs)."""
    return DeltaRegressor("linear", Ridge(alpha=1e-3))
