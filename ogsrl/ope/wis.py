"""Weighted importance sampling (WIS) and per-decision WIS (PDWIS) with per-stay bootstrap CIs.

References: Precup, Sutton & Singh (2000) for per-decision IS; Thomas (2015, PhD thesis, ch. 3) for the weighted
(self-normalised) variants; the AI Clinician (Komorowski et al. 2018) for WIS + bootstrap on ICU data.

Trajectories of unequal length are padded to ``T`` steps as an absorbing state: reward 0, ratio 1 (log-ratio 0), so
a trajectory's cumulative weight stays at its final value after it ends. Notation: ``N`` trajectories, ``T`` steps,
ρ_{i,t} = π_e(a_{i,t}|s_{i,t}) / π_b(a_{i,t}|s_{i,t}), w_{i,t} = min(Π_{k≤t} ρ_{i,k}, clip). A log-ratio of −inf
(π_e gives the logged action density 0, e.g. a guarded policy's rejected action) is a weight of 0.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ogsrl.ope.bootstrap import percentile_ci, resample_counts
from ogsrl.ope.estimate import Episodes, Estimate, FloatArray, pad_by_stay

__all__ = ["Episodes", "Estimate", "pad_by_stay", "wis", "pdwis", "wis_rate", "ess", "cumulative_log_weights",
           "discounted_returns"]


def _check(rewards: FloatArray, log_ratio: FloatArray, mask: npt.NDArray[np.bool_], gamma: float) -> None:
    if rewards.ndim != 2 or rewards.shape != log_ratio.shape or rewards.shape != mask.shape:
        raise ValueError(
            f"rewards, log_ratio and mask must share one (N, T) shape, got {rewards.shape}, {log_ratio.shape}, "
            f"{mask.shape}"
        )
    if rewards.shape[0] == 0:
        raise ValueError("need at least one trajectory")
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    bad = np.nonzero(~np.isfinite(rewards).all(axis=1))[0]
    if bad.size:
        raise ValueError(f"rewards not finite in trajectories {bad[:5].tolist()}")
    # log ρ = −inf is a zero weight (π_e cannot take the logged action); NaN and +inf are errors
    bad = np.nonzero((np.isnan(log_ratio) | (log_ratio == np.inf)).any(axis=1))[0]
    if bad.size:
        raise ValueError(f"log_ratio NaN or +inf in trajectories {bad[:5].tolist()}")
    if not np.isfinite(log_ratio[mask]).any():
        raise ValueError("every trajectory has weight 0: the evaluation policy can take none of the logged actions")


def cumulative_log_weights(
    log_ratio: FloatArray, mask: npt.NDArray[np.bool_], clip: float | None = None
) -> FloatArray:
    """log w_{i,t} = min(Σ_{k≤t} log ρ_{i,k}, log clip) over real steps, carried over padding → ``(N, T)``."""
    if clip is not None and clip <= 0:
        raise ValueError(f"clip must be positive, got {clip}")
    logw = np.cumsum(np.where(mask, log_ratio, 0.0), axis=1)
    return np.minimum(logw, np.log(clip)) if clip is not None else logw


def ess(log_w: FloatArray) -> float:
    """Kish effective sample size (Σw)² / Σw² of weights given as logs ``(N,)``; N for equal weights."""
    w = np.exp(log_w - log_w.max())
    return float(w.sum() ** 2 / (w**2).sum())


def discounted_returns(rewards: FloatArray, mask: npt.NDArray[np.bool_], gamma: float) -> FloatArray:
    """G_i = Σ_t γ^t r_{i,t} over real steps → ``(N,)``."""
    disc = gamma ** np.arange(rewards.shape[1])
    return (np.where(mask, rewards, 0.0) * disc).sum(axis=1)


def _wis_stats(returns: FloatArray, w: FloatArray, counts: FloatArray) -> FloatArray:
    """Σ_i c_i w_i G_i / Σ_i c_i w_i for each row of counts ``(B, N)`` → ``(B,)``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ (w * returns)) / (counts @ w)


