"""Shared on-policy machinery of the model-based learners: TRPO/CPO (:mod:`ogsrl.agents.cpo`) and PPO-Lagrangian
(:mod:`ogsrl.agents.ppo_lag`), trained inside a vector environment such as :class:`ogsrl.world.env.WorldModelEnv`.

References: cleanrl ``ppo_continuous_action.py`` (rollout → GAE → update loop), omnisafe's TRPO/CPO (conjugate
gradient, Fisher-vector products by double backprop), Schulman et al. 2016 (GAE, arXiv 1506.02438).

Read top to bottom:

1. The actor is the framework's :class:`ogsrl.agents.actor.HurdleActor` (any number K of mixture components, its
   normaliser frozen); the learners start from a copy of the clinicians' behaviour clone or from
   :func:`fresh_actor`, and return it to be served as a :class:`ogsrl.agents.actor.SavedPolicy`.
   Log-probabilities are the exact hurdle densities of :mod:`ogsrl.agents.common`.
2. :class:`ValueCritics` — V_R and one V_Ci per cost column on (normalised state, t / horizon).
3. :func:`collect` — one batch of episodes; a finished sub-environment stays frozen, rows are masked by
   ``info["active"]``.
4. :func:`gae`, :func:`episode_returns`, :func:`prepare` (rollout → flat training rows).
5. The trust-region metric :func:`hurdle_kl`, Fisher-vector products and conjugate gradient.
6. :class:`ProgressLog` — one log line every few iterations and a closing summary.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from gymnasium.vector import VectorEnv
from scipy.stats import norm
from torch import nn
from torch.nn import functional as tf

from ogsrl.agents import common
from ogsrl.agents.actor import HurdleActor
from ogsrl.agents.categorical import CategoricalActor, categorical_kl, log_prob_ids
from ogsrl.agents.common import FloatArray
from ogsrl.agents.inputs import TrainInputs

log = logging.getLogger(__name__)

BoolArray = npt.NDArray[np.bool_]
MakeEnv = Callable[[int, int], VectorEnv]
"""(num_envs, seed) → a vector env with frozen-after-termination sub-environments and ``info["cost"] (B, C)``."""


# ---- config checks --------------------------------------------------------------------------------------------


def check_config(cfg: Any, positive: Sequence[str] = (), unit: Sequence[str] = (), widths: Sequence[str] = (),
                 non_negative: Sequence[str] = ()) -> None:
    """Raise a one-line ``ValueError`` naming the first bad field: ``positive`` fields must be > 0, ``non_negative``
    ones ≥ 0, ``unit`` fields in (0, 1], ``widths`` non-empty tuples of positive ints."""
    name = type(cfg).__name__
    for f in positive:
        if not getattr(cfg, f) > 0:
            raise ValueError(f"{name}.{f} must be > 0, got {getattr(cfg, f)!r}")
    for f in non_negative:
        if not getattr(cfg, f) >= 0:
            raise ValueError(f"{name}.{f} must be ≥ 0, got {getattr(cfg, f)!r}")
    for f in unit:
        if not 0 < getattr(cfg, f) <= 1:
            raise ValueError(f"{name}.{f} must lie in (0, 1], got {getattr(cfg, f)!r}")
    for f in widths:
        v = getattr(cfg, f)
        if not v or any(int(h) != h or h <= 0 for h in v):
            raise ValueError(f"{name}.{f} must be a non-empty tuple of positive widths, got {v!r}")


# ---- the actor ------------------------------------------------------------------------------------------------


def fresh_actor(feature_names: tuple[str, ...], hidden: tuple[int, ...], components: int, init_states: FloatArray,
                seed: int, space: common.ActionSpace | common.DiscreteSpace = common.CANONICAL_SPACE) -> Any:
    """A new :class:`HurdleActor` with weights drawn from ``seed`` and its normaliser fitted on ``init_states (N, S)``
    (e.g. the environment's start states)."""
    states = common.check_obs(init_states, feature_names, "on-policy init_states")
    if len(states) == 0:
        raise ValueError("init_states must hold at least one row")
    gen = torch.Generator().manual_seed(seed)
    actor = (CategoricalActor(len(feature_names), hidden, gen, space) if isinstance(space, common.DiscreteSpace)
             else HurdleActor(len(feature_names), hidden, components, gen, space))
    actor.set_normaliser(*common.fit_normaliser(states))
    return actor


def initial_actor(inputs: TrainInputs, seed: int, warm_start: bool, hidden: tuple[int, ...],
                  components: int) -> HurdleActor:
    """The actor a model-based run starts from: a copy of the clinicians' behaviour clone of ``seed``
    (``inputs.behaviour_clone``; its architecture and normaliser) when ``warm_start``, else :func:`fresh_actor` with
    its normaliser fitted on the train split's start states."""
    if warm_start:
        clone = inputs.behaviour_clone(seed)
        if tuple(clone.feature_names) != tuple(inputs.state_features):
            raise ValueError(f"the behaviour clone reads {list(clone.feature_names)}, the run "
                             f"{list(inputs.state_features)}")
        return copy.deepcopy(clone.actor).train()
    from ogsrl.world.env import start_states

    starts = start_states(inputs.train, inputs.state_features)
    return fresh_actor(inputs.state_features, hidden, components, starts, seed, inputs.action_space)


def normalised(actor: HurdleActor, obs: torch.Tensor) -> torch.Tensor:
    """Physical states ``(…, S)`` → the actor's normalised inputs, float32 (the critics read the same scale)."""
    return ((obs.double() - actor.obs_mean) / actor.obs_std).float()


def log_prob_scaled(params: tuple[torch.Tensor, ...], y: torch.Tensor) -> torch.Tensor:
    """Differentiable ``log π(y|s)`` (N,) on the scaled axis (the physical Jacobian is a constant of the data and
    cancels in every ratio); exact truncated density, finite at the zero atom. A categorical actor's ``(logits,)``
    with ids ``y``: log softmax."""
    if len(params) == 1:
        return log_prob_ids(params[0], y)
    return -common.hurdle_nll(*params, y)


# ---- the critics ------------------------------------------------------------------------------------------------


class ValueCritics(nn.Module):
    """V_R and one V_Ci per cost column: (normalised state, t / horizon) (N, S+1) → (N, 1 + C).

    Each head predicts a standardised return; ``shift``/``scale`` (fixed from the first batch of targets by
    :meth:`calibrate`) map it back, so rewards of −250 per stay and costs of 0.5 train at the same learning rate.
    """

    def __init__(self, n_in: int, hidden: tuple[int, ...], n_heads: int, generator: torch.Generator) -> None:
        super().__init__()
        self.heads = nn.ModuleList(common.mlp(n_in, hidden, 1, generator) for _ in range(n_heads))
        self.register_buffer("shift", torch.zeros(n_heads))
        self.register_buffer("scale", torch.ones(n_heads))
        self.calibrated = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([h(x) for h in self.heads], dim=-1) * self.scale + self.shift  # (N, 1 + C)

    def calibrate(self, targets: torch.Tensor) -> None:
        """Set shift/scale once from targets (N, 1 + C)."""
        if not self.calibrated:
            self.shift.copy_(targets.mean(0))
            self.scale.copy_(targets.std(0).clamp_min(1e-3))
            self.calibrated = True


def critic_inputs(actor: HurdleActor, obs: FloatArray, horizon: int) -> torch.Tensor:
    """(T+1, B, S) states → (T+1, B, S+1) critic inputs: the actor's normalised state and t / horizon."""
    t1, b, _ = obs.shape
    x = normalised(actor, torch.as_tensor(obs))  # (T+1, B, S)
    time = torch.arange(t1, dtype=torch.float32)[:, None, None].expand(t1, b, 1) / horizon
    return torch.cat([x, time], dim=-1)


def fit_critics(critics: ValueCritics, optim: torch.optim.Optimizer, x: torch.Tensor, targets: torch.Tensor,
                epochs: int, batch_size: int, generator: torch.Generator) -> float:
    """Minimise mean squared error Σ_k (V_k(x) − target_k)² / scale_k² over ``epochs`` shuffled passes; returns
    the last epoch's mean loss (standardised units)."""
    critics.calibrate(targets)
    loss_sum, n = 0.0, 0
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=generator)
        loss_sum, n = 0.0, 0
        for start in range(0, len(x), batch_size):
            idx = perm[start:start + batch_size]
            loss = (((critics(x[idx]) - targets[idx]) / critics.scale) ** 2).sum(-1).mean()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            loss_sum, n = loss_sum + float(loss.detach()) * len(idx), n + len(idx)
    return loss_sum / max(n, 1)


