"""Conformal / PAC threshold formulas and their coverage guarantees."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ogsrl.guardian import conformal
from ogsrl.guardian.conformal import CalibrationConfig


@pytest.mark.parametrize(("n", "alpha", "k"), [(19, 0.95, 19), (99, 0.95, 95), (100, 0.9, 91), (1000, 0.5, 501)])
def test_conformal_rank_formula(n: int, alpha: float, k: int) -> None:
    assert conformal.conformal_rank(n, alpha) == k == math.ceil((n + 1) * alpha - 1e-9)


def test_conformal_threshold_is_the_kth_smallest_score() -> None:
    scores = np.random.default_rng(0).permutation(np.arange(1.0, 101.0))  # 1..100 shuffled
    thr, k = conformal.threshold(scores, 0.9, 0.05, "conformal")
    assert k == 91 and thr == 91.0


def test_conformal_needs_enough_calibration_points() -> None:
    with pytest.raises(ValueError, match="n_cal >= 19"):
        conformal.conformal_rank(18, 0.95)
    with pytest.raises(ValueError, match="PAC threshold needs n_cal"):
        conformal.pac_rank(50, 0.95, 0.01)


@pytest.mark.parametrize(("n", "alpha", "delta"), [(200, 0.95, 0.05), (2000, 0.9, 0.1), (500, 0.99, 0.01)])
def test_pac_rank_is_smallest_valid_order_statistic(n: int, alpha: float, delta: float) -> None:
    k = conformal.pac_rank(n, alpha, delta)
    # coverage of s_(k) ~ Beta(k, n+1-k): P(coverage < alpha) = beta.cdf(alpha) must be ≤ δ, and not for k-1
    assert stats.beta.cdf(alpha, k, n + 1 - k) <= delta + 1e-12
    assert stats.beta.cdf(alpha, k - 1, n + 2 - k) > delta
    assert k >= conformal.conformal_rank(n, alpha)


def test_guarantees_hold_over_repeated_calibration_draws() -> None:
    # uniform scores: the coverage of threshold t is exactly t, so the guarantees can be checked without test data
    rng = np.random.default_rng(1)
    n, alpha, delta, reps = 200, 0.9, 0.1, 3000
    u = np.sort(rng.random((reps, n)), axis=1)
    cov_conf = u[:, conformal.conformal_rank(n, alpha) - 1]
    cov_pac = u[:, conformal.pac_rank(n, alpha, delta) - 1]
    assert cov_conf.mean() >= alpha - 0.002  # E[coverage] = k/(n+1) ≥ α
    assert np.mean(cov_pac >= alpha) >= 1 - delta - 0.015  # P(coverage ≥ α) ≥ 1 − δ
    assert np.mean(cov_conf >= alpha) < 1 - delta  # the marginal rule alone does not give the PAC statement here


def test_conformal_threshold_on_gaussian_covers_fresh_samples() -> None:
    rng = np.random.default_rng(2)
    cal = rng.normal(size=(10_000, 3))
    fresh = rng.normal(size=(100_000, 3))
    thr, _ = conformal.threshold((cal**2).sum(axis=1), 0.95, 0.05, "conformal")
    assert abs(thr - stats.chi2.ppf(0.95, 3)) < 0.25
    assert abs(np.mean((fresh**2).sum(axis=1) <= thr) - 0.95) <= 0.01


def test_train_percentile_matches_numpy_percentile() -> None:
    s = np.random.default_rng(3).normal(size=777)
    thr, k = conformal.threshold(s, 0.95, 0.05, "train_percentile")
    assert k == 0 and thr == pytest.approx(np.percentile(s, 95))


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_alpha_outside_unit_interval_is_rejected(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha_c"):
        conformal.threshold(np.arange(100.0), alpha, 0.05, "conformal")
    with pytest.raises(ValueError, match="alpha_c"):
        CalibrationConfig(alpha_c=alpha)


def test_bad_scores_delta_and_rule_are_rejected() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        conformal.threshold(np.array([1.0, np.nan] * 50), 0.9, 0.05, "conformal")
    with pytest.raises(ValueError, match="empty"):
        conformal.threshold(np.array([]), 0.9, 0.05, "conformal")
    with pytest.raises(ValueError, match="delta"):
        CalibrationConfig(delta=0.0)
    with pytest.raises(ValueError, match="unknown threshold rule"):
        conformal.threshold(np.arange(100.0), 0.9, 0.05, "median")  # type: ignore[arg-type]


# ---- stays as the calibration unit ------------------------------------------------------------------------------


def test_pooled_coverage_weighs_each_stay_equally() -> None:
    # stay a: scores 1, 2 (each row 1/4); stay b: score 3 (1/2); stay c: 4, 5, 6, 7 (each 1/12); ties counted together
    scores = np.array([2.0, 1.0, 3.0, 4.0, 5.0, 6.0, 7.0, 7.0])
    groups = np.array(["a", "a", "b", "c", "c", "c", "d", "d"])
    s, f = conformal.pooled_coverage(scores, groups)
    np.testing.assert_array_equal(s, np.sort(scores))
    np.testing.assert_allclose(f, [1 / 8, 2 / 8, 4 / 8, 4 / 8 + 1 / 12, 4 / 8 + 2 / 12, 6 / 8, 1.0, 1.0])
    cov, n, full = conformal.stay_coverage(scores <= 4.0, groups)
    assert (cov, n, full) == (pytest.approx((1 + 1 + 1 / 3 + 0) / 4), 4, 0.5)


@pytest.mark.parametrize(("n", "alpha", "delta"), [(880, 0.95, 0.05), (150, 0.9, 0.1), (5000, 0.99, 0.01)])
def test_stay_levels_solve_their_bounds(n: int, alpha: float, delta: float) -> None:
    a = conformal.stay_pac_level(n, alpha, delta)
    assert n * conformal.bernoulli_kl(a, alpha) == pytest.approx(math.log(1 / delta), rel=1e-9)
    assert alpha < a < 1
    c = conformal.stay_conformal_level(n, alpha)
    assert conformal.stay_marginal_bound(n, c) == pytest.approx(alpha, abs=1e-8) and alpha < c < a
    with pytest.raises(ValueError, match="n_cal_stays >= 59"):
        conformal.stay_pac_level(58, 0.95, 0.05)
    with pytest.raises(ValueError, match="n_cal_stays >= 19"):
        conformal.stay_conformal_level(18, 0.95)


def test_stay_rule_holds_on_clustered_scores_where_the_row_rule_fails() -> None:
    # score = stay effect + row noise (ICC 0.8), 100 stays of 1..19 rows; true stay-weighted coverage of t is
    # Φ(t / σ) for every stay length, so each draw's failure (coverage < α) is exact
    rng = np.random.default_rng(3)
    n, alpha, delta, reps, sigma = 100, 0.9, 0.1, 300, math.sqrt(0.8 + 0.2)
    fail_row = fail_stay = 0
    for _ in range(reps):
        m = rng.integers(1, 20, n)
        groups = np.repeat(np.arange(n), m)
        s = rng.normal(0, math.sqrt(0.8), n)[groups] + rng.normal(0, math.sqrt(0.2), groups.size)
        t_row, _ = conformal.threshold(s, alpha, delta, "pac")
        t_stay, _, level, n_stays = conformal.stay_threshold(s, groups, alpha, delta, "pac")
        assert n_stays == n and conformal.stay_coverage(s <= t_stay, groups)[0] >= level - 1e-12
        fail_row += stats.norm.cdf(t_row / sigma) < alpha
        fail_stay += stats.norm.cdf(t_stay / sigma) < alpha
    assert fail_stay / reps <= delta  # the guarantee, with n = stays
    assert fail_row / reps > 2 * delta  # rows ranked as independent: the δ-statement fails
