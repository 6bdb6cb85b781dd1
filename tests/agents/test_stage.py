"""The train_policies stage on a tiny contract-shaped project."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ogsrl.agents import load_policy, stage
from ogsrl.config import ConfigError

PARAMS = {"policies": {"methods": ["soc"], "soc": {"hidden": [8, 8], "batch_size": 32, "max_epochs": 4}}}


def test_train_policies_writes_checkpoint_metrics_and_curves(traj_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "p"
    shutil.copytree(traj_root, root)
    metrics = stage.run(PARAMS, root)
    assert set(metrics) >= {"soc/loss/train_nll", "soc/loss/val_nll", "soc/train/epochs"}
    assert all(math.isfinite(v) for v in metrics.values())
    assert json.loads((root / "data/reports/train.json").read_text()) == pytest.approx(metrics)
    curves = pd.read_csv(root / "data/reports/train_curves.csv")
    assert list(curves["step"]) == list(range(1, int(metrics["soc/train/epochs"]) + 1))
    assert (curves["method"] == "soc").all()
    pol = load_policy(root / "data/models/policies/soc")
    assert pol.feature_names == ("age", "mechvent", "gcs", "fio2", "spo2", "urine_step")
    test = pd.read_parquet(root / "data/trajectories/test.parquet")
    assert pol.act(test[list(pol.feature_names)].to_numpy()).shape == (len(test), 2)

    first = (root / "data/models/policies/soc/weights.pt").read_bytes()
    again = stage.run(PARAMS, root)  # same seed → same metrics and same weights
    assert again == metrics
    policy_again = load_policy(root / "data/models/policies/soc")
    obs = test[list(pol.feature_names)].to_numpy()
    np.testing.assert_array_equal(policy_again.act(obs), pol.act(obs))
    assert len(first) > 0


def test_unknown_method_and_key_are_config_errors(traj_root: Path) -> None:
    with pytest.raises(ConfigError, match="methods"):
        stage.run({"policies": {"methods": ["ogsrl9"]}}, traj_root)
    with pytest.raises(ConfigError, match="policies.soc.hiden"):
        stage.run({"policies": {"soc": {"hiden": [8]}}}, traj_root)


def test_missing_split_is_a_data_error(tmp_path: Path) -> None:
    from ogsrl.errors import DataError

    with pytest.raises(DataError, match="train.parquet"):
        stage.run(PARAMS, tmp_path)
