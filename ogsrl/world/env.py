"""`WorldModelEnv`: the fitted ensemble as a batched gymnasium vector environment for the policy trainers.

Episodes start from the real first states (each stay's first row) of the training split, advance with the ensemble (mode ``mean``,
``random_member`` or ``random_elite``), end on a sampled death or discharge (``terminated``; logged stays end the
same way) or at the horizon (``truncated``). A sampled death also costs the model's ``death_charge`` for every step
the episode had left (the data's death reward: early death must not pay).
A guardian can be plugged in as ``guard(obs, act) -> inside (B,) bool``: a step whose (s, a) leaves the supported
set earns ``ood_penalty`` and ends the episode (OGSRL: −25, episode frozen), and each cost column is charged
``ood_cost × ood_cost_rates[c]`` for every step the episode had left (ours: leaving the support must not shorten the
cost return). With ``ood_mode="fallback"`` a rejected step is instead played by ``fallback(obs, rng)`` — the
clinicians' clone that the served policy defers to — earns the model's reward plus ``ood_penalty``, and the episode
goes on: the model then scores exactly the policy that is served.

Autoreset is disabled: a finished sub-environment stays frozen (same observation, zero reward and cost,
``info["active"]`` False) until the next :meth:`reset`, so all sub-environments share one horizon and rollouts
stack into ``(T, B, ·)`` arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import numpy.typing as npt
import pandas as pd
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from ogsrl.errors import DataError
from ogsrl.world.ensemble import FloatArray, WorldModel

BoolArray = npt.NDArray[np.bool_]
GuardFn = Callable[[FloatArray, FloatArray], BoolArray]
"""(obs (B, S), act (B, A)) → (B,) True where (s, a) is inside the supported set."""
FallbackFn = Callable[[FloatArray, np.random.Generator], FloatArray]
"""(obs (B, S), rng) → (B, A) the action played where the guardian rejects the policy's (ood_mode fallback)."""


@dataclass(frozen=True, slots=True)
class EnvConfig:
    """Rollouts in the learned model."""

    horizon: int = 20
    """steps per episode before truncation (paper: 20 four-hour steps)"""
    mode: Literal["mean", "random_member", "random_elite", "episode_elite"] = "random_elite"
    """how a step uses the ensemble: elite mean, a random member or a random elite (per row and step), or one elite
    drawn per episode at reset (episode_elite, PETS TS∞)"""
    ood_penalty: float = -25.0
    """reward of a step the guardian rejects (paper: −25); ood_mode fallback: added to the fallback step's reward"""
    ood_mode: Literal["end", "fallback"] = "end"
    """what a rejected step does: end the episode (the paper) or play the fallback's action and go on (the served
    policy's behaviour)"""
    ood_cost: float = 0.0
    """when the guardian ends an episode, each cost column c is charged ``ood_cost × ood_cost_rates[c]`` per step the
    episode had left (this one included). 0 (the paper) lets a constrained learner meet its cost limit by leaving the
    support early, since the steps it no longer plays carry no cost; 1 with the clinicians' per-step rates charges
    what the served policy's fallback to the clinicians would incur"""
    cost_mode: Literal["prob", "sample", "max"] = "prob"
    """info["cost"]: the predicted probability (expected cost), a Bernoulli draw from it, or the most pessimistic
    ensemble member's probability (max: pessimism where the members disagree, as CAP/MOPO are for rewards)"""
    cost_uncertainty: float = 0.0
    """κ (cost_mode prob): each step's cost is min(1, p + κ·sd), sd the elites' standard deviation of p — a learner
    is charged for the cost the model is unsure of (CAP, Ma et al. AAAI 2022); 0 = the expected cost"""
    uncertainty_penalty: float = 0.0
    """MOPO λ: reward −= λ·uncertainty (0 = off)"""
    discharge: bool = True
    """end an episode on a sampled discharge (alive exit), as logged stays end; False: only death or the horizon"""
    seed: int = 0
    """seeds start-state draws and sampling when reset() gets no seed"""

    def __post_init__(self) -> None:
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")
        if self.ood_cost < 0:
            raise ValueError(f"ood_cost must be >= 0, got {self.ood_cost}")
        if self.cost_uncertainty < 0 or (self.cost_uncertainty and self.cost_mode != "prob"):
            raise ValueError(f"cost_uncertainty must be >= 0 and needs cost_mode prob, got {self.cost_uncertainty} "
                             f"with cost_mode {self.cost_mode}")
        if self.uncertainty_penalty < 0:
            raise ValueError(f"uncertainty_penalty must be >= 0, got {self.uncertainty_penalty}")


