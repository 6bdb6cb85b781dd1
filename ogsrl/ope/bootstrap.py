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
