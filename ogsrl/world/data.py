"""Model inputs: logged transitions as arrays, and how state columns map onto the ensemble's output heads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from ogsrl import features as F
from ogsrl.data.schema import DiscreteAction, Schema
from ogsrl.errors import DataError

FloatArray = npt.NDArray[np.float32]
SUM_SOURCES: dict[str, str] = {"fluid_cum": "fluid_ml", "urine_cum": "urine_step"}
"""Cumulative features and what is added each step: fluid_cum' = fluid_cum + fluid_ml (the action), urine_cum' =
urine_cum + urine_step' (docs/data-contract.md §2: cumulative features sum everything up to the decision time)."""
RATIO_SOURCES: dict[str, tuple[str, str]] = {"pf_ratio": ("pao2", "fio2")}
"""ratio feature → (numerator, denominator) next-state features it is computed from (ogsrl/cohort: P/F = PaO2/FiO2)"""


@dataclass(frozen=True, slots=True)
class Transitions:
    """Logged one-step transitions, physical units, rows aligned."""

    obs: FloatArray
    """(N, S) state s"""
    act: FloatArray
    """(N, A) action a"""
    next_obs: FloatArray
    """(N, S) next state s'"""
    rew: FloatArray
    """(N,) reward r"""
    cost: FloatArray
    """(N, C) per-rule costs in {0, 1}"""
    death: FloatArray
    """(N,) 1 when the patient died during the step"""
    discharge: FloatArray | None = None
    """(N,) 1 when the stay ended alive during the step, before the window's end (None: no exits observed)"""

    def __post_init__(self) -> None:
        n = self.obs.shape[0]
        if self.discharge is not None and self.discharge.shape != (n,):
            raise ValueError(f"discharge must be ({n},), got {self.discharge.shape}")
        if self.obs.ndim != 2 or self.next_obs.shape != self.obs.shape:
            raise ValueError(f"obs {self.obs.shape} and next_obs {self.next_obs.shape} must both be (N, S)")
        if self.act.ndim != 2 or self.act.shape[0] != n:
            raise ValueError(f"act must be (N={n}, A), got {self.act.shape}")
        if self.rew.shape != (n,) or self.death.shape != (n,) or self.cost.ndim != 2 or self.cost.shape[0] != n:
            raise ValueError(f"rew/death must be ({n},), cost ({n}, C); got {self.rew.shape}, "
                             f"{self.death.shape}, {self.cost.shape}")

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def take(self, rows: npt.ArrayLike) -> Transitions:
        """The transitions at ``rows`` (positions, repeats allowed)."""
        idx = np.asarray(rows, dtype=np.int64)
        return Transitions(obs=self.obs[idx], act=self.act[idx], next_obs=self.next_obs[idx], rew=self.rew[idx],
                           cost=self.cost[idx], death=self.death[idx],
                           discharge=None if self.discharge is None else self.discharge[idx])

    @property
    def exits(self) -> FloatArray:
        """(N,) discharge labels, zeros when none were given."""
        return self.discharge if self.discharge is not None else np.zeros(len(self), dtype=np.float32)


def finite_or_raise(arr: np.ndarray, names: list[str], table: str) -> None:
    """DataError naming the first column with a NaN/inf and its row positions."""
    bad = ~np.isfinite(arr)
    if bad.any():
        col = int(np.flatnonzero(bad.any(axis=0))[0])
        raise DataError("NaN or infinite values", table=table, column=names[col],
                        rows=np.flatnonzero(bad[:, col]).tolist())


