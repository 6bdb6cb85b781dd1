"""SOC: standard of care as behaviour cloning of the clinicians (a heteroscedastic hurdle-Gaussian policy).

Reference: the SOC baseline of Yan et al., "Offline Guarded Safe Reinforcement Learning for Medical Treatment
Optimization Strategies", arXiv 2505.16242 (2025); Gaussian BC policy heads as in CORL (`algorithms/offline/iql.py`,
GaussianPolicy) and d3rlpy's BC. Objective (maximum likelihood on the train split, early stopping on val):

    min_θ  E_(s,a)~D [ −log π_θ(a | s) ],
    π_θ(a_j|s) = p0_θ(s)·δ0 + (1 − p0_θ(s))·TruncN(μ_θ(s), σ_θ(s)²; (0, 1]) on y_j = log(1 + a_j/c_j)/log(1 + max_j/c_j)

The density family and why it is a hurdle (not a Tobit) are described in :mod:`ogsrl.agents.common`; the actor and
its checkpoint are :mod:`ogsrl.agents.actor`'s, shared with the other learners.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ogsrl import features
from ogsrl.agents import common
from ogsrl.agents.actor import HurdleActor, SavedPolicy
from ogsrl.agents.categorical import CategoricalActor, check_ids
from ogsrl.agents.common import FloatArray
from ogsrl.agents.inputs import FitResult, TrainInputs

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Config:
    """Behaviour cloning by maximum likelihood (the seed is not a field: it is the run's seed)."""

    hidden: tuple[int, ...] = (64, 64)
    """hidden layer widths of the MLP s → (mixture logits, logit P(a=0), μ, log σ)"""
    lr: float = 1e-3
    """Adam learning rate"""
    weight_decay: float = 0.0
    """Adam L2 penalty"""
    batch_size: int = 256
    """minibatch size (rows)"""
    max_epochs: int = 50
    """upper bound on passes over the train split"""
    patience: int = 5
    """stop after this many epochs without a better validation NLL (best weights are kept)"""
    components: int = 1
    """K, mixture components (each a hurdle Gaussian over both action dimensions; 1 = a single hurdle)"""

    def __post_init__(self) -> None:
        if self.components < 1:
            raise ValueError(f"components must be ≥ 1, got {self.components}")
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise ValueError(f"hidden must be a non-empty list of positive widths, got {list(self.hidden)}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay ≥ 0, got {self.lr}, {self.weight_decay}")
        if self.batch_size <= 0 or self.max_epochs <= 0 or self.patience <= 0:
            raise ValueError("batch_size, max_epochs and patience must be positive")


@dataclass(frozen=True, slots=True)
class Batch:
    """A minibatch of logged decisions in physical units."""

    obs: FloatArray
    """(B, S) states, columns = the policy's feature_names"""
    act: FloatArray
    """(B, A) actions: fluid mL per step, NE-equivalent µg/kg/min"""


def batch_of(df: Any, columns: tuple[str, ...], action_columns: tuple[str, ...] = features.ACTIONS) -> Batch:
    """Rows of a trajectory table → a Batch of (state columns, actions) as float64 arrays."""
    return Batch(obs=df[list(columns)].to_numpy(dtype="float64"),
                 act=df[list(action_columns)].to_numpy(dtype="float64"))


def _tensors(batch: Batch, names: tuple[str, ...], space: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(obs (N, S) float64 physical, scaled actions y (N, A) float64; a discrete space: ids (N,) int64)."""
    obs = common.check_obs(batch.obs, names, "bc")
    if isinstance(space, common.DiscreteSpace):
        ids = check_ids(batch.act, obs.shape[0], space, "bc")
        return torch.tensor(obs), torch.as_tensor(ids)
    acts = common.check_actions(batch.act, obs.shape[0], "bc", space)
    y = torch.as_tensor(common.scale_actions(acts, space), dtype=torch.float64)
    return torch.tensor(obs), y  # torch.tensor copies: obs may be a read-only view of a frame


@torch.no_grad()
def _nll(actor: HurdleActor, x: torch.Tensor, y: torch.Tensor) -> float:
    actor.eval()
    return float(actor.nll(x, y).mean())


def fit_actor(
    cfg: Config, feature_names: tuple[str, ...], train: Batch, val: Batch, seed: int,
    space: common.ActionSpace | common.DiscreteSpace = common.CANONICAL_SPACE,
) -> tuple[SavedPolicy, dict[str, float], list[dict[str, float]]]:
    """Train a BC actor by maximum likelihood with early stopping on the validation NLL.

    Args:
        cfg: hyper-parameters.
        feature_names: state columns of ``train.obs``/``val.obs``, in order.
        train, val: logged decisions in physical units.
        seed: drives the weight init (``seed``) and minibatch shuffling (``seed + 1``); same seed → same weights.
        space: the action columns' ranges (canonical: fluid_ml, nee_max; a bring-your-own table's from its schema);
            a :class:`common.DiscreteSpace` fits a categorical actor by cross-entropy instead.
    Returns:
        (policy with the best-validation weights and act_mode sample, final metrics, per-epoch history with a
        ``step`` key = epoch).
    """
    if len(train.obs) == 0 or len(val.obs) == 0:
        raise ValueError("bc: train and val need at least one row each")
    x, y = _tensors(train, feature_names, space)  # (N, S), (N, A)
    xv, yv = _tensors(val, feature_names, space)
    actor: Any = (CategoricalActor(len(feature_names), cfg.hidden, torch.Generator().manual_seed(seed), space)
                  if isinstance(space, common.DiscreteSpace) else
                  HurdleActor(len(feature_names), cfg.hidden, cfg.components, torch.Generator().manual_seed(seed),
                              space))
    actor.set_normaliser(*common.fit_normaliser(x.numpy()))
    optim = torch.optim.Adam(actor.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)  # learner state
    gen = torch.Generator().manual_seed(seed + 1)
    best, best_epoch, stale = math.inf, 0, 0
    best_state = {k: t.detach().clone() for k, t in actor.state_dict().items()}
    history: list[dict[str, float]] = []
    for epoch in range(1, cfg.max_epochs + 1):
        actor.train()
        perm = torch.randperm(x.shape[0], generator=gen)
        losses = []
        for start in range(0, x.shape[0], cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            loss = actor.nll(x[idx], y[idx]).mean()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            losses.append(float(loss.detach()))
        val_nll = _nll(actor, xv, yv)
        history.append({"step": float(epoch), "loss/train_nll": float(np.mean(losses)), "loss/val_nll": val_nll})
        if val_nll < best - 1e-6:
            best, best_epoch, stale = val_nll, epoch, 0
            best_state = {k: t.detach().clone() for k, t in actor.state_dict().items()}
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    actor.load_state_dict(best_state)
    log.info("bc: best val NLL %.4f at epoch %d of %d", best, best_epoch, len(history))
    metrics = {
        "loss/train_nll": _nll(actor, x, y),
        "loss/val_nll": best,
        "train/epochs": float(len(history)),
        "train/best_epoch": float(best_epoch),
        "train/rows": float(len(train.obs)),
    }
    return SavedPolicy(actor, feature_names, "sample", sample_seed=seed), metrics, history


def fit(config: Config, inputs: TrainInputs, seed: int) -> FitResult:
    """Behaviour cloning on the run's state columns of the train split (early stopping on val)."""
    names, space = inputs.state_features, inputs.action_space
    pol, metrics, history = fit_actor(config, names, batch_of(inputs.train, names, space.columns),
                                      batch_of(inputs.val, names, space.columns), seed, space)
    return FitResult(policy=pol, metrics=metrics, history=history)


load = SavedPolicy.load
"""loader of a BC checkpoint (the shared actor format)"""
