"""A tiny constrained MDP as a vector env with :class:`ogsrl.world.env.WorldModelEnv`'s semantics, for the on-policy
learners' tests and benchmark (a fixture, not a patient model: that is ``ogsrl.synth``).

Each sub-environment is a "patient" with a fixed severity u ~ U(0, 1). Actions are physical doses in the bounds of
``ogsrl.features.ACTION_BOUNDS``; with y = log(1 + a/c) / log(1 + max/c) ∈ [0, 1] per dimension (the policies'
scaled axis):

    reward_t = (0.5 + u)·y_0 + y_1                 (more dose, more reward)
    cost_t   = (y_0, y_1²)                         (columns ``fluid_load``, ``pressor_load``)

The episode ends with probability ``hazard`` after each step (terminated) or after ``horizon`` steps (truncated);
a finished sub-environment stays frozen (same observation, zero reward and cost, ``info["active"]`` False) until
the next reset; ``costs`` picks which columns ``info["cost"]`` reports. Observation: (u, t / horizon). The unconstrained optimum gives full doses (cost return ≈ expected
episode length per column); any limit below that binds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from ogsrl.agents import common

FEATURES = ("severity", "time")
"""observation columns"""
COSTS = ("fluid_load", "pressor_load")
"""cost columns of info["cost"]"""


class DoseCMDP(VectorEnv):
    """``num_envs`` independent toy patients (see the module docstring)."""

    metadata = {"autoreset_mode": AutoresetMode.DISABLED}

    def __init__(self, num_envs: int, horizon: int = 5, hazard: float = 0.1, seed: int = 0,
                 costs: tuple[str, ...] = COSTS) -> None:
        if num_envs < 1 or horizon < 1 or not 0 <= hazard < 1 or not set(costs) <= set(COSTS):
            raise ValueError(f"need num_envs ≥ 1, horizon ≥ 1, 0 ≤ hazard < 1, costs from {COSTS}; got {num_envs}, "
                             f"{horizon}, {hazard}, {costs}")
        self._cost_cols = [COSTS.index(c) for c in costs]
        self.num_envs, self.horizon, self.hazard = num_envs, horizon, hazard
        self.single_observation_space = gym.spaces.Box(0.0, 1.0, (2,), dtype=np.float32)
        self.single_action_space = gym.spaces.Box(np.zeros(2, np.float32), common.ACTION_MAX.astype(np.float32))
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rng = np.random.default_rng(seed)
        self._sev = np.zeros(num_envs)
        self._active = np.zeros(num_envs, dtype=bool)
        self._t = 0

    def _obs(self) -> np.ndarray:
        return np.stack([self._sev, np.full(self.num_envs, self._t / self.horizon)], axis=1).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None,
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """New severities; every sub-environment running from t = 0."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._sev = self._rng.random(self.num_envs)
        self._active = np.ones(self.num_envs, dtype=bool)
        self._t = 0
        self._frozen = self._obs()
        return self._frozen.copy(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Reward and costs of the running rows; finished rows keep their last observation."""
        act = np.clip(np.asarray(actions, dtype=np.float64), 0.0, common.ACTION_MAX)
        if act.shape != (self.num_envs, 2):
            raise ValueError(f"actions must be ({self.num_envs}, 2), got {act.shape}")
        y = common.scale_actions(act)
        active = self._active.copy()
        rew = np.where(active, (0.5 + self._sev) * y[:, 0] + y[:, 1], 0.0).astype(np.float32)
        cost = np.stack([y[:, 0], y[:, 1] ** 2], axis=1)[:, self._cost_cols]  # (B, 2) → (B, C) chosen columns
        cost = np.where(active[:, None], cost, 0.0).astype(np.float32)
        self._t += 1
        terminated = active & (self._rng.random(self.num_envs) < self.hazard)
        truncated = active & ~terminated & (self._t >= self.horizon)
        self._active = active & ~terminated & ~truncated
        obs = self._obs()
        obs[~active] = self._frozen[~active]  # rows that had finished keep their last observation
        self._frozen = obs
        return obs.copy(), rew, terminated, truncated, {"cost": cost, "active": active}


def make_env(horizon: int = 5, hazard: float = 0.1, costs: tuple[str, ...] = COSTS) -> Callable[[int, int], DoseCMDP]:
    """A :data:`ogsrl.agents.onpolicy.MakeEnv` ``(num_envs, seed) → DoseCMDP`` reporting the cost columns ``costs``."""
    def factory(num_envs: int, seed: int) -> DoseCMDP:
        return DoseCMDP(num_envs, horizon=horizon, hazard=hazard, seed=seed, costs=costs)
    return factory


def logged_frame(n_stays: int, seed: int, horizon: int = 5, hazard: float = 0.1, p_zero: float = 0.3) -> Any:
    """Offline data for the model-free learners: ``n_stays`` episodes of a random behaviour policy (each dose 0 with
    probability ``p_zero``, else uniform on the scaled axis), as a trajectory table with the columns they read
    (``stay_key, step, severity, time, next_severity, next_time, fluid_ml, nee_max, action_bin, reward, done`` and
    the cost columns; ``action_bin`` from the quartiles of the non-zero doses, as the cohort extraction bins them)."""
    import pandas as pd

    from ogsrl.cohort.extract import assign_action_bins, fit_action_bins

    env = DoseCMDP(n_stays, horizon=horizon, hazard=hazard, seed=seed)
    rng = np.random.default_rng(seed + 1)
    obs, _ = env.reset(seed=seed)
    rows: list[dict[str, Any]] = []
    for t in range(horizon):
        y = np.where(rng.random((n_stays, 2)) < p_zero, 0.0, rng.random((n_stays, 2)))
        act = common.unscale_actions(y)
        nxt, rew, term, trunc, info = env.step(act)
        for i in np.flatnonzero(info["active"]):
            rows.append({"stay_key": f"toy{i:05d}", "step": t, "severity": float(obs[i, 0]), "time": float(obs[i, 1]),
                         "next_severity": float(nxt[i, 0]), "next_time": float(nxt[i, 1]), "fluid_ml": act[i, 0],
                         "nee_max": act[i, 1], "reward": float(rew[i]), "done": bool(term[i] or trunc[i]),
                         **{c: float(info["cost"][i, j]) for j, c in enumerate(COSTS)}})
        obs = nxt
    frame = pd.DataFrame(rows).sort_values(["stay_key", "step"], kind="stable").reset_index(drop=True)
    frame["done"] |= frame["step"] == frame.groupby("stay_key")["step"].transform("max")
    edges = fit_action_bins(frame["fluid_ml"].to_numpy(), frame["nee_max"].to_numpy())
    frame["action_bin"] = assign_action_bins(frame["fluid_ml"].to_numpy(), frame["nee_max"].to_numpy(), edges)
    return frame
