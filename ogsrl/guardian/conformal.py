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

**Stays, not rows (``unit = "stay"``, the default).** The rows of one ICU stay are dependent, so ranking ~12,700
calibration rows from ~880 stays as if independent overstates n; only the stays are i.i.d. Write stay ``j``'s
coverage of threshold ``t`` as ``c_j(t) = (1/m_j) Σ_i 1[s_ji ≤ t]`` (its ``m_j`` rows) and the guaranteed quantity as
``F(t) = E[c(t)]``: the probability that a row drawn by picking a new stay, then one of its rows uniformly, is
accepted. The rule pools the stays' empirical coverage curves, ``F_n(t) = (1/n) Σ_j c_j(t)`` (n = stays), and takes
``t̂ = min{t : F_n(t) ≥ a}`` for a level ``a > α``.

*Why it holds.* Let ``t* = inf{t : F(t) ≥ α}``. If ``F(t̂) < α`` then ``t̂ < t*``, so ``F_n(t*−) ≥ a`` while
``E[c(t*−)] = F(t*−) ≤ α``. The ``c_j(t*−)`` are i.i.d. in [0, 1] at a fixed point, so by Hoeffding's (1963)
Chernoff bound ``P(F(t̂) < α) ≤ exp(−n·KL(a ‖ α))``, ``KL`` the Bernoulli relative entropy. Hence

* ``pac``: ``a`` = the smallest level with ``n·KL(a ‖ α) ≥ log(1/δ)`` gives ``P(F(t̂) ≥ α) ≥ 1 − δ`` over the
  calibration stays. It exists iff ``n ≥ log δ / log α`` (``KL(1 ‖ α) = log(1/α)``), as for rows.
* ``conformal``: integrating the same bound over all levels ``u < a``,
  ``E[F(t̂)] ≥ a − ∫_0^a exp(−n·KL(a ‖ u)) du``; ``a`` = the smallest level making this ``≥ α``. At ``a = 1`` the
  bound is ``n/(n+1)``, so it needs ``n ≥ α/(1 − α)``, as for rows.

