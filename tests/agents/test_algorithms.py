"""The ALGORITHMS table (ogsrl/agents/algorithms.py): every entry follows the learner contract."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.agents.trajectory_fakes import COSTS, STATE

from ogsrl import features
from ogsrl.agents.actor import SavedPolicy
from ogsrl.agents.algorithms import ALGORITHMS
from ogsrl.agents.inputs import FitResult, TrainInputs


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_entries_have_a_frozen_config_fit_and_loader(name: str) -> None:
    algo = ALGORITHMS[name]
    assert dataclasses.is_dataclass(algo.config) and algo.config.__dataclass_params__.frozen
    algo.config()  # every field has a default
    assert list(inspect.signature(algo.fit).parameters) == ["config", "inputs", "seed"]
    assert callable(algo.load)


def _no_env(num_envs: int, seed: int, guarded: bool) -> None:
    raise AssertionError("a model-free learner must not build the world-model environment")


def _no_clone(seed: int) -> None:
    raise AssertionError("a model-free learner does not start from the behaviour clone")


@pytest.mark.parametrize("name", ["trpo", "cpo", "ppo_lag"])
def test_on_policy_algorithms_need_the_world_model(name: str) -> None:
    assert ALGORITHMS[name].needs_world_model is True


def test_bc_fits_from_train_inputs_without_the_world_model(traj_root: Path, tmp_path: Path) -> None:
    algo = ALGORITHMS["bc"]
    assert algo.needs_world_model is False
    train = pd.read_parquet(traj_root / "data/trajectories/train.parquet").sort_values(["stay_key", "step"])
    val = pd.read_parquet(traj_root / "data/trajectories/val.parquet").sort_values(["stay_key", "step"])
    inputs = TrainInputs(train=train, val=val, state_features=STATE, action_names=features.ACTIONS,
                         cost_columns=COSTS, cost_limits=np.array([1.0, 1.0]), step_h=4.0, discount=1.0,
                         guarded=False, make_env=_no_env, behaviour_clone=_no_clone)
    res = algo.fit(algo.config(hidden=(8,), max_epochs=2), inputs, 5)
    assert isinstance(res, FitResult) and isinstance(res.policy, SavedPolicy)
    assert [h["step"] for h in res.history] == [1.0, 2.0]
    res.policy.save(tmp_path / "p")
    assert algo.load(tmp_path / "p").feature_names == STATE