def first_rows(frame: pd.DataFrame, table: str = "trajectories") -> np.ndarray:
    """Positions (in ``frame``) of each stay's first row (its smallest ``step``), ordered by ``stay_key``.

    A stay's first kept decision step need not be 0: steps index the decision grid, and a step is kept only once the
    patient is in the ICU (docs/data-contract.md §2).
    """
    missing = [c for c in ("stay_key", "step") if c not in frame.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}", table=table)
    if len(frame) == 0:
        raise DataError("no rows to start episodes from", table=table, column="step")
    order = np.lexsort((frame["step"].to_numpy(), frame["stay_key"].to_numpy()))
    keys = frame["stay_key"].to_numpy()[order]
    is_first = np.ones(len(order), dtype=bool)
    is_first[1:] = keys[1:] != keys[:-1]
    return order[is_first]


def steps_left(frame: pd.DataFrame, window_start_h: float, step_h: float, n_steps: int,
               table: str = "train") -> npt.NDArray[np.int64]:
    """(N,) decision steps each stay had left in the window at its first row, in :func:`start_states` order.

    A stay that enters the grid at decision time ``h`` (hours since onset) has ``n_steps − (h − window_start_h) /
    step_h`` steps before the window ends; pass these as ``WorldModelEnv(horizons=...)`` so model episodes end where
    logged stays are cut.
    """
    if "hours_since_onset" not in frame.columns:
        raise DataError("missing column(s) ['hours_since_onset']", table=table)
    hours = frame["hours_since_onset"].to_numpy(dtype=np.float64)[first_rows(frame, table)]
    k = (hours - window_start_h) / step_h
    bad = ~np.isfinite(k) | (np.abs(k - np.rint(k)) > 1e-3) | (k < 0) | (k > n_steps - 1)
    if bad.any():
        raise DataError(f"first decision time off the grid {window_start_h:g} + k·{step_h:g} h, k < {n_steps}",
                        table=table, column="hours_since_onset", rows=np.flatnonzero(bad).tolist())
    return (n_steps - np.rint(k)).astype(np.int64)


def start_states(frame: pd.DataFrame, state_features: tuple[str, ...], table: str = "train") -> FloatArray:
    """(N, S) states of each stay's first row in a trajectory table (the real start-state distribution)."""
    missing = [c for c in state_features if c not in frame.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}", table=table)
    first = frame[list(state_features)].to_numpy(dtype=np.float32)[first_rows(frame, table)]
    bad = ~np.isfinite(first)
    if bad.any():
        col = int(np.flatnonzero(bad.any(0))[0])
        raise DataError("NaN or infinite start state", table=table, column=state_features[col],
                        rows=np.flatnonzero(bad[:, col]).tolist())
    return first


def logged_returns(frame: pd.DataFrame, columns: tuple[str, ...], horizons: npt.ArrayLike, gamma: float,
                   table: str = "train") -> FloatArray:
    """(N, len(columns)) each stay's sum of γ^(t − t₀)·x_t over its decision steps t₀ ≤ t < t₀ + ``horizons[i]``,
    stays in ``stay_key`` order (:func:`start_states`' order): the logged reward and cost returns an anchored
    estimate adds back."""
    missing = [c for c in ("stay_key", "step", *columns) if c not in frame.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}", table=table)
    keys, stay = np.unique(frame["stay_key"].to_numpy(), return_inverse=True)
    horizons = np.asarray(horizons)
    if horizons.shape != (len(keys),):
        raise ValueError(f"horizons: one per stay ({len(keys)}), got shape {horizons.shape}")
    step = frame["step"].to_numpy(np.int64)
    first = np.full(len(horizons), np.iinfo(np.int64).max)
    np.minimum.at(first, stay, step)
    pos = step - first[stay]
    kept = (pos < horizons[stay]).astype(np.float64) * gamma ** pos
    sums = frame[list(columns)].to_numpy(np.float64) * kept[:, None]
    return np.stack([np.bincount(stay, weights=sums[:, k], minlength=len(horizons)) for k in range(len(columns))],
                    axis=1)


