"""Fitted Q Evaluation (Le, Voloshin & Yue 2019) of a stochastic policy π_e for the reward and every cost at once.

The logged data are rows (s_t, t, a_t, r_t, s_{t+1}) of finite stays; a stay's last row is terminal (the window or
the stay ends, and every return — the truth's included — stops there). With K targets (reward and costs) the critic
Q(s, t, a) ∈ ℝ^K is one torch MLP with K heads, fitted by K-fold repeated regression:

    Q_0 = 0,   Q_{k+1} = argmin_Q Σ_rows (Q(s_t, t, a_t) − y_t)²,
    y_t = r_t + γ · 1[t not last] · V_k(s_{t+1}, t+1),   V_k(s, t) = E_{a ~ π_e(·|s)} Q_k(s, t, a).

The step index t is an input (the horizon is finite, so values depend on the time left), and ``iterations`` must be
at least the longest stay for the values to propagate from the last step to the first. The expectation over π_e is a
Monte-Carlo mean over ``mc_actions`` draws a' ~ π_e(·|s) per row, drawn once (seeded) from the *served* policy,
guardian fallback included, and reused in every iteration. The network is warm-started from Q_k (Adam state kept),
trained ``epochs`` passes per iteration. Targets are divided by a per-head scale (the SD of the logged
returns-to-go) so reward and costs weigh alike.

Two action encodings:

* ``continuous``: Q(s, t, a) takes the 2-D dose a, encoded as log1p(a/c)/log1p(max/c) and 1[a > 0] per dimension;
* ``binned``: the AI Clinician's 5 × 5 ``action_bin`` grid; the network maps (s, t) to K × 25 values (a tabular head
  over actions), Q(s, t, a) picks the logged bin and V(s, t) = Σ_b π̂_e(b|s) Q(s, t, b), with π̂_e(b|s) the share of
  the Monte-Carlo draws falling in bin b.

The FQE estimate of policy value is the mean of V(s_0, 0) over the evaluation stays' first states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from ogsrl.agents.common import CANONICAL_SPACE, DiscreteSpace, mlp
from ogsrl.ope.estimate import FloatArray

ActionKind = Literal["continuous", "binned"]
N_BINS = 25
"""the 5 × 5 action grid (``action_bin = 5·fluid_bin + nee_bin``)"""


@dataclass(frozen=True, slots=True)
class Config:
    """Fitted Q Evaluation (params ``ope.fqe``)."""

    hidden: tuple[int, ...] = (64, 64)
    """MLP widths of the critic"""
    iterations: int = 24
    """Bellman backups K (≥ the longest stay, 20 steps on the demo, for values to reach the first step)"""
    epochs: int = 2
    """passes over the rows per backup (the network is warm-started from the previous backup)"""
    lr: float = 1.0e-3
    """Adam learning rate"""
    batch_size: int = 1024
    """rows per minibatch"""
    mc_actions: int = 8
    """draws a' ~ π_e(·|s) per state for E_{π_e}[Q(s, a')]"""
    refits: int = 3
    """critics refitted on stay-bootstrap resamples of the fitting split, for the FQE interval (0: none)"""
    action: ActionKind = "continuous"
    """continuous (Q of the 2-D dose) | binned (tabular head over the 5 × 5 action_bin grid)"""
    previous_action: bool | tuple[str, ...] = False
    """add the stay's previous logged action (encoded as the actions; zeros at the first step) to the critic's
    state: the dose a patient is on separates states the features alone mix (a MAP held by vasopressors or by
    volume). true: every action column; a list of action columns: those only (e.g. [nee_max])"""
    history: int = 0
    """stack the stay's ``history`` previous observations onto the critic's state (nearest first; before a stay's
    first row, its first observation): a course the current features cannot show, e.g. a MAP rising on a pressor.
    Every stacked row is logged data, so unlike a previous action it asks the critic about no new (dose, dose)
    pair"""

    def __post_init__(self) -> None:
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise ValueError(f"hidden must be positive widths, got {list(self.hidden)}")
        for name in ("iterations", "epochs", "batch_size", "mc_actions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.refits < 0 or self.refits == 1:
            raise ValueError(f"refits must be 0 or ≥ 2 (a spread needs two), got {self.refits}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.action not in ("continuous", "binned"):
            raise ValueError(f"action must be continuous or binned, got {self.action!r}")
        if not isinstance(self.previous_action, bool) and (
                not self.previous_action or len(set(self.previous_action)) != len(self.previous_action)):
            raise ValueError(f"previous_action must be true, false or distinct action columns, got "
                             f"{list(self.previous_action)}")
        if self.history < 0:
            raise ValueError(f"history must be ≥ 0 previous observations, got {self.history}")


@dataclass(frozen=True, slots=True)
class Transitions:
    """Logged rows of finite stays, sorted by (stay, step)."""

    obs: FloatArray
    """(R, S) critic state features (physical units)"""
    step: npt.NDArray[np.integer]
    """(R,) position of the row within its stay (0 = first decision)"""
    actions: FloatArray
    """(R, A) physical actions (continuous) or (R,) action bins 0…24 (binned)"""
    targets: FloatArray
    """(R, K) per-step reward and costs"""
    next_row: npt.NDArray[np.integer]
    """(R,) index of the stay's next row, −1 on its last (terminal) row"""
    space: Any = None
    """the continuous actions' :class:`ogsrl.agents.common.ActionSpace` (None: canonical fluid_ml, nee_max)"""

    def __post_init__(self) -> None:
        r = self.obs.shape[0]
        if self.obs.ndim != 2 or self.targets.ndim != 2 or self.targets.shape[0] != r:
            raise ValueError(f"Transitions: obs (R, S) and targets (R, K) must share R, got {self.obs.shape}, "
                             f"{self.targets.shape}")
        if self.step.shape != (r,) or self.next_row.shape != (r,) or self.actions.shape[0] != r:
            raise ValueError("Transitions: step, next_row and actions need one entry per row")
        if not (np.isfinite(self.obs).all() and np.isfinite(self.targets).all()):
            raise ValueError("Transitions: obs and targets must be finite")
        bad = np.nonzero((self.next_row >= r) | (self.next_row < -1))[0]
        if bad.size:
            raise ValueError(f"Transitions: next_row out of range at rows {bad[:5].tolist()}")


