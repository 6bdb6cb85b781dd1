"""Shared on-policy machinery of the model-based learners: TRPO/CPO (:mod:`ogsrl.agents.cpo`) and PPO-Lagrangian
(:mod:`ogsrl.agents.ppo_lag`), trained inside a vector environment such as :class:`ogsrl.world.env.WorldModelEnv`.

References: cleanrl ``ppo_continuous_action.py`` (rollout → GAE → update loop), omnisafe's TRPO/CPO (conjugate
gradient, Fisher-vector products by double backprop), Schulman et al. 2016 (GAE, arXiv 1506.02438).

Read top to bottom:

1. :class:`HurdlePolicy` — the actor, ``bc.HurdleHead`` with K = 1 (one hurdle per action dimension, so a BC
   checkpoint warm-starts it) behind a frozen observation normaliser; log-probabilities are the exact hurdle
   densities of :mod:`ogsrl.agents.common`. A checkpoint holds only actor, normaliser and feature names.
2. :class:`ValueCritics` — V_R and one V_Ci per cost column on (normalised state, t / horizon).
3. :func:`collect` — one batch of episodes; a finished sub-environment stays frozen, rows are masked by
   ``info["active"]``.
4. :func:`gae`, :func:`episode_returns`, :func:`prepare` (rollout → flat training rows).
5. The trust-region metric :func:`hurdle_kl`, Fisher-vector products and conjugate gradient.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from gymnasium.vector import VectorEnv
from torch import nn
from torch.nn import functional as tf

from ogsrl import features
from ogsrl.agents import common
from ogsrl.agents.bc import HurdleHead
from ogsrl.agents.common import FloatArray

log = logging.getLogger(__name__)

BoolArray = npt.NDArray[np.bool_]
EnvFactory = Callable[[int, int], VectorEnv]
"""(num_envs, seed) → a vector env with frozen-after-termination sub-environments and ``info["cost"] (B, C)``."""
KINDS = ("trpo", "cpo", "ppo_lag")
"""checkpoint kinds written by the on-policy learners (all loaded by :meth:`HurdlePolicy.load`)"""


# ---- config checks --------------------------------------------------------------------------------------------


def check_config(cfg: Any, positive: Sequence[str] = (), unit: Sequence[str] = (), widths: Sequence[str] = ()) -> None:
    """Raise a one-line ``ValueError`` naming the first bad field: ``positive`` fields must be > 0, ``unit`` fields
    in (0, 1], ``widths`` non-empty tuples of positive ints."""
    name = type(cfg).__name__
    for f in positive:
        if not getattr(cfg, f) > 0:
            raise ValueError(f"{name}.{f} must be > 0, got {getattr(cfg, f)!r}")
    for f in unit:
        if not 0 < getattr(cfg, f) <= 1:
            raise ValueError(f"{name}.{f} must lie in (0, 1], got {getattr(cfg, f)!r}")
    for f in widths:
        v = getattr(cfg, f)
        if not v or any(int(h) != h or h <= 0 for h in v):
            raise ValueError(f"{name}.{f} must be a non-empty tuple of positive widths, got {v!r}")


# ---- the actor -------------------------------------------------------------------------------------------------


class HurdlePolicy:
    """Hurdle-Gaussian policy: per action dimension P(a=0) = sigmoid(logit0(s)), else y = log(1 + a/c)/log(1 +
    max/c) ~ N(μ(s), σ(s)²) truncated to (0, 1]; implements :class:`ogsrl.policy.StochasticPolicy`.

    The normaliser (``obs_mean``, ``obs_std``) is fitted once and frozen; only ``net`` is trained.
    """

    def __init__(self, kind: str, feature_names: tuple[str, ...], hidden: tuple[int, ...], obs_mean: FloatArray,
                 obs_std: FloatArray, generator: torch.Generator) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if len(obs_mean) != len(feature_names) or len(obs_std) != len(feature_names):
            raise ValueError("obs_mean/obs_std must have one entry per feature name")
        self.kind, self.hidden, self.feature_names = kind, tuple(hidden), tuple(feature_names)
        self.obs_mean = np.asarray(obs_mean, dtype=np.float64)
        self.obs_std = np.asarray(obs_std, dtype=np.float64)
        self.net = HurdleHead(len(feature_names), self.hidden, 1, generator)

    def inputs(self, obs: Any) -> torch.Tensor:
        """Checked, normalised observations ``(B, S)`` as float32."""
        arr = common.check_obs(obs, self.feature_names, f"{self.kind} policy")
        return torch.as_tensor((arr - self.obs_mean) / self.obs_std, dtype=torch.float32)

    @torch.no_grad()
    def distribution(self, obs: Any) -> tuple[FloatArray, ...]:
        """(mixture logits (B, 1), logit P(a=0), μ, log σ each (B, 1, A)) in float64 for ``obs (B, S)``."""
        return tuple(t.double().numpy() for t in self.net(self.inputs(obs)))

    def act(self, obs: FloatArray, rng: np.random.Generator | None = None) -> FloatArray:
        """Actions ``(B, A)`` in physical units: sampled with ``rng``; if None, per dimension 0 where P(a=0) ≥ ½,
        else the median non-zero amount."""
        params = self.distribution(obs)
        return common.hurdle_mode(*params) if rng is None else common.hurdle_sample(*params, rng)

    def log_prob(self, obs: FloatArray, actions: FloatArray) -> FloatArray:
        """``log π(a|s)`` per row ``(B,)`` w.r.t. (δ0 + Lebesgue) per dimension, physical units (finite at a = 0)."""
        params = self.distribution(obs)
        acts = common.check_actions(actions, params[0].shape[0], f"{self.kind} policy")
        return common.hurdle_log_prob(*params, acts)

    def state_dict(self) -> dict[str, Any]:
        """Actor weights and the normaliser (the same layout as ``BCPolicy.state_dict``, so either warm-starts)."""
        return {"net": {k: t.detach().clone() for k, t in self.net.state_dict().items()},
                "obs_mean": torch.as_tensor(self.obs_mean), "obs_std": torch.as_tensor(self.obs_std)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load ``{"net", "obs_mean", "obs_std"}``; a shape mismatch raises ValueError."""
        try:
            self.net.load_state_dict(state["net"])
        except RuntimeError as err:
            raise ValueError(f"actor state does not fit hidden={self.hidden} with one component: "
                             f"{str(err).splitlines()[0]}") from err
        self.obs_mean = torch.as_tensor(state["obs_mean"]).double().numpy().copy()
        self.obs_std = torch.as_tensor(state["obs_std"]).double().numpy().copy()
        if self.obs_mean.shape != (len(self.feature_names),) or self.obs_std.shape != self.obs_mean.shape:
            raise ValueError(f"normaliser must have {len(self.feature_names)} entries, got {self.obs_mean.shape}")

    def save(self, path: str | Path) -> None:
        """Write ``config.json`` + ``weights.pt`` atomically (actor, normaliser and feature names only)."""
        config = {"kind": self.kind, "hidden": list(self.hidden), "feature_names": list(self.feature_names),
                  "action_columns": list(features.ACTIONS), "action_max": common.ACTION_MAX.tolist(),
                  "action_resolution": common.ACTION_RESOLUTION.tolist()}
        common.save_checkpoint(path, config, self.state_dict())

    @classmethod
    def load(cls, path: str | Path) -> HurdlePolicy:
        """Rebuild a policy written by :meth:`save` (any kind in :data:`KINDS`)."""
        doc = common.read_checkpoint_config(path)
        if doc["kind"] not in KINDS:
            raise ValueError(f"{path}: checkpoint kind {doc['kind']!r} is not one of {KINDS}")
        if (doc.get("action_columns") != list(features.ACTIONS)
                or not np.array_equal(doc.get("action_max"), common.ACTION_MAX)
                or not np.array_equal(doc.get("action_resolution"), common.ACTION_RESOLUTION)):
            raise ValueError(f"{path}: checkpoint action columns/bounds differ from ogsrl.features")
        names = tuple(doc["feature_names"])
        pol = cls(doc["kind"], names, tuple(doc["hidden"]), np.zeros(len(names)), np.ones(len(names)),
                  torch.Generator().manual_seed(0))
        pol.load_state_dict(common.read_checkpoint_tensors(path))
        return pol