# ---- rollouts --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rollout:
    """One batch of episodes stacked over time; rows after an episode ended carry ``active`` False."""

    obs: FloatArray
    """(T+1, B, S) states, obs[0] the start states"""
    act: FloatArray
    """(T, B, A) sampled actions in physical units (float64, as the log-probabilities see them)"""
    rew: FloatArray
    """(T, B) rewards (0 where inactive)"""
    cost: FloatArray
    """(T, B, C) costs (0 where inactive)"""
    active: BoolArray
    """(T, B) the sub-environment was running before step t"""
    alive: BoolArray
    """(T, B) still running after step t: the target bootstraps from V(s_{t+1}) only there"""


def collect(env: VectorEnv, actor: HurdleActor, rng: np.random.Generator, horizon: int, seed: int,
            n_costs: int) -> Rollout:
    """Run ``env.num_envs`` episodes for at most ``horizon`` steps, sampling actions with ``rng``.

    Stops early once every sub-environment has finished; episodes still running at ``horizon`` keep ``alive`` True
    (their value is bootstrapped). A finished episode ends on ``terminated`` or ``truncated`` alike (a finite-horizon
    problem: nothing is owed after the stay's last step).
    """
    obs, _ = env.reset(seed=seed)
    b = env.num_envs
    keep: dict[str, list[np.ndarray]] = {k: [] for k in ("act", "rew", "cost", "active", "alive")}
    states = [np.asarray(obs, dtype=np.float64)]
    for _ in range(horizon):
        act = actor.sample(states[-1], rng)
        obs, rew, term, trunc, info = env.step(act.astype(np.float32))
        active = np.asarray(info["active"], dtype=bool)
        cost = np.asarray(info["cost"], dtype=np.float64)
        if cost.shape != (b, n_costs):
            raise ValueError(f"env info['cost'] must be ({b}, {n_costs}) for the given cost_names, got {cost.shape}")
        keep["act"].append(act)
        keep["rew"].append(np.where(active, np.asarray(rew, dtype=np.float64), 0.0))
        keep["cost"].append(np.where(active[:, None], cost, 0.0))
        keep["active"].append(active)
        keep["alive"].append(active & ~np.asarray(term, dtype=bool) & ~np.asarray(trunc, dtype=bool))
        states.append(np.asarray(obs, dtype=np.float64))
        if not keep["alive"][-1].any():
            break
    return Rollout(obs=np.stack(states), **{k: np.stack(v) for k, v in keep.items()})


