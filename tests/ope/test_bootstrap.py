import numpy as np

from ogsrl.ope import bootstrap


def test_bagged_interval_adds_the_refit_spread() -> None:
    rng = np.random.default_rng(0)
    v0 = rng.normal(size=(200, 2))
    value, lo, hi = bootstrap.bagged_interval(v0, None, np.random.default_rng(1), 500, 0.95)
    np.testing.assert_allclose(value, v0.mean(axis=0))
    np.testing.assert_allclose((hi - lo) / 2, 1.96 * v0.std(axis=0) / np.sqrt(200), rtol=0.15)
    refits = v0[None] + np.array([-1.0, 1.0, 0.0])[:, None, None]  # fits that disagree by ±1
    value2, lo2, hi2 = bootstrap.bagged_interval(v0, refits, np.random.default_rng(1), 500, 0.95)
    assert ((hi2 - lo2) / 2 > 1.96 * 0.99).all()
    np.testing.assert_allclose(value2, v0.mean(axis=0))  # the refits' shifts cancel


def test_bagged_value_averages_the_full_fit_and_the_refits() -> None:
    v0 = np.random.default_rng(0).normal(size=(50, 1))
    refits = v0[None] + np.array([2.0, 2.0, 5.0])[:, None, None]
    value, lo, hi = bootstrap.bagged_interval(v0, refits, np.random.default_rng(1), 200, 0.95)
    np.testing.assert_allclose(value, v0.mean(axis=0) + 9.0 / 4)  # (0 + 2 + 2 + 5) / 4 fits
    np.testing.assert_allclose((lo + hi) / 2, value)
    full, lo_f, hi_f = bootstrap.bagged_interval(v0, refits, np.random.default_rng(1), 200, 0.95, bag_value=False)
    np.testing.assert_allclose(full, v0.mean(axis=0))  # the full fit's value; the refits only widen the interval
    np.testing.assert_allclose(hi_f - lo_f, hi - lo)
    np.testing.assert_allclose((lo_f + hi_f) / 2, full)
