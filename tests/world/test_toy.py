"""Tests for ogsrl/world/toy.py: the toy table follows the trajectory contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ogsrl.data.contract import check_trajectories, read_metadata
from ogsrl.world.toy import toy_trajectories, write_toy_splits


def test_toy_table_passes_the_contract_check(toy_frame: pd.DataFrame) -> None:
    check_trajectories(toy_frame)
    again = toy_trajectories(120, np.random.default_rng(11))
    pd.testing.assert_frame_equal(toy_frame, again)
    assert toy_frame["done"].sum() == toy_frame["stay_key"].nunique()


def test_splits_are_by_stay_with_metadata(tmp_path: Path) -> None:
    paths = write_toy_splits(tmp_path, 50, seed=1, state_features=("spo2", "map"))
    keys = [set(pd.read_parquet(p)["stay_key"]) for p in paths.values()]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert sum(len(k) for k in keys) == 50
    meta = read_metadata(paths["train"])
    assert meta["ogsrl.state_features"] == ["spo2", "map"]
    assert meta["ogsrl.cost_columns"] == ["cost_spo2_low", "cost_urine_low"]
    assert json.dumps(meta["ogsrl.action_columns"]) == '["fluid_ml", "nee_max"]'
