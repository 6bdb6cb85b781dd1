import numpy as np
import pandas as pd
import pytest

from ogsrl.report import figures


def test_value_axis_leaves_estimates_on_too_few_stays_off_the_axis() -> None:
    truth = np.array([-95.0, -90.0, -95.0])
    value = np.array([-94.0, -89.0, -400.0])
    lo, hi = figures.value_axis(truth, value, np.array([150.0, np.nan, 1.2]), min_ess=20.0)
    assert (lo, hi) == pytest.approx((-95.6, -88.4))  # span −95 … −89 padded by 10 %; −400 (ESS 1.2) left out
    lo, hi = figures.value_axis(truth, value, np.array([150.0, np.nan, 1.2]), min_ess=0.0)
    assert lo == pytest.approx(-400 - 0.1 * 311) and hi == pytest.approx(-89 + 0.1 * 311)


def test_value_axis_of_a_single_point_is_not_empty() -> None:
    lo, hi = figures.value_axis(np.array([5.0]), np.array([5.0]), np.array([50.0]), 20.0)
    assert lo < 5.0 < hi


def test_ope_vs_truth_marks_thin_estimates_and_counts_those_off_the_axis() -> None:
    est = pd.DataFrame({"policy": ["a/seed1", "a/seed1", "b/seed1", "b/seed1"], "estimator": ["fqe", "dr"] * 2,
                        "target": "return", "value": [-94.0, -93.0, -90.5, -700.0],
                        "ci_low": [-96.0, -99.0, -92.0, -2000.0], "ci_high": [-92.0, -88.0, -89.0, 600.0],
                        "ess": [np.nan, 170.0, np.nan, 1.1]})
    truth = {"a/seed1": {"return": -95.0}, "b/seed1": {"return": -90.0}}
    svg = figures.ope_vs_truth(est, truth, "return", min_ess=20.0)
    assert svg is not None and "hollow: ESS &lt; 20; 1 off the axis" in svg
    plain = figures.ope_vs_truth(est[est["value"] > -100], truth, "return", min_ess=20.0)
    assert plain is not None and "hollow" not in plain and "off the axis" not in plain


def test_policies_outside_the_support_are_labelled_so() -> None:
    est = pd.DataFrame({"policy": ["a/seed1", "b/seed1"], "estimator": "fqe", "target": "return",
                        "value": [-94.0, -91.0], "ci_low": [-96.0, -93.0], "ci_high": [-92.0, -89.0], "ess": 50.0})
    truth = {"a/seed1": {"return": -95.0}, "b/seed1": {"return": -90.0}}
    marked = figures.ope_vs_truth(est, truth, "return", outside={"b/seed1"})
    assert marked is not None and marked.count("(outside support)") == 1 and "b s1 (outside support)" in marked
    assert "outside support" not in figures.ope_vs_truth(est, truth, "return")
    forest = figures.estimates_forest(est, "return", outside={"a/seed1"})
    assert forest is not None and "a/seed1 (outside support) · fqe" in forest and "b/seed1 (outside" not in forest