def transitions(stay_keys: npt.ArrayLike, obs: FloatArray, actions: FloatArray, targets: FloatArray,
                space: Any = None) -> Transitions:
    """Rows sorted by (stay, step) → :class:`Transitions` (positions and next rows from the stay keys)."""
    keys = np.asarray(stay_keys)
    if keys.ndim != 1 or keys.size == 0:
        raise ValueError("transitions: stay_keys must be a non-empty 1-D array")
    starts = np.r_[True, keys[1:] != keys[:-1]]
    first = np.nonzero(starts)[0]
    step = np.arange(keys.size) - first[np.cumsum(starts) - 1]
    last = np.r_[starts[1:], True]
    next_row = np.where(last, -1, np.arange(keys.size) + 1)
    return Transitions(np.asarray(obs, np.float64), step, np.asarray(actions), np.asarray(targets, np.float64),
                       next_row, space)


def encode_actions(actions: FloatArray, space: Any = None) -> FloatArray:
    """(…, A) physical doses → (…, 2A): log1p(a/c)/log1p(max/c) ∈ [0, 1] and 1[a > 0] per dimension (c, max: the
    action space's, canonical when ``space`` is None); a discrete id column → its one-hot code (…, n)."""
    space = space if space is not None else CANONICAL_SPACE
    a = np.asarray(actions, np.float64)
    if isinstance(space, DiscreteSpace):  # (…, 1) ids → (…, n) one-hot
        ids = np.clip(np.rint(a[..., 0]), 0, space.n - 1).astype(np.int64)
        return np.eye(space.n)[ids]
    return np.concatenate([np.log1p(a / space.res_arr) / space.span_arr, (a > 0).astype(np.float64)], axis=-1)


def previous_actions(stay_keys: npt.ArrayLike, actions: FloatArray, space: Any = None,
                     dims: list[int] | None = None) -> FloatArray:
    """(R, A) physical actions of rows sorted by (stay, step) → (R, 2A) the encoded action (:func:`encode_actions`)
    of each row's previous row in its stay, zeros on a stay's first row; with ``dims`` (action column indices) only
    those dimensions' two codes, (R, 2·len(dims)).

    In a transition (s_t, a_t, s_{t+1}) the next state's previous action is the logged a_t, so the Bellman target
    V(s_{t+1}) stays the evaluated policy's value from the state the logged action led to."""
    keys = np.asarray(stay_keys)
    a = np.asarray(actions, np.float64)
    if dims is not None:
        if isinstance(space, DiscreteSpace):
            raise ValueError("previous_actions: dims select continuous action columns; a discrete action is one")
        a = a[:, dims]
        space = (space if space is not None else CANONICAL_SPACE).subset(dims)
    enc = encode_actions(a, space)
    out = np.zeros_like(enc)
    same = keys[1:] == keys[:-1]
    out[1:][same] = enc[:-1][same]
    return out