class WorldModelEnv(VectorEnv):
    """``num_envs`` simulated patients stepped together by a :class:`WorldModel`.

    ``step(actions (B, A))`` returns ``obs (B, S), reward (B,), terminated (B,), truncated (B,), info`` with
    ``info["cost"] (B, C)``, ``info["uncertainty"] (B,)``, ``info["death"] (B,)``, ``info["discharge"] (B,)``,
    ``info["ood"] (B,)`` and ``info["active"] (B,)`` (True where the row was still running before this step).

    ``ood_cost_rates`` (one per cost column, default 1) scale ``cfg.ood_cost``; ``horizons`` (one per start state, each in 1 … ``cfg.horizon``) truncates an episode after the steps its start
    state's stay had left in the window (:func:`steps_left`); without it every episode may run ``cfg.horizon`` steps.
    """

    metadata = {"autoreset_mode": AutoresetMode.DISABLED}

    def __init__(self, model: WorldModel, starts: FloatArray, num_envs: int, cfg: EnvConfig,
                 guard: GuardFn | None = None, horizons: npt.ArrayLike | None = None,
                 ood_cost_rates: npt.ArrayLike | None = None, fallback: FallbackFn | None = None) -> None:
        feats = model.layout.state_features
        if guard is not None and cfg.ood_mode == "fallback" and fallback is None:
            raise ValueError("ood_mode 'fallback' needs a fallback policy for the steps the guardian rejects")
        starts = np.asarray(starts, dtype=np.float32)
        if starts.ndim != 2 or starts.shape[1] != len(feats) or len(starts) == 0:
            raise ValueError(f"start states must be (N >= 1, {len(feats)}), got {starts.shape}")
        if not np.isfinite(starts).all():
            raise DataError("NaN or infinite start state", table="start states")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        limits = np.full(len(starts), cfg.horizon, dtype=np.int64) if horizons is None else np.asarray(horizons)
        if limits.shape != (len(starts),) or not np.issubdtype(limits.dtype, np.integer):
            raise ValueError(f"horizons must be ({len(starts)},) integers, one per start state, got "
                             f"{limits.dtype} {limits.shape}")
        if ((limits < 1) | (limits > cfg.horizon)).any():
            raise ValueError(f"horizons must lie in 1 … horizon={cfg.horizon}; rows "
                             f"{np.flatnonzero((limits < 1) | (limits > cfg.horizon))[:5].tolist()} do not")
        n_cost = len(model.layout.cost_names)
        rates = np.ones(n_cost) if ood_cost_rates is None else np.asarray(ood_cost_rates, dtype=np.float64)
        if rates.shape != (n_cost,) or not (np.isfinite(rates) & (rates >= 0)).all():
            raise ValueError(f"ood_cost_rates must be ({n_cost},) finite values >= 0, one per cost "
                             f"{list(model.layout.cost_names)}, got {rates.tolist()}")
        self._ood_cost = (cfg.ood_cost * rates).astype(np.float32)
        self._limits = limits.astype(np.int64)
        self._limit = np.full(num_envs, cfg.horizon, dtype=np.int64)
        self._member = np.full(num_envs, model.elites[0], dtype=np.int64)
        self.model, self.cfg, self.guard, self.num_envs = model, cfg, guard, num_envs
        self.fallback = fallback
        self._starts = starts
        lo, hi = model.layout.state_bounds()
        a_lo, a_hi = model.layout.action_bounds()
        self.single_observation_space = gym.spaces.Box(lo, hi, dtype=np.float32)
        self.single_action_space = gym.spaces.Box(a_lo, a_hi, dtype=np.float32)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rng = np.random.default_rng(cfg.seed)
        self._obs = np.zeros((num_envs, len(feats)), dtype=np.float32)
        self._active = np.zeros(num_envs, dtype=bool)
        self._t = 0

    @property
    def running(self) -> BoolArray:
        """(B,) sub-environments whose episode has not ended."""
        return self._active.copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None,
              ) -> tuple[FloatArray, dict[str, Any]]:
        """Draw ``num_envs`` start states (with replacement) from the real first states; ``options["start_index"]``
        ((num_envs,) rows of the start-state array) starts each sub-environment from a given one instead."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        idx = self._rng.integers(0, len(self._starts), size=self.num_envs)
        if options is not None and "start_index" in options:
            idx = np.asarray(options["start_index"])
            if (idx.shape != (self.num_envs,) or not np.issubdtype(idx.dtype, np.integer)
                    or ((idx < 0) | (idx >= len(self._starts))).any()):
                raise ValueError(f"options['start_index'] must be ({self.num_envs},) integers in 0 … "
                                 f"{len(self._starts) - 1}, got {idx.dtype} {idx.shape}")
        self._obs = self._starts[idx].copy()
        self._limit = self._limits[idx]
        elites = self.model.elites
        self._member = (elites[self._rng.integers(0, len(elites), size=self.num_envs)]
                        if self.cfg.mode == "episode_elite" else np.full(self.num_envs, elites[0]))
        self._active = np.ones(self.num_envs, dtype=bool)
        self._t = 0
        return self._obs.copy(), {"start_index": idx}

    def step(self, actions: np.ndarray) -> tuple[FloatArray, FloatArray, BoolArray, BoolArray, dict[str, Any]]:
        """Advance every running sub-environment one step (see class docstring for the outputs)."""
        b, n_act = self.num_envs, len(self.model.layout.action_names)
        act = np.asarray(actions, dtype=np.float32)
        if act.shape != (b, n_act):
            raise ValueError(f"actions must be ({b}, {n_act}) for {list(self.model.layout.action_names)}, "
                             f"got {act.shape}")
        if not np.isfinite(act).all():
            raise ValueError(f"actions contain NaN/inf at rows {np.flatnonzero(~np.isfinite(act).all(1))[:5]}")
        if not self._active.any() and self._t == 0:
            raise RuntimeError("call reset() before step()")
        act = np.clip(act, self.single_action_space.low, self.single_action_space.high)
        if self.model.layout.discrete_n:  # a discrete action id: the nearest id
            act = np.rint(act)
        active = self._active.copy()
        n_cost = len(self.model.layout.cost_names)
        rew = np.zeros(b, dtype=np.float32)
        cost = np.zeros((b, n_cost), dtype=np.float32)
        unc = np.zeros(b, dtype=np.float32)
        death = np.zeros(b, dtype=bool)
        exit_ = np.zeros(b, dtype=bool)
        ood = np.zeros(b, dtype=bool)
        if self.guard is not None:
            inside = np.asarray(self.guard(self._obs, act))
            if inside.shape != (b,) or inside.dtype != np.bool_:
                raise ValueError(f"guard must return a ({b},) bool array, got {inside.dtype} {inside.shape}")
            ood = active & ~inside
            if self.cfg.ood_mode == "end":
                rew[ood] = self.cfg.ood_penalty
                cost[ood] = self._ood_cost * (self._limit[ood] - self._t)[:, None]
            elif ood.any():
                assert self.fallback is not None
                played = np.asarray(self.fallback(self._obs[ood], self._rng), dtype=np.float32)
                act[ood] = np.clip(played, self.single_action_space.low, self.single_action_space.high)
        live = active & ~ood if self.cfg.ood_mode == "end" else active
        if live.any():
            s = self.model.step(self._obs[live], act[live], self.cfg.mode, self._rng, member=self._member[live])
            self._obs[live] = s.next_obs
            rew[live] = s.rew - self.cfg.uncertainty_penalty * s.uncertainty
            if self.cfg.ood_mode == "fallback":
                rew[ood] += self.cfg.ood_penalty
            if self.cfg.cost_mode == "sample":
                cost[live] = (self._rng.random(s.cost_prob.shape) < s.cost_prob).astype(np.float32)
            else:
                cost[live] = (s.cost_prob_max if self.cfg.cost_mode == "max"
                              else np.minimum(s.cost_prob + self.cfg.cost_uncertainty * s.cost_prob_sd, 1.0))
            unc[live] = s.uncertainty
            u = self._rng.random(int(live.sum()))  # one draw: death, else discharge, else stay
            death[live] = u < s.death_prob
            if self.model.death_charge:
                rew[death] -= np.float32(self.model.death_charge) * (self._limit[death] - self._t - 1)
            if self.cfg.discharge:
                exit_[live] = (u >= s.death_prob) & (u < s.death_prob + s.discharge_prob)
        self._t += 1
        terminated = death | exit_ | (ood if self.cfg.ood_mode == "end" else False)
        truncated = active & ~terminated & (self._t >= self._limit)
        self._active = active & ~terminated & ~truncated
        info = {"cost": cost, "uncertainty": unc, "death": death, "discharge": exit_, "ood": ood, "active": active}
        return self._obs.copy(), rew, terminated, truncated, info


@dataclass(frozen=True, slots=True)
class Rollout:
    """Stacked episode arrays; rows after an episode ended have ``active`` False."""

    obs: FloatArray
    """(T+1, B, S) states, obs[0] the start states"""
    act: FloatArray
    """(T, B, A)"""
    rew: FloatArray
    """(T, B)"""
    cost: FloatArray
    """(T, B, C)"""
    death: BoolArray
    """(T, B)"""
    discharge: BoolArray
    """(T, B) sampled alive exit"""
    ood: BoolArray
    """(T, B)"""
    active: BoolArray
    """(T, B) the row was running before step t"""
    uncertainty: FloatArray
    """(T, B)"""
    start_index: npt.NDArray[np.int64]
    """(B,) row of the env's start-state array each episode began from"""

    @property
    def mortality(self) -> float:
        """Fraction of episodes that ended in a sampled death (the paper's ME)."""
        return float(self.death.any(0).mean())


