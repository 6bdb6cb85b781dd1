"""The report's loader: tolerant parsing of OPE metrics (new estimators, truth.json) and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ogsrl.errors import DataError
from ogsrl.report import inputs


def test_ope_estimates_take_any_estimator_and_skip_summaries(reports_root: Path) -> None:
    metrics = inputs.read_json(reports_root, "ope")
    est = inputs.ope_estimates(metrics)
    assert set(est["estimator"]) == {"onpolicy", "wis", "pdwis", "fqe"}
    assert set(est["policy"]) == {"behaviour", "soc/seed42", "gmb_cpo/seed42", "gmb_cpo/seed43"}  # no mean/sd
    assert len(est) == 3 + 3 * 3 * 3  # clinicians: 3 targets; 3 policies x 3 estimators x 3 targets
    row = est[(est["policy"] == "gmb_cpo/seed43") & (est["estimator"] == "fqe") & (est["target"] == "return")]
    assert row.iloc[0][["value", "ci_low", "ci_high", "ess", "seed"]].tolist() == [-78.0, -80.0, -76.0, 7.0, 43]
    assert not row.iloc[0]["covers_truth"]  # False (a NaN would be truthy)


def test_truth_from_metrics_and_truth_json(reports_root: Path) -> None:
    metrics = inputs.read_json(reports_root, "ope")
    assert inputs.read_json(reports_root, "truth", required=False) is None
    truth = inputs.truth_values(metrics)
    assert truth["gmb_cpo/seed43"]["return"] == -87.0 and truth["behaviour"]["mortality_hosp"] == 0.22
    assert "available" not in truth
    doc = {"soc/seed42/return": -70.0, "truth/soc/seed42/cost_return_cost_total": 7.5, "soc/seed42/note": "text"}
    (reports_root / "data/reports/truth.json").write_text(json.dumps(doc))
    truth = inputs.truth_values(metrics, inputs.read_json(reports_root, "truth", required=False))
    assert truth["soc/seed42"]["return"] == -70.0  # truth.json wins
    assert inputs.truth_of(truth["soc/seed42"], "cost_total") == 7.5  # cost_return_<target>
    assert inputs.truth_of(truth["soc/seed42"], "rate_cost_total") is None


def test_missing_or_broken_inputs_are_one_line_errors(reports_root: Path) -> None:
    (reports_root / "data/reports/clinical.json").unlink()
    with pytest.raises(DataError, match=r"^table 'clinical.json': report input missing: data/reports/clinical.json "
                                        r"\(written by `ogsrl clinical`\)$"):
        inputs.read_json(reports_root, "clinical")
    (reports_root / "data/reports/world.json").write_text("{not json")
    with pytest.raises(DataError, match="world.json is not readable JSON"):
        inputs.read_json(reports_root, "world")
    assert inputs.read_csv(reports_root, "clinical_metrics") is None
    with pytest.raises(DataError, match="report input missing: data/reports/clinical_plots/metrics.csv"):
        inputs.read_csv(reports_root, "clinical_metrics", required=True)
