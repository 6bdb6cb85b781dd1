"""The clinical metrics on the hand-computed example of docs/metrics.md."""

from __future__ import annotations

import numpy as np
import pytest

from ogsrl.ope import clinical

STAY = np.array(["a", "a", "a", "b", "b"])
CLIN = np.array([[0, 0], [500, 0], [500, 0.1], [100, 0], [100, 0]], dtype=float)
POL = np.array([[100, 0], [500, 0.2], [0, 0.1], [1000, 0], [100, 0.3]], dtype=float)
SOFA = np.array([5, 7, 6, 3, 5], dtype=float)
TOL = np.array([250.0, 0.05])


def test_match_rate_by_hand() -> None:
    assert clinical.match_rate(POL, CLIN, TOL) == pytest.approx(0.2)  # only row 0 is within tolerance
    assert clinical.match_rate(np.stack([POL, CLIN]), CLIN, TOL) == pytest.approx(0.6)  # two draws: (1 + 5) / 10
    assert clinical.match_rate(CLIN, CLIN, [0.0, 0.0]) == 1.0
    with pytest.raises(ValueError, match="policy_actions must have shape"):
        clinical.match_rate(POL[:4], CLIN, TOL)


def test_deterioration_escalation_and_air_by_hand() -> None:
    d, prev = clinical.deteriorating(SOFA, STAY, rise=2)
    assert prev.tolist() == [False, True, True, False, True]
    assert d.tolist() == [False, True, False, False, True]  # 7-5 = 2 and 5-3 = 2; b's first row has no previous
    e = clinical.escalates(POL, CLIN, STAY, TOL)
    assert e.tolist() == [[False, True, True, False, True]]
    out = clinical.appropriate_intensity(POL, CLIN, SOFA, STAY, TOL, rise=2)
    assert out == {"air": pytest.approx(2 / 3), "escalate_when_deteriorating": 1.0, "hold_when_stable": 0.0,
                   "n_deteriorating": 2, "n_stable": 1}
    clin = clinical.appropriate_intensity(CLIN, CLIN, SOFA, STAY, TOL, rise=2)
    assert clin["air"] == pytest.approx(1 / 3)  # escalates on row 1 only when needed; row 2 escalates while stable
    assert clin["escalate_when_deteriorating"] == 0.5


def test_action_change_by_hand() -> None:
    out = clinical.action_change(POL, STAY, TOL)
    np.testing.assert_allclose(out["per_dim"], [600.0, 0.2])  # (400 + 500 + 900)/3, (0.2 + 0.1 + 0.3)/3
    assert out["acp"] == pytest.approx(6.4)  # (5.6 + 4 + 9.6)/3 in tolerance units
    flat = np.tile([[300.0, 0.1]], (5, 1))
    assert clinical.action_change(flat, STAY, TOL)["acp"] == 0.0
    with pytest.raises(ValueError, match="tolerance > 0"):
        clinical.action_change(POL, STAY, [0.0, 0.05])


def test_mortality_curve_and_estimate() -> None:
    curve = clinical.mortality_curve([-10, -20, -30, -40], [0, 0, 1, 1])
    np.testing.assert_allclose(curve([-25, -100, 0, -15]), [0.5, 1.0, 0.0, 0.0])
    assert clinical.mortality_estimate(curve, -25, -35, -15) == (0.5, 0.0, 1.0)  # CI endpoints swap
    assert clinical.mortality_estimate(curve, -25) == (0.5, None, None)
    pooled = clinical.mortality_curve([-10, -20, -30], [1, 0, 1])  # the violator pair (-20, -10) pools to 0.5
    np.testing.assert_allclose(pooled([-30, -20, -10, -25]), [1.0, 0.5, 0.5, 0.75])
    with pytest.raises(ValueError, match="0/1"):
        clinical.mortality_curve([-1, -2], [0, 2])


def test_stay_returns_discount_within_each_stay() -> None:
    np.testing.assert_allclose(clinical.stay_returns([1, 2, 3, 4, 5], STAY, 0.5), [2.75, 6.5])
    np.testing.assert_allclose(clinical.stay_returns([1, 2, 3, 4, 5], STAY), [6.0, 9.0])


def test_below_share() -> None:
    np.testing.assert_allclose(clinical.below_share([[1, 0], [0, 1], [1, 1], [0, 0]]), [0.5, 0.5])
    np.testing.assert_allclose(clinical.below_share(np.full((2, 3, 1), 0.25)), [0.25])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        clinical.below_share([[2.0]])