def make_policy(kind: str, feature_names: tuple[str, ...], hidden: tuple[int, ...], init_states: FloatArray,
                seed: int, init_actor: Mapping[str, Any] | None = None) -> HurdlePolicy:
    """A fresh actor seeded by ``seed`` with its normaliser fitted on ``init_states (N, S)``; ``init_actor`` (a
    ``{"net", "obs_mean", "obs_std"}`` state, e.g. ``BCPolicy.state_dict()`` with one component) replaces both, so
    the run starts exactly at that policy."""
    states = common.check_obs(init_states, feature_names, f"{kind} init_states")
    if len(states) == 0:
        raise ValueError("init_states must hold at least one row")
    mean, std = common.fit_normaliser(states)
    pol = HurdlePolicy(kind, feature_names, hidden, mean, std, torch.Generator().manual_seed(seed))
    if init_actor is not None:
        pol.load_state_dict(init_actor)
    return pol


def log_prob_scaled(params: tuple[torch.Tensor, ...], y: torch.Tensor) -> torch.Tensor:
    """Differentiable ``log π(y|s)`` (N,) on the scaled axis (the physical Jacobian is a constant of the data and
    cancels in every ratio); exact truncated density, finite at the zero atom."""
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


def critic_inputs(policy: HurdlePolicy, obs: FloatArray, horizon: int) -> torch.Tensor:
    """(T+1, B, S) states → (T+1, B, S+1) critic inputs: normalised state and t / horizon."""
    t1, b, _ = obs.shape
    x = policy.inputs(obs.reshape(t1 * b, -1)).reshape(t1, b, -1)  # (T+1·B, S) → (T+1, B, S)
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