def previous_observations(stay_keys: npt.ArrayLike, obs: FloatArray, k: int) -> FloatArray:
    """(R, S) observations of rows sorted by (stay, step) → (R, k·S): the observations of each row's k previous rows
    in its stay, nearest first; before a stay's first row its first observation stands in (no change yet).

    Within a transition (s_t, a_t, s_{t+1}) the next state's history is s_t, s_{t−1}, …: logged rows, so the Bellman
    target V(s_{t+1}, history) asks the critic about π_e's action only, as without history."""
    keys = np.asarray(stay_keys)
    x = np.asarray(obs, np.float64)
    if x.ndim != 2 or keys.shape != (len(x),):
        raise ValueError(f"previous_observations: obs (R, S) and stay_keys (R,) must share R, got {x.shape}, "
                         f"{keys.shape}")
    starts = np.r_[True, keys[1:] != keys[:-1]]
    first = np.nonzero(starts)[0][np.cumsum(starts) - 1]  # each row's stay's first row
    rows = np.arange(len(x))
    return np.concatenate([x[np.maximum(rows - j, first)] for j in range(1, k + 1)], axis=1) if k else x[:, :0]


def bin_probs(draw_bins: npt.NDArray[np.integer]) -> FloatArray:
    """(M, R) bins of Monte-Carlo draws → (R, 25) share of the draws in each bin."""
    m, r = draw_bins.shape
    out = np.zeros((r, N_BINS))
    np.add.at(out, (np.tile(np.arange(r), m), draw_bins.reshape(-1)), 1.0 / m)
    return out


class Critic:
    """A fitted Q(s, t, a) ∈ ℝ^K. ``q`` evaluates logged (s, t, a); ``v`` the expectation over π_e's draws."""

    def __init__(self, cfg: Config, n_obs: int, n_targets: int, horizon: int, obs_mean: FloatArray,
                 obs_std: FloatArray, scale: FloatArray, generator: torch.Generator, space: Any = None) -> None:
        self.cfg, self.k, self.horizon = cfg, n_targets, max(int(horizon), 1)
        self.obs_mean, self.obs_std, self.scale = obs_mean, obs_std, scale
        self.space = space if space is not None else CANONICAL_SPACE
        binned = cfg.action == "binned"
        width = self.space.n if isinstance(self.space, DiscreteSpace) else 2 * len(self.space.columns)
        n_in = n_obs + 1 + (0 if binned else width)
        self.net: nn.Module = mlp(n_in, cfg.hidden, n_targets * (N_BINS if binned else 1), generator)

    def _state(self, obs: FloatArray, step: npt.NDArray[np.integer]) -> FloatArray:
        return np.column_stack([(obs - self.obs_mean) / self.obs_std, step / self.horizon])

    def _forward(self, x: FloatArray) -> torch.Tensor:
        return self.net(torch.as_tensor(x, dtype=torch.float32))

    @torch.no_grad()
    def _raw(self, x: FloatArray, chunk: int = 65536) -> FloatArray:
        """Network outputs in scaled units for inputs ``x`` (R, ·), in chunks."""
        self.net.eval()
        out = [self._forward(x[i: i + chunk]).double().numpy() for i in range(0, len(x), chunk)]
        return np.concatenate(out) if out else np.zeros((0, self.k))

    def q(self, obs: FloatArray, step: npt.NDArray[np.integer], actions: FloatArray) -> FloatArray:
        """Q(s, t, a) per row → (R, K) in target units."""
        s = self._state(obs, step)
        if self.cfg.action == "binned":
            out = self._raw(s).reshape(len(s), self.k, N_BINS)
            return out[np.arange(len(s)), :, np.asarray(actions, np.int64)] * self.scale
        return self._raw(np.column_stack([s, encode_actions(actions, self.space)])) * self.scale

    def v(self, obs: FloatArray, step: npt.NDArray[np.integer], draws: Any) -> FloatArray:
        """V(s, t) = E_{a~π_e} Q(s, t, a) per row → (R, K); ``draws`` is (M, R, A) actions (continuous) or
        (R, 25) bin probabilities (binned)."""
        s = self._state(obs, step)
        if self.cfg.action == "binned":
            out = self._raw(s).reshape(len(s), self.k, N_BINS)
            return np.einsum("rkb,rb->rk", out, draws) * self.scale
        m = draws.shape[0]
        x = np.column_stack([np.tile(s, (m, 1)), encode_actions(draws.reshape(-1, draws.shape[-1]), self.space)])
        return self._raw(x).reshape(m, len(s), self.k).mean(axis=0) * self.scale


