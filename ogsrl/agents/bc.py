"""SOC: standard of care as behaviour cloning of the clinicians (a heteroscedastic hurdle-Gaussian policy).

Reference: the SOC baseline of Yan et al., "Offline Guarded Safe Reinforcement Learning for Medical Treatment
Optimization Strategies", arXiv 2505.16242 (2025); Gaussian BC policy heads as in CORL (`algorithms/offline/iql.py`,
GaussianPolicy) and d3rlpy's BC. Objective (maximum likelihood on the train split, early stopping on val):

    min_θ  E_(s,a)~D [ −log π_θ(a | s) ],
    π_θ(a_j|s) = p0_θ(s)·δ0 + (1 − p0_θ(s))·TruncN(μ_θ(s), σ_θ(s)²; (0, 1]) on y_j = log(1 + a_j/c_j)/log(1 + max_j/c_j)

The density family and why it is a hurdle (not a Tobit) are described in :mod:`ogsrl.agents.common`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ogsrl import features
from ogsrl.agents import common
from ogsrl.agents.common import FloatArray
from ogsrl.config import to_dict

log = logging.getLogger(__name__)

KIND = "bc"
"""checkpoint kind written to config.json and looked up by :func:`ogsrl.agents.load_policy`"""


@dataclass(frozen=True, slots=True)
class BCConfig:
    """Behaviour cloning by maximum likelihood."""

    hidden: tuple[int, ...] = (64, 64)
    """hidden layer widths of the MLP s → (μ, log σ)"""
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
    seed: int = 42
    """seed of the weight init and minibatch shuffling"""
    components: int = 1
    """K, mixture components (each a hurdle Gaussian over both action dimensions; 1 = a single hurdle)"""

    def __post_init__(self) -> None:
        if self.components < 1:
            raise ValueError(f"components must be ≥ 1, got {self.components}")
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise ValueError(f"hidden must be a non-empty list of positive widths, got {self.hidden}")
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


class HurdleHead(nn.Module):
    """MLP: normalised state (B, S) → mixture logits (B, K) and, per component and action dimension (B, K, A),
    logit P(a=0), μ and log σ of the scaled non-zero action."""

    def __init__(self, n_obs: int, hidden: tuple[int, ...], components: int, generator: torch.Generator) -> None:
        super().__init__()
        self.n_act = len(features.ACTIONS)
        self.k = components
        self.net = common.mlp(n_obs, hidden, self.k + 3 * self.k * self.n_act, generator)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(x)  # (B, K + 3KA)
        logit_w, rest = out[:, : self.k], out[:, self.k :].reshape(-1, 3, self.k, self.n_act)  # (B, 3KA) → (B, 3, K, A)
        logit0, raw_mu, raw_log_std = rest.unbind(dim=1)
        mu = common.soft_clamp(raw_mu, common.MU_MIN, common.MU_MAX)
        return logit_w, logit0, mu, common.soft_clamp(raw_log_std, common.LOG_STD_MIN, common.LOG_STD_MAX)


class BCPolicy:
    """A hurdle-Gaussian policy over the 2-D action; implements :class:`ogsrl.policy.StochasticPolicy`."""

    def __init__(
        self,
        cfg: BCConfig,
        feature_names: tuple[str, ...],
        obs_mean: FloatArray,
        obs_std: FloatArray,
        *,
        kind: str = KIND,
    ) -> None:
        if len(obs_mean) != len(feature_names) or len(obs_std) != len(feature_names):
            raise ValueError("obs_mean/obs_std must have one entry per feature name")
        self.cfg = cfg
        self.kind = kind
        self.feature_names = tuple(feature_names)
        self.obs_mean = np.asarray(obs_mean, dtype=np.float64)
        self.obs_std = np.asarray(obs_std, dtype=np.float64)
        gen = torch.Generator().manual_seed(cfg.seed)
        self.net = HurdleHead(len(feature_names), cfg.hidden, cfg.components, gen)
        self.optim = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    # ---- inference -------------------------------------------------------------------------------------------

    def _inputs(self, obs: Any) -> torch.Tensor:
        arr = common.check_obs(obs, self.feature_names, f"{self.kind} policy")
        return torch.as_tensor((arr - self.obs_mean) / self.obs_std, dtype=torch.float32)

    @torch.no_grad()
    def distribution(self, obs: Any) -> tuple[FloatArray, ...]:
        """Mixture logits ``(B, K)`` and per component (logit P(a=0), μ, log σ) of the scaled action, each
        ``(B, K, A)``, for ``obs (B, S)``; float64."""
        was_training = self.net.training
        self.net.eval()
        try:
            out = self.net(self._inputs(obs))
        finally:
            self.net.train(was_training)
        return tuple(t.double().numpy() for t in out)  # type: ignore[return-value]

    def act(self, obs: FloatArray, rng: np.random.Generator | None = None) -> FloatArray:
        """Actions ``(B, A)`` in physical units: a sample drawn with ``rng``; if None, from the heaviest component,
        per dimension 0 where P(a=0) ≥ ½, else the median non-zero amount."""
        params = self.distribution(obs)
        if rng is None:
            return common.hurdle_mode(*params)
        return common.hurdle_sample(*params, rng)

    def log_prob(self, obs: FloatArray, actions: FloatArray) -> FloatArray:
        """``log π(a|s)`` per row ``(B,)`` w.r.t. (δ0 + Lebesgue) per dimension, physical units."""
        params = self.distribution(obs)
        acts = common.check_actions(actions, params[0].shape[0], f"{self.kind} policy")
        return common.hurdle_log_prob(*params, acts)

    # ---- training --------------------------------------------------------------------------------------------

    def _tensors(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._inputs(batch.obs)
        acts = common.check_actions(batch.act, x.shape[0], f"{self.kind} policy")
        return x, torch.as_tensor(common.scale_actions(acts), dtype=torch.float64)

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.net.train()
        loss = common.hurdle_nll(*self.net(x), y).mean()
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        self.optim.step()
        return float(loss.detach())

    def update(self, batch: Batch) -> dict[str, float]:
        """One Adam step on the mean NLL of ``batch``; returns ``{"loss/nll": …}`` (scaled-action units)."""
        x, y = self._tensors(batch)
        return {"loss/nll": self._step(x, y)}

    @torch.no_grad()
    def nll(self, batch: Batch) -> float:
        """Mean NLL of ``batch`` in scaled-action units (the training objective), without updating."""
        x, y = self._tensors(batch)
        self.net.eval()
        return float(common.hurdle_nll(*self.net(x), y).mean())

    # ---- checkpoints -----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything that defines the policy's outputs: network weights and the input normaliser."""
        return {
            "net": self.net.state_dict(),
            "obs_mean": torch.as_tensor(self.obs_mean),
            "obs_std": torch.as_tensor(self.obs_std),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.obs_mean = state["obs_mean"].double().numpy().copy()
        self.obs_std = state["obs_std"].double().numpy().copy()

    def save(self, path: str | Path) -> None:
        """Write a checkpoint directory (config.json + weights.pt) atomically."""
        config = {
            "kind": self.kind,
            "config": to_dict(self.cfg),
            "feature_names": list(self.feature_names),
            "action_columns": list(features.ACTIONS),
            "action_max": common.ACTION_MAX.tolist(),
            "action_resolution": common.ACTION_RESOLUTION.tolist(),
        }
        common.save_checkpoint(path, config, self.state_dict())

    @classmethod
    def load(cls, path: str | Path) -> BCPolicy:
        """Rebuild a policy saved by :meth:`save` (weights loaded with ``weights_only=True``)."""
        doc = common.read_checkpoint_config(path)
        if doc["kind"] != KIND:
            raise ValueError(f"{path}: checkpoint kind {doc['kind']!r} is not {KIND!r}")
        if (
            doc.get("action_columns") != list(features.ACTIONS)
            or not np.array_equal(doc.get("action_max"), common.ACTION_MAX)
            or not np.array_equal(doc.get("action_resolution"), common.ACTION_RESOLUTION)
        ):
            raise ValueError(f"{path}: checkpoint action columns/bounds differ from ogsrl.features")
        raw = dict(doc["config"])
        cfg = BCConfig(**{**raw, "hidden": tuple(raw["hidden"])})
        names = tuple(doc["feature_names"])
        pol = cls(cfg, names, np.zeros(len(names)), np.ones(len(names)))
        pol.load_state_dict(common.read_checkpoint_tensors(path))
        return pol


def _snapshot(pol: BCPolicy) -> dict[str, Any]:
    """A deep copy of the policy's state_dict (the live one aliases the network's tensors)."""
    state = pol.state_dict()
    return {**state, "net": {k: t.detach().clone() for k, t in state["net"].items()}}


def fit(
    cfg: BCConfig, feature_names: tuple[str, ...], train: Batch, val: Batch
) -> tuple[BCPolicy, dict[str, float], list[dict[str, float]]]:
    """Train a BC policy by maximum likelihood with early stopping on the validation NLL.

    Args:
        cfg: hyper-parameters (its seed drives init and shuffling; same seed → same weights and metrics).
        feature_names: state columns of ``train.obs``/``val.obs``, in order.
        train, val: logged decisions in physical units.
    Returns:
        (policy with the best-validation weights, final metrics, per-epoch history with an ``epoch`` key).
    """
    if len(train.obs) == 0 or len(val.obs) == 0:
        raise ValueError("fit: train and val need at least one row each")
    train_obs = common.check_obs(train.obs, feature_names, "bc train")
    mean, std = common.fit_normaliser(train_obs)
    pol = BCPolicy(cfg, feature_names, mean, std)
    x, y = pol._tensors(train)  # (N, S), (N, A)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    best = math.inf
    best_state = _snapshot(pol)
    best_epoch, stale = 0, 0
    history: list[dict[str, float]] = []
    for epoch in range(1, cfg.max_epochs + 1):
        perm = torch.randperm(x.shape[0], generator=gen)
        losses = []
        for start in range(0, x.shape[0], cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            losses.append(pol._step(x[idx], y[idx]))
        val_nll = pol.nll(val)
        history.append({"epoch": float(epoch), "loss/train_nll": float(np.mean(losses)), "loss/val_nll": val_nll})
        if val_nll < best - 1e-6:
            best, best_epoch, stale = val_nll, epoch, 0
            best_state = _snapshot(pol)
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    pol.load_state_dict(best_state)
    log.info("bc: best val NLL %.4f at epoch %d of %d", best, best_epoch, len(history))
    metrics = {
        "loss/train_nll": pol.nll(train),
        "loss/val_nll": best,
        "train/epochs": float(len(history)),
        "train/best_epoch": float(best_epoch),
        "train/rows": float(len(train.obs)),
    }
    return pol, metrics, history
