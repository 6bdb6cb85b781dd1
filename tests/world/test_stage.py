"""Tests for ogsrl/world/stage.py: the fit_world_model stage end to end on a tiny toy project."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ogsrl.config import ConfigError
from ogsrl.errors import DataError
from ogsrl.world import stage
from ogsrl.world.ensemble import WorldModel
from ogsrl.world.toy import write_toy_splits

from .conftest import STATE

PARAMS: dict[str, Any] = {
    "cohort": {"state_features": list(STATE), "window_start_h": -24},
    "world": {
        "model": {"n_members": 3, "n_elites": 2, "hidden": [16, 16], "batch_size": 128, "max_epochs": 3,
                  "seed": 1},
        "env": {"horizon": 20},
        "eval": {"n_samples": 20, "seed": 1},
    },
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("world_stage")
    write_toy_splits(root, 90, seed=5)
    return root, stage.run(PARAMS, root)


def test_outputs_and_metrics(project: tuple[Path, dict[str, Any]]) -> None:
    root, m = project
    assert json.loads((root / "data/reports/world.json").read_text()) == json.loads(json.dumps(m))
    model = WorldModel.load(root / "data/models/world", state_features=STATE)
    assert model.cfg.n_members == 3 and len(model.elites) == 2
    assert m["world/epochs"] == 3 and m["world/n_train"] > 0 and m["world/n_test"] > 0
    for name in ("ensemble", "knn", "linear"):
        assert m[f"world/rmse/{name}/spo2"] > 0
        assert 0.0 <= m[f"world/coverage90/{name}"] <= 1.0 and np.isfinite(m[f"world/nll/{name}"])
    assert "world/rmse/ensemble/age" not in m  # copied features are not scored
    assert m["world/central_features"] == "spo2,urine_step"
    assert isinstance(m["world/beats_baselines_on_central"], bool)
    assert 0.0 <= m["world/replay/mortality_model"] <= 1.0
    # toy stays leave alive with hazard 0.03 per step: the model's mean exit probability is near the test rate
    assert 0.01 < m["world/discharge_rate/test"] < 0.06
    assert m["world/discharge_rate/model"] == pytest.approx(m["world/discharge_rate/test"], abs=0.02)
    rate = m["world/discharge_rate/test"]
    assert m["world/discharge_brier"] < 1.05 * rate * (1 - rate)  # constant hazard: about the base-rate Brier
    assert m["world/replay/mortality_gap"] == pytest.approx(
        m["world/replay/mortality_model"] - m["world/replay/mortality_logged"])


def test_plot_tables(project: tuple[Path, dict[str, Any]]) -> None:
    root, m = project
    plots = root / "data/reports/world_plots"
    lc = pd.read_csv(plots / "learning_curve.csv")
    assert list(lc["step"]) == [1, 2, 3] and {"train_loss", "val_loss"} <= set(lc.columns)
    rmse = pd.read_csv(plots / "per_feature_rmse.csv")
    assert list(rmse.columns) == ["feature", "ensemble", "knn", "linear"]
    assert rmse.set_index("feature").loc["spo2", "knn"] == pytest.approx(m["world/rmse/knn/spo2"], rel=1e-5)
    cal = pd.read_csv(plots / "calibration.csv")
    assert cal["nominal"].is_monotonic_increasing
    assert (np.diff(cal["ensemble"]) >= 0).all() and (np.diff(cal["knn"]) >= -1e-12).all()
    paths = pd.read_csv(plots / "replay_paths.csv")
    assert {"step", "feature", "model", "logged"} <= set(paths.columns)


def test_state_features_fall_back_to_params(tmp_path: Path) -> None:
    write_toy_splits(tmp_path, 30, seed=2)
    for split in ("train", "val", "test"):
        p = tmp_path / "data/trajectories" / f"{split}.parquet"
        t = pq.read_table(p)
        pq.write_table(t.replace_schema_metadata({}), p)
    params = copy.deepcopy(PARAMS)
    params["cohort"]["state_features"] = ["spo2", "map", "mechvent"]
    params["world"]["model"]["max_epochs"] = 1
    m = stage.run(params, tmp_path)
    assert "world/rmse/ensemble/map" in m and "world/rmse/ensemble/gcs" not in m
    assert WorldModel.load(tmp_path / "data/models/world").layout.cost_names == ("cost_spo2_low", "cost_urine_low")


def test_missing_inputs_and_bad_params(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train.parquet"):
        stage.run(PARAMS, tmp_path)
    bad = copy.deepcopy(PARAMS)
    bad["world"]["model"]["n_memberz"] = 3
    with pytest.raises(ConfigError, match="n_memberz"):
        stage.run(bad, tmp_path)


def test_replay_mortality_and_paths(tiny_model: WorldModel, toy_frame: pd.DataFrame) -> None:
    import torch

    m = copy.deepcopy(tiny_model)
    with torch.no_grad():
        m.net.head.bias[:, 0, -2] = -50.0  # death logit (discharge is the last)
        m.net.skip.weight[:, :, -2] = 0.0
    rep = stage.replay(m, toy_frame, STATE, "mean", seed=0, horizon=20)
    logged = toy_frame.groupby("stay_key")["death_in_step"].any().mean()
    assert rep["mortality_model"] == 0.0 and rep["mortality_logged"] == pytest.approx(logged)
    assert rep["n_stays"] == toy_frame["stay_key"].nunique()
    spo2 = STATE.index("spo2")
    start_mean = toy_frame.loc[toy_frame["step"] == 0, "spo2"].mean()
    assert rep["path_model"][0, spo2] == pytest.approx(start_mean, rel=1e-5)
    assert rep["path_logged"][0, spo2] == pytest.approx(start_mean, rel=1e-5)
    with torch.no_grad():
        m.net.head.bias[:, 0, -2] = 50.0
    assert stage.replay(m, toy_frame, STATE, "mean", seed=0, horizon=20)["mortality_model"] == 1.0


def test_window_end_comes_from_metadata_then_params() -> None:
    params = {"cohort": {"window_start_h": -24, "n_steps": 10, "step_h": 2}}
    assert stage._final_hour({"ogsrl.n_steps": 20, "ogsrl.step_h": 4.0}, params) == 52.0
    assert stage._final_hour({}, params) == -24 + 9 * 2
    assert stage._final_hour({"ogsrl.n_steps": 20}, {"cohort": {}}) is None
    with pytest.raises(DataError, match="must be numbers"):
        stage._final_hour({"ogsrl.n_steps": "many", "ogsrl.step_h": 4.0}, params)
