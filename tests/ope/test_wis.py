"""WIS / PDWIS on hand-computed examples and a tiny MDP with a known value; bootstrap sanity; bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from ogsrl.ope import bootstrap, wis


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# two stays: stay 0 has 2 steps, stay 1 has 1 step (padded)
R = np.array([[1.0, 2.0], [3.0, 0.0]])
MASK = np.array([[True, True], [True, False]])
LOG_RHO = np.log(np.array([[2.0, 0.5], [4.0, 1.0]]))


def test_hand_computed_example() -> None:
    # w0 = 2·0.5 = 1, w1 = 4; G0 = 1 + 0.5·2 = 2, G1 = 3 → WIS = (1·2 + 4·3) / 5 = 2.8
    est = wis.wis(R, LOG_RHO, MASK, 0.5, _rng(), n_boot=200)
    assert est.value == pytest.approx(2.8)
    assert est.ess == pytest.approx(25 / 17)
    # PDWIS: t=0 weights (2, 4) on rewards (1, 3) → 14/6; t=1 weights (1, 4 carried) on (2, 0) → 2/5
    assert wis.pdwis(R, LOG_RHO, MASK, 0.5, _rng(), n_boot=200).value == pytest.approx(14 / 6 + 0.5 * 0.4)
    # clip at 2: w1 = 2 → (2 + 6) / 3
    assert wis.wis(R, LOG_RHO, MASK, 0.5, _rng(), clip=2.0, n_boot=200).value == pytest.approx(8 / 3)
    # only two distinct stays: every replicate lies between the two returns
    assert 2.0 <= est.ci_low <= est.value <= est.ci_high <= 3.0


def test_minus_inf_log_ratio_is_a_zero_weight() -> None:
    # stay 0's second action is impossible under π_e: w0 = 0, so WIS = G1 = 3; PDWIS keeps stay 0's first step
    log_rho = LOG_RHO.copy()
    log_rho[0, 1] = -np.inf
    assert wis.wis(R, log_rho, MASK, 0.5, _rng(), n_boot=200).value == pytest.approx(3.0)
    assert wis.pdwis(R, log_rho, MASK, 0.5, _rng(), n_boot=200).value == pytest.approx(14 / 6 + 0.5 * 0.0)
    for bad_value in (np.nan, np.inf):
        bad = LOG_RHO.copy()
        bad[1, 0] = bad_value
        with pytest.raises(ValueError, match=r"log_ratio NaN or \+inf in trajectories \[1\]"):
            wis.wis(R, bad, MASK, 0.5, _rng())
    with pytest.raises(ValueError, match="every trajectory has weight 0"):
        wis.wis(R, np.full_like(LOG_RHO, -np.inf), MASK, 0.5, _rng())


def test_on_policy_weights_give_the_sample_mean() -> None:
    rng = _rng(1)
    rewards = rng.normal(size=(30, 6))
    mask = np.arange(6)[None, :] < rng.integers(1, 7, size=30)[:, None]  # unequal lengths
    rewards = np.where(mask, rewards, 0.0)
    g = (rewards * 0.9 ** np.arange(6)).sum(axis=1)
    zeros = np.zeros_like(rewards)
    for fn in (wis.wis, wis.pdwis):
        est = fn(rewards, zeros, mask, 0.9, _rng(), n_boot=300)
        assert est.value == pytest.approx(g.mean())
        assert est.ess == pytest.approx(30.0)
    # a common factor on every trajectory weight changes nothing (self-normalisation)
    shifted = zeros.copy()
    shifted[:, 0] = 0.7
    assert wis.wis(rewards, shifted, mask, 0.9, _rng(), n_boot=300).value == pytest.approx(g.mean())


def test_tiny_mdp_with_known_value() -> None:
    """3 steps, binary action, reward = action + noise; π_b(1)=0.5, π_e(1)=0.8 → V = 0.8·(1 + γ + γ²)."""
    rng = _rng(2)
    n, t, gamma = 4000, 3, 0.9
    a = rng.uniform(size=(n, t)) < 0.5
    rewards = a + rng.normal(0, 0.5, size=(n, t))
    log_rho = np.where(a, np.log(0.8 / 0.5), np.log(0.2 / 0.5))
    truth = 0.8 * (1 + gamma + gamma**2)
    mask = np.ones((n, t), dtype=bool)
    for fn in (wis.wis, wis.pdwis):
        est = fn(rewards, log_rho, mask, gamma, _rng(3), n_boot=500)
        assert est.ci_low <= truth <= est.ci_high
        assert est.value == pytest.approx(truth, abs=0.08)
        assert est.ess < n


def test_bootstrap_ci_coverage_sanity() -> None:
    """On-policy 90 % intervals for a normal mean cover the truth in roughly 90 % of repeated samples."""
    rng = _rng(4)
    hits = 0
    reps = 200
    for _ in range(reps):
        r = rng.normal(1.0, 2.0, size=(60, 1))
        est = wis.wis(r, np.zeros_like(r), np.ones_like(r, dtype=bool), 1.0, rng, n_boot=400, level=0.9)
        hits += est.ci_low <= 1.0 <= est.ci_high
    assert 0.82 <= hits / reps <= 0.97


def test_same_seed_same_interval() -> None:
    a = wis.wis(R, LOG_RHO, MASK, 0.5, _rng(7), n_boot=200)
    b = wis.wis(R, LOG_RHO, MASK, 0.5, _rng(7), n_boot=200)
    assert a == b


def test_pad_by_stay() -> None:
    ep = wis.pad_by_stay(np.array(["b", "b", "a", "c", "c", "c"]), {"r": np.arange(6.0)})
    np.testing.assert_array_equal(ep.mask, [[1, 1, 0], [1, 0, 0], [1, 1, 1]])
    np.testing.assert_array_equal(ep.values["r"], [[0, 1, 0], [2, 0, 0], [3, 4, 5]])
    with pytest.raises(ValueError, match="not contiguous"):
        wis.pad_by_stay(np.array(["a", "b", "a"]), {"r": np.zeros(3)})
    with pytest.raises(ValueError, match="column 'r'"):
        wis.pad_by_stay(np.array(["a", "b"]), {"r": np.zeros(3)})


def test_bad_inputs() -> None:
    bad = R.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"rewards not finite in trajectories \[1\]"):
        wis.wis(bad, LOG_RHO, MASK, 0.5, _rng())
    with pytest.raises(ValueError, match="share one"):
        wis.pdwis(R, LOG_RHO[:, :1], MASK, 0.5, _rng())
    with pytest.raises(ValueError, match="gamma"):
        wis.wis(R, LOG_RHO, MASK, 0.0, _rng())
    with pytest.raises(ValueError, match="clip"):
        wis.wis(R, LOG_RHO, MASK, 0.5, _rng(), clip=0.0)
    with pytest.raises(ValueError, match="level"):
        bootstrap.percentile_ci(np.zeros(10), 1.5)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap.resample_counts(5, 0, _rng())


def test_resample_counts_are_whole_stays() -> None:
    c = bootstrap.resample_counts(7, 50, _rng())
    assert c.shape == (50, 7) and (c.sum(axis=1) == 7).all() and (c == np.round(c)).all()


def test_wis_rate_hand_computed() -> None:
    c = np.array([[1.0, 1.0], [1.0, 0.0]])
    # on-policy: pooled rate 3 / 3 steps = 1; weights (1, 4): (1·2 + 4·1) / (1·2 + 4·1) = 1
    assert wis.wis_rate(c, np.zeros_like(c), MASK, _rng(), n_boot=200).value == pytest.approx(1.0)
    c = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert wis.wis_rate(c, np.zeros_like(c), MASK, _rng(), n_boot=200).value == pytest.approx(2 / 3)
    # weights w0 = 1, w1 = 4: (1·1 + 4·1) / (1·2 + 4·1) = 5/6
    assert wis.wis_rate(c, LOG_RHO, MASK, _rng(), n_boot=200).value == pytest.approx(5 / 6)
