"""The model-free runs through the train stage: CQL variants and discrete CQL as configured runs, served with the
guardian fallback (a BinnedPolicy inside a GuardedPolicy included), scored by log_prob like any policy."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.agents.trajectory_fakes import write_split

from ogsrl.agents import load_policy, stage
from ogsrl.agents.actor import GuardedPolicy, SavedPolicy
from ogsrl.agents.binned import BinnedPolicy
from ogsrl.cohort.extract import assign_action_bins, fit_action_bins

TINY = {"steps": 20, "batch_size": 32, "critic_hidden": [8], "n_action_samples": 3, "log_every": 10}
PARAMS = {"policies": {
    "seeds": [1],
    "runs": {"soc": {"algorithm": "bc"}, "gccql": {"algorithm": "cql", "guarded": True,
                                                   "overrides": {"constrained": True}},
             "dcql": {"algorithm": "cql_discrete", "guarded": True}},
    "algorithms": {"bc": {"hidden": [8, 8], "batch_size": 32, "max_epochs": 2}, "cql": TINY,
                   "cql_discrete": {"steps": 20, "batch_size": 32, "hidden": [8], "log_every": 10}},
    "fallback_mc_samples": 8}}


@pytest.fixture(scope="module")
def trained(traj_root: Path, guardian_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("mf") / "p"
    shutil.copytree(traj_root, root)
    shutil.copytree(guardian_dir, root / "data/models/guardian/christoffel")
    train = pd.read_parquet(root / "data/trajectories/train.parquet")
    edges = fit_action_bins(train["fluid_ml"].to_numpy(), train["nee_max"].to_numpy())
    train["action_bin"] = assign_action_bins(train["fluid_ml"].to_numpy(), train["nee_max"].to_numpy(), edges)
    write_split(train, root / "data/trajectories/train.parquet")
    return root, stage.run(PARAMS, root)


def test_model_free_runs_are_served_and_scored(trained: tuple[Path, dict]) -> None:
    root, metrics = trained
    test = pd.read_parquet(root / "data/trajectories/test.parquet")
    for run, inner in (("gccql", SavedPolicy), ("dcql", BinnedPolicy)):
        served = load_policy(root / f"data/models/policies/{run}/seed1")
        assert isinstance(served, GuardedPolicy) and isinstance(served.policy, inner)
        assert served.policy.provenance["run"] == run and served.policy.provenance["guarded"] is True
        obs = test[list(served.feature_names)].to_numpy()
        assert served.act(obs, np.random.default_rng(0)).shape == (len(test), 2)
        lp = served.log_prob(obs, test[["fluid_ml", "nee_max"]].to_numpy())
        assert lp.shape == (len(test),) and not np.isnan(lp).any()
        assert metrics[f"{run}/seed1/train/updates"] == 20.0 and 0.0 <= metrics[f"{run}/seed1/train/rejected"] <= 1.0
    assert metrics["gccql/seed1/train/multiplier/cost_spo2_low"] >= 0.0
    assert "gccql/seed1/model/return" not in metrics  # model-free: no world-model estimate


def test_discrete_runs_need_action_bins(traj_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "p"
    shutil.copytree(traj_root, root)
    params = {"policies": {**PARAMS["policies"], "serve_guardian_fallback": False,
                           "runs": {"soc": {"algorithm": "bc"}, "dcql": {"algorithm": "cql_discrete"}}}}
    with pytest.raises(ValueError, match="no action bins") as err:
        stage.run(params, root)
    assert "\n" not in str(err.value)
