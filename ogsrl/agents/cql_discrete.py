"""Discrete CQL (Kumar et al. 2020, §3.2 CQL(H) for discrete actions) over the 5 × 5 AI-Clinician action bins
(``action_bin``), with the same constrained (CCQL) and guarded options as :mod:`ogsrl.agents.cql`.

Checked against d3rlpy ``algos/qlearning/torch/cql_impl.py`` (DiscreteCQLImpl) and CORL's CQL. One MLP maps the
normalised state to Q_R(s, ·) and, with ``constrained``, one Q_Ci(s, ·) per cost column (each 25 values). The policy
is the Boltzmann policy of the Lagrangian Q,

    π(b|s) = softmax_b( (Q_R(s, b) − Σᵢ λᵢ Q_Ci(s, b)) / T ),   T = ``temperature``,

and the targets are expected-SARSA backups under it (so the cost critics evaluate the policy that is served):

    y_R = r + P·ρ(s) + γ(1 − done)·Σ_b' π(b'|s') Q̄_R(s', b'),   y_Ci = c_i + γ(1 − done)·Σ_b' π(b'|s') Q̄_Ci(s', b')
    loss = Σ_heads (Q(s, b_D) − y)² + α·E[logsumexp_b Q_R(s, b) − Q_R(s, b_D)]
                                    + α_C·Σᵢ E[logsumexp_b(−Q_Ci(s, b)) + Q_Ci(s, b_D)]      (cost pessimism)
    λᵢ ← max(0, λᵢ + η_λ·(Σ_b π(b|s₀) Q_Ci(s₀, b) − dᵢ))  on start states s₀

Guarded: ρ(s) = Σ_b π(b|s)·1[(s, dose_b) rejected], dose_b = bin b's median doses; the guardian is evaluated once per
(train row, bin). The served policy (:class:`ogsrl.agents.binned.BinnedPolicy`) folds λ and T into the last layer —
its logits are (Q_R − Σᵢ λᵢ Q_Ci)/T — so no critic or multiplier is served; doses inside a bin follow the
clinicians' doses there (see :mod:`ogsrl.agents.binned`).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ogsrl import features
from ogsrl.agents import common, onpolicy as op
from ogsrl.agents.actor import SavedPolicy
from ogsrl.agents.binned import N_BINS, N_SUB, BinnedPolicy, DoseModel, sub_bins
from ogsrl.agents.categorical import CategoricalActor, check_ids
from ogsrl.agents.cql import returns_to_go
from ogsrl.agents.inputs import FitResult, TrainInputs

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Config:
    """Discrete CQL over ``action_bin`` (``constrained``: CCQL; the run's ``guarded``: GCQL/GCCQL)."""

    steps: int = 2000
    """gradient updates"""
    batch_size: int = 256
    """B, transitions per update"""
    hidden: tuple[int, ...] = (256, 256)
    """MLP widths s → Q(s, ·) (25 values per head)"""
    lr: float = 3e-4
    """Adam learning rate"""
    tau: float = 0.005
    """Polyak rate of the target network"""
    alpha: float = 1.0
    """conservative weight α of the CQL(H) term (d3rlpy DiscreteCQL's alpha)"""
    temperature: float = 1.0
    """T of the Boltzmann policy (reward units; → 0: greedy)"""
    constrained: bool = False
    """CCQL: cost heads and one Lagrange multiplier per cost column"""
    cost_alpha: float = 1.0
    """α_C, weight of the cost heads' pessimistic term"""
    multiplier_lr: float = 0.01
    """η_λ, projected-ascent step of the multipliers per unit of violation"""
    init_multiplier: float = 0.0
    """λᵢ at the start"""
    ood_penalty: float = -25.0
    """guarded runs: reward added per unit of π's probability of a rejected bin at s"""
    critic_warm_start: int = 0
    """supervised updates that first regress every head's values Q(s, ·) — all actions alike — on the logged
    returns-to-go (the clinicians' Monte-Carlo value), so CQL starts at the right scale instead of propagating a whole
    stay through Polyak targets (as :mod:`ogsrl.agents.cql`); 0: the random initialisation (the default: measured on
    the demo, docs/policies-and-ope.md, the warm start did not make the served discrete policies better)"""
    log_every: int = 1000
    """updates between progress log lines (and learning-curve rows)"""

    def __post_init__(self) -> None:
        op.check_config(self, positive=("steps", "batch_size", "lr", "temperature", "log_every"), unit=("tau",),
                        widths=("hidden",))
        for name in ("alpha", "cost_alpha", "multiplier_lr", "init_multiplier", "critic_warm_start"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"Config.{name} must be ≥ 0, got {getattr(self, name)!r}")


def bin_edges(frame) -> dict[str, list[float]]:  # noqa: ANN001 - a pandas DataFrame
    """The train split's quartile edges, checked against its ``action_bin`` column (one-line errors)."""
    from ogsrl.cohort.extract import fit_action_bins

    if "action_bin" not in frame.columns or (frame["action_bin"].to_numpy() < 0).all():
        raise ValueError("cql_discrete: the trajectory table has no action bins (action_bin is -1 or missing); set "
                         "cohort.action_bins: true and re-extract")
    acts = frame[list(features.ACTIONS)].to_numpy(np.float64)
    edges = fit_action_bins(acts[:, 0], acts[:, 1])
    bins = N_SUB * sub_bins(acts[:, 0], edges["fluid_ml"]) + sub_bins(acts[:, 1], edges["nee_max"])
    bad = np.flatnonzero(bins != frame["action_bin"].to_numpy())
    if bad.size:
        raise ValueError(f"cql_discrete: action_bin differs from the quartile bins of the train doses in "
                         f"{bad.size} rows (first rows {bad[:5].tolist()})")
    return edges


def train(config: Config, obs_n: torch.Tensor, next_obs_n: torch.Tensor, bins: torch.Tensor, rew: torch.Tensor,
          cost: torch.Tensor, done: torch.Tensor, starts: torch.Tensor, cost_limits: np.ndarray, seed: int, *,
          discount: float = 1.0, rejected: torch.Tensor | None = None, label: str = "cql_discrete",
          n_actions: int = N_BINS) -> tuple[torch.nn.Sequential, np.ndarray, dict[str, float], list[dict[str, float]]]:
    """Fit the Q network.

    Args:
        obs_n, next_obs_n: (N, S) normalised states, float32; bins: (N,) logged actions 0 … n_actions − 1 (the 25
        bins, or a declared discrete column's ids); rew: (N,); cost: (N, C)
        (all C columns are constrained when ``config.constrained``); done: (N,) stay ends; starts: (M,) first rows.
        cost_limits: (C,) expected cost per stay allowed.
        seed: weight init (``seed``) and minibatches (``seed + 1``).
        rejected: (N, n_actions) 1 where the guardian rejects (s, action b); None: not guarded.
        n_actions: number of discrete actions (25 bins by default).
    Returns:
        (Q network (S → (1 + C)·n_actions), multipliers λ (C,), final metrics, history rows).
    """
    n_cost = cost.shape[1] if config.constrained else 0
    net = common.mlp(obs_n.shape[1], config.hidden, (1 + n_cost) * n_actions, torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed + 1)
    t0 = time.perf_counter()  # the warm start counts as training time
    warm = {}
    if config.critic_warm_start:
        warm["train/critic_warm_start_mse"] = warm_start(net, obs_n, rew, cost[:, :n_cost], done, discount,
                                                         config.critic_warm_start, config.batch_size, config.lr, gen)
    target = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    limits = np.asarray(cost_limits, dtype=np.float64)[:n_cost]
    lam = np.full(n_cost, config.init_multiplier)
    heads = 1 + n_cost

    def policy(q: torch.Tensor, lam_t: torch.Tensor) -> torch.Tensor:
        """(B, 1 + C, n) → π(·|s) (B, n)"""
        return torch.softmax((q[:, 0] - (lam_t[:, None] * q[:, 1:]).sum(1)) / config.temperature, dim=-1)

    history: list[dict[str, float]] = []
    sums: dict[str, float] = {}
    for step in range(1, config.steps + 1):
        lam_t = torch.as_tensor(lam, dtype=torch.float32)
        idx = torch.randint(len(rew), (config.batch_size,), generator=gen)
        b = bins[idx]
        q = net(obs_n[idx]).reshape(-1, heads, n_actions)  # (B, 1 + C, n)
        with torch.no_grad():
            pi_next = policy(net(next_obs_n[idx]).reshape(-1, heads, n_actions), lam_t)
            v_next = (target(next_obs_n[idx]).reshape(-1, heads, n_actions) * pi_next[:, None]).sum(-1)  # (B, 1+C)
            signal = torch.cat([rew[idx, None], cost[idx, :n_cost]], dim=1)  # (B, 1 + C)
            rho = (policy(q.detach(), lam_t) * rejected[idx]).sum(-1) if rejected is not None else torch.zeros(len(b))
            signal[:, 0] += config.ood_penalty * rho
            y = signal + discount * (1.0 - done[idx, None]) * v_next
        q_data = q.gather(2, b[:, None, None].expand(-1, heads, 1)).squeeze(-1)  # (B, 1 + C)
        td = ((q_data - y) ** 2).mean(0).sum()
        gap = (torch.logsumexp(q[:, 0], dim=-1) - q_data[:, 0]).mean()
        loss = td + config.alpha * gap
        if n_cost:
            loss = loss + config.cost_alpha * (torch.logsumexp(-q[:, 1:], dim=-1) + q_data[:, 1:]).mean(0).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        common.soft_update(target, net, config.tau)
        j_c = np.zeros(n_cost)
        if n_cost:
            with torch.no_grad():
                s0 = starts[torch.randint(len(starts), (config.batch_size,), generator=gen)]
                q0 = net(obs_n[s0]).reshape(-1, heads, n_actions)
                j_c = (policy(q0, lam_t)[:, None] * q0[:, 1:]).sum(-1).mean(0).double().numpy()
            lam = np.maximum(0.0, lam + config.multiplier_lr * (j_c - limits))
        row = {"loss/td": float(td.detach()), "loss/conservative_gap": float(gap.detach()),
               "train/q_data": float(q_data[:, 0].detach().mean()), "train/rejected": float(rho.mean())}
        row.update({f"train/cost_value/{i}": float(j_c[i]) for i in range(n_cost)})
        row.update({f"train/multiplier/{i}": float(lam[i]) for i in range(n_cost)})
        for k, v in row.items():
            sums[k] = sums.get(k, 0.0) + v
        if step % config.log_every == 0 or step == config.steps:
            count = step - (int(history[-1]["step"]) if history else 0)
            history.append({"step": float(step), **{k: v / count for k, v in sums.items()}})
            sums = {}
            elapsed = time.perf_counter() - t0
            log.info("%s: step %d/%d  Q(data) %.2f  gap %.2f  rejected %.3f  λ %s  %.0f s, ETA %.0f s", label, step,
                     config.steps, history[-1]["train/q_data"], history[-1]["loss/conservative_gap"],
                     history[-1]["train/rejected"], np.round(lam, 2).tolist(), elapsed,
                     elapsed / step * (config.steps - step))
    seconds = time.perf_counter() - t0
    metrics = {"train/updates": float(config.steps), "train/seconds": seconds,
               "train/updates_per_s": config.steps / max(seconds, 1e-9), **warm,
               **{k: v for k, v in history[-1].items() if k != "step"}}
    return net.eval(), lam, metrics, history


def warm_start(net: torch.nn.Sequential, obs_n: torch.Tensor, rew: torch.Tensor, cost: torch.Tensor,
               done: torch.Tensor, discount: float, steps: int, batch_size: int, lr: float,
               generator: torch.Generator) -> float:
    """Regress every output of ``net`` (heads × actions) on its head's logged return-to-go — the reward's, then each
    cost column's — for ``steps`` minibatches; returns the last update's mean squared error."""
    targets = torch.cat([returns_to_go(rew, done, discount)[:, None], returns_to_go(cost, done, discount)], dim=1)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    mse = torch.tensor(float("nan"))
    for _ in range(steps):
        idx = torch.randint(len(targets), (batch_size,), generator=generator)
        q = net(obs_n[idx]).reshape(batch_size, targets.shape[1], -1)  # (B, 1 + C, n)
        mse = ((q - targets[idx, :, None]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        mse.backward()
        opt.step()
    return float(mse.detach())


def policy_network(net: torch.nn.Sequential, lam: np.ndarray, temperature: float,
                   n_actions: int = N_BINS) -> torch.nn.Sequential:
    """Fold λ and T into the last layer: logits(s) = (Q_R(s, ·) − Σᵢ λᵢ Q_Ci(s, ·)) / T, a network S → n_actions."""
    out = copy.deepcopy(net)
    last = out[-1]
    w = last.weight.detach().reshape(-1, n_actions, last.weight.shape[1])  # (1 + C, n, H)
    b = last.bias.detach().reshape(-1, n_actions)
    coef = torch.as_tensor(np.r_[1.0, -np.asarray(lam, dtype=np.float64)], dtype=torch.float32) / temperature
    new = torch.nn.Linear(last.in_features, n_actions)
    with torch.no_grad():
        new.weight.copy_((coef[:, None, None] * w).sum(0))
        new.bias.copy_((coef[:, None] * b).sum(0))
    out[-1] = new
    return out.eval()


def _t32(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.asarray(x, dtype=np.float32))


def _stay_starts(frame: pd.DataFrame) -> torch.Tensor:
    """Row index of each stay's first step (rows sorted by stay, step)."""
    keys = frame["stay_key"].to_numpy()
    return torch.as_tensor(np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]))


def fit_declared(config: Config, inputs: TrainInputs, seed: int) -> FitResult:
    """Discrete CQL on a bring-your-own table's declared discrete column (contract v2): Q over its ``n`` ids; serves
    the Boltzmann policy as a categorical actor (:class:`ogsrl.agents.categorical.CategoricalActor`)."""
    space = inputs.action_space
    names, frame = inputs.state_features, inputs.train
    obs = common.check_obs(frame[list(names)].to_numpy(np.float64), names, "cql_discrete")
    nxt = frame[[f"next_{n}" for n in names]].to_numpy(np.float64)
    ids = check_ids(frame[space.column].to_numpy(), len(obs), space, "cql_discrete")
    mean, std = common.fit_normaliser(obs)
    rejected = None
    if inputs.guarded:
        if inputs.make_guard is None:
            raise ValueError(f"run {inputs.run!r}: guarded model-free training needs inputs.make_guard")
        every = np.tile(np.arange(space.n, dtype=np.float64)[:, None], (len(obs), 1))  # (N·n, 1)
        inside = inputs.make_guard()(np.repeat(obs, space.n, axis=0), every).reshape(len(obs), space.n)
        rejected = torch.as_tensor(~inside, dtype=torch.float32)
    starts = _stay_starts(frame)
    net, lam, metrics, history = train(
        config, _t32((obs - mean) / std), _t32((nxt - mean) / std), torch.as_tensor(ids),
        _t32(frame["reward"].to_numpy()), _t32(frame[list(inputs.cost_columns)].to_numpy().reshape(len(obs), -1)),
        _t32(frame["done"].to_numpy()), starts, inputs.cost_limits, seed, discount=inputs.discount, rejected=rejected,
        label=f"{inputs.run or 'cql_discrete'} seed {seed}", n_actions=space.n)
    actor = CategoricalActor(len(names), config.hidden, torch.Generator().manual_seed(seed), space)
    actor.net = policy_network(net, lam, config.temperature, space.n)
    actor.set_normaliser(mean, std)
    cols = inputs.cost_columns
    rename = {f"train/{k}/{i}": f"train/{k}/{c}" for i, c in enumerate(cols) for k in ("cost_value", "multiplier")}
    metrics = {rename.get(k, k): v for k, v in metrics.items()}
    history = [{rename.get(k, k): v for k, v in h.items()} for h in history]
    return FitResult(policy=SavedPolicy(actor, names, "sample", sample_seed=seed), metrics=metrics, history=history)


def fit(config: Config, inputs: TrainInputs, seed: int) -> FitResult:
    """Discrete CQL / CCQL (guarded: GCQL / GCCQL) on the run's train split; serves a :class:`BinnedPolicy` (a
    declared discrete action column: :func:`fit_declared`)."""
    if isinstance(inputs.action_space, common.DiscreteSpace):
        return fit_declared(config, inputs, seed)
    names, frame = inputs.state_features, inputs.train
    edges = bin_edges(frame)
    acts = frame[list(features.ACTIONS)].to_numpy(np.float64)
    doses = DoseModel.fit(acts, edges)
    obs = common.check_obs(frame[list(names)].to_numpy(np.float64), names, "cql_discrete")
    nxt = frame[[f"next_{n}" for n in names]].to_numpy(np.float64)
    mean, std = common.fit_normaliser(obs)
    rejected = None
    if inputs.guarded:
        if inputs.make_guard is None:
            raise ValueError(f"run {inputs.run!r}: guarded model-free training needs inputs.make_guard")
        guard = inputs.make_guard()
        grid = np.arange(N_BINS)
        median = doses.doses(np.stack([grid // N_SUB, grid % N_SUB], axis=1), None)  # (25, A)
        inside = guard(np.repeat(obs, N_BINS, axis=0), np.tile(median, (len(obs), 1))).reshape(len(obs), N_BINS)
        rejected = torch.as_tensor(~inside, dtype=torch.float32)
    starts = _stay_starts(frame)
    net, lam, metrics, history = train(
        config, _t32((obs - mean) / std), _t32((nxt - mean) / std), torch.as_tensor(frame["action_bin"].to_numpy(np.int64)),
        _t32(frame["reward"].to_numpy()), _t32(frame[list(inputs.cost_columns)].to_numpy().reshape(len(obs), -1)),
        _t32(frame["done"].to_numpy()), starts, inputs.cost_limits, seed, discount=inputs.discount, rejected=rejected,
        label=f"{inputs.run or 'cql_discrete'} seed {seed}")
    cols = inputs.cost_columns

    def named(row: dict[str, float]) -> dict[str, float]:
        """train/cost_value/<i> → train/cost_value/<cost column>"""
        return {(k.rsplit("/", 1)[0] + "/" + cols[int(k.rsplit("/", 1)[1])]
                 if k.startswith(("train/cost_value/", "train/multiplier/")) else k): v for k, v in row.items()}

    metrics, history = named(metrics), [named(h) for h in history]
    pol = BinnedPolicy(policy_network(net, lam, config.temperature), mean, std, config.hidden, doses, names,
                       "sample", sample_seed=seed)
    return FitResult(policy=pol, metrics=metrics, history=history)


def load(path: str | Path) -> BinnedPolicy | SavedPolicy:
    """Load a discrete CQL checkpoint: a :class:`BinnedPolicy`, or (a declared discrete column) a categorical
    :class:`SavedPolicy`."""
    from ogsrl.agents.actor import load_policy

    return load_policy(path)

__all__ = ["Config", "bin_edges", "fit", "fit_declared", "load", "policy_network", "train", "warm_start"]