def transitions_from_frame(
    frame: pd.DataFrame,
    state_features: tuple[str, ...],
    cost_columns: tuple[str, ...],
    table: str = "trajectories",
    final_hour: float | None = None,
    action_columns: tuple[str, ...] = F.ACTIONS,
    death_charge: float = 0.0,
    step_h: float | None = None,
) -> Transitions:
    """Select the model's arrays from a trajectory table (docs/data-contract.md §3); NaN/inf → DataError.

    A stay's last row (``done``) without a death is a discharge unless it is at the window's last decision time
    ``final_hour`` (hours since onset; default: the largest ``hours_since_onset`` in ``frame``), where the window
    cut the stay rather than ended it. ``action_columns``: the table's action columns (its schema's; a discrete
    action is its one id column).

    ``death_charge`` c > 0 (the table's ``ogsrl.death_charge``: a death row's reward includes −c for each of the m − 1
    decision times left after it, m = (final_hour − hours_since_onset)/``step_h`` + 1): the model's reward target on
    a death row is the reward without that charge, which the environment adds back on a simulated death.
    """
    need = [*state_features, *action_columns, "reward", *cost_columns, *(f"next_{f}" for f in state_features),
            "death_in_step", "done", "hours_since_onset"]
    missing = [c for c in need if c not in frame.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}", table=table)
    parts = {
        "obs": list(state_features), "act": list(action_columns), "next_obs": [f"next_{f}" for f in state_features],
        "rew": ["reward"], "cost": list(cost_columns), "death": ["death_in_step"],
    }
    arrays = {}
    for key, cols in parts.items():
        arr = frame[cols].to_numpy(dtype=np.float32).reshape(len(frame), len(cols))
        finite_or_raise(arr, cols, table)
        arrays[key] = arr
    hours = frame["hours_since_onset"].to_numpy(dtype=np.float64)
    last = float(final_hour) if final_hour is not None else (float(hours.max()) if len(hours) else 0.0)
    if (hours > last + 1e-3).any():
        raise DataError(f"decision time after the window's last one ({last:g} h)", table=table,
                        column="hours_since_onset", rows=np.flatnonzero(hours > last + 1e-3).tolist())
    discharge = (frame["done"].to_numpy(dtype=bool) & ~frame["death_in_step"].to_numpy(dtype=bool)
                 & (hours < last - 1e-3))
    rew = arrays["rew"][:, 0]
    if death_charge:
        if step_h is None or not step_h > 0:
            raise ValueError(f"death_charge {death_charge} needs the decision interval step_h > 0, got {step_h}")
        died = arrays["death"][:, 0] > 0
        later = np.rint((last - hours[died]) / step_h)  # decision times left after the death's
        rew = rew.copy()
        rew[died] += np.float32(death_charge) * later.astype(np.float32)
    return Transitions(obs=arrays["obs"], act=arrays["act"], next_obs=arrays["next_obs"], rew=rew,
                       cost=arrays["cost"], death=arrays["death"][:, 0], discharge=discharge.astype(np.float32))


