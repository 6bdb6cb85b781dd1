"""PPO-Lagrangian: clipped-surrogate PPO (Schulman et al. 2017, arXiv 1707.06347) on the Lagrangian of a CMDP with
one multiplier per cost column (Ray, Achiam, Amodei 2019, "Benchmarking Safe Exploration"; checked against omnisafe
``on_policy/naive_lagrange/ppo_lag.py`` and cleanrl ``ppo_continuous_action.py``).

    max_π min_{λ ≥ 0}  J_R(π) − Σᵢ λᵢ (J_Ci(π) − dᵢ)

Each iteration first moves the multipliers by projected gradient ascent on the measured violation,

    λᵢ ← max(0, λᵢ + η_λ·(U_Ci(π_k) − dᵢ))                   (the simple, PID-free update)

with U_Ci the batch's upper confidence bound on J_Ci (Ĵ + z·se at ``Config.cost_confidence``).

then takes PPO epochs on the combined advantage Â = (A_R − Σᵢ λᵢ A_Ci) / (1 + Σᵢ λᵢ), standardised per batch
(λ stays in raw units, reward per unit cost; standardising only rescales the learning rate):

    L(θ) = −E[ min(ρ Â, clip(ρ, 1 − ε, 1 + ε) Â) ],   ρ = π_θ(a|s) / π_k(a|s)   (exact hurdle densities)

An iteration's epochs stop early once the hurdle trust-region metric (:func:`ogsrl.agents.onpolicy.hurdle_kl`)
exceeds ``target_kl``.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ogsrl.agents import onpolicy as op
from ogsrl.agents.actor import HurdleActor, SavedPolicy
from ogsrl.agents.common import FloatArray
from ogsrl.agents.inputs import FitResult, TrainInputs

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Config:
    """PPO-Lagrangian inside the world model."""

    iterations: int = 180
    """policy updates, each on one fresh batch of episodes"""
    num_envs: int = 1000
    """B, episodes per batch"""
    horizon: int = 20
    """T, steps per episode at most (episodes still running are bootstrapped with the critic)"""
    warm_start: bool = True
    """start from the clinicians' behaviour clone of the same seed (the paper's initialisation); False: a fresh
    actor of ``hidden``/``components``"""
    hidden: tuple[int, ...] = (64, 64)
    """actor MLP widths when not warm-started (a warm start takes the clone's architecture)"""
    components: int = 1
    """mixture components K of the actor when not warm-started"""
    critic_hidden: tuple[int, ...] = (64, 64)
    """widths of each value critic"""
    lam: float = 0.95
    """GAE λ for reward and costs (the discount is params ``policies.discount``)"""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor"""
    update_epochs: int = 10
    """PPO passes over each batch"""
    minibatch_size: int = 4096
    """actor minibatch size (rows)"""
    clip: float = 0.2
    """ε of the clipped ratio"""
    target_kl: float = 0.02
    """stop an iteration's epochs once the mean hurdle metric to π_k exceeds this"""
    max_grad_norm: float = 0.5
    """actor gradient-norm clip"""
    multiplier_lr: float = 0.05
    """η_λ, step of the multipliers' projected gradient ascent (per unit of per-episode violation)"""
    init_multiplier: float = 0.0
    """λᵢ at the start, for every cost column"""
    critic_lr: float = 1e-3
    """Adam learning rate of the critics"""
    critic_epochs: int = 5
    """passes over each batch for the critics"""
    critic_batch_size: int = 4096
    """critic minibatch size (rows)"""
    log_every: int = 5
    """iterations between progress log lines"""
    threads: int = 1
    """torch and BLAS threads while training, whatever ``compute.threads`` says (small matrices: docs/policies-and-ope.md
    "Defaults" has the measured figures)"""
    keep: Literal["best_feasible", "last"] = "best_feasible"
    """iterate returned under cost limits: the best feasible one (``op.FeasibleIterate``; the final iterate gets one
    extra batch), or the last (TRPO always returns the last)"""
    confirm: int = 5
    """K: the K best iterates by their own batch are measured again on one fresh batch each and the kept one is chosen
    by those fresh measurements (no winner's curse); 0: by their own batches"""
    cost_confidence: float = 0.95
    """one-sided level of the batch's upper confidence bound Ĵ_C + z·se on each expected cost return: the constraint
    of every update and the kept iterate's feasibility use it (``op.cost_upper_bound``; 0.5: the point estimate)"""

    def __post_init__(self) -> None:
        if not 0.5 <= self.cost_confidence < 1:
            raise ValueError(f"Config.cost_confidence must lie in [0.5, 1), got {self.cost_confidence!r}")
        op.check_config(self, positive=("iterations", "threads", "num_envs", "horizon", "components", "actor_lr",
                                        "update_epochs", "minibatch_size", "clip", "target_kl", "max_grad_norm",
                                        "critic_lr", "critic_epochs", "critic_batch_size", "log_every"),
                        unit=("lam",), widths=("hidden", "critic_hidden"), non_negative=("confirm",))
        if self.multiplier_lr < 0 or self.init_multiplier < 0:
            raise ValueError(f"Config.multiplier_lr and init_multiplier must be ≥ 0, got "
                             f"{self.multiplier_lr!r}, {self.init_multiplier!r}")


def update_multipliers(multipliers: FloatArray, cost_return: FloatArray, limits: FloatArray, lr: float) -> FloatArray:
    """λᵢ ← max(0, λᵢ + lr·(J_Ci − dᵢ)), all (C,); the learner passes the batch's upper bound Uᵢ as J_Ci."""
    return np.maximum(0.0, multipliers + lr * (np.asarray(cost_return) - limits))


def _update(cfg: Config, actor: HurdleActor, optim: torch.optim.Optimizer, batch: op.Batch,
            multipliers: FloatArray, gen: torch.Generator) -> dict[str, float]:
    """PPO epochs on the Lagrangian advantage; returns diagnostics."""
    lam = torch.as_tensor(multipliers)
    adv = (batch.adv_r - batch.adv_c @ lam) / (1.0 + lam.sum())
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    n, epochs, losses, clipped = len(adv), 0, [], []
    kl = 0.0
    for _ in range(cfg.update_epochs):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, cfg.minibatch_size):
            idx = perm[start:start + cfg.minibatch_size]
            new = actor(batch.x[idx])
            ratio = torch.exp(op.log_prob_scaled(new, batch.y[idx]) - batch.old_logp[idx])
            loss = -torch.min(ratio * adv[idx], ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv[idx]).mean()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(actor.net.parameters(), cfg.max_grad_norm)
            optim.step()
            losses.append(float(loss.detach()))
            clipped.append(float(((ratio.detach() - 1).abs() > cfg.clip).double().mean()))
        epochs += 1
        with torch.no_grad():
            kl = float(op.hurdle_kl(batch.old, actor(batch.x)).mean())
        if kl > cfg.target_kl:
            break
    return {"kl": kl, "epochs": float(epochs), "loss/actor": float(np.mean(losses)),
            "clip_fraction": float(np.mean(clipped))}