def _pdwis_stats(rewards: FloatArray, w: FloatArray, gamma: float, counts: FloatArray) -> FloatArray:
    """Σ_t γ^t Σ_i c_i w_{i,t} r_{i,t} / Σ_i c_i w_{i,t} for counts ``(B, N)`` → ``(B,)``."""
    disc = gamma ** np.arange(rewards.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        per_step = (counts @ (w * rewards)) / (counts @ w)  # (B, T)
    return per_step @ disc


def wis(
    rewards: FloatArray,
    log_ratio: FloatArray,
    mask: npt.NDArray[np.bool_],
    gamma: float,
    rng: np.random.Generator,
    *,
    clip: float | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
) -> Estimate:
    """Weighted importance sampling of the discounted return, with a per-stay bootstrap CI.

        V̂_WIS = Σ_i w_i G_i / Σ_i w_i,   w_i = min(Π_t ρ_{i,t}, clip),   G_i = Σ_t γ^t r_{i,t}

    Args:
        rewards: ``(N, T)`` per-step rewards (or costs), 0 on padding.
        log_ratio: ``(N, T)`` log ρ_{i,t} = log π_e − log π_b, 0 on padding.
        mask: ``(N, T)`` True on real steps.
        gamma: discount γ ∈ (0, 1].
        rng: drives the bootstrap resampling of stays.
        clip: cap on each trajectory's weight (None: no cap; ratio 1 = on-policy).
        n_boot: bootstrap replicates.
        level: confidence level of the percentile interval.
    Returns:
        Estimate(value, ci_low, ci_high, ess).
    """
    rewards, log_ratio, mask = np.asarray(rewards, float), np.asarray(log_ratio, float), np.asarray(mask, bool)
    _check(rewards, log_ratio, mask, gamma)
    log_w = cumulative_log_weights(log_ratio, mask, clip)[:, -1]  # (N,) trajectory weights
    w = np.exp(log_w - log_w.max())  # WIS is invariant to a common scale
    returns = discounted_returns(rewards, mask, gamma)
    value = float(_wis_stats(returns, w, np.ones((1, w.size)))[0])
    lo, hi = percentile_ci(_wis_stats(returns, w, resample_counts(w.size, n_boot, rng)), level)
    return Estimate(value=value, ci_low=lo, ci_high=hi, ess=ess(log_w))


def pdwis(
    rewards: FloatArray,
    log_ratio: FloatArray,
    mask: npt.NDArray[np.bool_],
    gamma: float,
    rng: np.random.Generator,
    *,
    clip: float | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
) -> Estimate:
    """Per-decision weighted importance sampling, with a per-stay bootstrap CI.

        V̂_PDWIS = Σ_t γ^t Σ_i w_{i,t} r_{i,t} / Σ_i w_{i,t},   w_{i,t} = min(Π_{k≤t} ρ_{i,k}, clip)

    Arguments as :func:`wis`; ``ess`` is that of the full-trajectory weights (the smallest over t).
    """
    rewards, log_ratio, mask = np.asarray(rewards, float), np.asarray(log_ratio, float), np.asarray(mask, bool)
    _check(rewards, log_ratio, mask, gamma)
    log_w = cumulative_log_weights(log_ratio, mask, clip)  # (N, T)
    w = np.exp(log_w - log_w.max(axis=0, keepdims=True))  # per-step normalisation makes each column scale-free
    r = np.where(mask, rewards, 0.0)
    value = float(_pdwis_stats(r, w, gamma, np.ones((1, w.shape[0])))[0])
    lo, hi = percentile_ci(_pdwis_stats(r, w, gamma, resample_counts(w.shape[0], n_boot, rng)), level)
    return Estimate(value=value, ci_low=lo, ci_high=hi, ess=ess(log_w[:, -1]))


def _rate_stats(numer: FloatArray, denom: FloatArray, w: FloatArray, counts: FloatArray) -> FloatArray:
    """Σ_i c_i w_i C_i / Σ_i c_i w_i n_i for counts ``(B, N)`` → ``(B,)``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ (w * numer)) / (counts @ (w * denom))


def wis_rate(
    values: FloatArray,
    log_ratio: FloatArray,
    mask: npt.NDArray[np.bool_],
    rng: np.random.Generator,
    *,
    clip: float | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
) -> Estimate:
    """Weighted importance sampling of a per-step rate (e.g. the share of steps that break a cost rule).

        r̂ = Σ_i w_i C_i / Σ_i w_i n_i,   C_i = Σ_t c_{i,t},   n_i = number of real steps of stay i

    With all ratios 1 this is the pooled per-step rate Σ c / Σ n. Arguments as :func:`wis` (no discount).
    """
    values, log_ratio, mask = np.asarray(values, float), np.asarray(log_ratio, float), np.asarray(mask, bool)
    _check(values, log_ratio, mask, 1.0)
    log_w = cumulative_log_weights(log_ratio, mask, clip)[:, -1]
    w = np.exp(log_w - log_w.max())
    numer = np.where(mask, values, 0.0).sum(axis=1)
    denom = mask.sum(axis=1).astype(np.float64)
    value = float(_rate_stats(numer, denom, w, np.ones((1, w.size)))[0])
    lo, hi = percentile_ci(_rate_stats(numer, denom, w, resample_counts(w.size, n_boot, rng)), level)
    return Estimate(value=value, ci_low=lo, ci_high=hi, ess=ess(log_w))
