"""The calibrate_guardian stage on small synthetic trajectory parquets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.guardian.guardian_fakes import NAMES, write_trajectories

import ogsrl.guardian
from ogsrl.config import ConfigError, build, load_params, section
from ogsrl.errors import DataError
from ogsrl.guardian import stage

PARAMS = {
    "guardian": {
        "seed": 3,
        "volume_samples": 5000,
        "ood_samples": 300,
        "extreme_policy_stays": 4,
        "calibration": {"alpha_c": 0.9, "delta": 0.1, "rule": "pac"},
        "kde": {"max_eval": 400},
    }
}


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("proj")
    write_trajectories(root, {"train": 3000, "val": 1500, "test": 1500})
    return root, stage.run(PARAMS, root)


def test_outputs_and_metrics(ran) -> None:
    root, m = ran
    assert json.loads((root / "data/reports/guardian.json").read_text()) == pytest.approx(m)
    cert = json.loads((root / "data/models/guardian/certificate.json").read_text())
    assert cert["method"] == "christoffel" and cert["n_fit"] == 3000 and cert["n_cal"] == 1500
    assert cert["feature_names"] == list(NAMES) and cert["alpha_c"] == 0.9 and cert["delta"] == 0.1
    assert (m["n_fit"], m["n_cal"], m["n_test"], m["n_features"]) == (3000, 1500, 1500, 15)
    # the certificate counts the 150 validation stays (10 rows each): PAC level a = 0.9481 for α = 0.9, δ = 0.1
    assert (cert["unit"], cert["n_cal_stays"], cert["n_test_stays"]) == ("stay", 150, 150)
    assert cert["level"] == pytest.approx(0.94814, abs=1e-4) and cert["calibration_coverage_stay"] >= cert["level"]
    assert (m["n_cal_stays"], m["n_test_stays"]) == (150, 150)
    assert 0.9 <= m["christoffel/test_coverage_stay"] <= cert["level"] + 0.03
    assert m["christoffel/test_coverage_stay_gap"] == pytest.approx(m["christoffel/test_coverage_stay"] - 0.9)
    assert abs(m["christoffel/test_coverage"] - m["christoffel/test_coverage_stay"]) < 1e-9  # equal-size stays
    assert 0.9 <= m["kde_eq/test_coverage_stay"] <= 1.0
    assert m["kde/n_cal"] == 400 and m["kde_eq/n_cal"] == 400
    for name in ("christoffel", "kde", "kde_eq"):
        for probe in ("extreme_actions", "shifted_states", "extreme_policy"):
            assert 0.0 <= m[f"{name}/false_accept_{probe}"] <= 1.0
    assert m["christoffel/false_accept_extreme_actions"] < 0.1
    assert 1 <= m["ood/n_extreme_policy"] <= 80 and m["ood/extreme_policy_share_action_above_p999"] == 1.0
    assert m["query_speedup_christoffel_over_kde"] > 1.0
    assert all(isinstance(v, (int, float)) for v in m.values())


def test_saved_guardians_reload_with_the_stage_certificate(ran) -> None:
    root, m = ran
    g = ogsrl.guardian.load(root / "data/models/guardian/christoffel", NAMES)
    assert g.certificate().threshold == m["christoffel/threshold"]
    k = ogsrl.guardian.load(root / "data/models/guardian/kde", NAMES)
    assert k.certificate().threshold_rule == "train_percentile"
    assert k.certificate().threshold == m["kde/threshold"]


def test_params_yaml_section_builds() -> None:
    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    cfg = build(stage.GuardianStageConfig, section(params, "guardian"), "guardian")
    assert cfg.calibration.alpha_c == 0.95 and cfg.kde.bandwidth == 0.535 and cfg.christoffel.degree == 2
    with pytest.raises(ConfigError, match="alpha_c"):
        build(stage.GuardianStageConfig, {"calibration": {"alpha_c": 1.2}}, "guardian")
    with pytest.raises(ConfigError, match="unknown key"):
        build(stage.GuardianStageConfig, {"degree": 2}, "guardian")


def test_default_scaling_is_data_bounds(ran) -> None:
    _, m = ran
    assert (m["scaling/bounds_schema"], m["scaling/n_from_schema"]) == (0.0, 0)
    assert not any(k.startswith("scaling/from_schema/") for k in m)  # per column only with bounds: schema


def test_probe_can_be_skipped(tmp_path) -> None:
    write_trajectories(tmp_path, {"train": 400, "val": 300, "test": 300})  # 30 stays: PAC needs 22
    params = {"guardian": dict(PARAMS["guardian"], extreme_policy_stays=0, volume_samples=100)}
    params["guardian"]["kde"] = {"max_eval": 300}  # kde_eq: 30 whole stays
    m = stage.run(params, tmp_path)
    assert "ood/n_extreme_policy" not in m and "christoffel/false_accept_extreme_policy" not in m
    assert m["n_fit"] == 400


def test_missing_inputs_and_metadata(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        stage.run(PARAMS, tmp_path)
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "t.parquet").parent.mkdir(exist_ok=True)
    pq.write_table(pa.table({"a": np.arange(3.0)}), tmp_path / "t.parquet")
    with pytest.raises(DataError, match="ogsrl.state_features"):
        stage.read_split(tmp_path / "t.parquet")


@pytest.mark.parametrize("actions", ["discrete", "continuous"])
def test_bring_your_own_table_encoding_and_schema_bounds(tmp_path, actions: str) -> None:
    from tests.guardian.guardian_fakes import write_mdp_trajectories

    write_mdp_trajectories(tmp_path, actions)
    params = {"guardian": dict(PARAMS["guardian"], volume_samples=2000, extreme_policy_stays=0,
                               scaling={"bounds": "schema"}, calibration={"alpha_c": 0.9, "rule": "conformal"})}
    m = stage.run(params, tmp_path)
    g = ogsrl.guardian.load(tmp_path / "data/models/guardian/christoffel")
    assert m["scaling/bounds_schema"] == 1.0 and g.scaling.bounds == "schema"
    assert m["scaling/n_from_schema"] == (2 if actions == "discrete" else 4)  # the flag keeps the data's
    assert m["scaling/from_schema/perfusion_index"] == 1.0 and m["scaling/from_schema/frail"] == 0.0  # a flag: data
    assert g.scaler.source[:3] == ("schema", "schema", "data") and (g.scaler.lo[0], g.scaler.hi[0]) == (0.0, 8.0)
    if actions == "discrete":
        assert g.discrete == {"treatment": 4} and g.basis.dim == 3 + 4 and g.scaler.source[3] == "one_hot"
        assert m["n_features"] == 4 and "scaling/from_schema/treatment" not in m
    else:
        assert g.discrete == {} and m["scaling/from_schema/bolus_ml"] == 1.0 and g.scaler.hi[3] == 2000.0
    assert all(isinstance(v, (int, float)) for v in m.values())
    assert 0.8 <= m["christoffel/test_coverage"] <= 1.0
    # the extreme-actions probe: ran (discrete: rarely chosen ids, never an invalid one) or recorded why not
    if "ood/n_extreme_actions" in m:
        assert m["ood/n_extreme_actions"] > 0 and "christoffel/false_accept_extreme_actions" in m
    else:
        assert m["ood/skipped_extreme_actions"] == 1.0
