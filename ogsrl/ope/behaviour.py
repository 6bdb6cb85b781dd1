"""Behaviour-density estimate π̂_b(a | x) for importance sampling.

The clinicians' density is estimated with the same hurdle-Gaussian family as the SOC policy
(:mod:`ogsrl.agents.bc`), fitted by maximum likelihood on the train split with early stopping on val. Unlike a
policy, it conditions on *every* extracted feature present in the table (``features.ALL``), not only the configured
state subset:

* Importance weights π_e(a|s) / π_b(a|x) are unbiased only if the logged action is independent of everything else
  given x (no unmeasured confounding of the action). Clinicians act on MAP, lactate, heart rate, creatinine, … that
  the 13-feature paper state leaves out; a density conditioned on the state alone averages over them and mis-states
  how likely each logged action was, biasing every OPE number.
* The target policy still reads only its own state columns; conditioning π̂_b on a superset is always allowed
  because π_e(a|s) is also a function of x ⊇ s.

The price is variance: the richer π̂_b is sharper than any policy that does not see x, so per-step ratios spread
more and the effective sample size drops (reported with each estimate).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ogsrl import features
from ogsrl.agents import bc, common
from ogsrl.io import atomic_path


def behaviour_features(columns: Sequence[str], schema: Any = None) -> tuple[str, ...]:
    """The canonical features (``features.ALL`` order) present among ``columns``; for a bring-your-own table
    (``schema`` not canonical) every feature its schema declares."""
    if schema is not None and not schema.is_canonical:
        return tuple(schema.state_names)
    present = set(columns)
    names = tuple(f for f in features.ALL if f in present)
    if not names:
        raise ValueError("behaviour_features: the table holds none of the canonical feature columns")
    return names


def fit_behaviour(
    cfg: bc.Config, train: pd.DataFrame, val: pd.DataFrame, seed: int, schema: Any = None
) -> tuple[Any, dict[str, float]]:
    """Fit π̂_b on all canonical feature columns of ``train`` (early stopping on ``val``; ``seed`` drives init and
    shuffling).

    Returns:
        (the density model, its fit metrics ``loss/train_nll``, ``loss/val_nll``, …).
    """
    names = behaviour_features(train.columns, schema)
    missing = [n for n in names if n not in val.columns]
    if missing:
        raise ValueError(f"fit_behaviour: val lacks feature columns {missing}")
    space = common.action_space_of(schema, "behaviour model")
    if isinstance(space, common.DiscreteSpace):  # categorical propensities: a calibrated classifier
        model, metrics = LogisticBehaviour.fit(names, space, train, val, seed)
        return model, {**metrics, "features": float(len(names))}
    pol, metrics, _ = bc.fit_actor(cfg, names, bc.batch_of(train, names, space.columns),
                                   bc.batch_of(val, names, space.columns), seed, space)
    return pol, {**metrics, "features": float(len(names))}


# ---- a discrete action column: a calibrated multinomial classifier --------------------------------------------
LOGISTIC_KIND = "logistic_behaviour"
"""config.json kind of a :class:`LogisticBehaviour`"""


class LogisticBehaviour:
    """π̂_b(a | x) for a discrete action column: sklearn's multinomial ``LogisticRegression`` on the standardised
    features and their squares, calibrated by temperature scaling on the validation split:

        π̂_b(a | x) = softmax((W φ(x) + b) / T)_a,   φ(x) = (z, z²), z = (x − m)/s,
        T = argmin_T  −Σ_val log π̂_b(a_i | x_i)    (bounded scalar search over log T)

    (Guo et al. 2017: one scalar leaves the ranking alone and fixes over- or under-confidence, which importance
    weights 1/π̂_b amplify.) Ids never logged in train get probability ``FLOOR``. Saved as JSON (no pickle).
    """

    kind = LOGISTIC_KIND
    FLOOR = 1e-6

    def __init__(self, feature_names: Sequence[str], space: Any, mean: np.ndarray, std: np.ndarray,
                 coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray, temperature: float) -> None:
        self.feature_names = tuple(feature_names)
        self.space = space
        self.action_columns: tuple[str, ...] = tuple(space.columns)
        self.mean, self.std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
        self.coef, self.intercept = np.asarray(coef, np.float64), np.asarray(intercept, np.float64)
        self.classes = np.asarray(classes, np.int64)
        self.temperature = float(temperature)
        self.act_mode = "sample"

    def _phi(self, obs: np.ndarray) -> np.ndarray:
        z = (np.asarray(obs, np.float64) - self.mean) / self.std
        return np.concatenate([z, z**2], axis=1)

    def _logits(self, obs: np.ndarray) -> np.ndarray:
        raw = self._phi(obs) @ self.coef.T + self.intercept  # (B, classes seen)
        return raw if len(self.classes) > 1 else np.concatenate([-raw, raw], axis=1)

    def probs(self, obs: np.ndarray, temperature: float | None = None) -> np.ndarray:
        """π̂_b(·|x) ``(B, n)`` (unseen ids at ``FLOOR``, rows renormalised)."""
        t = self.temperature if temperature is None else temperature
        logits = self._logits(obs) / t
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        seen = z / z.sum(axis=1, keepdims=True)
        out = np.full((len(seen), self.space.n), self.FLOOR)
        out[:, self.classes] = np.maximum(seen, self.FLOOR)
        return out / out.sum(axis=1, keepdims=True)

    def log_prob(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """log π̂_b(a|x) ``(B,)`` for ids ``(B, 1)``."""
        from ogsrl.agents.categorical import check_ids

        ids = check_ids(actions, len(obs), self.space, "behaviour model")
        return np.log(self.probs(obs)[np.arange(len(ids)), ids])

    def act(self, obs: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Ids ``(B, 1)`` drawn from π̂_b."""
        p = self.probs(obs)
        u = (rng or np.random.default_rng(0)).uniform(size=(len(p), 1))
        return np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), self.space.n - 1).astype(np.float64)[:, None]

    @classmethod
    def fit(cls, names: Sequence[str], space: Any, train: pd.DataFrame, val: pd.DataFrame, seed: int
            ) -> tuple[LogisticBehaviour, dict[str, float]]:
        """Fit on ``train``, calibrate T on ``val``; returns (model, metrics)."""
        from scipy.optimize import minimize_scalar
        from sklearn.linear_model import LogisticRegression

        from ogsrl.agents.categorical import check_ids

        x, xv = train[list(names)].to_numpy(np.float64), val[list(names)].to_numpy(np.float64)
        y = check_ids(train[space.column].to_numpy(), len(x), space, "behaviour model (train)")
        yv = check_ids(val[space.column].to_numpy(), len(xv), space, "behaviour model (val)")
        mean, std = common.fit_normaliser(x)
        proto = cls(names, space, mean, std, np.zeros((1, 2 * len(names))), np.zeros(1), np.unique(y), 1.0)
        clf = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(proto._phi(x), y)
        model = cls(names, space, mean, std, clf.coef_, clf.intercept_, clf.classes_, 1.0)

        def val_nll(log_t: float) -> float:
            return float(-np.log(model.probs(xv, float(np.exp(log_t)))[np.arange(len(yv)), yv]).mean())

        res = minimize_scalar(val_nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
        model.temperature = float(np.exp(res.x))
        rows = np.arange(len(y))
        return model, {"loss/train_nll": float(-np.log(model.probs(x)[rows, y]).mean()),
                       "loss/val_nll": val_nll(float(res.x)), "loss/val_nll_uncalibrated": val_nll(0.0),
                       "calibration/temperature": model.temperature, "train/rows": float(len(x))}

    def save(self, path: str | Path) -> None:
        """Write ``config.json`` (everything, JSON) atomically."""
        doc = {"kind": LOGISTIC_KIND, "feature_names": list(self.feature_names), "action_column": self.space.column,
               "n_actions": self.space.n, "action_labels": list(self.space.labels), "mean": self.mean.tolist(),
               "std": self.std.tolist(), "coef": self.coef.tolist(), "intercept": self.intercept.tolist(),
               "classes": self.classes.tolist(), "temperature": self.temperature}
        with atomic_path(path) as tmp:
            tmp.mkdir(parents=True)
            common.write_checkpoint_config(tmp, doc)

    @classmethod
    def load(cls, path: str | Path) -> LogisticBehaviour:
        doc = common.read_checkpoint_config(path)
        if doc["kind"] != LOGISTIC_KIND:
            raise ValueError(f"{path}: checkpoint kind {doc['kind']!r} is not {LOGISTIC_KIND!r}")
        space = common.DiscreteSpace(doc["action_column"], int(doc["n_actions"]), tuple(doc["action_labels"]))
        return cls(doc["feature_names"], space, np.array(doc["mean"]), np.array(doc["std"]), np.array(doc["coef"]),
                   np.array(doc["intercept"]), np.array(doc["classes"]), float(doc["temperature"]))