def returns_to_go(targets: FloatArray, next_row: npt.NDArray[np.integer], gamma: float) -> FloatArray:
    """Σ_{u≥t} γ^{u−t} r_u within each stay → (R, K) (rows sorted by stay and step)."""
    out = np.array(targets, dtype=np.float64)
    for i in range(len(out) - 1, -1, -1):
        if next_row[i] >= 0:
            out[i] += gamma * out[next_row[i]]
    return out


def fit(cfg: Config, data: Transitions, draws: Any, gamma: float, seed: int,
        row_weights: FloatArray | None = None, init: Critic | None = None) -> Critic:
    """Fit Q by ``cfg.iterations`` backups on ``data`` (see the module docstring).

    Args:
        cfg: FQE settings.
        data: the fitting rows.
        draws: π_e's Monte-Carlo actions at every row's state, (M, R, A) (continuous) or (R, 25) bin probabilities
            (binned); a row's next-state value reads the entry of ``next_row``.
        gamma: discount γ ∈ (0, 1].
        seed: weight init and minibatch order.
        row_weights: (R,) non-negative integer multiplicities (a bootstrap resample of stays); None: all 1.
        init: a critic to start from (same shapes), e.g. the full-data fit for a bootstrap refit.
    """
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    r, k = data.targets.shape
    gen = torch.Generator().manual_seed(int(seed))
    rng = np.random.default_rng(seed)
    if init is None:
        mean, std = data.obs.mean(axis=0), data.obs.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        scale = returns_to_go(data.targets, data.next_row, gamma).std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        critic = Critic(cfg, data.obs.shape[1], k, int(data.step.max()) + 1, mean, std, scale, gen, data.space)
    else:
        critic = Critic(cfg, data.obs.shape[1], k, init.horizon, init.obs_mean, init.obs_std, init.scale, gen,
                        init.space)
        critic.net.load_state_dict(init.net.state_dict())
    idx = np.arange(r) if row_weights is None else np.repeat(np.arange(r), np.asarray(row_weights, np.int64))
    s = critic._state(data.obs, data.step)
    binned = cfg.action == "binned"
    x = torch.as_tensor(s if binned else np.column_stack([s, encode_actions(data.actions, critic.space)]),
                        dtype=torch.float32)
    a_bin = torch.as_tensor(np.asarray(data.actions, np.int64)) if binned else None
    r_scaled = data.targets / critic.scale
    has_next = data.next_row >= 0
    nxt = data.next_row[has_next]
    opt = torch.optim.Adam(critic.net.parameters(), lr=cfg.lr)
    for _ in range(cfg.iterations):
        v = np.zeros((r, k))
        if has_next.any():
            sub = draws[nxt] if binned else draws[:, nxt]
            v[has_next] = critic.v(data.obs[nxt], data.step[nxt], sub) / critic.scale
        y = torch.as_tensor(r_scaled + gamma * v, dtype=torch.float32)
        critic.net.train()
        for _ in range(cfg.epochs):
            order = idx[rng.permutation(len(idx))]
            for start in range(0, len(order), cfg.batch_size):
                b = torch.as_tensor(order[start: start + cfg.batch_size])
                out = critic.net(x[b])
                if binned:
                    out = out.reshape(len(b), k, N_BINS).gather(2, a_bin[b].view(-1, 1, 1).expand(-1, k, 1))[..., 0]
                loss = ((out - y[b]) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
    critic.net.eval()
    return critic


def initial_values(critic: Critic, obs: FloatArray, step: npt.NDArray[np.integer], draws: Any,
                   first: npt.NDArray[np.integer]) -> FloatArray:
    """V(s_0, 0) of each evaluation stay → (N, K); ``first`` are the rows of the stays' first steps."""
    sub = draws[first] if critic.cfg.action == "binned" else draws[:, first]
    return critic.v(obs[first], step[first], sub)