def gae(rew: FloatArray, values: FloatArray, active: BoolArray, alive: BoolArray, gamma: float,
        lam: float) -> tuple[FloatArray, FloatArray]:
    """Generalised advantage estimation on a masked rollout.

        δ_t = r_t + γ·alive_t·V(s_{t+1}) − V(s_t)
        A_t = δ_t + γλ·alive_t·A_{t+1}            (A_t = 0 where not active)

    Args:
        rew: (T, B, K) rewards of K signals (reward and cost columns).
        values: (T+1, B, K) critic values of obs[0 … T].
        active, alive: (T, B) masks of :class:`Rollout`.
        gamma, lam: discount γ and GAE λ, scalars or (K,) arrays.
    Returns:
        (advantages (T, B, K), value targets A_t + V(s_t) (T, B, K)).
    """
    act, nxt = active[..., None].astype(np.float64), alive[..., None].astype(np.float64)  # (T, B) → (T, B, 1)
    gamma, lam = np.asarray(gamma, dtype=np.float64), np.asarray(lam, dtype=np.float64)
    adv = np.zeros_like(rew, dtype=np.float64)
    last = np.zeros(rew.shape[1:], dtype=np.float64)
    for t in reversed(range(rew.shape[0])):
        delta = rew[t] + gamma * nxt[t] * values[t + 1] - values[t]
        last = act[t] * (delta + gamma * lam * nxt[t] * last)
        adv[t] = last
    return adv, adv + values[:-1] * act


