"""Split-conformal thresholds with a finite-sample coverage guarantee.

Given calibration scores ``s_1 … s_n`` (larger = less supported) drawn exchangeably with a new point's score ``s``,
the set ``{x : score(x) ≤ s_(k)}`` (``s_(k)`` the k-th smallest calibration score) has coverage
``C_k = P(s ≤ s_(k) | calibration)`` distributed as ``Beta(k, n + 1 − k)`` over calibration draws (continuous
scores). Two rules follow:

* ``conformal`` (marginal): ``k = ⌈(n + 1)·α⌉`` gives ``E[C_k] = k / (n + 1) ≥ α``, i.e. ``P(s ≤ thr) ≥ α``
  averaged over the calibration draw (Vovk et al. 2005; Lei et al. 2018).
* ``pac`` (training-conditional): the smallest ``k`` with ``P(Beta(k, n + 1 − k) ≤ α) ≤ δ`` gives
  ``P_calibration(C_k ≥ α) ≥ 1 − δ`` (Vovk 2012, "Conditional validity of inductive conformal predictors").
  Using ``Beta(k, n+1-k).cdf(α) = P(Binomial(n, α) ≥ k)`` the search is one vectorised binomial survival call.

``train_percentile`` is the OGSRL authors' rule (the ``(1 − α)`` percentile of *training* scores, ``np.percentile``);
it carries no guarantee and is kept only for the KDE baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

ThresholdRule = Literal["conformal", "pac", "train_percentile"]

GUARANTEES: dict[str, str] = {
    "conformal": "marginal split-conformal: P(score(x_new) <= threshold) >= alpha_c over calibration and new draw",
    "pac": "training-conditional: with probability >= 1 - delta over the calibration draw, "
    "P(score(x_new) <= threshold | calibration) >= alpha_c",
    "train_percentile": "none (empirical (1 - alpha_c) percentile of training scores, the OGSRL authors' KDE rule)",
}
"""One line per rule stating what the certificate's threshold guarantees (exchangeable rows assumed)."""


def _check_alpha(alpha_c: float) -> None:
    if not (isinstance(alpha_c, (int, float)) and math.isfinite(alpha_c) and 0.0 < alpha_c < 1.0):
        raise ValueError(f"alpha_c must lie strictly between 0 and 1, got {alpha_c!r}")


def _clean_scores(scores: npt.ArrayLike) -> npt.NDArray[np.float64]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise ValueError("calibration scores are empty")
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        raise ValueError(f"calibration scores contain {bad.size} non-finite value(s) at rows {bad[:5].tolist()}")
    return np.sort(s)


def conformal_rank(n: int, alpha_c: float) -> int:
    """1-based rank ``k = ⌈(n + 1)·α_c⌉`` of the marginal split-conformal threshold.

    Raises ValueError when ``k > n`` (too few calibration points for ``α_c``: need ``n ≥ α_c / (1 − α_c)``).
    """
    _check_alpha(alpha_c)
    # (n+1)*alpha in exact-ish arithmetic: subtract a tiny epsilon so 0.95*20 = 19.000000000000004 rounds to 19
    k = math.ceil((n + 1) * alpha_c - 1e-9)
    if k > n:
        need = math.ceil(alpha_c / (1.0 - alpha_c))
        raise ValueError(f"conformal threshold needs n_cal >= {need} for alpha_c={alpha_c}, got n_cal={n}")
    return max(k, 1)


def pac_rank(n: int, alpha_c: float, delta: float) -> int:
    """Smallest 1-based rank ``k`` with ``P(Binomial(n, α_c) ≥ k) ≤ δ`` (so coverage ≥ α_c w.p. ≥ 1 − δ).

    Raises ValueError when no rank qualifies (need ``α_c^n ≤ δ``, i.e. ``n ≥ log δ / log α_c``).
    """
    _check_alpha(alpha_c)
    if not (isinstance(delta, (int, float)) and math.isfinite(delta) and 0.0 < delta < 1.0):
        raise ValueError(f"delta must lie strictly between 0 and 1, got {delta!r}")
    ks = np.arange(1, n + 1)
    tail = stats.binom.sf(ks - 1, n, alpha_c)  # P(Binomial(n, α) ≥ k), decreasing in k
    ok = np.flatnonzero(tail <= delta)
    if ok.size == 0:
        need = math.ceil(math.log(delta) / math.log(alpha_c))
        raise ValueError(
            f"PAC threshold needs n_cal >= {need} for alpha_c={alpha_c}, delta={delta}, got n_cal={n}"
        )
    return int(ks[ok[0]])


def threshold(
    scores: npt.ArrayLike, alpha_c: float, delta: float, rule: ThresholdRule
) -> tuple[float, int]:
    """Threshold on ``scores`` (larger = less supported) for the given rule.

    Args:
        scores: calibration scores ``(n,)``; must be finite.
        alpha_c: target coverage in (0, 1).
        delta: PAC failure probability in (0, 1) (only used by ``pac``).
        rule: ``conformal`` | ``pac`` | ``train_percentile``.

    Returns:
        ``(threshold, k)`` where ``k`` is the 1-based order statistic used (0 for ``train_percentile``, which
        interpolates with ``np.percentile``).
    """
    _check_alpha(alpha_c)
    s = _clean_scores(scores)
    n = s.size
    if rule == "conformal":
        k = conformal_rank(n, alpha_c)
    elif rule == "pac":
        k = pac_rank(n, alpha_c, delta)
    elif rule == "train_percentile":
        return float(np.percentile(s, 100.0 * alpha_c)), 0
    else:
        raise ValueError(f"unknown threshold rule {rule!r}; expected conformal | pac | train_percentile")
    return float(s[k - 1]), k


@dataclass(frozen=True, slots=True)
class CalibrationConfig:
    """How a guardian's threshold is set from calibration scores."""

    alpha_c: float = 0.95
    """target coverage α_c: the fraction of in-distribution (s, a) points the guardian must accept"""
    delta: float = 0.05
    """PAC failure probability δ: the coverage statement holds with probability ≥ 1 − δ (rule pac)"""
    rule: ThresholdRule = "pac"
    """conformal (marginal, ⌈(n+1)α_c⌉-th score) | pac (training-conditional) | train_percentile (authors)"""

    def __post_init__(self) -> None:
        _check_alpha(self.alpha_c)
        if not (math.isfinite(self.delta) and 0.0 < self.delta < 1.0):
            raise ValueError(f"delta must lie strictly between 0 and 1, got {self.delta!r}")
        if self.rule not in GUARANTEES:
            raise ValueError(f"unknown threshold rule {self.rule!r}; expected one of {sorted(GUARANTEES)}")
