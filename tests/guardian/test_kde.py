"""KDE baseline guardian: density formula, authors' threshold, persistence, subsampling."""

from __future__ import annotations

import numpy as np
import pytest
from tests.guardian.guardian_fakes import NAMES, stays

import ogsrl.guardian
from ogsrl.guardian.christoffel import ChristoffelGuardian
from ogsrl.guardian.conformal import CalibrationConfig
from ogsrl.guardian.kde import KDEConfig, KDEGuardian


@pytest.fixture(scope="module")
def kde(splits: dict[str, np.ndarray]) -> KDEGuardian:
    g = KDEGuardian(NAMES, KDEConfig(max_eval=1500)).fit(splits["fit"][:1500])
    return g.calibrate(splits["fit"][:1500]).assess(splits["test"], rng=np.random.default_rng(0), volume_samples=500)


def test_score_is_minus_log_gaussian_kde_on_min_max_scaled_inputs() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 3)) * [1.0, 10.0, 100.0]
    g = KDEGuardian(("a", "b", "c")).fit(x)
    lo, hi = x.min(axis=0), x.max(axis=0)
    scale = lambda a: 2 * (a - lo) / (hi - lo) - 1  # noqa: E731 - the authors' normalisation
    q = rng.normal(size=(7, 3)) * [1.0, 10.0, 100.0]
    h = 0.535
    d2 = ((scale(q)[:, None, :] - scale(x)[None, :, :]) ** 2).sum(axis=2)
    dens = np.exp(-0.5 * d2 / h**2).mean(axis=1) / (2 * np.pi * h**2) ** 1.5
    np.testing.assert_allclose(g.score(q), -np.log(dens), rtol=1e-10)


def test_authors_threshold_accepts_95_percent_of_training(kde: KDEGuardian, splits) -> None:
    assert isinstance(kde, ogsrl.guardian.Guardian)
    cert = kde.certificate()
    assert (cert.method, cert.threshold_rule, cert.delta, cert.rank) == ("kde", "train_percentile", None, 0)
    train_scores = kde.score(splits["fit"][:1500])
    assert cert.threshold == pytest.approx(np.percentile(train_scores, 95))
    assert kde.contains(splits["fit"][:1500]).mean() == pytest.approx(0.95, abs=1e-3)
    assert cert.params == {"bandwidth": 0.535, "rtol": 0.0, "max_eval": 1500}
    assert cert.n_test == 1500 and cert.volume_samples == 500
    assert 0.85 <= cert.test_coverage <= 0.99


def test_contains_is_monotone_in_threshold(kde: KDEGuardian, splits) -> None:
    x = np.concatenate([splits["test"][:300], splits["test"][:300] * 2.0])
    thr = kde.certificate().threshold
    masks = [kde.contains(x, t) for t in (thr - 2, thr - 1, thr, thr + 1, thr + 3)]
    for small, large in zip(masks, masks[1:]):
        assert np.all(small <= large)
    assert masks[0].sum() < masks[-1].sum()


def test_conformal_rule_and_subsampling(splits) -> None:
    g = KDEGuardian(NAMES, KDEConfig(max_eval=400), CalibrationConfig(rule="conformal", unit="row"))
    g.fit(splits["fit"][:1000])
    with pytest.raises(ValueError, match="pass rng"):
        g.calibrate(splits["cal"])
    cert = g.calibrate(splits["cal"], rng=np.random.default_rng(1)).certificate()
    assert cert.n_cal == 400 and cert.rank == 381 and cert.threshold_rule == "conformal" and cert.unit == "row"


def test_stay_subsampling_keeps_whole_stays(splits) -> None:
    g = KDEGuardian(NAMES, KDEConfig(max_eval=405), CalibrationConfig(rule="conformal")).fit(splits["fit"][:1000])
    groups = stays(2000)  # 200 stays of 10 rows
    cert = g.calibrate(splits["cal"], groups=groups, rng=np.random.default_rng(1)).certificate()
    assert (cert.unit, cert.n_cal, cert.n_cal_stays) == ("stay", 400, 40)  # 40 whole stays fit in 405 rows
    assert cert.level is not None and cert.calibration_coverage_stay >= cert.level - 1e-12


def test_save_load_round_trip(kde: KDEGuardian, splits, tmp_path) -> None:
    kde.save(tmp_path / "k")
    back = ogsrl.guardian.load(tmp_path / "k", NAMES)
    assert isinstance(back, KDEGuardian)
    np.testing.assert_array_equal(back.score(splits["test"][:200]), kde.score(splits["test"][:200]))
    assert back.certificate() == kde.certificate()
    with pytest.raises(ValueError, match="fitted on features"):
        KDEGuardian.load(tmp_path / "k", NAMES[:-1])
    with pytest.raises(ValueError, match="holds a 'kde' guardian"):
        ChristoffelGuardian.load(tmp_path / "k")


def test_bad_config_and_input() -> None:
    with pytest.raises(ValueError, match="bandwidth"):
        KDEConfig(bandwidth=0.0)
    with pytest.raises(ValueError, match="at least 2"):
        KDEGuardian(("a",)).fit(np.zeros((1, 1)))
    with pytest.raises(RuntimeError, match="not calibrated"):
        KDEGuardian(("a",)).fit(np.arange(10.0)[:, None]).contains(np.zeros((1, 1)))


def test_discrete_action_one_hot_in_the_kde() -> None:
    rng = np.random.default_rng(0)
    s = rng.normal(size=(800, 2))
    x = np.column_stack([s, (s[:, 0] > 0).astype(float) * 2])  # id 2 at s0 > 0, id 0 below, id 1 never
    g = KDEGuardian(("s0", "s1", "a"), discrete={"a": 3}).fit(x)
    assert g.centres.shape == (800, 5)
    np.testing.assert_array_equal(g.centres[:, 2:], np.where(x[:, 2:] == np.arange(3), 1.0, -1.0))
    g.calibrate(x)
    far = x[np.abs(x[:, 0]) > 1.0][:50]
    swapped = far.copy()
    swapped[:, 2] = 2.0 - swapped[:, 2]  # the other observed id at the same state, far from where it is used
    assert np.all(g.score(swapped) > g.score(far))
    bad = x[:3].copy()
    bad[:, 2] = [3.0, 0.5, -1.0]
    assert np.all(np.isinf(g.score(bad))) and not g.contains(bad).any()
