"""Per-decision doubly robust (DR, Jiang & Li 2016) and weighted doubly robust (WDR, Thomas & Brunskill 2016)
estimators with per-stay bootstrap CIs.

Notation as :mod:`ogsrl.ope.wis` (``(N, T)`` arrays padded as an absorbing state), plus a critic evaluated on the
logged data: Q_{i,t} = Q̂(s_{i,t}, t, a_{i,t}) and V_{i,t} = E_{a~π_e} Q̂(s_{i,t}, t, a) (both 0 on padding), and
cumulative weights w_{i,t} = Π_{k≤t} ρ_{i,k} with w_{i,−1} = 1:

    V̂_DR  = (1/N) Σ_i Σ_t γ^t [ w_{i,t} (r_{i,t} − Q_{i,t}) + w_{i,t−1} V_{i,t} ]
    V̂_WDR = Σ_t γ^t [ Σ_i w_{i,t} (r_{i,t} − Q_{i,t}) / Σ_i w_{i,t} + Σ_i w_{i,t−1} V_{i,t} / Σ_i w_{i,t−1} ]

With exact ratios DR is unbiased for any critic, and exact (zero variance) for the true Q; WDR self-normalises the
weights per step (biased, consistent, far lower variance when weights are heavy-tailed) and equals PDWIS with Q = 0.

Intervals: percentile bootstrap over stays, the critic held fixed. That is honest when the critic was fitted on
data independent of the evaluation stays (the stage fits it on the train split and evaluates on test): conditional
on the critic, V̂_DR is a mean of independent per-stay terms (``scipy.stats.bootstrap``); V̂_WDR is a ratio of such
sums, bootstrapped by multinomial stay counts like PDWIS.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import stats

from ogsrl.ope.bootstrap import percentile_ci, resample_counts
from ogsrl.ope.estimate import Estimate, FloatArray
from ogsrl.ope.wis import _check, cumulative_log_weights, ess


def _prepared(rewards: FloatArray, q: FloatArray, v: FloatArray, log_ratio: FloatArray,
              mask: npt.NDArray[np.bool_], gamma: float, clip: float | None
              ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    rewards, q, v = (np.asarray(x, np.float64) for x in (rewards, q, v))
    log_ratio, mask = np.asarray(log_ratio, np.float64), np.asarray(mask, bool)
    _check(rewards, log_ratio, mask, gamma)
    if q.shape != rewards.shape or v.shape != rewards.shape:
        raise ValueError(f"q and v must have the rewards' shape {rewards.shape}, got {q.shape}, {v.shape}")
    bad = np.nonzero(~(np.isfinite(q) & np.isfinite(v)).all(axis=1))[0]
    if bad.size:
        raise ValueError(f"critic values not finite in trajectories {bad[:5].tolist()}")
    log_w = cumulative_log_weights(log_ratio, mask, clip)  # (N, T)
    w = np.exp(log_w - log_w[:, -1].max())  # one common scale: DR is not scale-free, rescaled below
    w_prev = np.concatenate([np.full((w.shape[0], 1), np.exp(-log_w[:, -1].max())), w[:, :-1]], axis=1)
    r = np.where(mask, rewards, 0.0)
    return r, np.where(mask, q, 0.0), np.where(mask, v, 0.0), w, w_prev, log_w


def dr(rewards: FloatArray, q: FloatArray, v: FloatArray, log_ratio: FloatArray, mask: npt.NDArray[np.bool_],
       gamma: float, rng: np.random.Generator, *, clip: float | None = None, n_boot: int = 2000,
       level: float = 0.95) -> Estimate:
    """Per-decision doubly robust estimate (module docstring) with a percentile bootstrap CI over stays.

    Args:
        rewards: ``(N, T)`` per-step rewards (or costs), 0 on padding.
        q: ``(N, T)`` critic Q̂(s_t, t, a_t) of the logged actions.
        v: ``(N, T)`` critic V̂(s_t, t) = E_{π_e} Q̂.
        log_ratio: ``(N, T)`` log ρ (−inf: π_e gives the logged action density 0, a weight of 0).
        mask: ``(N, T)`` True on real steps.
        gamma: discount γ ∈ (0, 1].
        rng: drives the bootstrap.
        clip: cap on each cumulative weight (None: none).
        n_boot: bootstrap replicates.
        level: confidence level.
    Returns:
        Estimate with the Kish ESS of the full-trajectory weights.
    """
    r, q, v, w, w_prev, log_w = _prepared(rewards, q, v, log_ratio, mask, gamma, clip)
    unit = np.exp(log_w[:, -1].max())  # undo the common scale: DR uses the weights themselves
    disc = gamma ** np.arange(r.shape[1])
    per_stay = ((w * (r - q) + w_prev * v) * disc).sum(axis=1) * unit  # (N,)
    value = float(per_stay.mean())
    if per_stay.size < 2 or np.ptp(per_stay) == 0:
        lo = hi = value
    else:
        res = stats.bootstrap((per_stay,), np.mean, n_resamples=n_boot, confidence_level=level,
                              method="percentile", rng=rng)
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return Estimate(value=value, ci_low=lo, ci_high=hi, ess=ess(log_w[:, -1]))


def _wdr_stats(r: FloatArray, q: FloatArray, v: FloatArray, w: FloatArray, w_prev: FloatArray, gamma: float,
               counts: FloatArray) -> FloatArray:
    """V̂_WDR for each row of stay counts ``(B, N)`` → ``(B,)``."""
    disc = gamma ** np.arange(r.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        a = (counts @ (w * (r - q))) / (counts @ w)  # (B, T)
        b = (counts @ (w_prev * v)) / (counts @ w_prev)
    # a step whose weights all vanish contributes nothing (no stay reaches it with weight)
    return (np.nan_to_num(a) + np.nan_to_num(b)) @ disc


def wdr(rewards: FloatArray, q: FloatArray, v: FloatArray, log_ratio: FloatArray, mask: npt.NDArray[np.bool_],
        gamma: float, rng: np.random.Generator, *, clip: float | None = None, n_boot: int = 2000,
        level: float = 0.95) -> Estimate:
    """Weighted doubly robust estimate (module docstring) with a percentile bootstrap CI over stays.
    Arguments as :func:`dr`."""
    r, q, v, w, w_prev, log_w = _prepared(rewards, q, v, log_ratio, mask, gamma, clip)
    value = float(_wdr_stats(r, q, v, w, w_prev, gamma, np.ones((1, w.shape[0])))[0])
    lo, hi = percentile_ci(_wdr_stats(r, q, v, w, w_prev, gamma, resample_counts(w.shape[0], n_boot, rng)), level)
    return Estimate(value=value, ci_low=lo, ci_high=hi, ess=ess(log_w[:, -1]))