def train(config: Config, make_env: op.MakeEnv, feature_names: tuple[str, ...], cost_names: tuple[str, ...],
          cost_limits: FloatArray, actor: HurdleActor, seed: int, *, discount: float = 1.0,
          label: str = "ppo_lag") -> tuple[HurdleActor, dict[str, float], list[dict[str, float]]]:
    """Train a copy of ``actor`` by PPO-Lagrangian in ``make_env(config.num_envs, seed)``.

    Args:
        config: hyper-parameters.
        make_env: (num_envs, seed) → vector env (frozen after termination, ``info["cost"] (B, C)``).
        feature_names: observation columns, in order; cost_names: the C columns of ``info["cost"]``.
        cost_limits: (C,) dᵢ, the allowed mean discounted cost return per episode.
        actor: the initial policy (left untouched; e.g. the behaviour clone or :func:`op.fresh_actor`).
        seed: drives env resets, action sampling, critics and minibatches (same seed → same weights).
        discount: γ of reward and cost returns.
        label: prefix of the progress log lines.
    Returns:
        (trained actor, final metrics ``train/…`` incl. the multipliers, one history row per iteration).
    """
    limits = op.check_fit_inputs(feature_names, cost_names, cost_limits, actor)
    actor = copy.deepcopy(actor).train()
    critics = op.ValueCritics(len(feature_names) + 1, config.critic_hidden, 1 + len(cost_names),
                              torch.Generator().manual_seed(seed + 1))
    critic_optim = torch.optim.Adam(critics.parameters(), lr=config.critic_lr)
    actor_optim = torch.optim.Adam(actor.net.parameters(), lr=config.actor_lr)
    gen = torch.Generator().manual_seed(seed + 2)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
    next_seed = op.seed_stream(seed)
    env = make_env(config.num_envs, seed)
    multipliers = np.full(len(cost_names), config.init_multiplier)
    history: list[dict[str, float]] = []
    progress = op.ProgressLog(label, config.iterations, cost_names, limits, config.log_every)
    keeper = op.FeasibleIterate(limits, config.cost_confidence, config.confirm)
    for it in range(config.iterations):
        t0 = time.perf_counter()
        with torch.no_grad():
            ro = op.collect(env, actor, rng, config.horizon, next_seed(), len(cost_names))
        t_rollout = time.perf_counter() - t0
        batch, xin, targets = op.prepare(ro, actor, critics, config.horizon, discount, config.lam)
        keeper.offer(actor, it, batch.reward_return, batch.cost_return, batch.cost_return_se)
        cost_bound = op.cost_upper_bound(batch.cost_return, batch.cost_return_se, config.cost_confidence)
        multipliers = update_multipliers(multipliers, cost_bound, limits, config.multiplier_lr)
        diag = _update(config, actor, actor_optim, batch, multipliers, gen)
        v_loss = op.fit_critics(critics, critic_optim, xin, targets, config.critic_epochs,
                                config.critic_batch_size, gen)
        row = {"step": float(it + 1), "iteration": float(it), "reward_return": batch.reward_return,
               **{f"cost_return/{n}": float(v) for n, v in zip(cost_names, batch.cost_return)},
               **{f"multiplier/{n}": float(v) for n, v in zip(cost_names, multipliers)},
               **diag, "loss/critic": v_loss, "seconds": time.perf_counter() - t0,
               "seconds_rollout": t_rollout}
        history.append(row)
        progress(row)
    selected = (keeper.finish(env, actor, rng, config.horizon, next_seed, cost_names, discount, config.iterations,
                              label) if config.keep == "best_feasible" else {})
    seconds = progress.summary(history)
    last = history[-1]
    metrics = {"train/iterations": float(config.iterations), "train/seconds": seconds,
               "train/iterations_per_s": config.iterations / max(seconds, 1e-9),
               "train/return": last["reward_return"],
               **{f"train/cost_return/{n}": last[f"cost_return/{n}"] for n in cost_names},
               **{f"train/multiplier/{n}": float(v) for n, v in zip(cost_names, multipliers)},
               "train/kl": last["kl"], **selected}
    return actor.eval(), metrics, history


def fit(config: Config, inputs: TrainInputs, seed: int) -> FitResult:
    """PPO-Lagrangian in the run's world-model environment (guarded or not) under ``inputs.cost_limits``."""
    actor = op.initial_actor(inputs, seed, config.warm_start, config.hidden, config.components)
    with op.threads(config.threads):
        actor, metrics, history = train(config, lambda n, s: inputs.make_env(n, s, inputs.guarded),
                                        inputs.state_features, inputs.cost_columns, inputs.cost_limits, actor, seed,
                                        discount=inputs.discount, label=f"{inputs.run or 'ppo_lag'} seed {seed}")
    return FitResult(policy=SavedPolicy(actor, inputs.state_features, "sample", sample_seed=seed), metrics=metrics,
                     history=history)


load = SavedPolicy.load
"""loader of a PPO-Lagrangian checkpoint (the shared actor format)"""
