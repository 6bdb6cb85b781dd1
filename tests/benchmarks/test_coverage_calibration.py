"""benchmarks/coverage_calibration.py: the counts, intervals and standardised errors its page rests on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import coverage_calibration as cc  # noqa: E402


def test_standardised_error_uses_the_half_on_the_truths_side() -> None:
    est = {"value": 0.0, "ci_low": -2.0, "ci_high": 4.0}
    assert cc.standardised_error(est, 3.92) == pytest.approx(3.92 / (4.0 / 1.96))  # upper half: 4
    assert cc.standardised_error(est, -1.0) == pytest.approx(-0.98)  # lower half: 2
    assert cc.standardised_error({"value": 1.0, "ci_low": 1.0, "ci_high": 1.0}, 0.0) != \
        cc.standardised_error({"value": 1.0, "ci_low": 1.0, "ci_high": 1.0}, 0.0)  # a zero half: nan


def test_calibration_counts_with_a_clopper_pearson_interval_and_the_implied_coverage() -> None:
    got = cc.calibration([True] * 37 + [False] * 3, [-1.0, 1.0])
    assert (got["covered"], got["intervals"], got["coverage"]) == (37, 40, 0.925)
    # Clopper–Pearson from the beta quantiles
    assert got["ci_low"] == pytest.approx(stats.beta.ppf(0.025, 37, 4))
    assert got["ci_high"] == pytest.approx(stats.beta.ppf(0.975, 38, 3))
    # z of mean 0 and SD √2 (intervals √2 too narrow): 2Φ(1.96/√2) − 1 ≈ 0.834 covered
    assert (got["z_mean"], got["z_sd"]) == pytest.approx((0.0, 2 ** 0.5))
    assert got["implied"] == pytest.approx(2 * stats.norm.cdf(1.96 / 2 ** 0.5) - 1) and got["implied"] < 0.84


def test_rows_split_by_the_gates_ess_and_read_the_gates_side() -> None:
    def est(value: float, lo: float, hi: float, ess: float) -> dict:
        return {"value": value, "ci_low": lo, "ci_high": hi, "ess": ess}

    truth = {"return": -90.0, "cost_return_cost_spo2_low": 1.0, "cost_return_cost_urine_low": 2.0,
             "cost_return_cost_total": 3.0}
    ests = {f"wdr/{t}": est(0.0, -1.0, 1.0, 1.0) for t in ("cost_spo2_low", "cost_urine_low", "cost_total")}
    cov = {"1": {"clone": {"truth": truth, "estimates": {**ests, "wdr/return": est(-89.0, -92.0, -88.0, 50.0)}},
                 "learned": {"estimates": {**ests, "wdr/return": est(-80.0, -85.0, -70.0, 1.0)}}},
           "2": {"clone": {"truth": truth, "estimates": {**ests, "wdr/return": est(-95.0, -99.0, -91.0, 40.0)}}}}
    rows = {(r["target"], r["regime"]): r for r in cc.rows_of(cov, {"learned": truth}, 20.0, ["wdr"])}
    gate, below, both = (rows[("return", g)] for g in ("gate", "below", "all"))
    # dataset 2 misses above the upper bound: two-sided a miss, on the side the gate reads (the lower) a hit
    assert (gate["covered"], gate["intervals"], gate["gate_side"]) == (1, 2, 1.0)
    assert (below["covered"], below["intervals"], below["gate_side"]) == (0, 1, 0.0)  # truth −90 below −85
    assert (both["covered"], both["intervals"]) == (1, 3)
    assert (gate["ess_min"], gate["ess_max"], below["ess_min"], both["ess_max"]) == (40.0, 50.0, 1.0, 50.0)
    # a cost's gate side is its upper bound: truth 1.0 ≤ 1.0 holds; 2.0 and 3.0 above it do not
    assert rows[("cost_spo2_low", "all")]["gate_side"] == 1.0 and rows[("cost_urine_low", "all")]["gate_side"] == 0.0
