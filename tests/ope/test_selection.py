import numpy as np
import pytest

from ogsrl.ope.selection import constrained_choice, feasibility, score_choice, within_limits

VALUE = np.array([-90.0, -85.0, -95.0, -88.0])
COSTS = np.array([[0.5, 4.0], [1.2, 3.0], [0.2, 2.0], [0.7, 4.5]])
LIMITS = np.array([0.8, 4.6])


def test_choice_is_the_best_value_within_every_limit() -> None:
    # row 1 has the best value but breaks the first limit; rows 0, 2, 3 are within both: -88 is the best of them
    assert constrained_choice(VALUE, COSTS, LIMITS) == 3
    assert constrained_choice(VALUE, COSTS, np.array([10.0, 10.0])) == 1
    assert constrained_choice(VALUE, COSTS, np.array([0.1, 10.0])) is None


def test_within_limits_marks_rows_within_every_limit() -> None:
    costs = COSTS.copy()
    costs[2, 0] = np.nan
    assert within_limits(costs, LIMITS).tolist() == [True, False, False, True]


def test_a_limit_met_with_equality_is_within_and_nan_is_never_chosen() -> None:
    assert constrained_choice(VALUE, COSTS, np.array([0.7, 4.5])) == 3
    costs = COSTS.copy()
    costs[3, 1] = np.nan
    assert constrained_choice(VALUE, costs, LIMITS) == 0
    value = VALUE.copy()
    value[3] = np.nan
    assert constrained_choice(value, COSTS, LIMITS) == 0


def test_score_regret_and_excess_by_hand() -> None:
    true_value = np.array([-90.0, -85.0, -95.0, -91.0])  # truly best within limits: row 0 (-90); range 10
    true_costs = np.array([[0.6, 4.0], [1.2, 3.0], [0.2, 2.0], [1.0, 4.5]])
    s = score_choice(3, true_value, true_costs, LIMITS)
    assert s.best == 0
    assert s.regret == pytest.approx(0.1)  # (-90 - -91) / 10
    assert s.excess == pytest.approx((1.0 - 0.8) / 0.8)  # breaks the first limit by 25 %
    ok = score_choice(0, true_value, true_costs, LIMITS)
    assert ok.regret == 0.0 and ok.excess == pytest.approx(max(-0.2 / 0.8, -0.6 / 4.6))
    none = score_choice(None, true_value, true_costs, LIMITS)
    assert np.isnan(none.regret) and np.isnan(none.excess) and none.best == 0


def test_feasibility_counts_both_errors() -> None:
    estimate = np.array([0.9, 0.7, np.nan, 0.5])
    truth = np.array([0.7, 0.9, 0.1, 0.6])
    f = feasibility(estimate, truth, 0.8)
    assert (f.read_within, f.truly_within) == (2, 3)
    assert f.false_within == (1,)  # read 0.7, truly 0.9: unsafe read as safe
    assert f.missed == (0, 2)  # read 0.9 (truly 0.7) and not read at all


def test_bad_shapes_and_limits_are_errors() -> None:
    with pytest.raises(ValueError, match=r"limits \(C,\)"):
        constrained_choice(VALUE, COSTS, np.array([1.0]))
    with pytest.raises(ValueError, match="finite and ≥ 0"):
        constrained_choice(VALUE, COSTS, np.array([-1.0, 1.0]))
    with pytest.raises(ValueError, match="must be finite"):
        score_choice(0, np.array([np.nan, 1.0, 2.0, 3.0]), COSTS, LIMITS)
    with pytest.raises(ValueError, match="one \\(P,\\) shape"):
        feasibility(np.zeros(3), np.zeros(4), 1.0)