@dataclass(frozen=True, slots=True)
class Layout:
    """Which state columns are copied, Bernoulli or Gaussian, and the output-vector layout."""

    state_features: tuple[str, ...]
    """S state columns, in order"""
    action_names: tuple[str, ...]
    """A action columns, in order"""
    cost_names: tuple[str, ...]
    """C cost columns, in order"""
    copy_idx: tuple[int, ...]
    """state indices copied s → s'"""
    binary_idx: tuple[int, ...]
    """state indices predicted as Bernoulli (logit head)"""
    gauss_idx: tuple[int, ...]
    """state indices predicted as Gaussian change s' − s"""
    sum_idx: tuple[int, ...] = ()
    """state indices computed by their defining identity s'_i = s_i + source (cumulative sums)"""
    sum_src: tuple[int, ...] = ()
    """source of each sum feature: j < S is next-state feature j, S + a is action a"""
    schema: Schema | None = None
    """a bring-your-own table's declared schema (bounds, kinds, action space); None: the canonical features"""

    @property
    def discrete_n(self) -> int:
        """number of discrete actions (the input is their one-hot code); 0 for continuous actions"""
        return self.schema.action.n if self.schema is not None and isinstance(self.schema.action, DiscreteAction) \
            else 0

    @property
    def n_act_in(self) -> int:
        """width of the action part of the model input: A, or n for a one-hot discrete action"""
        return self.discrete_n or len(self.action_names)

    def state_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(S,) low and high of each state feature: ``ogsrl.features`` plausible ranges, or the schema's."""
        if self.schema is None:
            return (np.array([F.BY_NAME[f].low for f in self.state_features], dtype=np.float32),
                    np.array([F.BY_NAME[f].high for f in self.state_features], dtype=np.float32))
        feats = [self.schema.feature(f) for f in self.state_features]
        return (np.array([f.low for f in feats], dtype=np.float32), np.array([f.high for f in feats], dtype=np.float32))

    def clip_state(self, obs: np.ndarray, nxt: np.ndarray) -> FloatArray:
        """s' clipped to each state feature's plausible range (:meth:`state_bounds`), float32; cumulative features
        (``*_cum``) never fall below their value in s."""
        lo, hi = self.state_bounds()
        cum = np.array([f.endswith("_cum") for f in self.state_features])
        return np.clip(nxt, np.where(cum, np.maximum(obs, lo), lo), hi).astype(np.float32)

    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(A,) low and high of each action column (discrete: ids 0 … n−1)."""
        if self.schema is None:
            return (np.array([F.ACTION_BOUNDS[a][0] for a in self.action_names], dtype=np.float32),
                    np.array([F.ACTION_BOUNDS[a][1] for a in self.action_names], dtype=np.float32))
        act = self.schema.action
        if isinstance(act, DiscreteAction):
            return np.zeros(1, dtype=np.float32), np.full(1, act.n - 1, dtype=np.float32)
        return np.array(act.low, dtype=np.float32), np.array(act.high, dtype=np.float32)

    def action_input(self, act: np.ndarray) -> np.ndarray:
        """(B, A) actions → the model's (B, n_act_in) action input (one-hot ids for a discrete action)."""
        if not self.discrete_n:
            return act
        ids = np.clip(np.rint(act[:, 0]), 0, self.discrete_n - 1).astype(np.int64)
        return np.eye(self.discrete_n, dtype=np.float32)[ids]

    @property
    def n_gauss(self) -> int:
        """Gaussian outputs G: continuous state changes + reward."""
        return len(self.gauss_idx) + 1

    @property
    def n_logit(self) -> int:
        """Logit outputs L: binary next features + costs + death + discharge."""
        return len(self.binary_idx) + len(self.cost_names) + 2

    @staticmethod
    def make(state_features: tuple[str, ...], cost_names: tuple[str, ...], copy_features: tuple[str, ...],
             sum_features: tuple[str, ...] = (), schema: Schema | None = None) -> Layout:
        """Classify state features by kind (``ogsrl.features``, or the declared ``schema``'s for a bring-your-own
        table) and the configured copy / sum lists.

        A feature in ``sum_features`` (and :data:`SUM_SOURCES`) is a sum when its source is available: an action, or
        a state feature that is itself predicted as Gaussian; otherwise it stays Gaussian (canonical tables only).
        """
        if schema is not None and schema.is_canonical:
            schema = None
        if schema is None:
            feats = F.state_features(tuple(state_features))
            kinds = {n: F.BY_NAME[n].kind for n in feats}
            actions = tuple(F.ACTIONS)
        else:
            feats = tuple(state_features)
            unknown = [n for n in feats if n not in schema.state_names]
            if unknown or not feats or len(set(feats)) != len(feats):
                raise ValueError(f"state features {list(feats)} must be distinct names of the table's schema "
                                 f"{list(schema.state_names)}")
            kinds = {n: schema.feature(n).kind for n in feats}
            actions = tuple(schema.action_columns)
            sum_features = ()
        copy, binary, gauss, sums, src = [], [], [], [], []
        for i, name in enumerate(feats):
            kind = kinds[name]
            source = SUM_SOURCES.get(name) if name in sum_features else None
            if kind == "static" or name in copy_features:
                copy.append(i)
            elif kind == "binary":
                binary.append(i)
            elif source in actions:
                sums.append(i)
                src.append(len(feats) + actions.index(source))
            elif source in feats and kinds[source] == "continuous" and source not in copy_features:
                sums.append(i)
                src.append(feats.index(source))
            else:
                gauss.append(i)
        return Layout(feats, actions, tuple(cost_names), tuple(copy), tuple(binary), tuple(gauss),
                      tuple(sums), tuple(src), schema)

    def sum_residual(self, obs: np.ndarray, act: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """(N, len(sum_idx)) of s'_i − s_i − source_i; zero where the identity holds."""
        both = np.concatenate([nxt, act], axis=1)
        return np.stack([nxt[:, i] - obs[:, i] - both[:, j] for i, j in zip(self.sum_idx, self.sum_src)], axis=1) \
            if self.sum_idx else np.zeros((len(obs), 0), dtype=np.float32)

    def apply_sums(self, obs: np.ndarray, act: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """Fill the sum features of ``nxt`` (..., S) in place from ``obs`` and ``act``/``nxt``; returns ``nxt``."""
        s = len(self.state_features)
        for i, j in zip(self.sum_idx, self.sum_src):
            nxt[..., i] = obs[..., i] + (act[..., j - s] if j >= s else np.maximum(nxt[..., j], 0.0))
        return nxt
