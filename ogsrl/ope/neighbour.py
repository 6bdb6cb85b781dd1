"""Nearest-neighbour OPE (``knn``): a policy's value in a simulator made of the evaluation split's own transitions.

The ``mb`` estimator's world models are the learners' model class, and policies trained inside such a model are read
too optimistically by it (benchmarks/results/mb_bias_s17.md). This estimator has no parametric model to share that
bias with. From state s, a step under a ~ π_e(·|s) looks up the k logged transitions (s_j, a_j, r_j, c_j, s'_j)
nearest to (s, a), draws one of them uniformly and moves by its change (Fonteneau et al. 2013, "artificial
trajectories"; the 1-NN dynamics of the OGSRL authors' code, here with a draw among k and the change s'_j − s_j
rather than s'_j itself, which would move a rare state onto its neighbour's path, towards the bulk of the data):

    s' = clip(s + s'_j − s_j),   r = r_j,   c = c_j,   death / discharge as logged at step j

Binary features take s'_j's value and cumulative sums their identity (the policy's own dose). The distance is
Euclidean on features standardised over the pool, the action block scaled by w·√(S/A) so that at w = 1 the actions
weigh as much as the S state features together. Episodes, deaths, horizons and intervals are the ``mb`` estimator's
(:func:`ogsrl.ope.model_based.estimate`): pool 0 holds every evaluation stay, each refit a stay-bootstrap resample.

Its level is biased towards the bulk of the data (near a rare, sick state most neighbours are less sick: episodes
die less often), by nearly the same amount for every policy the data support. With ``anchor`` (the default) the
pools estimate only the difference to the clinicians, whose value the test split records exactly: per stay i and
pool p,

    V_i = V_p(π_e; s_i,0) − V_p(π_b; s_i,0) + G_i,

π_b being the clinicians inside the pool (at s, the logged action of one of the k logged states nearest to s) and
G_i the stay's logged return (each target, cut at the same horizon), so the shared bias cancels and the stay
bootstrap sees the anchor's own noise. What it cannot see: doses far from every logged one get the nearest logged
dose's outcome, so it is only for policies the gate's support check admits (docs/policies-and-ope.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.neighbors import NearestNeighbors

from ogsrl.ope import model_based
from ogsrl.world.data import FloatArray, Layout, Transitions
from ogsrl.world.ensemble import StepSample


@dataclass(frozen=True, slots=True)
class Config:
    """Nearest-neighbour OPE (params ``ope.neighbour``)."""

    enabled: bool = True
    """report the ``knn`` estimator"""
    k: int = 5
    """neighbours a step draws from"""
    action_weight: float = 1.0
    """w: the action block's weight in the distance, relative to all state features together"""
    refits: int = 3
    """stay-bootstrap resamples of the pool beside the full one (0: none; else ≥ 2), for the interval"""
    rollouts: int = 8
    """episodes per evaluation stay's first state, per pool"""
    anchor: bool = True
    """estimate the difference to the clinicians in the pool and add their logged per-stay returns (False: the
    pools' own level)"""
    point: str = "bagged"
    """the point value: ``bagged`` (the mean over the full pool and its resamples) | ``full`` (the full pool's alone;
    the resamples only widen the interval)"""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if not self.action_weight > 0:
            raise ValueError(f"action_weight must be > 0, got {self.action_weight}")
        if self.point not in ("bagged", "full"):
            raise ValueError(f"point must be 'bagged' or 'full', got {self.point!r}")
        model_based.Config(refits=self.refits, rollouts=self.rollouts)  # the same checks as ``ope.model``


