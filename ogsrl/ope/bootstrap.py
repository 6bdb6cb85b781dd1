"""Per-stay bootstrap: resample whole trajectories (never rows) with replacement.

A bootstrap replicate is a vector of multiplicities ``c ∈ ℕ^N`` with Σc = N (one multinomial draw), so any estimator
written as a ratio of weighted sums over trajectories evaluates all replicates at once as a matrix product.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)


def resample_counts(n: int, n_boot: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Multiplicities of ``n`` trajectories in ``n_boot`` resamples, shape ``(n_boot, n)``, rows sum to ``n``."""
    if n <= 0 or n_boot <= 0:
        raise ValueError(f"resample_counts: need n > 0 and n_boot > 0, got n={n}, n_boot={n_boot}")
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def percentile_ci(stats: npt.NDArray[np.floating], level: float) -> tuple[float, float]:
    """Percentile interval ``(q_{(1−level)/2}, q_{(1+level)/2})`` of bootstrap replicates ``(n_boot,)``.

    Replicates that are undefined (NaN: every resampled trajectory had weight 0) are dropped with a warning.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"percentile_ci: level must be in (0, 1), got {level}")
    stats = np.asarray(stats, dtype=np.float64)
    finite = stats[np.isfinite(stats)]
    if finite.size == 0:
        raise ValueError("percentile_ci: no finite bootstrap replicate")
    if finite.size < stats.size:
        log.warning("bootstrap: %d of %d replicates undefined and dropped", stats.size - finite.size, stats.size)
    lo, hi = np.quantile(finite, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(lo), float(hi)


def bagged_interval(v0: npt.NDArray[np.floating], v0_refits: npt.NDArray[np.floating] | None,
                    rng: np.random.Generator, n_boot: int, level: float, bag_value: bool = True
                    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Value and normal interval per target of a fitted estimator (FQE's critic, a world model) from per-stay values.

        V̂ = mean over the fits f of mean_i V_f(s_{i,0}),   SE² = SE²_stays + SD²_refits,   CI = V̂ ± z_{(1+level)/2} · SE

    The fits are the full-data one and its refits (bagging: one fit's noise moves its value by a few percent).
    SE_stays: bootstrap SD of the mean over evaluation stays (the start states the value averages over); SD_refits:
    SD of one fit's value across fits on stay-bootstrap resamples of the fitting data (the fit's own estimation error,
    kept at one fit's size although V̂ averages several: conservative; ignored when ``v0_refits`` is None). Neither
    term sees the fitted model's bias (function class, extrapolation to actions the clinicians never took): that is
    what the DR correction and the benchmark's coverage check are for.

    With ``bag_value`` False, V̂ is the full-data fit's mean alone and the refits only widen the interval: V̂ then
    does not move with the resamples' seed (for kNN's pools it also ranked policies worse than the bagged value:
    docs/policies-and-ope.md, session 20).

    Args:
        v0: (N, K) per-stay values of the full-data fit.
        v0_refits: (B, N, K) the same for B refits, or None.
        bag_value: average the refits into V̂ (True) or take the full-data fit's (False).
    Returns:
        (value, ci_low, ci_high), each (K,).
    """
    from scipy.stats import norm

    n = v0.shape[0]
    counts = resample_counts(n, n_boot, rng)  # (B, N)
    se2 = ((counts @ v0) / n).var(axis=0, ddof=1)
    value = v0.mean(axis=0)
    if v0_refits is not None and len(v0_refits) >= 2:
        per_fit = v0_refits.mean(axis=1)  # (B, K)
        if bag_value:
            value = (value + per_fit.sum(axis=0)) / (1 + len(per_fit))
        se2 = se2 + per_fit.var(axis=0, ddof=1)
    half = norm.ppf((1.0 + level) / 2.0) * np.sqrt(se2)
    return value, value - half, value + half