def episode_returns(signal: FloatArray, active: BoolArray, gamma: float = 1.0) -> FloatArray:
    """Per-episode discounted sums Σ_t γ^t x_t: (T, B, …) with mask (T, B) → (B, …) (every episode starts at t = 0)."""
    mask = active.reshape(active.shape + (1,) * (signal.ndim - active.ndim))
    disc = (gamma ** np.arange(signal.shape[0], dtype=np.float64)).reshape((-1,) + (1,) * (signal.ndim - 1))
    return (signal * mask * disc).sum(axis=0)


@dataclass(frozen=True, slots=True)
class Batch:
    """The active rows of a rollout, flattened for the policy update (N = number of active rows)."""

    x: torch.Tensor
    """(N, S) states in physical units, float64 (the actor normalises them)"""
    y: torch.Tensor
    """(N, A) scaled actions in [0, 1], float64 (exact zeros hit the atom)"""
    adv_r: torch.Tensor
    """(N,) reward advantages, float64"""
    adv_c: torch.Tensor
    """(N, C) cost advantages (centred), float64"""
    old: tuple[torch.Tensor, ...]
    """detached behaviour parameters (logit_w (N, K), logit0, μ, log σ each (N, K, A))"""
    old_logp: torch.Tensor
    """(N,) detached log π_old(y|s)"""
    n_episodes: int
    """B: surrogate sums are divided by it to give per-episode quantities"""
    reward_return: float
    """mean discounted reward return per episode"""
    cost_return: FloatArray
    """(C,) mean discounted cost return per episode, the quantity the limits bound"""
    cost_return_se: FloatArray
    """(C,) standard error of ``cost_return`` over the batch's episodes (sample sd / √B)"""


def prepare(rollout: Rollout, actor: HurdleActor, critics: ValueCritics, horizon: int, gamma: float,
            lam: float) -> tuple[Batch, torch.Tensor, torch.Tensor]:
    """Rollout → (policy :class:`Batch`, critic inputs (N, S+1), critic targets (N, 1 + C)) on active rows.

    ``gamma`` discounts reward and costs alike (the returns the cost limits bound). Reward advantages are raw (each learner normalises as it needs); cost advantages are centred (a constant
    baseline: unbiased, lower variance).
    """
    n_costs = rollout.cost.shape[-1]
    with torch.no_grad():
        xin = critic_inputs(actor, rollout.obs, horizon)  # (T+1, B, S+1)
        values = critics(xin).double().numpy()  # (T+1, B, 1 + C)
    signals = np.concatenate([rollout.rew[..., None], rollout.cost], axis=-1)  # (T, B, 1 + C)
    adv, target = gae(signals, values, rollout.active, rollout.alive, gamma, lam)
    rows = rollout.active.reshape(-1)  # (T, B) → (T·B,)
    adv = adv.reshape(-1, 1 + n_costs)[rows]
    x = xin[:-1].reshape(-1, xin.shape[-1])[rows]
    obs = torch.as_tensor(rollout.obs[:-1].reshape(-1, rollout.obs.shape[-1])[rows], dtype=torch.float64)
    y = actor.encode(rollout.act.reshape(-1, rollout.act.shape[-1])[rows])
    with torch.no_grad():
        old = tuple(t.detach() for t in actor(obs))
        old_logp = log_prob_scaled(old, y)
    adv_c = torch.as_tensor(adv[:, 1:])
    batch = Batch(x=obs, y=y, adv_r=torch.as_tensor(adv[:, 0]), adv_c=adv_c - adv_c.mean(0), old=old,
                  old_logp=old_logp, n_episodes=rollout.obs.shape[1],
                  reward_return=float(episode_returns(rollout.rew, rollout.active, gamma).mean()),
                  **cost_return_stats(episode_returns(rollout.cost, rollout.active, gamma)))
    targets = torch.as_tensor(target.reshape(-1, 1 + n_costs)[rows], dtype=torch.float32)
    return batch, x, targets


