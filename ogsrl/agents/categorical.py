"""A categorical actor for a discrete action column (contract v2, ``action.type: discrete``).

π(a | s) = softmax(f_θ((s − m)/σ))_a over the ids a ∈ {0 … n−1}, f_θ an MLP. It follows the same protocol as
:class:`ogsrl.agents.actor.HurdleActor`, so behaviour cloning (:mod:`ogsrl.agents.bc`) and the model-based family
(:mod:`ogsrl.agents.onpolicy`: TRPO, CPO, PPO-Lagrangian) train it unchanged:

* ``forward(obs)`` returns a one-element parameter tuple ``(logits (B, n),)``;
* :func:`log_prob_ids` is log π(a|s) for ids ``(B,)``, :func:`categorical_kl` the trust-region metric
  ``KL(π_old ‖ π_new) = Σ_a π_old(a) (log π_old(a) − log π_new(a))`` (exact, so its Hessian is the Fisher matrix);
* ``encode(actions (B, 1))`` gives the ids the losses read, ``sample``/``mode`` numpy ids ``(B, 1)``.

Served actions are ids as floats in one column (the table's action column); ``log_prob`` is w.r.t. counting
measure, which is what importance ratios against a categorical behaviour model need.
"""

from __future__ import annotations

from collections.abc import Sequence
import numpy as np
import torch
from torch import nn

from ogsrl.agents import common
from ogsrl.agents.common import DiscreteSpace, FloatArray
from ogsrl.errors import DataError


def check_ids(actions: object, n_rows: int, space: DiscreteSpace, who: str) -> np.ndarray:
    """Validate served/logged ids ``(B, 1)`` or ``(B,)``: integral and in 0 … n−1. Returns int64 ``(B,)``."""
    arr = np.asarray(actions, dtype=np.float64).reshape(-1) if np.ndim(actions) else np.zeros(0)
    if arr.shape != (n_rows,):
        raise ValueError(f"{who}: actions must hold one id per row ({n_rows}), got shape {np.shape(actions)}")
    bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)) | (arr < 0) | (arr >= space.n))
    if bad.size:
        raise DataError(f"{who}: action ids must be integers in 0 … {space.n - 1}", column=space.column,
                        rows=bad.tolist())
    return arr.astype(np.int64)


def log_prob_ids(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log π(a|s) ``(B,)`` for logits ``(B, n)`` and ids ``(B,)``, float64."""
    return torch.log_softmax(logits.double(), dim=-1).gather(1, ids.long().reshape(-1, 1))[:, 0]


def categorical_kl(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """KL(π_old ‖ π_new) per row ``(B,)`` for logits ``(B, n)``, float64."""
    lo, ln = torch.log_softmax(old.double(), dim=-1), torch.log_softmax(new.double(), dim=-1)
    return (lo.exp() * (lo - ln)).sum(dim=-1)


class CategoricalActor(nn.Module):
    """MLP: state ``(B, S)`` in physical units → logits ``(B, n)``; normaliser buffers as the hurdle actor's."""

    def __init__(self, n_obs: int, hidden: Sequence[int], generator: torch.Generator, space: DiscreteSpace) -> None:
        super().__init__()
        if not hidden or any(h <= 0 for h in hidden):
            raise ValueError(f"CategoricalActor needs positive hidden widths, got {list(hidden)}")
        self.space = space
        self.n_act = 1
        self.k = 1  # no mixture: the checkpoint records components 1
        self.hidden = tuple(int(h) for h in hidden)
        self.net = common.mlp(n_obs, self.hidden, space.n, generator)
        self.register_buffer("obs_mean", torch.zeros(n_obs, dtype=torch.float64))
        self.register_buffer("obs_std", torch.ones(n_obs, dtype=torch.float64))

    def set_normaliser(self, mean: FloatArray, std: FloatArray) -> None:
        """Set the per-feature mean and std (see :func:`common.fit_normaliser`)."""
        self.obs_mean.copy_(torch.as_tensor(mean, dtype=torch.float64))
        self.obs_std.copy_(torch.as_tensor(std, dtype=torch.float64))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor]:
        x = ((obs.double() - self.obs_mean) / self.obs_std).float()
        return (self.net(x),)  # (B, n)

    def encode(self, actions: FloatArray) -> torch.Tensor:
        """Physical actions ``(B, 1)`` (ids) → ``(B,)`` int64 ids, what :meth:`nll` and the on-policy losses read."""
        return torch.as_tensor(np.rint(np.asarray(actions, dtype=np.float64).reshape(-1)).astype(np.int64))

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Differentiable log π(a|s) ``(B,)`` for ids ``act (B, 1)`` or ``(B,)``."""
        return log_prob_ids(self(obs)[0], act.reshape(-1))

    def nll(self, obs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Per-row cross-entropy ``(B,)`` of ids (the behaviour-cloning objective)."""
        return -log_prob_ids(self(obs)[0], ids)

    @torch.no_grad()
    def params(self, obs: FloatArray) -> tuple[FloatArray]:
        """``(logits (B, n),)`` for a numpy batch, float64, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            out = self(torch.tensor(np.asarray(obs, dtype=np.float64)))
        finally:
            self.train(was_training)
        return (out[0].double().numpy(),)

    def probs(self, obs: FloatArray) -> FloatArray:
        """π(·|s) ``(B, n)``."""
        logits = self.params(obs)[0]
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def sample(self, obs: FloatArray, rng: np.random.Generator) -> FloatArray:
        """Ids ``(B, 1)`` (as floats) drawn from π(·|s) with ``rng`` by inverse CDF."""
        p = self.probs(obs)
        u = rng.uniform(size=(len(p), 1))
        ids = np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), self.space.n - 1)
        return ids.astype(np.float64)[:, None]

    def mode(self, obs: FloatArray) -> FloatArray:
        """The most likely id ``(B, 1)``."""
        return self.params(obs)[0].argmax(axis=1).astype(np.float64)[:, None]

    def log_prob_np(self, obs: FloatArray, actions: FloatArray) -> FloatArray:
        """log π(a|s) ``(B,)`` for numpy ids (validated)."""
        ids = check_ids(actions, len(obs), self.space, "policy")
        return np.log(np.maximum(self.probs(obs)[np.arange(len(ids)), ids], 1e-300))
