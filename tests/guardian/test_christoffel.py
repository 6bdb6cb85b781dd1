"""Christoffel guardian: basis, score formula, torch/numpy agreement, certificate, persistence, bad input."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch

import ogsrl.guardian
from ogsrl.errors import DataError
from ogsrl.guardian.christoffel import ChristoffelConfig, ChristoffelGuardian, MonomialBasis
from ogsrl.guardian.conformal import CalibrationConfig
from ogsrl.guardian.kde import KDEGuardian
from ogsrl.guardian.scaling import ScalingConfig

from tests.guardian.guardian_fakes import NAMES, stays

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def fitted(splits: dict[str, np.ndarray]) -> ChristoffelGuardian:
    g = ChristoffelGuardian(NAMES).fit(splits["fit"]).calibrate(splits["cal"], groups=stays(2000))
    return g.assess(splits["test"], rng=np.random.default_rng(0), volume_samples=20_000, groups=stays(2000))


@pytest.mark.parametrize(("d", "k"), [(15, 2), (15, 3), (4, 4), (1, 1)])
def test_basis_size_is_binomial(d: int, k: int) -> None:
    basis = MonomialBasis.build(d, k)
    z = np.random.default_rng(0).normal(size=(5, d))
    assert basis.size == math.comb(d + k, k) == basis.numpy(z).shape[1]
    assert MonomialBasis.build(15, 2).size == 136


def test_basis_values_by_hand() -> None:
    z = np.array([[2.0, 3.0], [-1.0, 0.5]])
    v = MonomialBasis.build(2, 2).numpy(z)
    np.testing.assert_allclose(v, [[1, 2, 3, 4, 6, 9], [1, -1, 0.5, 1, -0.5, 0.25]])
    v3 = MonomialBasis.build(2, 3).numpy(z[:1])
    np.testing.assert_allclose(v3[0, 6:], [8, 12, 18, 27])  # x³, x²y, xy², y³


def test_score_matches_the_explicit_formula() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, 3))
    g = ChristoffelGuardian(("a", "b", "c"), ChristoffelConfig(degree=2, ridge=1e-3)).fit(x)
    z = g.scaler.transform(x)
    v = MonomialBasis.build(3, 2).numpy(z)
    moment = v.T @ v / len(x) + 1e-3 * np.eye(v.shape[1])
    q = rng.normal(size=(20, 3)) * 2
    vq = MonomialBasis.build(3, 2).numpy(g.scaler.transform(q))
    expected = np.einsum("ij,ij->i", vq, np.linalg.solve(moment, vq.T).T)
    np.testing.assert_allclose(g.score(q), expected, rtol=1e-8)


def test_torch_and_numpy_scores_agree_and_are_differentiable(fitted: ChristoffelGuardian, splits) -> None:
    x = np.concatenate([splits["test"][:200], splits["test"][:50] * 3.0])
    s_np = fitted.score(x)
    s_t = fitted.score_torch(torch.tensor(x, dtype=torch.float64))
    np.testing.assert_allclose(s_t.numpy(), s_np, rtol=1e-9, atol=1e-9)
    s32 = fitted.score_torch(torch.tensor(x, dtype=torch.float32))
    np.testing.assert_allclose(s32.numpy(), s_np, rtol=1e-3)
    xt = torch.tensor(splits["test"][:4], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fitted.score_torch(t), (xt,), eps=1e-6, atol=1e-4)


def test_implements_the_guardian_protocol(fitted: ChristoffelGuardian, splits) -> None:
    assert isinstance(fitted, ogsrl.guardian.Guardian)
    big = np.tile(splits["test"], (5, 1)).astype(np.float32)  # (10 000, 15) float32, as the world model sends
    inside = fitted.contains(big)
    assert inside.shape == (10_000,) and inside.dtype == bool
    np.testing.assert_array_equal(inside[:2000], fitted.contains(splits["test"].astype(np.float32)))


def test_as_guard_reorders_columns_by_name(fitted: ChristoffelGuardian, splits) -> None:
    x = splits["test"][:300]
    states = list(NAMES[:13])[::-1] + ["weight"]  # caller's own order plus a column the guardian ignores
    obs = np.column_stack([x[:, NAMES.index(n)] if n in NAMES else np.full(300, 80.0) for n in states])
    guard = ogsrl.guardian.as_guard(fitted, states)
    np.testing.assert_array_equal(guard(obs, x[:, 13:]), fitted.contains(x))
    with pytest.raises(ValueError, match="not among"):
        ogsrl.guardian.as_guard(fitted, states[1:])


def test_certificate_fields(fitted: ChristoffelGuardian) -> None:
    cert = fitted.certificate()
    d = cert.to_dict()
    assert set(d) >= {
        "method", "alpha_c", "delta", "n_fit", "n_cal", "threshold", "params", "test_coverage", "volume_proxy",
        "feature_names", "created_by", "threshold_rule", "guarantee",
    }
    assert (cert.method, cert.threshold_rule, cert.alpha_c, cert.delta) == ("christoffel", "pac", 0.95, 0.05)
    assert (cert.n_fit, cert.n_cal, cert.n_test) == (3000, 2000, 2000)
    assert cert.params == {"degree": 2, "ridge": 1e-6, "n_monomials": 136}
    assert cert.feature_names == NAMES and cert.created_by.startswith("ogsrl ")
    # stay-level PAC on 200 stays of 10 rows: the pooled per-stay coverage must reach a = 0.9828 (conformal.py)
    assert (cert.unit, cert.n_cal_stays, cert.n_test_stays) == ("stay", 200, 200)
    assert cert.level == pytest.approx(0.98277, abs=1e-4)
    assert cert.level <= cert.calibration_coverage_stay <= cert.level + 0.01
    assert cert.calibration_coverage == pytest.approx(cert.calibration_coverage_stay)  # equal-size stays
    assert 0.95 <= cert.test_coverage_stay <= 1.0 and 0.0 <= cert.test_stays_all_inside <= cert.test_coverage_stay
    assert 0.0 <= cert.volume_proxy < 0.5 and cert.volume_samples == 20_000
    json.dumps(d)  # serialisable


def test_contains_is_monotone_in_threshold(fitted: ChristoffelGuardian, splits) -> None:
    x = np.concatenate([splits["test"], splits["test"] * 1.5])
    thr = fitted.certificate().threshold
    masks = [fitted.contains(x, t) for t in (thr / 4, thr / 2, thr, 2 * thr, 8 * thr)]
    for small, large in zip(masks, masks[1:]):
        assert np.all(small <= large)
    assert masks[0].sum() < masks[2].sum() < masks[-1].sum()
    np.testing.assert_array_equal(fitted.contains(x), masks[2])


def test_extreme_actions_are_rejected(fitted: ChristoffelGuardian, splits) -> None:
    x = splits["test"][:500].copy()
    x[:, NAMES.index("nee_max")] = 5.0 * splits["fit"][:, NAMES.index("nee_max")].max()
    assert fitted.contains(x).mean() < 0.02


def test_save_load_round_trip(fitted: ChristoffelGuardian, splits, tmp_path) -> None:
    fitted.save(tmp_path / "g")
    assert json.loads((tmp_path / "g" / "certificate.json").read_text()) == fitted.certificate().to_dict()
    back = ChristoffelGuardian.load(tmp_path / "g", NAMES)
    np.testing.assert_array_equal(back.score(splits["test"]), fitted.score(splits["test"]))
    assert back.certificate() == fitted.certificate()
    assert isinstance(ogsrl.guardian.load(tmp_path / "g"), ChristoffelGuardian)
    with pytest.raises(ValueError, match="fitted on features"):
        ChristoffelGuardian.load(tmp_path / "g", NAMES[::-1])
    with pytest.raises(ValueError, match="holds a 'christoffel' guardian"):
        KDEGuardian.load(tmp_path / "g")
    with pytest.raises(FileNotFoundError):
        ChristoffelGuardian.load(tmp_path / "missing")


def test_same_inputs_give_identical_certificates(splits) -> None:
    certs = []
    for _ in range(2):
        g = ChristoffelGuardian(NAMES).fit(splits["fit"]).calibrate(splits["cal"], groups=stays(2000))
        certs.append(g.assess(splits["test"], rng=np.random.default_rng(7), volume_samples=5000).certificate())
    assert certs[0] == certs[1]


def test_constant_column_is_regularised_and_other_values_rejected(splits, caplog) -> None:
    x = splits["fit"].copy()
    j = NAMES.index("readmission")
    x[:, j] = 0.0
    cal = splits["cal"].copy()
    cal[:, j] = 0.0
    with caplog.at_level(logging.WARNING, logger="ogsrl.guardian.scaling"):
        g = ChristoffelGuardian(NAMES).fit(x).calibrate(cal, groups=stays(len(cal)))
    assert "constant column" in caplog.text and "readmission" in caplog.text
    assert np.isfinite(g.certificate().threshold)
    q = cal[:200].copy()
    assert g.contains(q).mean() > 0.9
    q[:, j] = 1.0
    assert not g.contains(q).any()


def test_degenerate_and_bad_inputs_raise(splits) -> None:
    with pytest.raises(DataError, match="136 monomials"):
        ChristoffelGuardian(NAMES).fit(splits["fit"][:100])
    bad = splits["fit"].copy()
    bad[[3, 9], NAMES.index("spo2")] = np.nan
    with pytest.raises(DataError, match=r"column 'spo2'.*offending rows: 3, 9"):
        ChristoffelGuardian(NAMES).fit(bad)
    with pytest.raises(DataError, match="expected a"):
        ChristoffelGuardian(NAMES).fit(splits["fit"][:, :5])
    g = ChristoffelGuardian(NAMES)
    with pytest.raises(RuntimeError, match="not fitted"):
        g.score(splits["test"])
    g.fit(splits["fit"])
    with pytest.raises(RuntimeError, match="not calibrated"):
        g.contains(splits["test"])
    with pytest.raises(ValueError, match="n_cal_stays >= 59"):
        g.calibrate(splits["cal"][:100], groups=stays(100))
    with pytest.raises(ValueError, match="needs the stay of each calibration row"):
        g.calibrate(splits["cal"])
    with pytest.raises(ValueError, match="n_cal"):
        ChristoffelGuardian(NAMES, calibration=CalibrationConfig(unit="row")).fit(splits["fit"]).calibrate(
            splits["cal"][:10])
    with pytest.raises(ValueError, match="alpha_c"):
        ChristoffelGuardian(NAMES, calibration=CalibrationConfig(alpha_c=1.0))
    with pytest.raises(ValueError, match="ridge"):
        ChristoffelConfig(ridge=0.0)
    with pytest.raises(ValueError, match="degree"):
        ChristoffelConfig(degree=0)
    with pytest.raises(ValueError, match="unique"):
        ChristoffelGuardian(("a", "a"))
    with pytest.raises(ValueError, match="quantile"):
        ScalingConfig(quantile=0.5)


def test_gaussian_guardian_coverage_on_fresh_samples() -> None:
    rng = np.random.default_rng(11)
    names = ("a", "b", "c", "d")
    g = ChristoffelGuardian(names, calibration=CalibrationConfig(alpha_c=0.9, rule="conformal", unit="row"))
    g.fit(rng.normal(size=(5000, 4))).calibrate(rng.normal(size=(10_000, 4)))
    assert abs(g.contains(rng.normal(size=(100_000, 4))).mean() - 0.9) <= 0.01


def _discrete_rows(n: int, seed: int) -> np.ndarray:
    """(state s0, s1; action id 0..3): id 3 never taken, ids 0/2 favoured at high / low s0."""
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, 2))
    p = np.stack([np.exp(s[:, 0]), np.ones(n), np.exp(-s[:, 0])], axis=1)
    a = (rng.random(n)[:, None] > (p / p.sum(axis=1, keepdims=True)).cumsum(axis=1)).sum(axis=1)
    return np.column_stack([s, np.minimum(a, 2)])


def test_discrete_action_is_one_hot_and_invalid_or_unseen_ids_are_rejected(tmp_path) -> None:
    names = ("s0", "s1", "treat")
    cal = CalibrationConfig(alpha_c=0.95, rule="conformal", unit="row")
    g = ChristoffelGuardian(names, calibration=cal, discrete={"treat": 4}).fit(_discrete_rows(3000, 0))
    assert g.basis.dim == 6 and g.basis.size == math.comb(8, 2)
    g.calibrate(_discrete_rows(2000, 1)).assess(_discrete_rows(2000, 2), rng=np.random.default_rng(0),
                                                volume_samples=4000)
    cert = g.certificate()
    assert 0.93 <= cert.test_coverage <= 0.97  # the singular one-hot moments do not disturb valid scores
    q = _discrete_rows(50, 3)
    valid = g.score(q)
    assert np.all(np.isfinite(valid)) and valid.max() < 1e3
    # scores of valid queries do not depend on the ridge (the one-hot null directions carry no component)
    g2 = ChristoffelGuardian(names, ChristoffelConfig(ridge=1e-9), cal, discrete={"treat": 4})
    g2.fit(_discrete_rows(3000, 0))
    np.testing.assert_allclose(g2.score(q), valid, rtol=1e-3)
    never = q.copy()
    never[:, 2] = 3.0  # an id the fit data never shows: a null direction, score ~ 1/λ
    assert g.score(never).min() > 1e4 * cert.threshold and not g.contains(never).any()
    bad = q[:4].copy()
    bad[:, 2] = [4.0, -1.0, 1.5, 99.0]
    assert np.all(np.isinf(g.score(bad))) and not g.contains(bad).any()
    xt = torch.tensor(np.vstack([q[:3], bad]), dtype=torch.float64)
    st = g.score_torch(xt).numpy()
    np.testing.assert_allclose(st[:3], valid[:3], rtol=1e-9)
    assert np.all(np.isinf(st[3:]))
    g.save(tmp_path / "g")
    meta = json.loads((tmp_path / "g" / "guardian.json").read_text())
    assert meta["encoding"] == {"treat": {"type": "one_hot", "n": 4, "levels": [-1.0, 1.0]}}
    back = ogsrl.guardian.load(tmp_path / "g")
    assert back.discrete == {"treat": 4}
    np.testing.assert_allclose(back.score(q), valid)


def test_guardian_saved_before_one_hot_still_loads(fitted: ChristoffelGuardian, splits, tmp_path) -> None:
    fitted.save(tmp_path / "g")
    path = tmp_path / "g" / "guardian.json"
    meta = json.loads(path.read_text())
    for key in ("levels", "source"):
        del meta["scaler"][key]
    del meta["encoding"], meta["scaling"]["bounds"]
    path.write_text(json.dumps(meta))
    back = ogsrl.guardian.load(tmp_path / "g")
    assert back.discrete == {} and back.scaling.bounds == "data"
    np.testing.assert_allclose(back.score(splits["test"][:100]), fitted.score(splits["test"][:100]))