The bound holds for any within-stay dependence and any stay lengths; with independent rows it is conservative
(``benchmarks/bench_certificate.py`` measures both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import integrate, optimize, stats

ThresholdRule = Literal["conformal", "pac", "train_percentile"]
Unit = Literal["stay", "row"]

GUARANTEES: dict[str, str] = {
    "conformal": "marginal split-conformal: P(score(x_new) <= threshold) >= alpha_c over calibration and new draw",
    "pac": "training-conditional: with probability >= 1 - delta over the calibration draw, "
    "P(score(x_new) <= threshold | calibration) >= alpha_c",
    "train_percentile": "none (empirical (1 - alpha_c) percentile of training scores, the OGSRL authors' KDE rule)",
}
"""One line per rule stating what the certificate's threshold guarantees when rows are the calibration unit
(exchangeable rows assumed: not true of the rows of one stay)."""

STAY_GUARANTEES: dict[str, str] = {
    "conformal": "marginal, by stay: E over the calibration stays of P(score(x) <= threshold) >= alpha_c, x a row "
    "of a new stay (stay drawn from the population, row uniform within it)",
    "pac": "training-conditional, by stay: with probability >= 1 - delta over the calibration stays, "
    "P(score(x) <= threshold | calibration) >= alpha_c, x a row of a new stay (stay drawn from the population, "
    "row uniform within it)",
    "train_percentile": GUARANTEES["train_percentile"],
}
"""The same with stays as the calibration unit (rows of one stay may be arbitrarily dependent)."""



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


def bernoulli_kl(a: float, b: float) -> float:
    """``KL(a ‖ b) = a·log(a/b) + (1 − a)·log((1 − a)/(1 − b))`` (0·log 0 = 0)."""
    out = 0.0
    if a > 0:
        out += a * math.log(a / b)
    if a < 1:
        out += (1 - a) * math.log((1 - a) / (1 - b))
    return out


def stay_pac_level(n: int, alpha_c: float, delta: float) -> float:
    """Smallest level ``a ∈ (α, 1]`` with ``n·KL(a ‖ α) ≥ log(1/δ)`` (stay-level PAC rule, module docstring).

    Raises ValueError when none exists (``n < log δ / log α``).
    """
    _check_alpha(alpha_c)
    if not (isinstance(delta, (int, float)) and math.isfinite(delta) and 0.0 < delta < 1.0):
        raise ValueError(f"delta must lie strictly between 0 and 1, got {delta!r}")
    need = math.log(1.0 / delta) / n
    if bernoulli_kl(1.0, alpha_c) < need:
        raise ValueError(f"stay-level PAC threshold needs n_cal_stays >= "
                         f"{math.ceil(math.log(delta) / math.log(alpha_c))} for alpha_c={alpha_c}, delta={delta}, "
                         f"got {n} stays")
    return float(optimize.brentq(lambda a: bernoulli_kl(a, alpha_c) - need, alpha_c, 1.0, xtol=1e-12))


def stay_marginal_bound(n: int, a: float) -> float:
    """Lower bound ``a − ∫_0^a exp(−n·KL(a ‖ u)) du`` on ``E[F(t̂)]`` for pooled level ``a`` and ``n`` stays."""
    tail, _ = integrate.quad(lambda u: math.exp(-n * bernoulli_kl(a, u)), 0.0, a, points=[a], limit=200)
    return a - tail


def stay_conformal_level(n: int, alpha_c: float) -> float:
    """Smallest level ``a`` with :func:`stay_marginal_bound` ``≥ α`` (stay-level marginal rule).

    Raises ValueError when none exists (``n/(n+1) < α``).
    """
    _check_alpha(alpha_c)
    if n / (n + 1) < alpha_c:
        need = math.ceil(alpha_c / (1.0 - alpha_c))
        raise ValueError(f"stay-level conformal threshold needs n_cal_stays >= {need} for alpha_c={alpha_c}, "
                         f"got {n} stays")
    if n / (n + 1) - alpha_c < 1e-12:
        return 1.0
    return float(optimize.brentq(lambda a: stay_marginal_bound(n, a) - alpha_c, alpha_c, 1.0, xtol=1e-10))


def group_index(groups: npt.ArrayLike, n_rows: int) -> tuple[npt.NDArray[np.intp], int]:
    """``(stay index per row (R,), number of stays)`` from any per-row stay labels."""
    g = np.asarray(groups).reshape(-1)
    if g.size != n_rows:
        raise ValueError(f"groups has {g.size} entries for {n_rows} rows")
    _, inv = np.unique(g, return_inverse=True)
    return inv.reshape(-1).astype(np.intp), int(inv.max()) + 1 if inv.size else 0


def pooled_coverage(scores: npt.ArrayLike, groups: npt.ArrayLike) -> tuple[npt.NDArray[np.float64],
                                                                          npt.NDArray[np.float64]]:
    """``(sorted scores (R,), F_n at each)``: ``F_n(t) = (1/n) Σ_j c_j(t)``, every row weighing ``1/(n·m_j)``."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    idx, n = group_index(groups, s.size)
    m = np.bincount(idx, minlength=n).astype(np.float64)  # (n,) rows per stay
    order = np.argsort(s, kind="stable")
    w = 1.0 / (n * m[idx[order]])  # (R,) weight of each sorted row
    cum = np.cumsum(w)
    s_sorted = s[order]
    # ties: F_n(t) counts every row with score ≤ t, so each tied row gets the cumulative weight of its last copy
    last = np.searchsorted(s_sorted, s_sorted, side="right") - 1
    return s_sorted, cum[last]


def stay_threshold(scores: npt.ArrayLike, groups: npt.ArrayLike, alpha_c: float, delta: float,
                   rule: ThresholdRule) -> tuple[float, int, float | None, int]:
    """Stay-level threshold (module docstring): ``(threshold, rank, level a, n stays)``.

    ``rank`` is the 1-based position of the threshold among the sorted calibration rows (0 for
    ``train_percentile``, which ignores the stays and has no level).
    """
    _check_alpha(alpha_c)
    _clean_scores(scores)  # finite, non-empty
    raw = np.asarray(scores, dtype=np.float64).reshape(-1)
    idx, n = group_index(groups, raw.size)
    if rule == "train_percentile":
        return float(np.percentile(raw, 100.0 * alpha_c)), 0, None, n
    if rule == "pac":
        level = stay_pac_level(n, alpha_c, delta)
    elif rule == "conformal":
        level = stay_conformal_level(n, alpha_c)
    else:
        raise ValueError(f"unknown threshold rule {rule!r}; expected conformal | pac | train_percentile")
    s_sorted, f = pooled_coverage(raw, idx)
    k = int(np.searchsorted(f, level - 1e-12, side="left"))  # first sorted row with F_n ≥ a (F_n is monotone)
    k = min(k, s_sorted.size - 1)
    return float(s_sorted[k]), k + 1, level, n


def stay_coverage(inside: npt.ArrayLike, groups: npt.ArrayLike) -> tuple[float, int, float]:
    """``(mean per-stay coverage, stays, share of stays with every row inside)`` of boolean ``inside (R,)``."""
    a = np.asarray(inside, dtype=bool).reshape(-1)
    idx, n = group_index(groups, a.size)
    if n == 0:
        raise ValueError("no rows to assess")
    per = np.bincount(idx, weights=a.astype(np.float64), minlength=n) / np.bincount(idx, minlength=n)
    return float(per.mean()), n, float(np.mean(per >= 1.0))


@dataclass(frozen=True, slots=True)
class CalibrationConfig:
    """How a guardian's threshold is set from calibration scores."""

    alpha_c: float = 0.95
    """target coverage α_c: the fraction of in-distribution (s, a) points the guardian must accept"""
    delta: float = 0.05
    """PAC failure probability δ: the coverage statement holds with probability ≥ 1 − δ (rule pac)"""
    rule: ThresholdRule = "pac"
    """conformal (marginal, ⌈(n+1)α_c⌉-th score) | pac (training-conditional) | train_percentile (authors)"""
    unit: Unit = "stay"
    """stay: the guarantee's n counts stays (rows of a stay may be dependent) | row: rows taken as exchangeable"""

    def __post_init__(self) -> None:
        _check_alpha(self.alpha_c)
        if not (math.isfinite(self.delta) and 0.0 < self.delta < 1.0):
            raise ValueError(f"delta must lie strictly between 0 and 1, got {self.delta!r}")
        if self.rule not in GUARANTEES:
            raise ValueError(f"unknown threshold rule {self.rule!r}; expected one of {sorted(GUARANTEES)}")
        if self.unit not in ("stay", "row"):
            raise ValueError(f"unknown calibration unit {self.unit!r}; expected stay | row")
