"""The train_policies stage on a tiny contract-shaped project: runs × seeds, checkpoints, metrics, curves."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tests.agents.trajectory_fakes import COSTS, STATE

from ogsrl import features
from ogsrl.agents import load_policy, stage
from ogsrl.agents.actor import GuardedPolicy, SavedPolicy
from ogsrl.agents.inputs import cost_returns
from ogsrl.config import ConfigError

TINY = {"hidden": [8, 8], "batch_size": 32, "max_epochs": 4}
PARAMS = {"policies": {"seeds": [1, 2], "runs": {"soc": {"algorithm": "bc"}}, "algorithms": {"bc": TINY}}}


@pytest.fixture(scope="module")
def trained(traj_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("train") / "p"
    shutil.copytree(traj_root, root)
    return root, stage.run(PARAMS, root)


def test_every_seed_gets_a_checkpoint_metrics_and_curves(trained: tuple[Path, dict]) -> None:
    root, metrics = trained
    for seed in (1, 2):
        assert {f"soc/seed{seed}/loss/train_nll", f"soc/seed{seed}/loss/val_nll"} <= set(metrics)
        pol = load_policy(root / f"data/models/policies/soc/seed{seed}")
        assert isinstance(pol, SavedPolicy) and pol.feature_names == STATE
        assert pol.provenance == {"run": "soc", "algorithm": "bc", "seed": seed, "state": "model", "guarded": False,
                                  "config": {**pol.provenance["config"]},
                                  "state_units": {f: features.BY_NAME[f].unit for f in STATE}}
    vals = [metrics[f"soc/seed{s}/loss/val_nll"] for s in (1, 2)]
    assert metrics["soc/mean/loss/val_nll"] == pytest.approx(np.mean(vals))
    assert metrics["soc/sd/loss/val_nll"] == pytest.approx(np.std(vals, ddof=1))
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))
    assert json.loads((root / "data/reports/train.json").read_text()) == pytest.approx(metrics)
    curves = pd.read_csv(root / "data/reports/train_curves.csv")
    assert list(curves.columns[:3]) == ["run", "seed", "step"] and set(curves["seed"]) == {1, 2}
    assert (curves["run"] == "soc").all()


def test_same_seed_same_weights_different_seed_different(trained: tuple[Path, dict], tmp_path: Path) -> None:
    root, metrics = trained
    again = tmp_path / "again"
    shutil.copytree(root / "data/trajectories", again / "data/trajectories")
    assert stage.run(PARAMS, again) == metrics
    for seed in (1, 2):
        a = torch.load(root / f"data/models/policies/soc/seed{seed}/weights.pt", weights_only=True)
        b = torch.load(again / f"data/models/policies/soc/seed{seed}/weights.pt", weights_only=True)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    one = torch.load(root / "data/models/policies/soc/seed1/weights.pt", weights_only=True)
    two = torch.load(root / "data/models/policies/soc/seed2/weights.pt", weights_only=True)
    assert not torch.equal(one["net.0.weight"], two["net.0.weight"])


def test_checkpoint_holds_only_the_actor(trained: tuple[Path, dict]) -> None:
    root, _ = trained
    ckpt = root / "data/models/policies/soc/seed1"
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "weights.pt"]
    weights = torch.load(ckpt / "weights.pt", weights_only=True)
    assert all(k in ("obs_mean", "obs_std") or k.startswith("net.") for k in weights)
    assert all(isinstance(v, torch.Tensor) for v in weights.values())  # no optimiser state (nested dicts)
    doc = json.loads((ckpt / "config.json").read_text())
    assert not {"optim", "optimizer", "critic", "lagrange"} & set(doc)
    assert doc["act_mode"] == "sample" and doc["format_version"] == 2


def test_default_cost_limits_come_from_the_train_split(trained: tuple[Path, dict], traj_root: Path) -> None:
    _, metrics = trained
    train = pd.read_parquet(traj_root / "data/trajectories/train.parquet").sort_values(["stay_key", "step"])
    clin = cost_returns(train, COSTS, 1.0).mean(axis=0)
    for j, c in enumerate(COSTS):
        assert metrics[f"clinicians/cost_return/{c}"] == pytest.approx(clin[j])
        assert metrics[f"cost_limit/{c}"] == pytest.approx(0.8 * clin[j])
        assert metrics[f"cost_limit/{c}/from_params"] is False
    assert "cost_limit/cost_total" not in metrics  # the total is the rules' sum, not a rule


def test_configured_cost_limit_wins_and_unknown_column_is_an_error(traj_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "p"
    shutil.copytree(traj_root, root)
    params = {"policies": {**PARAMS["policies"], "seeds": [1], "cost_limits": {"cost_spo2_low": 0.5}}}
    metrics = stage.run(params, root)
    assert metrics["cost_limit/cost_spo2_low"] == 0.5 and metrics["cost_limit/cost_spo2_low/from_params"] is True
    with pytest.raises(ValueError, match="policies.cost_limits: unknown cost column"):
        stage.run({"policies": {**params["policies"], "cost_limits": {"cost_nope": 1.0}}}, root)


@pytest.mark.parametrize(("policies", "match"), [
    ({"runs": {"x": {"algorithm": "cql9"}}}, r"runs\.x\.algorithm: unknown algorithm 'cql9'"),
    ({"cost_limits": {"cost_spo2_low": -1.0}}, r"cost_limits\.cost_spo2_low: must be ≥ 0"),
    ({"runs": {"soc": {"algorithm": "bc", "state": "vitals"}}}, r"policies\.runs\.soc\.state must be one of"),
    ({"runs": {"../up": {"algorithm": "bc"}}}, r"runs\.\.\./up: a run name must match"),
    ({"runs": {"soc": {"algorithm": "bc", "overrides": {"hiden": [8]}}}}, r"policies\.runs\.soc\.overrides\.hiden"),
    ({"algorithms": {"bc": {"lr": -1.0}}}, r"policies\.algorithms\.bc: lr must be > 0"),
    ({"algorithms": {"cql9": {}}}, r"algorithms\.cql9: unknown algorithm"),
    ({"runs": {"a": {"algorithm": "bc"}}}, r"fallback_run: 'soc' is not a run"),
    ({"seeds": []}, "seeds must be distinct"),
    ({"methods": ["soc"]}, r"unknown key\(s\) policies\.methods"),
])
def test_bad_policies_params_are_one_line_config_errors(traj_root: Path, policies: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        stage.run({"policies": policies}, traj_root)
    assert "\n" not in str(err.value)


def test_guarded_fallback_needs_a_guardian(traj_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "p"
    shutil.copytree(traj_root, root)
    runs = {"soc": {"algorithm": "bc"}, "bc_all": {"algorithm": "bc", "state": "all"}}
    with pytest.raises(FileNotFoundError, match="serve_guardian_fallback needs a calibrated guardian"):
        stage.run({"policies": {**PARAMS["policies"], "runs": runs}}, root)


def test_runs_are_served_with_the_guardian_fallback(traj_root: Path, tmp_path: Path, guardian_dir: Path) -> None:
    root = tmp_path / "p"
    shutil.copytree(traj_root, root)
    shutil.copytree(guardian_dir, root / "data/models/guardian/christoffel")
    runs = {"bc_all": {"algorithm": "bc", "state": "all", "overrides": {"max_epochs": 2}}, "soc": {"algorithm": "bc"}}
    metrics = stage.run({"policies": {**PARAMS["policies"], "seeds": [1], "runs": runs,
                                      "fallback_mc_samples": 16}}, root)
    assert {"bc_all/seed1/loss/val_nll", "soc/seed1/loss/val_nll", "bc_all/mean/train/epochs"} <= set(metrics)
    assert metrics["bc_all/seed1/train/epochs"] <= 2
    served = load_policy(root / "data/models/policies/bc_all/seed1")
    assert isinstance(served, GuardedPolicy) and served.mc_samples == 16
    assert served.policy.provenance["state"] == "all" and len(served.policy.feature_names) > len(STATE)
    soc = load_policy(root / "data/models/policies/soc/seed1")
    assert isinstance(soc, SavedPolicy)  # the fallback run itself is served plain
    for name, t in soc.actor.state_dict().items():
        assert torch.equal(t, served.fallback.actor.state_dict()[name])
    test = pd.read_parquet(root / "data/trajectories/test.parquet")
    obs = test[list(served.feature_names)].to_numpy()
    acts = test[["fluid_ml", "nee_max"]].to_numpy()
    assert served.act(obs, np.random.default_rng(0)).shape == (len(test), 2)
    assert served.log_prob(obs, acts).shape == (len(test),)