class NeighbourModel:
    """Logged transitions as a step function with :meth:`ogsrl.world.ensemble.WorldModel.step`'s interface, so
    :class:`ogsrl.world.env.WorldModelEnv` runs episodes in it."""

    def __init__(self, pool: Transitions, layout: Layout, k: int, action_weight: float, death_charge: float) -> None:
        if len(pool) < k:
            raise ValueError(f"nearest-neighbour OPE needs >= k={k} transitions, got {len(pool)}")
        self.layout = layout
        self.death_charge = float(death_charge)
        """as :attr:`WorldModel.death_charge`: the environment charges it on a drawn death (pool rewards exclude it)"""
        self.k = k
        self._pool = pool
        x = self._inputs(pool.obs, pool.act)
        self._mean = x.mean(0)
        sd = x.std(0)
        n_state = pool.obs.shape[1]
        weight = np.ones(x.shape[1])
        weight[n_state:] = action_weight * np.sqrt(n_state / (x.shape[1] - n_state))
        self._scale = weight / np.where(sd > 1e-6, sd, 1.0)
        self._index = NearestNeighbors(n_neighbors=k).fit((x - self._mean) * self._scale)
        self._state_index: NearestNeighbors | None = None

    def _inputs(self, obs: np.ndarray, act: np.ndarray) -> npt.NDArray[np.float64]:
        return np.concatenate([obs, self.layout.action_input(np.asarray(act, dtype=np.float32))],
                              axis=1).astype(np.float64)

    def logged_action(self, obs: np.ndarray, rng: np.random.Generator) -> FloatArray:
        """(B, A) the clinicians in the pool: for each state, the logged action of one of the k logged states nearest
        to it (the state block of the distance), drawn with ``rng``."""
        n_state = self._pool.obs.shape[1]
        scale, mean = self._scale[:n_state], self._mean[:n_state]
        if self._state_index is None:
            self._state_index = NearestNeighbors(n_neighbors=self.k).fit((self._pool.obs - mean) * scale)
        _, idx = self._state_index.kneighbors((np.asarray(obs, dtype=np.float64) - mean) * scale)
        return self._pool.act[idx[np.arange(len(obs)), rng.integers(0, self.k, size=len(obs))]]

    @property
    def elites(self) -> npt.NDArray[np.int64]:
        """One "member": the pool."""
        return np.zeros(1, dtype=np.int64)

    def step(self, obs: np.ndarray, act: np.ndarray, mode: str, rng: np.random.Generator,
             member: np.ndarray | None = None) -> StepSample:
        """One step for a batch; every ``mode`` draws one of the k nearest transitions per row with ``rng``.
        ``uncertainty``: the drawn transition's distance to (s, a), in the standardised, weighted units."""
        obs = np.asarray(obs, dtype=np.float32)
        dist, idx = self._index.kneighbors((self._inputs(obs, act) - self._mean) * self._scale)
        pick = rng.integers(0, self.k, size=len(obs))
        rows = np.arange(len(obs))
        j = idx[rows, pick]
        pool = self._pool
        nxt = obs + (pool.next_obs[j] - pool.obs[j])
        binary = list(self.layout.binary_idx)
        nxt[:, binary] = pool.next_obs[j][:, binary]
        self.layout.apply_sums(obs, np.asarray(act, dtype=np.float32), nxt)
        nxt = self.layout.clip_state(obs, nxt)
        cost = pool.cost[j].astype(np.float32)
        return StepSample(next_obs=nxt, rew=pool.rew[j].astype(np.float32), cost_prob=cost,
                          death_prob=pool.death[j].astype(np.float32),
                          discharge_prob=pool.exits[j].astype(np.float32),
                          uncertainty=dist[rows, pick].astype(np.float32), cost_prob_max=cost,
                          cost_prob_sd=np.zeros_like(cost))


def fit_pools(data: Transitions, stay_labels: npt.ArrayLike, layout: Layout, death_charge: float, cfg: Config,
              seed: np.random.SeedSequence) -> tuple[NeighbourModel, ...]:
    """The pool of every evaluation stay, then ``cfg.refits`` pools of stay-bootstrap resamples (drawn from ``seed``).

    Args:
        data: the evaluation split's transitions (rewards without the death charge, as the world models fit them).
        stay_labels: (R,) the stay each row belongs to.
    """
    labels = np.asarray(stay_labels)
    if labels.shape != (len(data),):
        raise ValueError(f"stay_labels must be ({len(data)},), one per row, got {labels.shape}")
    stays = model_based.stays_of(labels)
    rng = np.random.default_rng(seed)
    pools = [NeighbourModel(data, layout, cfg.k, cfg.action_weight, death_charge)]
    for _ in range(cfg.refits):
        picks = rng.integers(0, len(stays), size=len(stays))
        pools.append(NeighbourModel(data.take(np.concatenate([stays[i] for i in picks])), layout, cfg.k,
                                    cfg.action_weight, death_charge))
    return tuple(pools)


