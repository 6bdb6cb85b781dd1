"""The model-based algorithms (trpo, cpo, ppo_lag) through the train stage on a tiny world model: warm start from the
behaviour clone, served GuardedPolicy checkpoints, model-estimated returns, determinism, one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ogsrl import features as F
from ogsrl.agents import load_policy, stage
from ogsrl.agents.actor import GuardedPolicy, SavedPolicy
from ogsrl.agents.inputs import GUARDIAN_DIR, WORLD_DIR
from ogsrl.config import ConfigError
from ogsrl.world.toy import COST_RULES, write_toy_splits

COSTS = tuple(f"cost_{r}" for r, _, _ in COST_RULES)
TINY_ONPOLICY = {"iterations": 2, "num_envs": 32, "critic_hidden": [8], "critic_epochs": 1, "log_every": 1}
PARAMS = {
    "policies": {
        "seeds": [3],
        "runs": {"soc": {"algorithm": "bc"}, "mb_trpo": {"algorithm": "trpo"},
                 "gmb_cpo": {"algorithm": "cpo", "guarded": True},
                 "gmb_ppo_lag": {"algorithm": "ppo_lag", "guarded": True, "overrides": {"minibatch_size": 64}}},
        "algorithms": {"bc": {"hidden": [8, 8], "batch_size": 64, "max_epochs": 2, "components": 2},
                       "trpo": TINY_ONPOLICY, "cpo": TINY_ONPOLICY, "ppo_lag": TINY_ONPOLICY},
        "fallback_mc_samples": 8,
        "model_eval_episodes": 16,
    },
    "world": {"env": {"horizon": 5}},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Toy trajectories on the paper state, a 2-member world model and a Christoffel guardian, saved where the
    train stage reads them."""
    from ogsrl.guardian import CalibrationConfig, ChristoffelConfig, ChristoffelGuardian, ScalingConfig
    from ogsrl.world.data import Layout, transitions_from_frame
    from ogsrl.world.ensemble import EnsembleConfig, WorldModel

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("mb") / "p"
    paths = write_toy_splits(root, 90, seed=5, n_steps=6)
    train, val = (pd.read_parquet(paths[s]) for s in ("train", "val"))
    cfg = EnsembleConfig(n_members=2, n_elites=2, hidden=(16,), batch_size=64, max_epochs=2, patience=2, seed=1)
    model = WorldModel(cfg, Layout.make(F.PAPER_STATE, COSTS, cfg.copy_features, cfg.sum_features))
    model.fit(transitions_from_frame(train, F.PAPER_STATE, COSTS), transitions_from_frame(val, F.PAPER_STATE, COSTS))
    model.save(root / WORLD_DIR)
    names = (*F.PAPER_STATE, *F.ACTIONS)
    g = ChristoffelGuardian(names, ChristoffelConfig(degree=1), CalibrationConfig(rule="conformal", alpha_c=0.9, unit="row"),
                            ScalingConfig()).fit(train[list(names)].to_numpy(np.float64))
    g.calibrate(val[list(names)].to_numpy(np.float64)).save(root / GUARDIAN_DIR)
    return root


@pytest.fixture(scope="module")
def trained(project: Path) -> dict:
    return stage.run(PARAMS, project)


def test_every_algorithm_saves_a_loadable_guarded_policy(trained: dict, project: Path) -> None:
    soc = load_policy(project / "data/models/policies/soc/seed3")
    assert isinstance(soc, SavedPolicy) and soc.actor.k == 2
    for run, algorithm in (("mb_trpo", "trpo"), ("gmb_cpo", "cpo"), ("gmb_ppo_lag", "ppo_lag")):
        served = load_policy(project / f"data/models/policies/{run}/seed3")
        assert isinstance(served, GuardedPolicy) and served.policy.feature_names == F.PAPER_STATE
        assert served.policy.provenance["algorithm"] == algorithm and served.policy.actor.k == 2  # the clone's
        assert trained[f"{run}/seed3/train/iterations"] == 2.0
        for key in ("model/return", *(f"model/cost_return/{c}" for c in COSTS), "model/episode_length"):
            assert np.isfinite(trained[f"{run}/seed3/{key}"]), key
        obs = np.tile(soc.actor.obs_mean.numpy(), (4, 1))
        assert served.act(obs, np.random.default_rng(0)).shape == (4, 2)
    assert trained["gmb_ppo_lag/seed3/train/multiplier/cost_spo2_low"] >= 0
    assert "soc/seed3/model/return" not in trained  # model-free runs are not estimated in the model
    summary = stage.summary(trained)
    assert "gmb_cpo/mean/model/return" in summary and "gmb_cpo/seed3/train/kl" not in summary