def collect(env: VectorEnv, policy: HurdlePolicy, rng: np.random.Generator, horizon: int, seed: int,
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
        act = policy.act(states[-1], rng)
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


def episode_returns(signal: FloatArray, active: BoolArray) -> FloatArray:
    """Undiscounted per-episode sums: (T, B, …) with mask (T, B) → (B, …)."""
    mask = active.reshape(active.shape + (1,) * (signal.ndim - active.ndim))
    return (signal * mask).sum(axis=0)


@dataclass(frozen=True, slots=True)
class Batch:
    """The active rows of a rollout, flattened for the policy update (N = number of active rows)."""

    x: torch.Tensor
    """(N, S) normalised states, float32"""
    y: torch.Tensor
    """(N, A) scaled actions in [0, 1], float64 (exact zeros hit the atom)"""
    adv_r: torch.Tensor
    """(N,) reward advantages, float64"""
    adv_c: torch.Tensor
    """(N, C) cost advantages (centred), float64"""
    old: tuple[torch.Tensor, ...]
    """detached behaviour parameters (logit_w (N, 1), logit0, μ, log σ each (N, 1, A))"""
    old_logp: torch.Tensor
    """(N,) detached log π_old(y|s)"""
    n_episodes: int
    """B: surrogate sums are divided by it to give per-episode quantities"""
    reward_return: float
    """mean undiscounted reward per episode"""
    cost_return: FloatArray
    """(C,) mean undiscounted cost per episode, the quantity the limits bound"""


def prepare(rollout: Rollout, policy: HurdlePolicy, critics: ValueCritics, horizon: int, gamma: float,
            cost_gamma: float, lam: float) -> tuple[Batch, torch.Tensor, torch.Tensor]:
    """Rollout → (policy :class:`Batch`, critic inputs (N, S+1), critic targets (N, 1 + C)) on active rows.

    Reward advantages are raw (each learner normalises as it needs); cost advantages are centred (a constant
    baseline: unbiased, lower variance).
    """
    n_costs = rollout.cost.shape[-1]
    with torch.no_grad():
        xin = critic_inputs(policy, rollout.obs, horizon)  # (T+1, B, S+1)
        values = critics(xin).double().numpy()  # (T+1, B, 1 + C)
    signals = np.concatenate([rollout.rew[..., None], rollout.cost], axis=-1)  # (T, B, 1 + C)
    gammas = np.array([gamma] + [cost_gamma] * n_costs)
    adv, target = gae(signals, values, rollout.active, rollout.alive, gammas, lam)
    rows = rollout.active.reshape(-1)  # (T, B) → (T·B,)
    adv = adv.reshape(-1, 1 + n_costs)[rows]
    x = xin[:-1].reshape(-1, xin.shape[-1])[rows]
    y = torch.as_tensor(common.scale_actions(rollout.act.reshape(-1, rollout.act.shape[-1])[rows]))
    with torch.no_grad():
        old = tuple(t.detach() for t in policy.net(x[:, :-1]))
        old_logp = log_prob_scaled(old, y)
    adv_c = torch.as_tensor(adv[:, 1:])
    batch = Batch(x=x[:, :-1], y=y, adv_r=torch.as_tensor(adv[:, 0]), adv_c=adv_c - adv_c.mean(0), old=old,
                  old_logp=old_logp, n_episodes=rollout.obs.shape[1],
                  reward_return=float(episode_returns(rollout.rew, rollout.active).mean()),
                  cost_return=episode_returns(rollout.cost, rollout.active).mean(0))
    targets = torch.as_tensor(target.reshape(-1, 1 + n_costs)[rows], dtype=torch.float32)
    return batch, x, targets


# ---- trust region: metric, Fisher-vector products, conjugate gradient ----------------------------------------


def hurdle_kl(old: tuple[torch.Tensor, ...], new: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Trust-region metric (N,) between two one-component hurdle policies, summed over action dimensions:

        D = Σ_j  KL(Bern(p0_old) ‖ Bern(p0_new)) + (1 − p0_old)·KL(N(μ_old, σ_old²) ‖ N(μ_new, σ_new²))

    with the *untruncated* Gaussians on the scaled axis. It is ≥ 0, zero at new = old, closed-form and cheap, so its
    Hessian (the Fisher metric TRPO/CPO use) is PSD. It is the KL of the hurdle policies with the truncation
    normalisers dropped — the metric we constrain; all likelihood ratios stay exact.
    """
    _, l0o, muo, lso = (t.double() for t in old)
    _, l0n, mun, lsn = (t.double() for t in new)
    p0o = torch.sigmoid(l0o)
    kl_bern = (p0o * (tf.logsigmoid(l0o) - tf.logsigmoid(l0n))
               + (1 - p0o) * (tf.logsigmoid(-l0o) - tf.logsigmoid(-l0n)))
    kl_gauss = lsn - lso + (torch.exp(2 * lso) + (muo - mun) ** 2) / (2 * torch.exp(2 * lsn)) - 0.5
    return (kl_bern + (1 - p0o) * kl_gauss).sum(dim=(-2, -1))  # (N, 1, A) → (N,)


def flat_grad(output: torch.Tensor, params: Sequence[torch.Tensor], create_graph: bool = False,
              retain_graph: bool | None = None) -> torch.Tensor:
    """∂output/∂params flattened into one vector (zeros for parameters the output does not use)."""
    grads = torch.autograd.grad(output, list(params), create_graph=create_graph, retain_graph=retain_graph,
                                allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


def fisher_product(kl: torch.Tensor, params: Sequence[torch.Tensor],
                   damping: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """v ↦ (∇²_θ kl + damping·I)·v by double backprop; ``kl`` is the mean metric at θ = θ_old (value 0, with graph).

    The first gradient is built once; each product differentiates ⟨∇kl, v⟩ again (float64 in and out).
    """
    grad = flat_grad(kl, params, create_graph=True)

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


def actor_params(policy: HurdlePolicy) -> list[torch.Tensor]:
    """The actor's trainable tensors, in a fixed order."""
    return [p for p in policy.net.parameters() if p.requires_grad]


def set_flat(params: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
    """Write a flat vector back into ``params`` (in place, no grad)."""
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(flat.to(params[0].dtype), list(params))


def evaluate(env: VectorEnv, policy: HurdlePolicy, rng: np.random.Generator, horizon: int, seed: int,
             cost_names: tuple[str, ...]) -> dict[str, float]:
    """Mean per-episode reward and cost returns of the stochastic policy over one batch: ``eval/…`` metrics."""
    with torch.no_grad():
        ro = collect(env, policy, rng, horizon, seed, len(cost_names))
    costs = episode_returns(ro.cost, ro.active).mean(0)
    out = {"eval/reward_return": float(episode_returns(ro.rew, ro.active).mean()),
           "eval/episode_length": float(ro.active.sum(0).mean())}
    out.update({f"eval/cost_return/{n}": float(c) for n, c in zip(cost_names, costs)})
    return out


def check_fit_inputs(feature_names: tuple[str, ...], cost_names: tuple[str, ...], cost_limits: Any,
                     init_states: Any) -> FloatArray:
    """Validate the shared ``fit`` arguments; returns the limits as float64 (C,)."""
    limits = np.asarray(cost_limits, dtype=np.float64)
    if limits.shape != (len(cost_names),) or not np.isfinite(limits).all():
        raise ValueError(f"cost_limits must be {len(cost_names)} finite numbers (one per cost name), got "
                         f"{limits.shape}")
    if len(set(cost_names)) != len(cost_names) or len(set(feature_names)) != len(feature_names):
        raise ValueError("feature_names and cost_names must be distinct")
    states = np.asarray(init_states)
    if states.ndim != 2 or states.shape[1] != len(feature_names):
        raise ValueError(f"init_states must be (N, {len(feature_names)}), got {states.shape}")
    return limits


def seed_stream(seed: int) -> Callable[[], int]:
    """Deterministic per-iteration seeds for env resets drawn from ``seed``."""
    gen = np.random.default_rng(np.random.SeedSequence([seed, 7919]))
    return lambda: int(gen.integers(2**31 - 1))


__all__ = ["Batch", "EnvFactory", "HurdlePolicy", "KINDS", "Rollout", "ValueCritics", "actor_params", "check_config",
           "check_fit_inputs", "collect", "conjugate_gradient", "critic_inputs", "episode_returns", "evaluate",
           "fisher_product", "fit_critics", "flat_grad", "gae", "hurdle_kl", "log_prob_scaled", "make_policy",
           "prepare", "seed_stream", "set_flat"]