# ---- trust region: metric, Fisher-vector products, conjugate gradient ----------------------------------------


def hurdle_kl(old: tuple[torch.Tensor, ...], new: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Trust-region metric (N,) between two K-component hurdle mixtures (K = 1: one hurdle per action dimension):

        D_k = Σ_j  KL(Bern(p0_old) ‖ Bern(p0_new)) + (1 − p0_old)·KL(N(μ_old, σ_old²) ‖ N(μ_new, σ_new²))
        D   = KL(w_old ‖ w_new) + Σ_k w_old,k · D_k

    with the *untruncated* Gaussians on the scaled axis. D is the KL of the joint (component, action) laws, so it
    bounds the KL of the mixtures from above; it is ≥ 0, zero at new = old, closed-form and cheap, so its Hessian
    (the Fisher metric TRPO/CPO use) is PSD. Truncation normalisers are dropped from the metric only; all
    likelihood ratios stay exact.
    """
    if len(old) == 1:  # a categorical actor's (logits,): the exact KL
        return categorical_kl(old[0], new[0])
    lwo, l0o, muo, lso = (t.double() for t in old)
    lwn, l0n, mun, lsn = (t.double() for t in new)
    p0o = torch.sigmoid(l0o)
    kl_bern = (p0o * (tf.logsigmoid(l0o) - tf.logsigmoid(l0n))
               + (1 - p0o) * (tf.logsigmoid(-l0o) - tf.logsigmoid(-l0n)))
    kl_gauss = lsn - lso + (torch.exp(2 * lso) + (muo - mun) ** 2) / (2 * torch.exp(2 * lsn)) - 0.5
    per_comp = (kl_bern + (1 - p0o) * kl_gauss).sum(dim=-1)  # (N, K, A) → (N, K)
    log_wo, log_wn = torch.log_softmax(lwo, dim=-1), torch.log_softmax(lwn, dim=-1)
    w_o = log_wo.exp()
    return (w_o * (log_wo - log_wn + per_comp)).sum(dim=-1)  # (N,)


def flat_grad(output: torch.Tensor, params: Sequence[torch.Tensor], create_graph: bool = False,
              retain_graph: bool | None = None) -> torch.Tensor:
    """∂output/∂params flattened into one vector (zeros for parameters the output does not use)."""
    grads = torch.autograd.grad(output, list(params), create_graph=create_graph, retain_graph=retain_graph,
                                allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


def fisher_product(actor: HurdleActor, obs: torch.Tensor, old: tuple[torch.Tensor, ...],
                   damping: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """v ↦ (H + damping·I)·v, H = ∇²_θ mean_s D(π_old, π_θ) at θ = θ_old for states ``obs (N, S)`` whose current
    distribution parameters are ``old`` (:func:`hurdle_kl`), by double back-propagation; float64 in and out.

    The first gradient is built once; each product differentiates ⟨∇D, v⟩ again. (A Gauss–Newton product
    Jᵀ M J v with M = ∇²_φ D in closed form gives the same H; measured on (64, 64) actors it was no faster.)
    """
    params = actor_params(actor)
    grad = flat_grad(hurdle_kl(old, actor(obs)).mean(), params, create_graph=True)

    def product(v: torch.Tensor) -> torch.Tensor:
        hv = flat_grad((grad * v.to(grad.dtype)).sum(), params, retain_graph=True)
        return hv.double() + damping * v

    return product


def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int,
                       tol: float = 1e-10) -> torch.Tensor:
    """Approximately solve H x = b for symmetric positive definite H given only ``matvec`` (x₀ = 0)."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for _ in range(iters):
        if rr <= tol:
            break
        hp = matvec(p)
        alpha = rr / (p @ hp)
        x += alpha * p
        r -= alpha * hp
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def actor_params(actor: HurdleActor) -> list[torch.Tensor]:
    """The actor's trainable tensors, in a fixed order (the normaliser is a buffer, never trained)."""
    return [p for p in actor.net.parameters() if p.requires_grad]


def set_flat(params: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
    """Write a flat vector back into ``params`` (in place, no grad)."""
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(flat.to(params[0].dtype), list(params))


def cost_return_stats(per_episode: FloatArray) -> dict[str, FloatArray]:
    """(B, C) per-episode cost returns → ``cost_return`` (C,) mean and ``cost_return_se`` (C,) its standard error
    s/√B (0 for a single episode)."""
    n = per_episode.shape[0]
    sd = per_episode.std(axis=0, ddof=1) if n > 1 else np.zeros(per_episode.shape[1])
    return {"cost_return": per_episode.mean(axis=0), "cost_return_se": sd / math.sqrt(n)}


def cost_upper_bound(cost_return: FloatArray, cost_return_se: FloatArray, confidence: float) -> FloatArray:
    """One-sided upper confidence bound of the expected cost return from one batch of B episodes (CLT):

        U_i = Ĵ_Ci + z_conf · se_i,   z_conf = Φ⁻¹(confidence),   se_i = s_i / √B

    Constrained learners bound ``U`` rather than Ĵ: a batch estimate hovering at the limit is above it about half the
    time in expectation, and keeping the best iterate whose noisy estimate is below the limit favours iterates the
    batch happened to under-estimate (a winner's curse). ``confidence`` 0.5 gives the point estimate."""
    return np.asarray(cost_return, dtype=np.float64) + float(norm.ppf(confidence)) * np.asarray(cost_return_se)


def evaluate(env: VectorEnv, actor: HurdleActor, rng: np.random.Generator, horizon: int, seed: int,
             cost_names: tuple[str, ...], gamma: float = 1.0) -> dict[str, float]:
    """Mean per-episode reward and cost returns of the stochastic actor over one batch of ``env`` episodes:
    ``return``, ``cost_return/<name>`` and ``episode_length``."""
    with torch.no_grad():
        ro = collect(env, actor, rng, horizon, seed, len(cost_names))
    stats = cost_return_stats(episode_returns(ro.cost, ro.active, gamma))
    out = {"return": float(episode_returns(ro.rew, ro.active, gamma).mean()),
           "episode_length": float(ro.active.sum(0).mean())}
    out.update({f"cost_return/{n}": float(c) for n, c in zip(cost_names, stats["cost_return"])})
    out.update({f"cost_return_se/{n}": float(c) for n, c in zip(cost_names, stats["cost_return_se"])})
    return out


def check_fit_inputs(feature_names: tuple[str, ...], cost_names: tuple[str, ...], cost_limits: Any,
                     actor: HurdleActor) -> FloatArray:
    """Validate the shared ``train`` arguments; returns the limits as float64 (C,)."""
    limits = np.asarray(cost_limits, dtype=np.float64)
    if limits.shape != (len(cost_names),) or not np.isfinite(limits).all() or (limits < 0).any():
        raise ValueError(f"cost_limits must be {len(cost_names)} finite numbers ≥ 0 (one per cost name), got "
                         f"{limits.tolist()}")
    if len(set(cost_names)) != len(cost_names) or len(set(feature_names)) != len(feature_names):
        raise ValueError("feature_names and cost_names must be distinct")
    if actor.obs_mean.shape[0] != len(feature_names):
        raise ValueError(f"the initial actor reads {actor.obs_mean.shape[0]} features, the environment "
                         f"{len(feature_names)} {list(feature_names)}")
    return limits


class ProgressLog:
    """Logs one line every ``every`` iterations (and the last): return, each cost return against its limit, the
    trust-region metric, elapsed time and ETA; :meth:`summary` logs the closing line."""

    def __init__(self, label: str, iterations: int, cost_names: tuple[str, ...], limits: FloatArray,
                 every: int) -> None:
        self.label, self.iterations, self.every = label, iterations, max(1, every)
        self.names, self.limits = tuple(cost_names), limits
        self.start = time.perf_counter()

    def _costs(self, row: dict[str, float]) -> str:
        """"<name> <cost return>/<limit>" per cost column ("-" when there is none)."""
        return " ".join(f"{n.removeprefix('cost_')} {row[f'cost_return/{n}']:.2f}/{d:.2f}"
                        for n, d in zip(self.names, self.limits)) or "-"

    def __call__(self, row: dict[str, float]) -> None:
        done = int(row["iteration"]) + 1
        if done % self.every and done != self.iterations:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done * (self.iterations - done)
        log.info("%s: it %d/%d  return %.2f  cost %s  kl %.4f  %.0f s, ETA %.0f s", self.label, done,
                 self.iterations, row["reward_return"], self._costs(row), row["kl"], elapsed, eta)

    def summary(self, history: list[dict[str, float]]) -> float:
        """Log the closing line; returns the seconds since construction."""
        seconds = time.perf_counter() - self.start
        last = history[-1]
        log.info("%s: %d iterations in %.1f s (%.2f it/s); last batch return %.2f, cost %s", self.label,
                 len(history), seconds, len(history) / max(seconds, 1e-9), last["reward_return"],
                 self._costs(last))
        return seconds


class FeasibleIterate:
    """Keeps the policy iterate a constrained learner returns: the highest reward return among the iterates whose
    every cost bound U_i (:func:`cost_upper_bound` at ``confidence``) is within its limit, else the one with the
    smallest total relative violation Σᵢ max(0, U_i − dᵢ) / max(dᵢ, ε). An on-policy learner's last iterate oscillates
    around the constraint boundary (the last update may step out of the feasible set), so the last iterate is not what
    a constrained learner should hand over.

    Each candidate is first measured on the batch it generated (the batch drawn before its update). Picking the best of
    many noisy measurements favours iterates whose batch happened to under-state their cost (a winner's curse), so
    with ``confirm`` = K > 0 :meth:`finish` measures the K best candidates again, each on one fresh batch, and picks
    among those fresh measurements instead."""

    def __init__(self, limits: FloatArray, confidence: float = 0.5, confirm: int = 0) -> None:
        self.limits = np.asarray(limits, dtype=np.float64)
        self.confidence = float(confidence)
        self.confirm = int(confirm)
        self.candidates: list[tuple[tuple[int, float], dict[str, Any]]] = []
        """the max(1, confirm) best so far, best first"""

    @property
    def best(self) -> dict[str, Any] | None:
        return self.candidates[0][1] if self.candidates else None

    def judge(self, reward_return: float, cost_return: FloatArray,
              cost_return_se: FloatArray) -> tuple[tuple[int, float], FloatArray]:
        """(sort key: (1, return) if every bound is within its limit else (0, −total relative violation), bounds)."""
        bound = cost_upper_bound(cost_return, cost_return_se, self.confidence)
        violation = float((np.maximum(bound - self.limits, 0.0) / np.maximum(self.limits, 1e-9)).sum())
        return ((1, float(reward_return)) if violation == 0.0 else (0, -violation)), bound

    def offer(self, actor: HurdleActor, iteration: int, reward_return: float, cost_return: FloatArray,
              cost_return_se: FloatArray) -> None:
        """Consider ``actor`` (its current weights), measured by ``reward_return`` and ``cost_return`` ± its standard
        error ``cost_return_se`` (both (C,))."""
        key, bound = self.judge(reward_return, cost_return, cost_return_se)
        keep = max(1, self.confirm)
        if len(self.candidates) >= keep and key <= self.candidates[-1][0]:
            return
        entry = {"state": copy.deepcopy(actor.state_dict()), "iteration": iteration, "feasible": key[0] == 1,
                 "return": float(reward_return), "cost_bound": bound.tolist()}
        at = next((i for i, (k, _) in enumerate(self.candidates) if key > k), len(self.candidates))
        self.candidates.insert(at, (key, entry))
        del self.candidates[keep:]

    def finish(self, env: VectorEnv, actor: HurdleActor, rng: np.random.Generator, horizon: int,
               seeds: Callable[[], int], cost_names: tuple[str, ...], gamma: float, iteration: int,
               label: str) -> dict[str, float]:
        """Offer the final ``actor`` (measured on one more batch of ``env``), confirm the best candidates on fresh
        batches (``confirm`` > 0), load the kept iterate into it and log which one it is; returns :meth:`restore`'s
        metrics plus the kept iterate's bounds (``train/selected_cost_bound/<c>``)."""
        def measure() -> tuple[float, FloatArray, FloatArray]:
            out = evaluate(env, actor, rng, horizon, seeds(), cost_names, gamma)
            return (out["return"], np.array([out[f"cost_return/{n}"] for n in cost_names]),
                    np.array([out[f"cost_return_se/{n}"] for n in cost_names]))

        self.offer(actor, iteration, *measure())
        extra: dict[str, float] = {}
        if self.confirm > 0:
            confirmed = []
            for _, entry in self.candidates:
                actor.load_state_dict(entry["state"])
                ret, cost, se = measure()
                key, bound = self.judge(ret, cost, se)
                confirmed.append((key, {**entry, "feasible": key[0] == 1, "return": ret, "cost_bound": bound.tolist(),
                                        "batch_return": entry["return"]}))
            extra = {"train/confirmed_candidates": float(len(confirmed)),
                     "train/confirmed_feasible": float(sum(k[0] == 1 for k, _ in confirmed))}
            self.candidates = sorted(confirmed, key=lambda item: item[0], reverse=True)
        selected = self.restore(actor)
        log.info("%s: keeping iterate %d (%s%s, return %.2f, cost bound %s)", label,
                 int(selected["train/selected_iteration"]),
                 "feasible" if selected["train/selected_feasible"] else "least violating",
                 f" on a fresh batch, {int(extra['train/confirmed_feasible'])} of {len(self.candidates)} confirmed"
                 if extra else "", selected["train/selected_return"],
                 " ".join(f"{n} {b:.2f}/{d:.2f}" for n, b, d in zip(cost_names, self.best["cost_bound"], self.limits)))
        return selected | extra | {f"train/selected_cost_bound/{n}": float(b)
                                   for n, b in zip(cost_names, self.best["cost_bound"])}

    def restore(self, actor: HurdleActor) -> dict[str, float]:
        """Load the kept iterate into ``actor``; returns ``train/selected_*`` metrics."""
        if self.best is None:
            raise RuntimeError("no iterate was offered")
        actor.load_state_dict(self.best["state"])
        return {"train/selected_iteration": float(self.best["iteration"]),
                "train/selected_feasible": float(self.best["feasible"]),
                "train/selected_return": self.best["return"]}


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch and BLAS threads, then restore the previous counts. The on-policy updates work on
    small matrices, where extra threads spend more time synchronising than computing."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(n):
            yield
    finally:
        torch.set_num_threads(before)


def seed_stream(seed: int) -> Callable[[], int]:
    """Deterministic per-iteration seeds for env resets drawn from ``seed``."""
    gen = np.random.default_rng(np.random.SeedSequence([seed, 7919]))
    return lambda: int(gen.integers(2**31 - 1))


__all__ = ["Batch", "FeasibleIterate", "MakeEnv", "ProgressLog", "Rollout", "ValueCritics", "actor_params", "check_config",
           "check_fit_inputs", "collect", "conjugate_gradient", "cost_return_stats", "cost_upper_bound", "critic_inputs", "episode_returns", "evaluate",
           "fisher_product", "fit_critics", "flat_grad", "fresh_actor", "gae", "hurdle_kl", "initial_actor",
           "log_prob_scaled", "normalised", "prepare", "seed_stream", "set_flat", "threads"]