def clinician_offsets(pools: tuple[NeighbourModel, ...], starts: FloatArray, horizons: npt.NDArray[np.integer],
                      logged: FloatArray, gamma: float, cfg: Config, env_seed: int
                      ) -> tuple[npt.NDArray[np.float64], ...]:
    """Per pool, (N, 1 + C) G_i − V_p(π_b; s_i,0): what anchoring adds to a policy's per-stay values in that pool.

    ``logged``: (N, 1 + C) each evaluation stay's logged discounted reward and cost returns over its first
    ``horizons[i]`` steps, in ``starts`` order. π_b's draws are seeded by ``env_seed`` alone (the same for every
    policy).
    """
    logged = np.asarray(logged, dtype=np.float64)
    if logged.shape[0] != len(starts) or logged.ndim != 2:
        raise ValueError(f"logged must be ({len(starts)}, 1 + C), one row per start state, got {logged.shape}")
    out = []
    for pool in pools:
        rng = np.random.default_rng(np.random.SeedSequence([env_seed, len(out)]))
        values = model_based.stay_values(pool, starts, horizons, pool.logged_action,  # type: ignore[arg-type]
                                         gamma, cfg.rollouts, "random_elite", env_seed, rng)
        out.append(logged - values)
    return tuple(out)


def estimate(pools: tuple[NeighbourModel, ...], starts: FloatArray, horizons: npt.NDArray[np.integer],
             act: model_based.ActFn, gamma: float, cfg: Config, env_seed: int, act_rng: np.random.Generator,
             boot_rng: np.random.Generator, n_boot: int, level: float, combine: FloatArray | None = None,
             offsets: tuple[npt.NDArray[np.float64], ...] = ()) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(value, ci_low, ci_high) of each target: the pools' per-stay values (plus, anchored, each pool's
    :func:`clinician_offsets`), bagged (as ``cfg.point`` says) and bootstrapped as
    :func:`ogsrl.ope.model_based.estimate` does."""
    if offsets and len(offsets) != len(pools):
        raise ValueError(f"offsets: one per pool ({len(pools)}), got {len(offsets)}")
    per_pool = [model_based.stay_values(p, starts, horizons, act, gamma, cfg.rollouts,  # type: ignore[arg-type]
                                        "random_elite", env_seed, act_rng) for p in pools]
    if offsets:
        per_pool = [v + o for v, o in zip(per_pool, offsets)]
    return model_based.bagged(per_pool, boot_rng, n_boot, level, combine, bag_value=cfg.point == "bagged")


@dataclass(frozen=True, slots=True)
class AnchoredPool:
    """One pool, its start states and its anchor: a policy's mean anchored per-stay returns, cheap enough to read
    inside a training loop (a constrained learner's check on its own cost critics)."""

    pool: NeighbourModel
    starts: FloatArray
    """(N, S) the stays' first states"""
    horizons: npt.NDArray[np.int64]
    """(N,) steps each stay had left"""
    offsets: npt.NDArray[np.float64]
    """(N, 1 + C) G_i − V(π_b; s_i,0): the stays' logged returns minus the clinicians' value in the pool"""
    gamma: float
    rollouts: int
    """episodes per start state"""
    env_seed: int
    """seeds the pool's draws, the same for every reading (common random numbers)"""

    @property
    def cost_names(self) -> tuple[str, ...]:
        """The C cost columns, in the order of :meth:`value`'s last C entries."""
        return tuple(self.pool.layout.cost_names)

    def value(self, act: model_based.ActFn, act_rng: np.random.Generator) -> npt.NDArray[np.float64]:
        """(1 + C,) the policy's anchored mean reward return, then each cost return, per stay."""
        v = model_based.stay_values(self.pool, self.starts, self.horizons, act,  # type: ignore[arg-type]
                                    self.gamma, self.rollouts, "random_elite", self.env_seed, act_rng)
        return (v + self.offsets).mean(0)


def anchored_pool(data: Transitions, starts: FloatArray, horizons: npt.NDArray[np.integer], logged: FloatArray,
                  layout: Layout, death_charge: float, gamma: float, cfg: Config, env_seed: int) -> AnchoredPool:
    """An :class:`AnchoredPool` of every row of ``data``; ``starts``, ``horizons`` and ``logged`` (their stays' logged
    (1 + C) returns over the horizons) may be a subset of its stays."""
    pool = NeighbourModel(data, layout, cfg.k, cfg.action_weight, death_charge)
    offsets = clinician_offsets((pool,), starts, horizons, logged, gamma, cfg, env_seed)[0]
    return AnchoredPool(pool, np.asarray(starts, dtype=np.float32), np.asarray(horizons, dtype=np.int64), offsets,
                        float(gamma), cfg.rollouts, int(env_seed))