def rollout(env: WorldModelEnv, act_fn: Callable[[FloatArray, np.random.Generator], FloatArray],
            seed: int, start_index: npt.ArrayLike | None = None, act_rng: np.random.Generator | None = None
            ) -> Rollout:
    """Run one batch of episodes to the horizon; ``act_fn(obs (B, S), rng) -> act (B, A)``.

    ``start_index`` ((B,), optional): the start-state row of each episode (default: drawn with replacement);
    ``act_rng``: the generator ``act_fn`` draws from (default: one seeded by ``seed``), so that the environment's draws
    can stay common to several policies while each policy's own sampling differs.
    """
    rng = act_rng if act_rng is not None else np.random.default_rng(seed)
    obs, first = env.reset(seed=seed, options=None if start_index is None else {"start_index": start_index})
    keys = ("act", "rew", "cost", "death", "discharge", "ood", "active", "uncertainty")
    out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    states = [obs]
    for _ in range(env.cfg.horizon):
        act = np.asarray(act_fn(obs, rng), dtype=np.float32)
        obs, rew, _, _, info = env.step(act)
        out["act"].append(act)
        out["rew"].append(rew)
        for k in keys[2:]:
            out[k].append(info[k])
        states.append(obs)
        if not env.running.any():
            break
    t = len(out["rew"])
    pad = env.cfg.horizon - t
    stacked = {k: np.stack(v) for k, v in out.items()}
    if pad:
        stacked = {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), dtype=v.dtype)]) for k, v in stacked.items()}
        states += [states[-1]] * pad
    return Rollout(obs=np.stack(states), start_index=np.asarray(first["start_index"], dtype=np.int64), **stacked)