def test_the_clinicians_clone_is_read_in_the_same_model_for_every_model_based_run(trained: dict) -> None:
    """model/clinicians_clone/...: the seed's SOC checkpoint in the run's unguarded evaluation env, beside the
    logged clinicians' cost return (how far the model's cost units are from the data's)."""
    keys = ("return", *(f"cost_return/{c}" for c in COSTS))
    clone = {k: trained[f"gmb_cpo/seed3/model/clinicians_clone/{k}"] for k in keys}
    for run in ("mb_trpo", "gmb_ppo_lag"):  # the same clone, env seed and episodes: the same numbers
        assert {k: trained[f"{run}/seed3/model/clinicians_clone/{k}"] for k in keys} == clone
    assert clone["return"] != trained["gmb_cpo/seed3/model/return"]  # a different policy, read apart
    summary = stage.summary(trained)
    for c in COSTS:
        assert 0 <= clone[f"cost_return/{c}"] <= PARAMS["world"]["env"]["horizon"]
        assert summary[f"clinicians/cost_return/{c}"] == trained[f"clinicians/cost_return/{c}"] >= 0
        assert summary[f"gmb_cpo/mean/model/clinicians_clone/cost_return/{c}"] == clone[f"cost_return/{c}"]


def test_warm_start_begins_at_the_behaviour_clone(project: Path) -> None:
    params = json.loads(json.dumps(PARAMS))
    params["policies"]["runs"] = {"soc": {"algorithm": "bc"}, "gmb_cpo": {"algorithm": "cpo", "guarded": True,
                                                                         "overrides": {"target_kl": 1e-12}}}
    root = project.parent / "warm"
    shutil.copytree(project, root, ignore=shutil.ignore_patterns("policies"))
    stage.run(params, root)
    soc = load_policy(root / "data/models/policies/soc/seed3")
    cpo = load_policy(root / "data/models/policies/gmb_cpo/seed3").policy
    for name, t in soc.actor.state_dict().items():  # a trust region of ~0 keeps the clone (within one line search)
        assert torch.allclose(t.double(), cpo.actor.state_dict()[name].double(), atol=1e-4), name


def test_same_seed_same_checkpoint(trained: dict, project: Path) -> None:
    again = project.parent / "again"
    shutil.copytree(project, again, ignore=shutil.ignore_patterns("policies"))
    metrics = stage.run(PARAMS, again)
    for run in ("mb_trpo", "gmb_cpo", "gmb_ppo_lag"):
        a = torch.load(project / f"data/models/policies/{run}/seed3/policy/weights.pt", weights_only=True)
        b = torch.load(again / f"data/models/policies/{run}/seed3/policy/weights.pt", weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a), run
        assert metrics[f"{run}/seed3/model/return"] == trained[f"{run}/seed3/model/return"]


@pytest.mark.parametrize(("policies", "match"), [
    ({"runs": {"soc": {"algorithm": "bc"}, "x": {"algorithm": "cpo9"}}}, r"runs\.x\.algorithm: unknown algorithm"),
    ({"cost_limits": {"cost_spo2_low": -0.5}}, r"cost_limits\.cost_spo2_low: must be ≥ 0"),
    ({"algorithms": {"cpo": {"fisher_fraction": 0.0}}}, r"policies\.algorithms\.cpo: .*fisher_fraction"),
    ({"algorithms": {"ppo_lag": {"iteratons": 3}}}, r"policies\.algorithms\.ppo_lag\.iteratons"),
])
def test_bad_params_are_one_line_errors(project: Path, policies: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        stage.run({"policies": {**PARAMS["policies"], **policies}}, project)
    assert "\n" not in str(err.value)


def test_a_model_based_run_on_other_features_is_a_one_line_error(project: Path, tmp_path: Path) -> None:
    root = tmp_path / "p"
    shutil.copytree(project, root, ignore=shutil.ignore_patterns("policies"))
    params = {**PARAMS, "policies": {**PARAMS["policies"], "runs": {
        "soc": {"algorithm": "bc"}, "cpo_all": {"algorithm": "cpo", "state": "all"}}}}
    with pytest.raises(ValueError, match="model-based runs need state: model") as err:
        stage.run(params, root)
    assert "\n" not in str(err.value)


def test_a_policy_read_against_other_features_is_a_one_line_error(trained: dict, project: Path) -> None:
    served = load_policy(project / "data/models/policies/gmb_cpo/seed3")
    with pytest.raises(ValueError, match=r"obs must have shape \(B, 13\)") as err:
        served.policy.act(np.zeros((3, 5)))
    assert "\n" not in str(err.value)
