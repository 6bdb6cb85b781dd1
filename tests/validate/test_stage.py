"""Validation stages: source selection, metrics JSON, HTML/JSON reports on pass and fail, DataError on failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ogsrl.config import ConfigError, load_params
from ogsrl.errors import DataError
from ogsrl.validate import stage
from ogsrl.validate.report import ValidationFailed

from .conftest import make_tables, make_trajectories, write_tables, write_trajectories

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.fixture
def params() -> dict:
    p = load_params(PARAMS)
    p["costs"] = {"rules": [{"name": "spo2_low"}, {"name": "urine_low"}]}
    p["cohort"] = dict(p["cohort"], n_steps=4, salt="stage-test-salt")
    return p


def reports(root: Path, kind: str) -> dict:
    folder = root / "data" / "reports" / "validation" / kind
    assert (folder / "index.html").is_file() and (folder / "summary.json").is_file()
    return json.loads((folder / "summary.json").read_text())


def assert_offline(folder: Path) -> None:
    """Every Data Docs page loads only files of its own folder, and those files exist."""
    import re

    pages = sorted(folder.glob("*.html"))
    assert len(pages) > 2
    for page in pages:
        text = page.read_text(encoding="utf-8")
        refs = re.findall(r"""\b(?:src|href)=["']?([^"' >]+)""", text)
        assert not [r for r in refs if re.match(r"(?:[a-z]+:)?//", r)], page.name
        for ref in refs:
            if not ref.startswith("#"):
                assert (folder / ref.split("#")[0]).is_file(), f"{page.name}: {ref}"
    assert "static/bootstrap-4.3.1.min.css" in pages[-1].read_text(encoding="utf-8")


def test_raw_demo_source_passes_and_writes_reports(tmp_path: Path, params: dict) -> None:
    write_tables(tmp_path / "data" / "raw", make_tables())
    m = stage.run_raw(params, tmp_path)
    assert m["success"] is True and m["skipped"] is False and m["n_failed"] == 0
    assert m["rows_checked"] == 148 and m["n_tables"] == 12 and m["violations.chartevents"] == 0
    assert json.loads((tmp_path / "data/reports/validation_raw.json").read_text()) == m
    summary = reports(tmp_path, "raw")
    assert summary["summary"]["n_expectations"] == m["n_expectations"] == len(summary["outcomes"])
    page = (tmp_path / "data/reports/validation/raw/chartevents.html").read_text()
    assert "Great Expectations" in page and "valuenum" in page
    assert_offline(tmp_path / "data/reports/validation/raw")
    text = "".join(p.read_text() for p in (tmp_path / "data/reports").rglob("*.*"))
    assert "30000001" not in text and "2150-01-01" not in text  # no raw ids or real timestamps


def test_raw_failure_raises_after_writing_reports(tmp_path: Path, params: dict) -> None:
    t = make_tables()
    t["inputevents"].loc[0, "amount"] = -250.0
    t["icustays"] = t["icustays"].drop(columns=["outtime"])
    raw = write_tables(tmp_path / "elsewhere", t)
    params["data"] = dict(params["data"], source="mimic-iv", mimic_path=str(raw))
    params["cohort"] = dict(params["cohort"], salt="ogsrl-demo-salt")  # real data: the secret salt is in env
    with pytest.raises(ValidationFailed) as info:
        stage.run_raw(params, tmp_path)
    assert isinstance(info.value, DataError)
    msg = str(info.value)
    assert msg.startswith("raw-table validation failed: 3 of")
    assert "table 'icustays', column 'outtime': expect_column_values_to_be_in_set (required column present)" in msg
    assert "table 'inputevents', column 'amount'" in msg and "-250" in msg
    assert "index.html" in msg
    m = json.loads((tmp_path / "data/reports/validation_raw.json").read_text())
    assert m["success"] is False and m["n_failed"] == 3 and m["source"] == "mimic-iv"
    assert m["violations.inputevents"] == 2  # the >= 0 rule and the fluid-range rule, same row
    assert "FAILED" in (tmp_path / "data/reports/validation/raw/index.html").read_text()


def test_raw_skipped_for_trajectories_source(tmp_path: Path, params: dict) -> None:
    params["data"] = dict(params["data"], source="trajectories")
    m = stage.run_raw(params, tmp_path)
    assert m["skipped"] is True and m["success"] is True and "trajectories" in m["reason"]
    assert reports(tmp_path, "raw")["outcomes"] == []


def test_bad_params_are_config_errors(tmp_path: Path, params: dict) -> None:
    with pytest.raises(ConfigError, match="validation: range_mostly"):
        stage.run_raw(dict(params, validation={"range_mostly": 1.5}), tmp_path)
    with pytest.raises(ConfigError, match="unknown key"):
        stage.run_raw(dict(params, validation={"rang_mostly": 0.9}), tmp_path)
    with pytest.raises(ConfigError, match="data.source"):
        stage.run_raw(dict(params, data={"source": "csv"}), tmp_path)
    with pytest.raises(FileNotFoundError):
        stage.run_raw(params, tmp_path)  # demo source, but data/raw was never generated


def test_trajectories_pass_then_fail(tmp_path: Path, params: dict) -> None:
    write_trajectories(tmp_path, make_trajectories())
    m = stage.run_trajectories(params, tmp_path)
    assert m["success"] is True and m["n_stays"] == 9 and m["rows.train"] == 11 and m["rows_checked"] == 32
    assert reports(tmp_path, "trajectories")["summary"]["success"] is True
    fr = make_trajectories()
    fr["val"].loc[0, "pf_ratio"] = 5000.0
    write_trajectories(tmp_path, fr)
    with pytest.raises(ValidationFailed, match=r"table 'val', column 'pf_ratio'.*=5000"):
        stage.run_trajectories(params, tmp_path)
    m = json.loads((tmp_path / "data/reports/validation_trajectories.json").read_text())
    assert m["success"] is False and m["n_failed"] == 1 and m["violations.val"] == 1
    assert reports(tmp_path, "trajectories")["summary"]["success"] is False
