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
